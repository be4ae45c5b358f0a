//! Verifying and applying bundles: signature checks outside the write transaction,
//! then chain placement, holds, rejections and the record writes inside it.

use heed::RwTxn;
use serde_bytes::ByteBuf;

use super::{
    name_key, seq_key, u64_at, Halt, Outcome, Prepared, QuarantineEntry, RejectKind, Role, Status, Store, Verified,
    QUARANTINE_KEEP_OVERSIZED,
};
use crate::crypto::{self, SigCheck};
use crate::error::{CoreError, Result};
use crate::query;
use crate::record::Record;
use crate::registry::{KeyRole, Registry};
use crate::text;
use crate::validate::{self, TimeBounds};
use crate::wire::{self, Attestation, BodyHead, BundleBody, Envelope};

/// Whether an error is the store's own (it could not write at all) rather than a write
/// one bundle asked for and LMDB refused: the former stops the node, the latter only
/// that bundle's origin.
fn is_store_failure(e: &CoreError) -> bool {
    let text = e.to_string();
    ["MDB_MAP_FULL", "MDB_TXN_FULL", "MDB_READERS_FULL", "MDB_PANIC", "MDB_CORRUPTED", "No space left", "os error"]
        .iter()
        .any(|s| text.contains(s))
}

#[cfg(test)]
thread_local! {
    /// Tests: make writing this record's code fail as LMDB refuses an oversized key.
    pub(crate) static FAIL_WRITES_OF: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

impl Store {
    /// Decode and verify a batch, judged at `now` (the receiving tier's clock, µs).
    pub(super) fn prepare<'a>(&self, raws: &[&'a [u8]], registry: &Registry, now: u64) -> Vec<Prepared<'a>> {
        // First pass: decode envelopes and gather every signature to check, so the
        // whole batch is verified at once.
        struct Pending<'a> {
            raw: &'a [u8],
            envelope: Envelope,
            hash: [u8; 32],
            owner: String,
            first_check: usize,
        }
        let mut stage: Vec<std::result::Result<Pending<'a>, Prepared<'a>>> = Vec::with_capacity(raws.len());
        let mut checks: Vec<SigCheck<'_>> = Vec::new();
        let mut att_msgs: Vec<Vec<[u8; 40]>> = Vec::with_capacity(raws.len());
        let security = |raw: &'a [u8], reason: String, head: Option<BodyHead>, hash: Option<[u8; 32]>| {
            Prepared::Reject { kind: RejectKind::Security, reason, raw, head, hash }
        };
        for raw in raws {
            att_msgs.push(Vec::new());
            if raw.len() > self.opts.max_bundle_bytes {
                let reason = format!("oversized: {} bytes, limit {}", raw.len(), self.opts.max_bundle_bytes);
                stage.push(Err(security(raw, reason, None, None)));
                continue;
            }
            let envelope: Envelope = match wire::decode(raw, "envelope") {
                Ok(e) => e,
                Err(e) => {
                    stage.push(Err(security(raw, e.to_string(), None, None)));
                    continue;
                }
            };
            let hash = crypto::sha256(&envelope.body);
            // The head is decoded here only to describe a rejection.
            let head = || wire::decode::<BodyHead>(&envelope.body, "body").ok();
            let Some(key) = registry.key(&envelope.key_id) else {
                let reason = format!("unknown key {}", text::quoted(&envelope.key_id));
                stage.push(Err(security(raw, reason, head(), Some(hash))));
                continue;
            };
            let mut att_problem = None;
            for att in &envelope.attestations {
                match registry.usable_judged(&att.key_id, &att.centre, att.received_at, now) {
                    Ok(_) => {}
                    Err(p) => {
                        let (centre, key) = (text::quoted(&att.centre), text::quoted(&att.key_id));
                        att_problem = Some(format!("attestation by {centre} with key {key}: {p}"));
                        break;
                    }
                }
            }
            if let Some(reason) = att_problem {
                stage.push(Err(security(raw, reason, head(), Some(hash))));
                continue;
            }
            let owner = key.owner.clone();
            let first_check = usize::MAX; // filled in below, once borrows settle
            let msgs = att_msgs.last_mut().expect("pushed above");
            for att in &envelope.attestations {
                msgs.push(crypto::attestation_message(&hash, att.received_at));
            }
            stage.push(Ok(Pending { raw, envelope, hash, owner, first_check }));
        }
        // Second pass: build the signature checks (body signature, then attestations).
        for (i, item) in stage.iter_mut().enumerate() {
            if let Ok(p) = item {
                p.first_check = checks.len();
                let key = registry.key(&p.envelope.key_id).expect("looked up above").key;
                checks.push(SigCheck { key, message: &p.envelope.body, sig: &p.envelope.sig });
                for (att, msg) in p.envelope.attestations.iter().zip(&att_msgs[i]) {
                    let key = registry.key(&att.key_id).expect("looked up above").key;
                    checks.push(SigCheck { key, message: msg, sig: &att.sig });
                }
            }
        }
        let ok = crypto::verify_batch(&checks);
        drop(checks);
        stage
            .into_iter()
            .map(|item| match item {
                Err(prepared) => prepared,
                Ok(p) => {
                    let checked = &ok[p.first_check..=p.first_check + p.envelope.attestations.len()];
                    self.check_verified(p.raw, p.envelope, p.hash, &p.owner, checked, registry, now)
                }
            })
            .collect()
    }

    /// Everything after the signature checks: who signed, when, and what.
    #[allow(clippy::too_many_arguments)]
    fn check_verified<'a>(
        &self,
        raw: &'a [u8],
        envelope: Envelope,
        hash: [u8; 32],
        owner: &str,
        sig_ok: &[bool],
        registry: &Registry,
        now: u64,
    ) -> Prepared<'a> {
        // One decode of the whole body; only when it fails is the head decoded alone,
        // to place and describe the rejection.
        let decoded: std::result::Result<BundleBody, CoreError> = wire::decode(&envelope.body, "body");
        let head = match &decoded {
            Ok(body) => Some(BodyHead::of(body)),
            Err(_) => wire::decode::<BodyHead>(&envelope.body, "body").ok(),
        };
        let security = |reason: String, head: Option<BodyHead>| Prepared::Reject {
            kind: RejectKind::Security,
            reason,
            raw,
            head,
            hash: Some(hash),
        };
        if !sig_ok[0] {
            return security(format!("bad signature for key {}", text::quoted(&envelope.key_id)), head);
        }
        if let Some(i) = sig_ok[1..].iter().position(|ok| !ok) {
            let centre = text::quoted(&envelope.attestations[i].centre);
            return security(format!("bad attestation signature by {centre}"), head);
        }
        if self.opts.require_attestation && envelope.attestations.is_empty() {
            return security("no centre attestation".into(), head);
        }
        let Some(head) = head else {
            // Validly signed by an origin, yet undecodable: the origin is at fault.
            let reason = decoded.err().map_or_else(|| "undecodable body".into(), |e| e.to_string());
            return self.signed_but_wrong(raw, owner, reason, None, hash);
        };
        let key_id = text::quoted(&envelope.key_id);
        if head.origin != owner {
            let reason = format!("key {key_id} belongs to {owner}, not to origin {}", text::quoted(&head.origin));
            return security(reason, Some(head));
        }
        let bounds = TimeBounds { now, skew: self.opts.max_skew_us };
        // Not this centre's to carry: a bundle routed to a centre that does not serve
        // its prefecture (DESIGN.md §7).
        if registry.key(&envelope.key_id).map(|k| k.role) != Some(KeyRole::Origin) {
            return security(format!("key {key_id} is a centre's: only origin keys sign bundles"), Some(head));
        }
        let prefecture = head.origin.get(..2).unwrap_or_default();
        if let Some(served) = self.opts.prefectures.as_ref().filter(|_| self.opts.role == Role::Aggregator) {
            if !served.iter().any(|p| p == prefecture) {
                let reason = format!("origin {owner} is in prefecture {prefecture}, which this centre does not serve");
                return security(reason, Some(head));
            }
        }
        // Only centre keys attest, only for the prefectures their centre serves, and
        // never from the future of this tier's clock.
        for att in &envelope.attestations {
            let (centre, att_key) = (text::quoted(&att.centre), text::quoted(&att.key_id));
            if let Err(problem) = registry.attester(&att.key_id, &att.centre, prefecture, att.received_at, now) {
                return security(format!("attestation by {centre} with key {att_key}: {problem}"), Some(head));
            }
            if att.received_at > bounds.latest() {
                let reason = format!(
                    "attestation by {centre}: received_at {} is later than this tier's clock {now} allows",
                    att.received_at
                );
                return security(reason, Some(head));
            }
        }
        // Revocation is judged at a time the origin cannot choose: the first centre's
        // attested receive time, or this tier's own clock (DESIGN.md §7).
        let trusted_at = envelope.attestations.first().map_or(now, |a| a.received_at);
        if let Err(problem) = registry.usable_judged(&envelope.key_id, owner, head.created_at, trusted_at) {
            return security(
                format!("key {key_id} at created_at {} (received {trusted_at}): {problem}", head.created_at),
                Some(head),
            );
        }
        let body = match decoded {
            Ok(b) => b,
            Err(e) => return self.signed_but_wrong(raw, owner, e.to_string(), Some(head), hash),
        };
        let mut problem = validate::body_problem(&body, &bounds);
        for (field, value) in [("prev_hash", Some(&head.prev_hash)), ("supersedes", head.supersedes.as_ref())] {
            if let Some(v) = value.filter(|v| v.len() != 32) {
                problem.get_or_insert(format!("{field}: expected 32 bytes, got {}", v.len()));
            }
        }
        Prepared::Ok(Box::new(Verified { raw, envelope, hash, head, body, problem }))
    }

    fn signed_but_wrong<'a>(
        &self,
        raw: &'a [u8],
        owner: &str,
        reason: String,
        head: Option<BodyHead>,
        hash: [u8; 32],
    ) -> Prepared<'a> {
        // Only an origin's own key can halt that origin; a centre's key cannot.
        let kind =
            if crate::codes::is_valid_local_government_code(owner) { RejectKind::Halt } else { RejectKind::Security };
        let head = head.or_else(|| {
            Some(BodyHead {
                origin: owner.into(),
                first_seq: 0,
                last_seq: 0,
                prev_hash: wire::Bin::new(),
                created_at: 0,
                supersedes: None,
            })
        });
        Prepared::Reject { kind, reason, raw, head, hash: Some(hash) }
    }

    // ---- apply ---------------------------------------------------------------------

    /// Verify and apply a batch of envelopes in one write transaction.
    ///
    /// A failure that is not a verdict (the store refused a write one bundle asked for)
    /// must not stop every origin: the batch is then applied again one bundle at a
    /// time, and a bundle that still fails is quarantined with the error, halting only
    /// its origin. Failures of the store itself (map full, disk) still end the call.
    pub fn apply(&self, raws: &[&[u8]], received_at: u64) -> Result<Vec<Outcome>> {
        self.apply_marking_forwarded(raws, received_at, &[])
    }

    /// `apply`, also forgetting the forwards `forwarded` (ids national confirmed) in
    /// the same commit: an aggregator then pays no durable commit of its own for them.
    pub fn apply_marking_forwarded(&self, raws: &[&[u8]], received_at: u64, forwarded: &[u64]) -> Result<Vec<Outcome>> {
        self.can_apply()?;
        match self.apply_batch(raws, received_at, forwarded) {
            Err(e) if !is_store_failure(&e) => {
                if !forwarded.is_empty() {
                    self.forward_done(forwarded)?;
                }
                raws.iter().map(|raw| self.apply_contained(raw, received_at)).collect()
            }
            other => other,
        }
    }

    fn apply_batch(&self, raws: &[&[u8]], received_at: u64, forwarded: &[u64]) -> Result<Vec<Outcome>> {
        let registry = self.registry();
        let prepared = self.prepare(raws, &registry, received_at);
        let mut txn = self.env.write_txn()?;
        let mut outcomes = Vec::with_capacity(prepared.len());
        let mut records = Vec::new();
        for p in prepared {
            let outcome = self.apply_prepared(&mut txn, p, received_at, &registry, &mut records)?;
            outcomes.push(outcome);
        }
        self.write_records(&mut txn, records)?;
        self.delete_forwarded(&mut txn, forwarded)?;
        txn.commit()?;
        Ok(outcomes)
    }

    /// One bundle alone; if applying it fails, quarantine it with the error instead.
    fn apply_contained(&self, raw: &[u8], received_at: u64) -> Result<Outcome> {
        let error = match self.apply_batch(&[raw], received_at, &[]) {
            Ok(mut outcomes) => return Ok(outcomes.pop().expect("one in, one out")),
            Err(e) if is_store_failure(&e) => return Err(e),
            Err(e) => e,
        };
        let registry = self.registry();
        let (kind, head, hash) = match self.prepare(&[raw], &registry, received_at).pop().expect("one in, one out") {
            Prepared::Ok(v) => (RejectKind::Halt, Some(v.head), Some(v.hash)),
            Prepared::Reject { kind, head, hash, .. } => (kind, head, hash),
        };
        let reason = format!("could not be applied: {}", crate::text::capped(&error.to_string()));
        let mut txn = self.env.write_txn()?;
        let outcome = self.reject(&mut txn, kind, reason, raw, head.as_ref(), hash, received_at)?;
        let counter = if kind == RejectKind::Halt { "rejected_halt" } else { "rejected_security" };
        self.bump(&mut txn, counter, 1)?;
        txn.commit()?;
        Ok(outcome)
    }

    fn apply_prepared(
        &self,
        txn: &mut RwTxn,
        p: Prepared<'_>,
        received_at: u64,
        registry: &Registry,
        records: &mut Vec<Record>,
    ) -> Result<Outcome> {
        let outcome = match p {
            Prepared::Reject { kind, reason, raw, head, hash } => {
                self.reject(txn, kind, reason, raw, head.as_ref(), hash, received_at)?
            }
            Prepared::Ok(v) => {
                let origin = v.head.origin.clone();
                let mut outcome = self.apply_verified(txn, &v, received_at, false, records)?;
                if outcome.status == Status::Applied {
                    (outcome.released, outcome.pending_rejected) =
                        self.drain_pending(txn, &origin, received_at, registry, records)?;
                }
                outcome
            }
        };
        self.count(txn, &outcome)?;
        Ok(outcome)
    }

    /// The store's counter of an outcome (applied bundles are counted as committed).
    fn count(&self, txn: &mut RwTxn, outcome: &Outcome) -> Result<()> {
        let counter = match (outcome.status, outcome.kind) {
            (Status::Applied, _) => None,
            (Status::Duplicate, _) => Some("duplicates"),
            (Status::Gap, _) => Some("gaps"),
            (Status::Rejected, Some(RejectKind::Halt)) => Some("rejected_halt"),
            (Status::Rejected, _) => Some("rejected_security"),
        };
        if let Some(c) = counter {
            self.bump(txn, c, 1)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &self,
        txn: &mut RwTxn,
        kind: RejectKind,
        reason: String,
        raw: &[u8],
        head: Option<&BodyHead>,
        hash: Option<[u8; 32]>,
        received_at: u64,
    ) -> Result<Outcome> {
        // Reasons go to the log and the quarantine entry: never a 100 kB field whole.
        let reason = text::capped(&reason);
        let id = self.next_id(txn, "next_quarantine_id")?;
        let keep =
            if raw.len() > self.opts.max_bundle_bytes { &raw[..QUARANTINE_KEEP_OVERSIZED.min(raw.len())] } else { raw };
        let entry = QuarantineEntry {
            id,
            received_at,
            kind,
            reason: reason.clone(),
            origin: head.map(|h| h.origin.clone()),
            first_seq: head.map(|h| h.first_seq).filter(|s| *s > 0),
            last_seq: head.map(|h| h.last_seq).filter(|s| *s > 0),
            hash: hash.map(|h| ByteBuf::from(h.to_vec())),
            state: "open".into(),
            size: raw.len() as u64,
            envelope: ByteBuf::from(keep.to_vec()),
            actions: Vec::new(),
        };
        self.dbs.quarantine.put(txn, &id.to_be_bytes(), &wire::encode(&entry)?)?;
        if kind == RejectKind::Halt {
            if let Some(origin) = head.map(|h| h.origin.as_str()) {
                if self.dbs.halts.get(txn, origin.as_bytes())?.is_none() {
                    let halt =
                        Halt { quarantine_id: id, reason: reason.clone(), since: received_at, dropped_hash: None };
                    self.dbs.halts.put(txn, origin.as_bytes(), &wire::encode(&halt)?)?;
                }
            }
        }
        let mut outcome = Outcome::new(Status::Rejected, head, hash).with_reason(reason);
        if outcome.first_seq == Some(0) {
            outcome.first_seq = None;
            outcome.last_seq = None;
        }
        outcome.kind = Some(kind);
        outcome.quarantine_id = Some(id);
        Ok(outcome)
    }

    pub(super) fn apply_verified(
        &self,
        txn: &mut RwTxn,
        v: &Verified<'_>,
        received_at: u64,
        releasing: bool,
        records: &mut Vec<Record>,
    ) -> Result<Outcome> {
        let origin = v.head.origin.as_str();
        let (head_seq, head_hash) = self.head(txn, origin)?;
        let fork = |store: &Self, txn: &mut RwTxn, why: String| {
            store.reject(txn, RejectKind::Halt, format!("fork: {why}"), v.raw, Some(&v.head), Some(v.hash), received_at)
        };
        if self.dbs.superseded.get(txn, &v.head.prev_hash)?.is_some()
            || self.dbs.superseded.get(txn, &v.hash)?.is_some()
        {
            // A descendant of a dropped bundle: its range is being re-issued.
            self.dbs.superseded.put(txn, &v.hash, origin.as_bytes())?;
            return Ok(Outcome::new(Status::Duplicate, Some(&v.head), Some(v.hash))
                .with_reason("superseded by a re-issued bundle"));
        }
        if v.head.last_seq <= head_seq {
            let stored = self.dbs.changelog.get(txn, &seq_key(origin, v.head.last_seq))?;
            return match stored {
                Some(entry) if u64_at(entry, 0) == v.head.first_seq && entry[8..40] == v.hash => {
                    let mut o = Outcome::new(Status::Duplicate, Some(&v.head), Some(v.hash));
                    o.updates = v.body.updates.len();
                    Ok(o)
                }
                // Pruned after a checkpoint: below the retained log nothing can be told
                // apart any more, and nothing below the head can change the store.
                None if self.floor_in(txn, origin)?.is_some_and(|f| v.head.last_seq < f.first_kept) => {
                    Ok(Outcome::new(Status::Duplicate, Some(&v.head), Some(v.hash))
                        .with_reason("below the retention checkpoint (pruned from the change log)"))
                }
                _ => fork(
                    self,
                    txn,
                    format!("seqs {}..{} were applied with other content", v.head.first_seq, v.head.last_seq),
                ),
            };
        }
        if v.head.first_seq <= head_seq {
            return fork(
                self,
                txn,
                format!("seqs {}..{} overlap the applied head {head_seq}", v.head.first_seq, v.head.last_seq),
            );
        }
        let mut replacing = false;
        if !releasing {
            if let Some(raw_halt) = self.dbs.halts.get(txn, origin.as_bytes())? {
                let halt: Halt = wire::decode(raw_halt, "halt")?;
                let replaces = halt.dropped_hash.is_some()
                    && v.head.supersedes.as_ref().map(|s| s.as_ref()) == halt.dropped_hash.as_ref().map(|d| d.as_ref())
                    && v.head.first_seq == head_seq + 1;
                if !replaces {
                    self.hold(txn, v)?;
                    let mut o = Outcome::new(Status::Gap, Some(&v.head), Some(v.hash));
                    o.reason = Some(format!("origin halted: {}", halt.reason));
                    return Ok(o);
                }
                replacing = true;
            }
        }
        if v.head.first_seq > head_seq + 1 {
            self.hold(txn, v)?;
            let mut o = Outcome::new(Status::Gap, Some(&v.head), Some(v.hash)).with_reason(format!(
                "missing seqs {}..{}",
                head_seq + 1,
                v.head.first_seq - 1
            ));
            o.resend_from = Some(head_seq + 1);
            return Ok(o);
        }
        if v.head.prev_hash.as_slice() != head_hash {
            return fork(self, txn, format!("prev_hash does not match the head at seq {head_seq}"));
        }
        if !releasing {
            if let Some(problem) = &v.problem {
                return self.reject(
                    txn,
                    RejectKind::Halt,
                    problem.clone(),
                    v.raw,
                    Some(&v.head),
                    Some(v.hash),
                    received_at,
                );
            }
        }
        self.commit_bundle(txn, v, received_at, records)?;
        if replacing {
            self.dbs.halts.delete(txn, origin.as_bytes())?;
        }
        let mut o = Outcome::new(Status::Applied, Some(&v.head), Some(v.hash));
        o.updates = v.body.updates.len();
        Ok(o)
    }

    /// Keep a bundle that cannot be applied yet in the pending area, bounded per origin;
    /// past the bound it is not kept (the publisher still has it and will resend).
    fn hold(&self, txn: &mut RwTxn, v: &Verified<'_>) -> Result<()> {
        let origin = v.head.origin.as_bytes();
        let key = seq_key(&v.head.origin, v.head.first_seq);
        let held = self.dbs.pending.prefix_iter(txn, origin)?.take(self.opts.pending_limit).count();
        if held < self.opts.pending_limit || self.dbs.pending.get(txn, &key)?.is_some() {
            self.dbs.pending.put(txn, &key, v.raw)?;
        }
        Ok(())
    }

    /// Apply what waits in pending after the origin's head, in order. Returns how many
    /// were applied and, if one was rejected on the way (quarantined and counted like a
    /// delivered one; a halt stops the drain), its outcome.
    pub(super) fn drain_pending(
        &self,
        txn: &mut RwTxn,
        origin: &str,
        received_at: u64,
        registry: &Registry,
        records: &mut Vec<Record>,
    ) -> Result<(usize, Option<Box<Outcome>>)> {
        let mut released = 0;
        loop {
            if self.dbs.halts.get(txn, origin.as_bytes())?.is_some() {
                return Ok((released, None));
            }
            let (head_seq, _) = self.head(txn, origin)?;
            self.forget_passed_pending(txn, origin, head_seq)?;
            let key = seq_key(origin, head_seq + 1);
            let Some(raw) = self.dbs.pending.get(txn, &key)?.map(<[u8]>::to_vec) else {
                return Ok((released, None));
            };
            self.dbs.pending.delete(txn, &key)?;
            let prepared = self.prepare(&[&raw], registry, received_at).pop().expect("one in, one out");
            let outcome = match prepared {
                Prepared::Reject { kind, reason, raw, head, hash } => {
                    self.reject(txn, kind, reason, raw, head.as_ref(), hash, received_at)?
                }
                Prepared::Ok(v) => self.apply_verified(txn, &v, received_at, false, records)?,
            };
            match outcome.status {
                Status::Applied => released += 1,
                Status::Duplicate => {}
                Status::Rejected => {
                    self.count(txn, &outcome)?;
                    return Ok((released, Some(Box::new(outcome))));
                }
                Status::Gap => return Ok((released, None)),
            }
        }
    }

    /// Queue every update's record for `write_records`, advance the chain head, log the
    /// envelope and (aggregator) queue it, attested, for forwarding.
    fn commit_bundle(
        &self,
        txn: &mut RwTxn,
        v: &Verified<'_>,
        received_at: u64,
        records: &mut Vec<Record>,
    ) -> Result<()> {
        let origin = v.head.origin.as_str();
        for update in &v.body.updates {
            let record = Record::from_update(update, origin);
            if let Some(old_code) = &update.previous_juminhyo_code {
                records.push(record.redirect_from(old_code));
                let mut link = Vec::with_capacity(update.juminhyo_code.len() + old_code.len());
                link.extend_from_slice(update.juminhyo_code.as_bytes());
                link.extend_from_slice(old_code.as_bytes());
                self.dbs.former_codes.put(txn, &link, &[])?;
            }
            records.push(record);
        }
        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(&v.head.last_seq.to_be_bytes());
        head.extend_from_slice(&v.hash);
        self.dbs.heads.put(txn, origin.as_bytes(), &head)?;

        let logged: std::borrow::Cow<'_, [u8]> = match self.centre_at(received_at) {
            Some(centre) if self.opts.role == Role::Aggregator => {
                let msg = crypto::attestation_message(&v.hash, received_at);
                let sig = ed25519_dalek::Signer::sign(&centre.key, &msg).to_bytes();
                let mut envelope = v.envelope.clone();
                envelope.attestations.push(Attestation {
                    centre: centre.id.clone(),
                    key_id: centre.key_id.clone(),
                    received_at,
                    sig: wire::Bin::from(sig.to_vec()),
                });
                // The outbox names the change-log entry rather than copying the envelope.
                let id = self.next_id(txn, "next_forward_id")?;
                self.dbs.forward.put(txn, &id.to_be_bytes(), &seq_key(origin, v.head.last_seq))?;
                wire::encode(&envelope)?.into()
            }
            _ => v.raw.into(),
        };
        let mut entry = Vec::with_capacity(40 + logged.len());
        entry.extend_from_slice(&v.head.first_seq.to_be_bytes());
        entry.extend_from_slice(&v.hash);
        entry.extend_from_slice(&logged);
        self.dbs.changelog.put(txn, &seq_key(origin, v.head.last_seq), &entry)?;
        self.bump(txn, "applied_bundles", 1)?;
        self.bump(txn, "applied_updates", v.body.updates.len() as u64)?;
        Ok(())
    }

    /// Write the records of every bundle the batch applied, under the conflict rule: a
    /// record changes only for a higher version. Since the outcome per code is the
    /// highest version whatever the order, records are written in code order (B-tree
    /// locality), once per code, and index entries change only where their keys do.
    pub(super) fn write_records(&self, txn: &mut RwTxn, candidates: Vec<Record>) -> Result<()> {
        // Sorted by reference: moving the records themselves (~330 bytes each) was a
        // visible share of the profile.
        let mut sorted: Vec<&Record> = candidates.iter().collect();
        sorted
            .sort_unstable_by(|a, b| a.juminhyo_code.cmp(&b.juminhyo_code).then_with(|| a.version().cmp(&b.version())));
        let candidates = sorted;
        let mut number_deletes: Vec<(String, String)> = Vec::new();
        let mut number_puts: Vec<(String, String)> = Vec::new();
        let mut name_deletes: Vec<(Vec<u8>, String)> = Vec::new();
        let mut name_puts: Vec<(Vec<u8>, String)> = Vec::new();
        let mut text_deletes: Vec<(Vec<u8>, String)> = Vec::new();
        let mut text_puts: Vec<(Vec<u8>, String)> = Vec::new();
        let mut merkle = super::merkle::Delta::default();
        let mut i = 0;
        while i < candidates.len() {
            let code = &candidates[i].juminhyo_code;
            let mut last = i;
            while last + 1 < candidates.len() && candidates[last + 1].juminhyo_code == *code {
                last += 1;
            }
            let existing_raw = self.dbs.records.get(txn, code.as_bytes())?.map(<[u8]>::to_vec);
            let existing: Option<Record> = existing_raw.as_deref().map(|r| wire::decode(r, "record")).transpose()?;
            // Fold the candidates, in version order, over the stored record under the
            // conflict rule (`Record::supersedes`).
            let mut winner: Option<&Record> = existing.as_ref();
            for &candidate in &candidates[i..=last] {
                if winner.is_none_or(|w| candidate.supersedes(w)) {
                    winner = Some(candidate);
                }
            }
            let best = match winner {
                Some(w) if existing.as_ref() != Some(w) => w,
                _ => {
                    i = last + 1;
                    continue;
                }
            };
            #[cfg(test)]
            if FAIL_WRITES_OF.with(|f| f.borrow().as_deref() == Some(code.as_str())) {
                return Err(CoreError::Store("MDB_BAD_VALSIZE: injected by a test".into()));
            }
            {
                let encoded = wire::encode(best)?;
                if let Some(raw) = &existing_raw {
                    merkle.record(code.as_bytes(), raw, false)?;
                }
                merkle.record(code.as_bytes(), &encoded, true)?;
                self.dbs.records.put(txn, code.as_bytes(), &encoded)?;
                let old = existing.as_ref().filter(|r| r.is_indexed());
                let new = Some(best).filter(|r| r.is_indexed());
                let (old_number, new_number) = (old.map(|r| &r.kojin_bango), new.map(|r| &r.kojin_bango));
                if old_number != new_number {
                    number_deletes.extend(old_number.map(|k| (k.clone(), code.clone())));
                    number_puts.extend(new_number.map(|k| (k.clone(), code.clone())));
                }
                // Search keys are normalised text (NFKC); compare the raw fields first so
                // the usual change (an address, a status) normalises nothing.
                let same_person = |a: &Record, b: &Record| a.birth_date == b.birth_date && a.sex == b.sex;
                let reading_kept =
                    matches!((old, new), (Some(a), Some(b)) if same_person(a, b) && a.name_kana == b.name_kana);
                if !reading_kept {
                    let (old_name, new_name) = (old.map(name_key), new.map(name_key));
                    if old_name != new_name {
                        name_deletes.extend(old_name.map(|k| (k, code.clone())));
                        name_puts.extend(new_name.map(|k| (k, code.clone())));
                    }
                }
                let names_kept = matches!((old, new), (Some(a), Some(b)) if same_person(a, b) && a.name == b.name && a.alias == b.alias);
                if !names_kept {
                    let old_text = old.map(query::name_keys).unwrap_or_default();
                    let new_text = new.map(query::name_keys).unwrap_or_default();
                    if old_text != new_text {
                        text_deletes.extend(old_text.into_iter().map(|k| (k, code.clone())));
                        text_puts.extend(new_text.into_iter().map(|k| (k, code.clone())));
                    }
                }
            }
            i = last + 1;
        }
        merkle.write(self, txn)?;
        // Every index holds (key, code) pairs, one per indexed record and key: deleting
        // a code's old pair never touches another record's (the 個人番号 index once kept
        // one code per number, and lost residents when two records held one number).
        number_deletes.sort_unstable();
        for (number, code) in &number_deletes {
            self.dbs.by_number.delete_one_duplicate(txn, number.as_bytes(), code.as_bytes())?;
        }
        for (db, deletes) in [(self.dbs.by_name, &mut name_deletes), (self.dbs.by_name_text, &mut text_deletes)] {
            deletes.sort_unstable();
            for (key, code) in deletes.iter() {
                db.delete_one_duplicate(txn, key, code.as_bytes())?;
            }
        }
        number_puts.sort_unstable();
        for (number, code) in &number_puts {
            self.dbs.by_number.put(txn, number.as_bytes(), code.as_bytes())?;
        }
        for (db, puts) in [(self.dbs.by_name, &mut name_puts), (self.dbs.by_name_text, &mut text_puts)] {
            puts.sort_unstable();
            for (key, code) in puts.iter() {
                db.put(txn, key, code.as_bytes())?;
            }
        }
        Ok(())
    }
}
