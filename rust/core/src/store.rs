//! The tier store (DESIGN.md §3–4): one LMDB environment with named databases, and
//! `apply`, which verifies and applies a batch of bundles in one write transaction.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use heed::types::Bytes;
use heed::{Database, DatabaseFlags, Env, EnvOpenOptions, RoTxn, RwTxn};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::crypto::{self, SigCheck};
use crate::error::{CoreError, Result};
use crate::record::{self, Record};
use crate::registry::Registry;
use crate::text;
use crate::validate;
use crate::wire::{self, Attestation, BodyHead, BundleBody, Envelope, ZERO_HASH};

type Db = Database<Bytes, Bytes>;

pub const SCHEMA_VERSION: &[u8] = b"1";
/// How much of an oversized message is kept in quarantine for the operator to see.
const QUARANTINE_KEEP_OVERSIZED: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Aggregator,
    National,
}

/// The signing identity an aggregation centre attests forwarded bundles with.
pub struct Centre {
    pub id: String,
    pub key_id: String,
    pub key: SigningKey,
}

pub struct StoreOptions {
    pub role: Role,
    pub centre: Option<Centre>,
    pub map_size: usize,
    pub max_bundle_bytes: usize,
    pub pending_limit: usize,
    pub require_attestation: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Applied,
    Duplicate,
    Gap,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Duplicate => "duplicate",
            Status::Gap => "gap",
            Status::Rejected => "rejected",
        }
    }
}

/// Why a bundle was rejected: not from its origin (a security event, nothing halts)
/// or from its origin but wrong (the origin halts until an operator resolves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectKind {
    Security,
    Halt,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Security => "security",
            RejectKind::Halt => "halt",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub origin: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub hash: Option<[u8; 32]>,
    pub updates: usize,
    pub reason: Option<String>,
    pub kind: Option<RejectKind>,
    pub resend_from: Option<u64>,
    pub quarantine_id: Option<u64>,
    pub released: usize,
}

impl Outcome {
    fn new(status: Status, head: Option<&BodyHead>, hash: Option<[u8; 32]>) -> Self {
        Outcome {
            status,
            origin: head.map(|h| h.origin.clone()),
            first_seq: head.map(|h| h.first_seq),
            last_seq: head.map(|h| h.last_seq),
            hash,
            updates: 0,
            reason: None,
            kind: None,
            resend_from: None,
            quarantine_id: None,
            released: 0,
        }
    }

    fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub id: u64,
    pub received_at: u64,
    pub kind: RejectKind,
    pub reason: String,
    pub origin: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub hash: Option<ByteBuf>,
    pub state: String,
    pub size: u64,
    pub envelope: ByteBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Halt {
    quarantine_id: u64,
    reason: String,
    since: u64,
    /// Set once the operator dropped the halting bundle: the origin then resumes with
    /// a bundle whose `supersedes` is this hash.
    dropped_hash: Option<ByteBuf>,
}

/// A bundle past its signature checks, waiting for its place in the chain.
struct Verified<'a> {
    raw: &'a [u8],
    envelope: Envelope,
    hash: [u8; 32],
    head: BodyHead,
    body: BundleBody,
    problem: Option<String>,
}

enum Prepared<'a> {
    Reject { kind: RejectKind, reason: String, raw: &'a [u8], head: Option<BodyHead>, hash: Option<[u8; 32]> },
    Ok(Box<Verified<'a>>),
}

struct Dbs {
    records: Db,
    by_number: Db,
    by_name: Db,
    heads: Db,
    changelog: Db,
    pending: Db,
    forward: Db,
    quarantine: Db,
    halts: Db,
    superseded: Db,
    meta: Db,
}

pub struct Store {
    env: Env,
    dbs: Dbs,
    opts: StoreOptions,
    registry: RwLock<Arc<Registry>>,
}

fn seq_key(origin: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(origin.len() + 8);
    k.extend_from_slice(origin.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn name_key(r: &Record) -> Vec<u8> {
    let mut k = text::normalize_reading(&r.name_kana).into_bytes();
    k.push(0);
    k.extend_from_slice(r.birth_date.as_bytes());
    k.push(0);
    k.push(b'0' + r.sex);
    k
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

const COUNTERS: [&str; 6] =
    ["applied_bundles", "applied_updates", "duplicates", "gaps", "rejected_security", "rejected_halt"];

impl Store {
    pub fn open(path: &Path, registry: Registry, opts: StoreOptions) -> Result<Self> {
        if opts.role == Role::Aggregator && opts.centre.is_none() {
            return Err(CoreError::Store("an aggregator store needs its centre id and signing key".into()));
        }
        std::fs::create_dir_all(path).map_err(|e| CoreError::Store(format!("{}: {e}", path.display())))?;
        // SAFETY: LMDB forbids opening one environment twice in a process; jukisync
        // gives every tier store exactly one owner (DESIGN.md §4), this object.
        #[allow(unsafe_code)]
        let env = unsafe { EnvOpenOptions::new().map_size(opts.map_size).max_dbs(16).open(path)? };
        let mut txn = env.write_txn()?;
        let mut create = |name: &str, flags: DatabaseFlags| -> Result<Db> {
            Ok(env.database_options().types::<Bytes, Bytes>().name(name).flags(flags).create(&mut txn)?)
        };
        let none = DatabaseFlags::empty();
        let dbs = Dbs {
            records: create("records", none)?,
            by_number: create("by_number", none)?,
            by_name: create("by_name", DatabaseFlags::DUP_SORT)?,
            heads: create("heads", none)?,
            changelog: create("changelog", none)?,
            pending: create("pending", none)?,
            forward: create("forward", none)?,
            quarantine: create("quarantine", none)?,
            halts: create("halts", none)?,
            superseded: create("superseded", none)?,
            meta: create("meta", none)?,
        };
        match dbs.meta.get(&txn, b"schema_version")? {
            None => dbs.meta.put(&mut txn, b"schema_version", SCHEMA_VERSION)?,
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(CoreError::Store(format!(
                    "schema version {} on disk, this build reads {}",
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(SCHEMA_VERSION)
                )))
            }
        }
        txn.commit()?;
        Ok(Store { env, dbs, opts, registry: RwLock::new(Arc::new(registry)) })
    }

    pub fn role(&self) -> Role {
        self.opts.role
    }

    pub fn set_registry(&self, registry: Registry) {
        *self.registry.write().expect("registry lock") = Arc::new(registry);
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    // ---- verification (outside the write transaction) ----------------------------

    fn prepare<'a>(&self, raws: &[&'a [u8]], registry: &Registry) -> Vec<Prepared<'a>> {
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
            let head: Option<BodyHead> = wire::decode(&envelope.body, "body").ok();
            let Some(key) = registry.key(&envelope.key_id) else {
                let reason = format!("unknown key {:?}", envelope.key_id);
                stage.push(Err(security(raw, reason, head, Some(hash))));
                continue;
            };
            let mut att_problem = None;
            for att in &envelope.attestations {
                match registry.usable(&att.key_id, &att.centre, att.received_at) {
                    Ok(_) => {}
                    Err(p) => {
                        att_problem = Some(format!("attestation by {:?} with key {:?}: {p}", att.centre, att.key_id));
                        break;
                    }
                }
            }
            if let Some(reason) = att_problem {
                stage.push(Err(security(raw, reason, head, Some(hash))));
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
                    self.check_verified(p.raw, p.envelope, p.hash, &p.owner, checked, registry)
                }
            })
            .collect()
    }

    /// Everything after the signature checks: who signed, when, and what.
    fn check_verified<'a>(
        &self,
        raw: &'a [u8],
        envelope: Envelope,
        hash: [u8; 32],
        owner: &str,
        sig_ok: &[bool],
        registry: &Registry,
    ) -> Prepared<'a> {
        let head: Option<BodyHead> = wire::decode(&envelope.body, "body").ok();
        let security = |reason: String, head: Option<BodyHead>| Prepared::Reject {
            kind: RejectKind::Security,
            reason,
            raw,
            head,
            hash: Some(hash),
        };
        if !sig_ok[0] {
            return security(format!("bad signature for key {:?}", envelope.key_id), head);
        }
        if let Some(i) = sig_ok[1..].iter().position(|ok| !ok) {
            return security(format!("bad attestation signature by {:?}", envelope.attestations[i].centre), head);
        }
        if self.opts.require_attestation && envelope.attestations.is_empty() {
            return security("no centre attestation".into(), head);
        }
        let Some(head) = head else {
            // Validly signed by an origin, yet undecodable: the origin is at fault.
            let reason = match wire::decode::<BodyHead>(&envelope.body, "body") {
                Err(e) => e.to_string(),
                Ok(_) => unreachable!("decoded above"),
            };
            return self.signed_but_wrong(raw, owner, reason, None, hash);
        };
        if head.origin != owner {
            let reason = format!("key {:?} belongs to {owner}, not to origin {}", envelope.key_id, head.origin);
            return security(reason, Some(head));
        }
        if let Err(problem) = registry.usable(&envelope.key_id, owner, head.created_at) {
            return security(
                format!("key {:?} at created_at {}: {problem}", envelope.key_id, head.created_at),
                Some(head),
            );
        }
        let body: BundleBody = match wire::decode(&envelope.body, "body") {
            Ok(b) => b,
            Err(e) => return self.signed_but_wrong(raw, owner, e.to_string(), Some(head), hash),
        };
        let mut problem = validate::body_problem(&body);
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
    pub fn apply(&self, raws: &[&[u8]], received_at: u64) -> Result<Vec<Outcome>> {
        let registry = self.registry();
        let prepared = self.prepare(raws, &registry);
        let mut txn = self.env.write_txn()?;
        let mut outcomes = Vec::with_capacity(prepared.len());
        for p in prepared {
            let outcome = self.apply_prepared(&mut txn, p, received_at, &registry)?;
            outcomes.push(outcome);
        }
        txn.commit()?;
        Ok(outcomes)
    }

    fn apply_prepared(
        &self,
        txn: &mut RwTxn,
        p: Prepared<'_>,
        received_at: u64,
        registry: &Registry,
    ) -> Result<Outcome> {
        let outcome = match p {
            Prepared::Reject { kind, reason, raw, head, hash } => {
                self.reject(txn, kind, reason, raw, head.as_ref(), hash, received_at)?
            }
            Prepared::Ok(v) => {
                let origin = v.head.origin.clone();
                let mut outcome = self.apply_verified(txn, &v, received_at, false)?;
                if outcome.status == Status::Applied {
                    outcome.released = self.drain_pending(txn, &origin, received_at, registry)?;
                }
                outcome
            }
        };
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
        Ok(outcome)
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

    fn apply_verified(&self, txn: &mut RwTxn, v: &Verified<'_>, received_at: u64, releasing: bool) -> Result<Outcome> {
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
        self.commit_bundle(txn, v, received_at)?;
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

    fn drain_pending(&self, txn: &mut RwTxn, origin: &str, received_at: u64, registry: &Registry) -> Result<usize> {
        let mut released = 0;
        loop {
            if self.dbs.halts.get(txn, origin.as_bytes())?.is_some() {
                return Ok(released);
            }
            let (head_seq, _) = self.head(txn, origin)?;
            let key = seq_key(origin, head_seq + 1);
            let Some(raw) = self.dbs.pending.get(txn, &key)?.map(<[u8]>::to_vec) else {
                return Ok(released);
            };
            self.dbs.pending.delete(txn, &key)?;
            let prepared = self.prepare(&[&raw], registry).pop().expect("one in, one out");
            let outcome = match prepared {
                Prepared::Reject { kind, reason, raw, head, hash } => {
                    self.reject(txn, kind, reason, raw, head.as_ref(), hash, received_at)?
                }
                Prepared::Ok(v) => self.apply_verified(txn, &v, received_at, false)?,
            };
            match outcome.status {
                Status::Applied => released += 1,
                Status::Duplicate => {}
                _ => return Ok(released),
            }
        }
    }

    /// Apply every update, advance the chain head, log the envelope and (aggregator)
    /// queue the attested envelope for forwarding.
    fn commit_bundle(&self, txn: &mut RwTxn, v: &Verified<'_>, received_at: u64) -> Result<()> {
        let origin = v.head.origin.as_str();
        for update in &v.body.updates {
            self.apply_update(txn, update, origin)?;
        }
        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(&v.head.last_seq.to_be_bytes());
        head.extend_from_slice(&v.hash);
        self.dbs.heads.put(txn, origin.as_bytes(), &head)?;

        let logged: std::borrow::Cow<'_, [u8]> = match &self.opts.centre {
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
                let bytes = wire::encode(&envelope)?;
                let id = self.next_id(txn, "next_forward_id")?;
                self.dbs.forward.put(txn, &id.to_be_bytes(), &bytes)?;
                bytes.into()
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

    /// The conflict rule: a record changes only for a higher version.
    fn apply_update(&self, txn: &mut RwTxn, u: &wire::Update, origin: &str) -> Result<()> {
        let new = Record::from_update(u, origin);
        let existing = self.record(txn, &u.juminhyo_code)?;
        if existing.as_ref().is_none_or(|e| e.version() < new.version()) {
            self.put_record(txn, &new, existing.as_ref())?;
        }
        if let Some(old_code) = &u.previous_juminhyo_code {
            let redirect = new.redirect_from(old_code);
            let existing_old = self.record(txn, old_code)?;
            if existing_old.as_ref().is_none_or(|e| e.version() < redirect.version()) {
                self.put_record(txn, &redirect, existing_old.as_ref())?;
            }
        }
        Ok(())
    }

    fn put_record(&self, txn: &mut RwTxn, new: &Record, old: Option<&Record>) -> Result<()> {
        if let Some(old) = old.filter(|o| o.is_indexed()) {
            if self.dbs.by_number.get(txn, old.kojin_bango.as_bytes())? == Some(old.juminhyo_code.as_bytes()) {
                self.dbs.by_number.delete(txn, old.kojin_bango.as_bytes())?;
            }
            self.dbs.by_name.delete_one_duplicate(txn, &name_key(old), old.juminhyo_code.as_bytes())?;
        }
        self.dbs.records.put(txn, new.juminhyo_code.as_bytes(), &wire::encode(new)?)?;
        if new.is_indexed() {
            self.dbs.by_number.put(txn, new.kojin_bango.as_bytes(), new.juminhyo_code.as_bytes())?;
            self.dbs.by_name.put(txn, &name_key(new), new.juminhyo_code.as_bytes())?;
        }
        Ok(())
    }

    // ---- small helpers ------------------------------------------------------------

    fn head(&self, txn: &RoTxn, origin: &str) -> Result<(u64, [u8; 32])> {
        Ok(match self.dbs.heads.get(txn, origin.as_bytes())? {
            Some(v) => (u64_at(v, 0), wire::hash32(&v[8..40], "head")?),
            None => (0, ZERO_HASH),
        })
    }

    fn record(&self, txn: &RoTxn, code: &str) -> Result<Option<Record>> {
        self.dbs.records.get(txn, code.as_bytes())?.map(|v| wire::decode(v, "record")).transpose()
    }

    fn next_id(&self, txn: &mut RwTxn, name: &str) -> Result<u64> {
        let id = self.dbs.meta.get(txn, name.as_bytes())?.map_or(1, |v| u64_at(v, 0));
        self.dbs.meta.put(txn, name.as_bytes(), &(id + 1).to_be_bytes())?;
        Ok(id)
    }

    fn bump(&self, txn: &mut RwTxn, counter: &str, by: u64) -> Result<()> {
        let key = format!("c:{counter}");
        let n = self.dbs.meta.get(txn, key.as_bytes())?.map_or(0, |v| u64_at(v, 0));
        self.dbs.meta.put(txn, key.as_bytes(), &(n + by).to_be_bytes())?;
        Ok(())
    }

    // ---- reads ----------------------------------------------------------------------

    pub fn get(&self, code: &str) -> Result<Option<Record>> {
        let txn = self.env.read_txn()?;
        self.record(&txn, code)
    }

    /// Many records in one read transaction, looked up in key order for locality.
    pub fn get_many(&self, codes: &[String]) -> Result<Vec<Option<Record>>> {
        let txn = self.env.read_txn()?;
        let mut order: Vec<usize> = (0..codes.len()).collect();
        order.sort_unstable_by(|a, b| codes[*a].cmp(&codes[*b]));
        let mut out: Vec<Option<Record>> = vec![None; codes.len()];
        for i in order {
            out[i] = self.record(&txn, &codes[i])?;
        }
        Ok(out)
    }

    pub fn by_number(&self, kojin_bango: &str) -> Result<Option<Record>> {
        let txn = self.env.read_txn()?;
        match self.dbs.by_number.get(&txn, kojin_bango.as_bytes())? {
            Some(code) => self.record(&txn, std::str::from_utf8(code).map_err(|e| CoreError::Store(e.to_string()))?),
            None => Ok(None),
        }
    }

    /// Codes of the records whose normalised reading, birth date and sex match.
    pub fn by_reading(&self, reading: &str, birth_date: &str, sex: u8) -> Result<Vec<String>> {
        let txn = self.env.read_txn()?;
        let probe =
            Record { name_kana: reading.into(), birth_date: birth_date.into(), sex, ..Record::default_for_key() };
        let mut out = Vec::new();
        if let Some(iter) = self.dbs.by_name.get_duplicates(&txn, &name_key(&probe))? {
            for item in iter {
                out.push(String::from_utf8_lossy(item?.1).into_owned());
            }
        }
        Ok(out)
    }

    pub fn chain_head(&self, origin: &str) -> Result<Option<(u64, [u8; 32])>> {
        let txn = self.env.read_txn()?;
        let (seq, hash) = self.head(&txn, origin)?;
        Ok((seq > 0).then_some((seq, hash)))
    }

    pub fn chain_heads(&self) -> Result<Vec<(String, u64, [u8; 32])>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.heads.iter(&txn)? {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(k).into_owned(), u64_at(v, 0), wire::hash32(&v[8..40], "head")?));
        }
        Ok(out)
    }

    /// Envelopes of `origin` holding sequence numbers from `from_seq` on, in order.
    pub fn changes(&self, origin: &str, from_seq: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let txn = self.env.read_txn()?;
        let start = seq_key(origin, from_seq);
        let end = seq_key(origin, u64::MAX);
        let mut out = Vec::new();
        for item in self
            .dbs
            .changelog
            .range(&txn, &(Bound::Included(start.as_slice()), Bound::Included(end.as_slice())))?
            .take(limit)
        {
            out.push(item?.1[40..].to_vec());
        }
        Ok(out)
    }

    /// SHA-256 over (code, record) of the active records whose holding municipality
    /// starts with `prefix`, in code order: equal on two stores with the same records.
    pub fn digest(&self, prefix: &str) -> Result<String> {
        use sha2::{Digest, Sha256};
        let txn = self.env.read_txn()?;
        let mut hasher = Sha256::new();
        for item in self.dbs.records.iter(&txn)? {
            let (k, v) = item?;
            let r: Record = wire::decode(v, "record")?;
            if r.status == record::ACTIVE && r.municipality.starts_with(prefix) {
                hasher.update((k.len() as u32).to_be_bytes());
                hasher.update(k);
                hasher.update((v.len() as u32).to_be_bytes());
                hasher.update(v);
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }

    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        let txn = self.env.read_txn()?;
        let mut out = vec![
            ("records".to_string(), self.dbs.records.len(&txn)?),
            ("origins".to_string(), self.dbs.heads.len(&txn)?),
            ("pending".to_string(), self.dbs.pending.len(&txn)?),
            ("forward_backlog".to_string(), self.dbs.forward.len(&txn)?),
            ("halted".to_string(), self.dbs.halts.len(&txn)?),
        ];
        for c in COUNTERS {
            let v = self.dbs.meta.get(&txn, format!("c:{c}").as_bytes())?.map_or(0, |v| u64_at(v, 0));
            out.push((c.to_string(), v));
        }
        let open = self.quarantine_in(&txn, false)?.len() as u64;
        out.push(("quarantine_open".to_string(), open));
        Ok(out)
    }

    pub fn pending(&self, origin: &str) -> Result<Vec<(u64, u64)>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.pending.prefix_iter(&txn, origin.as_bytes())? {
            let (_, raw) = item?;
            let env: Envelope = wire::decode(raw, "envelope")?;
            let head: BodyHead = wire::decode(&env.body, "body")?;
            out.push((head.first_seq, head.last_seq));
        }
        Ok(out)
    }

    // ---- forwarding (aggregator) ------------------------------------------------------

    pub fn forward_batch(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.forward.iter(&txn)?.take(limit) {
            let (k, v) = item?;
            out.push((u64_at(k, 0), v.to_vec()));
        }
        Ok(out)
    }

    pub fn forward_done(&self, ids: &[u64]) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        for id in ids {
            self.dbs.forward.delete(&mut txn, &id.to_be_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }

    // ---- quarantine and halts -----------------------------------------------------------

    pub fn quarantine_list(&self, include_closed: bool) -> Result<Vec<QuarantineEntry>> {
        let txn = self.env.read_txn()?;
        self.quarantine_in(&txn, include_closed)
    }

    fn quarantine_in(&self, txn: &RoTxn, include_closed: bool) -> Result<Vec<QuarantineEntry>> {
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

    fn set_state(&self, txn: &mut RwTxn, mut entry: QuarantineEntry, state: &str) -> Result<()> {
        entry.state = state.into();
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
        let registry = self.registry();
        let mut txn = self.env.write_txn()?;
        let entry = self.entry(&txn, id)?;
        if entry.kind != RejectKind::Halt {
            return Err(CoreError::Quarantine(format!("entry {id} is a security rejection; it can only be dropped")));
        }
        if entry.state != "open" {
            return Err(CoreError::Quarantine(format!("entry {id} is already {}", entry.state)));
        }
        let prepared = self.prepare(&[entry.envelope.as_ref()], &registry).pop().expect("one in, one out");
        let Prepared::Ok(v) = prepared else {
            return Err(CoreError::Quarantine(format!(
                "entry {id} does not decode into updates; drop it and have the origin re-issue"
            )));
        };
        let origin = v.head.origin.clone();
        let (head_seq, head_hash) = self.head(&txn, &origin)?;
        if v.head.first_seq != head_seq + 1 || v.head.prev_hash.as_slice() != head_hash {
            return Err(CoreError::Quarantine(format!(
                "entry {id} (seqs {}..{}) does not extend the chain of {origin} at seq {head_seq}; drop it",
                v.head.first_seq, v.head.last_seq
            )));
        }
        let mut outcome = self.apply_verified(&mut txn, &v, received_at, true)?;
        self.set_state(&mut txn, entry, "released")?;
        self.dbs.halts.delete(&mut txn, origin.as_bytes())?;
        outcome.released = self.drain_pending(&mut txn, &origin, received_at, &registry)?;
        txn.commit()?;
        Ok(outcome)
    }

    /// Discard a quarantined bundle. If it halted its origin, the origin then waits for
    /// a bundle whose `supersedes` names this bundle's hash.
    pub fn drop_entry(&self, id: u64) -> Result<()> {
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
        self.set_state(&mut txn, entry, "dropped")?;
        txn.commit()?;
        Ok(())
    }
}

impl Record {
    /// A blank record, for building index probe keys.
    fn default_for_key() -> Self {
        Record {
            juminhyo_code: String::new(),
            status: String::new(),
            redirect_to: None,
            kojin_bango: String::new(),
            name: String::new(),
            name_kana: String::new(),
            former_surname: None,
            alias: None,
            birth_date: String::new(),
            sex: 0,
            address: String::new(),
            municipality: String::new(),
            reason: String::new(),
            changed_on: String::new(),
            recorded_at: 0,
            origin: String::new(),
            seq: 0,
        }
    }
}
