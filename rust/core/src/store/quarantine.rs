//! Quarantined bundles and halted origins, and the operator's release and drop.

use heed::{RoTxn, RwTxn};

use super::{Halt, OperatorAction, Outcome, Prepared, QuarantineEntry, RejectKind, Store};
use crate::error::{CoreError, Result};
use crate::wire;

/// Who resolves a quarantined bundle, and why (kept with the entry).
pub struct Operator {
    pub operator: String,
    pub reason: String,
}

impl Store {
    pub fn quarantine_list(&self, include_closed: bool) -> Result<Vec<QuarantineEntry>> {
        let txn = self.env.read_txn()?;
        self.quarantine_in(&txn, include_closed)
    }

    pub(super) fn quarantine_in(&self, txn: &RoTxn, include_closed: bool) -> Result<Vec<QuarantineEntry>> {
        let mut out = Vec::new();
        for item in self.dbs.quarantine.iter(txn)? {
            let entry: QuarantineEntry = wire::decode(item?.1, "quarantine entry")?;
            if include_closed || entry.state == "open" {
                out.push(entry);
            }
        }
        Ok(out)
    }

    pub fn quarantine_entry(&self, id: u64) -> Result<QuarantineEntry> {
        let txn = self.env.read_txn()?;
        self.entry(&txn, id)
    }

    fn entry(&self, txn: &RoTxn, id: u64) -> Result<QuarantineEntry> {
        match self.dbs.quarantine.get(txn, &id.to_be_bytes())? {
            Some(v) => wire::decode(v, "quarantine entry"),
            None => Err(CoreError::Quarantine(format!("no quarantine entry {id}"))),
        }
    }

    fn set_state(
        &self,
        txn: &mut RwTxn,
        mut entry: QuarantineEntry,
        state: &str,
        by: Option<&Operator>,
        at: u64,
    ) -> Result<()> {
        entry.state = state.into();
        if let Some(op) = by {
            entry.actions.push(OperatorAction {
                action: match state {
                    "released" => "release",
                    "dropped" => "drop",
                    other => other,
                }
                .into(),
                operator: op.operator.clone(),
                at,
                reason: op.reason.clone(),
                role: self.opts.role.as_str().into(),
            });
        }
        self.dbs.quarantine.put(txn, &entry.id.to_be_bytes(), &wire::encode(&entry)?)?;
        Ok(())
    }

    pub fn halted(&self) -> Result<Vec<(String, String)>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.halts.iter(&txn)? {
            let (k, v) = item?;
            let halt: Halt = wire::decode(v, "halt")?;
            let state = if halt.dropped_hash.is_some() { " (dropped; waiting for a re-issued bundle)" } else { "" };
            out.push((String::from_utf8_lossy(k).into_owned(), format!("{}{state}", halt.reason)));
        }
        Ok(out)
    }

    /// Accept a halting bundle as it is: apply it (content checks skipped) and resume
    /// the origin.
    pub fn release(&self, id: u64, received_at: u64) -> Result<Outcome> {
        self.release_by(id, received_at, None)
    }

    /// `release`, recording who did it and why in the entry. At an aggregation centre
    /// the bundle is attested and queued for forwarding like any applied bundle (the
    /// store must have been opened with the centre's key).
    pub fn release_by(&self, id: u64, received_at: u64, by: Option<&Operator>) -> Result<Outcome> {
        self.can_apply()?;
        let registry = self.registry();
        let mut txn = self.env.write_txn()?;
        let entry = self.entry(&txn, id)?;
        if entry.kind != RejectKind::Halt {
            return Err(CoreError::Quarantine(format!("entry {id} is a security rejection; it can only be dropped")));
        }
        if entry.state != "open" {
            return Err(CoreError::Quarantine(format!("entry {id} is already {}", entry.state)));
        }
        // Judged as when it arrived (its content checks are what the operator waives).
        let prepared =
            self.prepare(&[entry.envelope.as_ref()], &registry, entry.received_at).pop().expect("one in, one out");
        let v = match prepared {
            Prepared::Ok(v) => v,
            Prepared::Reject { reason, .. } => {
                return Err(CoreError::Quarantine(format!(
                    "entry {id} cannot be applied ({reason}); drop it and have the origin re-issue"
                )))
            }
        };
        let origin = v.head.origin.clone();
        let (head_seq, head_hash) = self.head(&txn, &origin)?;
        if v.head.first_seq != head_seq + 1 || v.head.prev_hash.as_slice() != head_hash {
            return Err(CoreError::Quarantine(format!(
                "entry {id} (seqs {}..{}) does not extend the chain of {origin} at seq {head_seq}; drop it",
                v.head.first_seq, v.head.last_seq
            )));
        }
        let mut records = Vec::new();
        let mut outcome = self.apply_verified(&mut txn, &v, received_at, true, &mut records)?;
        self.set_state(&mut txn, entry, "released", by, received_at)?;
        self.dbs.halts.delete(&mut txn, origin.as_bytes())?;
        (outcome.released, outcome.pending_rejected) =
            self.drain_pending(&mut txn, &origin, received_at, &registry, &mut records)?;
        self.write_records(&mut txn, records)?;
        txn.commit()?;
        Ok(outcome)
    }

    /// Discard a quarantined bundle. If it halted its origin, the origin then waits for
    /// a bundle whose `supersedes` names this bundle's hash.
    pub fn drop_entry(&self, id: u64) -> Result<()> {
        self.drop_by(id, 0, None)
    }

    /// `drop_entry`, recording who did it, when (µs) and why in the entry.
    pub fn drop_by(&self, id: u64, at: u64, by: Option<&Operator>) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        let entry = self.entry(&txn, id)?;
        if entry.state != "open" {
            return Err(CoreError::Quarantine(format!("entry {id} is already {}", entry.state)));
        }
        if let (RejectKind::Halt, Some(origin), Some(hash)) = (entry.kind, entry.origin.clone(), entry.hash.clone()) {
            if let Some(raw) = self.dbs.halts.get(&txn, origin.as_bytes())? {
                let mut halt: Halt = wire::decode(raw, "halt")?;
                if halt.quarantine_id == id {
                    halt.dropped_hash = Some(hash.clone());
                    self.dbs.halts.put(&mut txn, origin.as_bytes(), &wire::encode(&halt)?)?;
                }
            }
            self.dbs.superseded.put(&mut txn, &hash, origin.as_bytes())?;
        }
        self.set_state(&mut txn, entry, "dropped", by, at)?;
        txn.commit()?;
        Ok(())
    }
}
