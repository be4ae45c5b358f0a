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

use crate::audit::{self, AuditDbs};
use crate::crypto::{self, SigCheck};
use crate::error::{CoreError, Result};
use crate::query::{self, Candidate, Confirmation, Matched, SearchQuery};
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
    /// The four-item search's name index and its code → keys map (query.rs).
    by_name_text: Db,
    audit: AuditDbs,
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

/// Key of the reading index (振り仮名 + birth date + sex); see `query::index_key`.
fn name_key(r: &Record) -> Vec<u8> {
    query::index_key(&r.name_kana, &r.birth_date, r.sex)
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
        // (Not WRITE_MAP: measured slower here, 47k vs 61k updates/s applied into a
        // 200k-record store, as dirtying mapped pages makes the kernel write more.)
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
            by_name_text: create("by_name_text", DatabaseFlags::DUP_SORT)?,
            audit: AuditDbs {
                entries: create("audit", none)?,
                index: create("audit_index", none)?,
                meta: create("meta", none)?,
            },
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
            // The head is decoded here only to describe a rejection.
            let head = || wire::decode::<BodyHead>(&envelope.body, "body").ok();
            let Some(key) = registry.key(&envelope.key_id) else {
                let reason = format!("unknown key {:?}", envelope.key_id);
                stage.push(Err(security(raw, reason, head(), Some(hash))));
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
            let reason = decoded.err().map_or_else(|| "undecodable body".into(), |e| e.to_string());
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
        let body = match decoded {
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
        let mut records = Vec::new();
        for p in prepared {
            let outcome = self.apply_prepared(&mut txn, p, received_at, &registry, &mut records)?;
            outcomes.push(outcome);
        }
        self.write_records(&mut txn, records)?;
        txn.commit()?;
        Ok(outcomes)
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
                    outcome.released = self.drain_pending(txn, &origin, received_at, registry, records)?;
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

    fn apply_verified(
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

    fn drain_pending(
        &self,
        txn: &mut RwTxn,
        origin: &str,
        received_at: u64,
        registry: &Registry,
        records: &mut Vec<Record>,
    ) -> Result<usize> {
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
                Prepared::Ok(v) => self.apply_verified(txn, &v, received_at, false, records)?,
            };
            match outcome.status {
                Status::Applied => released += 1,
                Status::Duplicate => {}
                _ => return Ok(released),
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
            }
            records.push(record);
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
    fn write_records(&self, txn: &mut RwTxn, mut candidates: Vec<Record>) -> Result<()> {
        candidates
            .sort_unstable_by(|a, b| a.juminhyo_code.cmp(&b.juminhyo_code).then_with(|| a.version().cmp(&b.version())));
        let mut number_deletes: Vec<(String, String)> = Vec::new();
        let mut number_puts: Vec<(String, String)> = Vec::new();
        let mut name_deletes: Vec<(Vec<u8>, String)> = Vec::new();
        let mut name_puts: Vec<(Vec<u8>, String)> = Vec::new();
        let mut text_deletes: Vec<(Vec<u8>, String)> = Vec::new();
        let mut text_puts: Vec<(Vec<u8>, String)> = Vec::new();
        let mut i = 0;
        while i < candidates.len() {
            let code = &candidates[i].juminhyo_code;
            let mut last = i;
            while last + 1 < candidates.len() && candidates[last + 1].juminhyo_code == *code {
                last += 1;
            }
            let best = &candidates[last];
            let existing = self.record(txn, code)?;
            if existing.as_ref().is_none_or(|e| e.version() < best.version()) {
                self.dbs.records.put(txn, code.as_bytes(), &wire::encode(best)?)?;
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
        number_deletes.sort_unstable();
        for (number, code) in &number_deletes {
            // another record may hold this number by now (a 個人番号 reassigned)
            if self.dbs.by_number.get(txn, number.as_bytes())? == Some(code.as_bytes()) {
                self.dbs.by_number.delete(txn, number.as_bytes())?;
            }
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

    /// The stored bytes of many records in one read transaction, looked up in key order
    /// for locality (decode them with `RecordView` or `Record`).
    pub fn get_many_raw(&self, codes: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let txn = self.env.read_txn()?;
        let mut order: Vec<usize> = (0..codes.len()).collect();
        order.sort_unstable_by(|a, b| codes[*a].cmp(&codes[*b]));
        let mut out: Vec<Option<Vec<u8>>> = vec![None; codes.len()];
        for i in order {
            out[i] = self.dbs.records.get(&txn, codes[i].as_bytes())?.map(<[u8]>::to_vec);
        }
        Ok(out)
    }

    pub fn get_many(&self, codes: &[String]) -> Result<Vec<Option<Record>>> {
        self.get_many_raw(codes)?.into_iter().map(|raw| raw.map(|r| wire::decode(&r, "record")).transpose()).collect()
    }

    /// The stored bytes of the record holding a 個人番号.
    pub fn by_number_raw(&self, kojin_bango: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.env.read_txn()?;
        match self.dbs.by_number.get(&txn, kojin_bango.as_bytes())? {
            Some(code) => Ok(self.dbs.records.get(&txn, code)?.map(<[u8]>::to_vec)),
            None => Ok(None),
        }
    }

    pub fn by_number(&self, kojin_bango: &str) -> Result<Option<Record>> {
        self.by_number_raw(kojin_bango)?.map(|r| wire::decode(&r, "record")).transpose()
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
            let (k, log_key) = item?;
            let entry = self.dbs.changelog.get(&txn, log_key)?.ok_or_else(|| {
                CoreError::Store(format!("forward entry {} names a missing change-log entry", u64_at(k, 0)))
            })?;
            out.push((u64_at(k, 0), entry[40..].to_vec()));
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
        self.set_state(&mut txn, entry, "released")?;
        self.dbs.halts.delete(&mut txn, origin.as_bytes())?;
        outcome.released = self.drain_pending(&mut txn, &origin, received_at, &registry, &mut records)?;
        self.write_records(&mut txn, records)?;
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

// ---- purpose-bound queries and the audit trail (query.rs, audit.rs) -------------------
//
// Every query runs in one write transaction that reads, answers and appends its audit
// entry: the answer exists only if its entry was committed with it (DESIGN.md §6).
// Policy (who may use which task, which fields) is the caller's: these methods log the
// requester and task they are given.

/// Who asks, for which task, when (µs): what every audited query logs. `detail` is
/// the caller's context (e.g. an RPC correlation id); the outcome is added to it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub time: u64,
    pub requester: String,
    pub task: String,
    pub detail: String,
}

impl Access {
    fn event(&self, kind: &str, items: u64, outcome: String) -> audit::Event {
        let detail = if self.detail.is_empty() { outcome } else { format!("{}; {outcome}", self.detail) };
        audit::Event {
            time: self.time,
            requester: self.requester.clone(),
            task: self.task.clone(),
            kind: kind.into(),
            allowed: true,
            reason: String::new(),
            items,
            detail,
        }
    }
}

/// The answer to a lookup: the record (after following code changes) and, when the
/// code asked for was changed, that code.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub record: Option<Record>,
    pub redirected_from: Option<String>,
    pub audit_id: u64,
}

/// The answer to a four-item search: the best `limit` of `total` candidates.
#[derive(Debug, Clone)]
pub struct Search {
    pub candidates: Vec<Candidate>,
    pub total: usize,
    pub audit_id: u64,
}

/// A batch confirmation asking for at least 1/DENSE_SHARE of the records scans them.
const DENSE_SHARE: u64 = 8;

fn code_array(code: &[u8]) -> Option<[u8; audit::CODE_LEN]> {
    code.try_into().ok()
}

fn code_digits(mut num: u64) -> [u8; audit::CODE_LEN] {
    let mut out = [b'0'; audit::CODE_LEN];
    for d in out.iter_mut().rev() {
        *d = b'0' + (num % 10) as u8;
        num /= 10;
    }
    out
}

const DATE_MASK: u32 = (1 << 25) - 1;

/// status (2 bits) ‖ reason (4 bits) ‖ YYYYMMDD (25 bits, to year 3355).
fn pack_answer(status: u8, reason: u8, date: u32) -> u32 {
    (u32::from(status) << 29) | (u32::from(reason & 0xf) << 25) | (date & DATE_MASK)
}

fn unpack_status(answer: u32) -> u8 {
    (answer >> 29) as u8
}

fn keyed<'a>(item: Option<(&'a [u8], &'a [u8])>) -> Option<(Option<u64>, &'a [u8])> {
    item.map(|(k, v)| (code_number(k), v))
}

/// 11 ASCII digits as a number (ordered like the strings), or None.
fn code_number(code: &[u8]) -> Option<u64> {
    if code.len() != audit::CODE_LEN || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0u64, |n, c| n * 10 + u64::from(c - b'0')))
}

impl Store {
    /// The record under `code`, following code changes (redirects).
    fn resolve(&self, txn: &RoTxn, code: &str) -> Result<(Option<Record>, bool)> {
        let mut record = self.record(txn, code)?;
        let mut redirected = false;
        for _ in 0..query::MAX_REDIRECTS {
            match record.as_ref().filter(|r| r.status == record::REDIRECT).and_then(|r| r.redirect_to.clone()) {
                Some(next) => {
                    record = self.record(txn, &next)?;
                    redirected = true;
                }
                None => return Ok((record, redirected)),
            }
        }
        Ok((None, redirected))
    }

    fn answer_lookup(&self, kind: &str, asked: &str, code: Option<String>, access: &Access) -> Result<Lookup> {
        let mut txn = self.env.write_txn()?;
        let (record, redirected) = match &code {
            Some(c) => self.resolve(&txn, c)?,
            None => (None, false),
        };
        let outcome = match (&record, redirected) {
            (None, _) => "not found".to_string(),
            (Some(r), true) => format!("found (code changed to {})", r.juminhyo_code),
            (Some(_), false) => "found".to_string(),
        };
        let touched = record.iter().filter_map(|r| code_array(r.juminhyo_code.as_bytes()));
        let audit_id = self.dbs.audit.append(&mut txn, access.event(kind, 1, outcome), audit::pack_codes(touched))?;
        txn.commit()?;
        let redirected_from = (redirected && record.is_some()).then(|| asked.to_string());
        Ok(Lookup { record, redirected_from, audit_id })
    }

    /// Look up one record by 住民票コード, audited.
    pub fn lookup(&self, code: &str, access: &Access) -> Result<Lookup> {
        self.answer_lookup("code", code, Some(code.to_string()), access)
    }

    /// Look up one record by 個人番号, audited.
    pub fn lookup_number(&self, kojin_bango: &str, access: &Access) -> Result<Lookup> {
        let mut txn = self.env.write_txn()?;
        let code_now =
            self.dbs.by_number.get(&txn, kojin_bango.as_bytes())?.map(|c| String::from_utf8_lossy(c).into_owned());
        let record = match &code_now {
            Some(c) => self.record(&txn, c)?,
            None => None,
        };
        let outcome = if record.is_some() { "found" } else { "not found" }.to_string();
        let touched = record.iter().filter_map(|r| code_array(r.juminhyo_code.as_bytes()));
        let audit_id =
            self.dbs.audit.append(&mut txn, access.event("kojin_bango", 1, outcome), audit::pack_codes(touched))?;
        txn.commit()?;
        Ok(Lookup { record, redirected_from: None, audit_id })
    }

    /// The four-item search: records whose reading or name (or alias), birth date and
    /// sex match, active and removed, ranked by how well the address matches; audited.
    pub fn search(&self, q: &SearchQuery, access: &Access) -> Result<Search> {
        if text::normalize_reading(&q.name).is_empty() {
            return Err(CoreError::Malformed("search: name is empty".into()));
        }
        if !(q.sex == 1 || q.sex == 2) {
            return Err(CoreError::Malformed(format!("search: sex must be 1 or 2, not {}", q.sex)));
        }
        let mut txn = self.env.write_txn()?;
        let key = query::index_key(&q.name, &q.birth_date, q.sex);
        let mut codes: Vec<(String, Matched)> = Vec::new();
        for (db, matched) in [(self.dbs.by_name, Matched::Reading), (self.dbs.by_name_text, Matched::Name)] {
            if let Some(iter) = db.get_duplicates(&txn, &key)? {
                for item in iter {
                    codes.push((String::from_utf8_lossy(item?.1).into_owned(), matched));
                }
            }
        }
        codes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut found: Vec<(Record, Matched)> = Vec::new();
        for (code, matched) in codes {
            match found.last_mut() {
                Some((r, m)) if r.juminhyo_code == code => {
                    if *m != matched {
                        *m = Matched::Both;
                    }
                }
                _ => {
                    if let Some(r) = self.record(&txn, &code)? {
                        found.push((r, matched));
                    }
                }
            }
        }
        let total = found.len();
        let mut candidates = query::rank(q, found);
        candidates.truncate(q.limit);
        let touched = candidates.iter().filter_map(|c| code_array(c.record.juminhyo_code.as_bytes()));
        let outcome = format!("{} of {total} candidates", candidates.len());
        let audit_id =
            self.dbs.audit.append(&mut txn, access.event("search", 1, outcome), audit::pack_codes(touched))?;
        txn.commit()?;
        Ok(Search { candidates, total, audit_id })
    }

    /// Batch confirmation (一括提供): the status of every code in `codes` (11-byte
    /// codes, concatenated), in one pass in code order; audited as one entry touching
    /// every record found. Codes that are not 11 digits are unknown.
    pub fn confirm(&self, codes: &[u8], access: &Access) -> Result<(Confirmation, u64)> {
        if codes.len() % audit::CODE_LEN != 0 {
            return Err(CoreError::Malformed(format!(
                "confirm: {} bytes is not a whole number of {}-byte codes",
                codes.len(),
                audit::CODE_LEN
            )));
        }
        let n = codes.len() / audit::CODE_LEN;
        let code_at = |i: usize| &codes[i * audit::CODE_LEN..(i + 1) * audit::CODE_LEN];
        // Sorted by code, the lookups walk the B-tree in order (its pages stay hot) and
        // the touched codes come out sorted for the audit entry.
        let mut order: Vec<(u64, u32)> =
            (0..n).filter_map(|i| code_number(code_at(i)).map(|num| (num, i as u32))).collect();
        order.sort_unstable();
        // One u32 a request (status, reason, date packed; see `pack_answer`): the
        // requests are visited in code order, so each answer lands at a random index,
        // and one random write a code costs a third of three.
        let mut answers: Vec<u32> = vec![0; n];
        let mut redirected: std::collections::HashMap<u32, String> = Default::default();
        let mut touched: Vec<[u8; audit::CODE_LEN]> = Vec::with_capacity(order.len());
        // Codes that are not 11 digits are unknown without a look.
        let mut counts = [(n - order.len()) as u64, 0, 0, 0];
        // The answer is read in the transaction that logs it, so this pass holds LMDB's
        // one writer lock: apply waits for it (about half a second a million codes).
        let mut txn = self.env.write_txn()?;
        let mut previous: Option<(u64, usize)> = None;
        // A batch asking for a good share of the store reads it in one cursor pass over
        // the requested range (tens of ns a record) instead of one B-tree descent a
        // code (hundreds of ns once the tree outgrows the caches).
        let dense = order.len() as u64 * DENSE_SHARE >= self.dbs.records.len(&txn)?;
        let mut scan = match (dense, order.first(), order.last()) {
            (true, Some(first), Some(last)) => {
                let (lo, hi) = (code_at(first.1 as usize), code_at(last.1 as usize));
                Some(self.dbs.records.range(&txn, &(Bound::Included(lo), Bound::Included(hi)))?)
            }
            _ => None,
        };
        // The cursor's record as (its code as a number, bytes): numbers compare in one
        // instruction where 11-byte slices call memcmp; a key that is not 11 digits
        // (none should be) is None, passed over and never equal.
        let mut at = match scan.as_mut() {
            Some(it) => keyed(it.next().transpose()?),
            None => None,
        };
        for (num, i) in order {
            let i = i as usize;
            if let Some((_, j)) = previous.filter(|(p, _)| *p == num) {
                // The same code asked twice: same answer.
                answers[i] = answers[j];
                if let Some(new) = redirected.get(&(j as u32)).cloned() {
                    redirected.insert(i as u32, new);
                }
                counts[unpack_status(answers[i]) as usize] += 1;
                continue;
            }
            previous = Some((num, i));
            let found = match scan.as_mut() {
                Some(it) => {
                    while at.is_some_and(|(k, _)| k.is_none_or(|k| k < num)) {
                        at = keyed(it.next().transpose()?);
                    }
                    at.filter(|(k, _)| *k == Some(num)).map(|(_, v)| v)
                }
                None => self.dbs.records.get(&txn, code_at(i))?,
            };
            let Some(mut bytes) = found else {
                counts[0] += 1;
                continue;
            };
            let mut view = query::status_view(bytes)?;
            let mut final_code: Option<&[u8]> = None;
            let mut hops = 0;
            while view.status == record::REDIRECT.as_bytes() {
                let next = view.redirect_to.unwrap_or_default();
                hops += 1;
                final_code = Some(next);
                match self.dbs.records.get(&txn, next)? {
                    Some(b) if hops <= query::MAX_REDIRECTS => {
                        bytes = b;
                        view = query::status_view(bytes)?;
                    }
                    _ => {
                        view = query::StatusView::default();
                        break;
                    }
                }
            }
            let status = query::classify(&view);
            counts[status as usize] += 1;
            if let Some(fc) = final_code {
                redirected.insert(i as u32, String::from_utf8_lossy(fc).into_owned());
            }
            if status != query::UNKNOWN {
                answers[i] = pack_answer(status, query::reason_code(view.reason), query::date_number(view.changed_on));
                // From the number, not from `codes`: reading `codes[i]` here would miss
                // the cache every time.
                touched.push(final_code.and_then(code_array).unwrap_or_else(|| code_digits(num)));
            }
        }
        drop(scan);
        let mut out = Confirmation {
            status: answers.iter().map(|a| unpack_status(*a)).collect(),
            reason: answers.iter().map(|a| ((a >> 25) & 0xf) as u8).collect(),
            changed_on: answers.iter().map(|a| a & DATE_MASK).collect(),
            redirected: redirected.into_iter().collect(),
            touched: audit::pack_codes(touched),
        };
        out.redirected.sort_unstable();
        let outcome = format!(
            "current {}, moved out {}, removed {}, unknown {}, redirected {}",
            counts[1],
            counts[2],
            counts[3],
            counts[0],
            out.redirected.len()
        );
        let event = access.event("confirm", n as u64, outcome);
        let audit_id = self.dbs.audit.append(&mut txn, event, out.touched.clone())?;
        txn.commit()?;
        Ok((out, audit_id))
    }

    /// Append an entry that is not a query answered here: a denial (with its reason),
    /// a disclosure, a report. `codes` are the records it concerns (11 digits each).
    pub fn audit_log(&self, event: audit::Event, codes: &[String]) -> Result<u64> {
        let mut packed = Vec::with_capacity(codes.len());
        for c in codes {
            packed.push(
                code_array(c.as_bytes())
                    .ok_or_else(|| CoreError::Malformed(format!("audit: {c:?} is not an 11-character code")))?,
            );
        }
        let mut txn = self.env.write_txn()?;
        let id = self.dbs.audit.append(&mut txn, event, audit::pack_codes(packed))?;
        txn.commit()?;
        Ok(id)
    }

    /// Audit entries with `start <= time < end`, in time order.
    pub fn audit_entries(&self, start: u64, end: u64, with_codes: bool) -> Result<Vec<audit::EntryInfo>> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.range(&txn, start, end, with_codes)
    }

    pub fn audit_entry(&self, id: u64, with_codes: bool) -> Result<Option<audit::EntryInfo>> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.entry(&txn, id, with_codes)
    }

    /// The entries whose answers touched the record `code` (its provision history).
    pub fn audit_touching(&self, code: &str) -> Result<Vec<audit::EntryInfo>> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.touching(&txn, code)
    }

    pub fn audit_verify(&self, checkpoints: &[(u64, [u8; 32])]) -> Result<audit::Verification> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.verify(&txn, checkpoints)
    }

    /// Remove the entries older than `before` (µs), oldest first; logged itself.
    pub fn audit_purge(&self, before: u64, access: &Access) -> Result<audit::Purge> {
        let mut txn = self.env.write_txn()?;
        let event = access.event("purge", 0, String::new());
        let purge = self.dbs.audit.purge(&mut txn, before, event)?;
        txn.commit()?;
        Ok(purge)
    }

    /// (first kept id, last id, hash of the last entry): a checkpoint to keep elsewhere.
    pub fn audit_head(&self) -> Result<(u64, u64, [u8; 32])> {
        let txn = self.env.read_txn()?;
        let (first, _) = self.dbs.audit.anchor(&txn)?;
        let (next, hash) = self.dbs.audit.head(&txn)?;
        Ok((first, next - 1, hash))
    }
}
