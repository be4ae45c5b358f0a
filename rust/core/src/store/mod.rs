//! The tier store (DESIGN.md §3–4): one LMDB environment with named databases, and
//! `apply`, which verifies and applies a batch of bundles in one write transaction.
//!
//! Here: the types, `open` and the small key helpers. `apply` (verification and the
//! write path), `reads`, `forward` (the aggregator's outbox) and `quarantine` (halts,
//! release, drop) add `impl Store` blocks; the audited queries live in `query.rs`, the
//! audit-trail methods in `audit.rs`.

use std::path::Path;
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use heed::types::Bytes;
use heed::{Database, DatabaseFlags, Env, EnvOpenOptions, RoTxn, RwTxn};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::audit::AuditDbs;
use crate::error::{CoreError, Result};
use crate::query;
use crate::record::Record;
use crate::registry::Registry;
use crate::wire::{self, BodyHead, BundleBody, Envelope, ZERO_HASH};

pub(crate) mod apply;
mod check;
mod forward;
mod merkle;
mod quarantine;
mod reads;
mod rebuild;
mod reconcile;
mod retention;
mod snapshot;

pub use check::Inconsistency;
pub use quarantine::Operator;
pub use reads::{Cell, Codes, Column};
pub use reconcile::{CodeDiff, OriginDiff, Reconciliation};
pub use retention::{Cut, Floor};
pub use snapshot::DATA_FILE;

pub use crate::query::{Access, Lookup, Search};

type Db = Database<Bytes, Bytes>;

/// 2: the 個人番号 index holds every (number, code) pair (DUP_SORT `by_kojin_bango`,
/// replacing the one-code-per-number `by_number`), the Merkle sums per origin exist,
/// and the store records its role. A version-1 store is migrated on open.
pub const SCHEMA_VERSION: &[u8] = b"2";
/// How much of an oversized message is kept in quarantine for the operator to see.
const QUARANTINE_KEEP_OVERSIZED: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Aggregator,
    National,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Aggregator => "aggregator",
            Role::National => "national",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aggregator" => Some(Role::Aggregator),
            "national" => Some(Role::National),
            _ => None,
        }
    }
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
    /// How far a sender's clock may run ahead of this tier's (µs): later times in a
    /// bundle halt its origin (`validate::TimeBounds`).
    pub max_skew_us: u64,
    /// Aggregator: the prefectures (2 digits) it serves; bundles of others are refused
    /// as security events. None: not checked (national, tests).
    pub prefectures: Option<Vec<String>>,
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
    /// A bundle of the same origin taken from pending after this one and rejected
    /// there (quarantined; a halt stops the origin): reported, not silent.
    pub pending_rejected: Option<Box<Outcome>>,
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
            pending_rejected: None,
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
    /// What operators did with the entry, oldest first (absent in entries written
    /// before actions were recorded).
    #[serde(default)]
    pub actions: Vec<OperatorAction>,
}

/// One operator decision on a quarantined bundle: who, when (µs), what and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    pub action: String,
    pub operator: String,
    pub at: u64,
    pub reason: String,
    /// The role of the node it was done at ("aggregator" or "national").
    pub role: String,
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

pub(crate) struct Dbs {
    pub(crate) records: Db,
    /// 個人番号 → the codes of every indexed record holding it (DUP_SORT): a set, so the
    /// index is a function of the records whatever the order updates arrive in.
    pub(crate) by_number: Db,
    pub(crate) by_name: Db,
    heads: Db,
    changelog: Db,
    pending: Db,
    forward: Db,
    quarantine: Db,
    halts: Db,
    superseded: Db,
    meta: Db,
    /// Additive hash sums of each origin's records by code prefix (merkle.rs).
    merkle: Db,
    /// Where each origin's pruned change-log ranges went (retention.rs).
    retention: Db,
    /// The four-item search's name index and its code → keys map (query.rs).
    pub(crate) by_name_text: Db,
    /// Code changes, new code ‖ old code → (): a resident's former 住民票コード, so
    /// their provision history can follow them back (reads.rs `former_codes`).
    pub(crate) former_codes: Db,
    pub(crate) audit: AuditDbs,
}

pub struct Store {
    pub(crate) env: Env,
    pub(crate) dbs: Dbs,
    opts: StoreOptions,
    registry: RwLock<Arc<Registry>>,
    // The centre's signing identity, out of `opts` so that a reload can rotate the key
    // without reopening the environment (LMDB: once per process).
    centre: RwLock<CentreKeys>,
    /// Audit entries of concurrent queries waiting to share a durable commit.
    pub(crate) group: crate::audit_commit::GroupCommit,
}

/// The key a centre attests with, and the one that takes over at its `not_before`: a
/// registry rotation makes exactly one of the two valid at each instant, so the store
/// picks by each bundle's receive time rather than by when the reload happened.
#[derive(Default)]
struct CentreKeys {
    current: Option<Arc<Centre>>,
    next: Option<(Arc<Centre>, u64)>,
}

impl CentreKeys {
    fn at(&self, at: u64) -> Option<Arc<Centre>> {
        match &self.next {
            Some((next, from)) if at >= *from => Some(next.clone()),
            _ => self.current.clone(),
        }
    }
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
    /// Open (or create) a store as `opts.role`. The role is recorded on first open; a
    /// store recorded with another role is refused (a national config pointed at a
    /// centre's store would apply without attesting or forwarding).
    pub fn open(path: &Path, registry: Registry, opts: StoreOptions) -> Result<Self> {
        if opts.role == Role::Aggregator && opts.centre.is_none() {
            return Err(CoreError::Store("an aggregator store needs its centre id and signing key".into()));
        }
        Self::open_with(path, registry, opts, true)
    }

    fn open_with(path: &Path, registry: Registry, opts: StoreOptions, role_given: bool) -> Result<Self> {
        if let Some(p) = opts.prefectures.iter().flatten().find(|p| !crate::registry::is_prefecture(p)) {
            return Err(CoreError::Store(format!("prefecture {p:?} is not 01-47")));
        }
        std::fs::create_dir_all(path).map_err(|e| CoreError::Store(format!("{}: {e}", path.display())))?;
        // SAFETY: LMDB forbids opening one environment twice in a process; jukisync
        // gives every tier store exactly one owner (DESIGN.md §4), this object.
        // (Not WRITE_MAP: measured slower here, 47k vs 61k updates/s applied into a
        // 200k-record store, as dirtying mapped pages makes the kernel write more.)
        #[allow(unsafe_code)]
        let env = unsafe { EnvOpenOptions::new().map_size(opts.map_size).max_dbs(32).open(path)? };
        let mut txn = env.write_txn()?;
        let mut create = |name: &str, flags: DatabaseFlags| -> Result<Db> {
            Ok(env.database_options().types::<Bytes, Bytes>().name(name).flags(flags).create(&mut txn)?)
        };
        let none = DatabaseFlags::empty();
        let dbs = Dbs {
            records: create("records", none)?,
            by_number: create("by_kojin_bango", DatabaseFlags::DUP_SORT)?,
            by_name: create("by_name", DatabaseFlags::DUP_SORT)?,
            heads: create("heads", none)?,
            changelog: create("changelog", none)?,
            pending: create("pending", none)?,
            forward: create("forward", none)?,
            quarantine: create("quarantine", none)?,
            halts: create("halts", none)?,
            superseded: create("superseded", none)?,
            meta: create("meta", none)?,
            merkle: create("merkle", none)?,
            retention: create("retention", none)?,
            by_name_text: create("by_name_text", DatabaseFlags::DUP_SORT)?,
            former_codes: create("former_codes", none)?,
            audit: AuditDbs {
                entries: create("audit", none)?,
                index: create("audit_index", none)?,
                meta: create("meta", none)?,
            },
        };
        let store_role = match dbs.meta.get(&txn, b"role")? {
            Some(v) => Some(Role::parse(std::str::from_utf8(v).unwrap_or("")).ok_or_else(|| {
                CoreError::Store(format!("{}: unknown role {:?} recorded", path.display(), String::from_utf8_lossy(v)))
            })?),
            None => None,
        };
        let version = dbs.meta.get(&txn, b"schema_version")?.map(<[u8]>::to_vec);
        let mut opts = opts;
        match (role_given, store_role) {
            (true, Some(recorded)) if recorded != opts.role => {
                return Err(CoreError::Store(format!(
                    "{} is the store of a{} {} node; it cannot be opened as a{} {} one",
                    path.display(),
                    if recorded == Role::Aggregator { "n" } else { "" },
                    recorded.as_str(),
                    if opts.role == Role::Aggregator { "n" } else { "" },
                    opts.role.as_str()
                )))
            }
            (true, _) => dbs.meta.put(&mut txn, b"role", opts.role.as_str().as_bytes())?,
            (false, Some(recorded)) => {
                // Attestations are what a national store requires of what it applies.
                opts.require_attestation &= recorded == Role::National;
                opts.role = recorded;
            }
            (false, None) => {
                return Err(CoreError::Store(format!(
                    "{} records no role (an empty store, or one made before stores recorded their \
                     role): open it once with its node's config",
                    path.display()
                )))
            }
        }
        if opts.role == Role::Aggregator && opts.centre.is_none() && role_given {
            return Err(CoreError::Store("an aggregator store needs its centre id and signing key".into()));
        }
        let migrate = match version.as_deref() {
            None => {
                dbs.meta.put(&mut txn, b"schema_version", SCHEMA_VERSION)?;
                false
            }
            Some(v) if v == SCHEMA_VERSION => false,
            Some(b"1") => true,
            Some(v) => {
                return Err(CoreError::Store(format!(
                    "schema version {} on disk, this build reads {}",
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(SCHEMA_VERSION)
                )))
            }
        };
        txn.commit()?;
        let mut opts = opts;
        let centre = RwLock::new(CentreKeys { current: opts.centre.take().map(Arc::new), next: None });
        let store =
            Store { env, dbs, opts, registry: RwLock::new(Arc::new(registry)), centre, group: Default::default() };
        if migrate {
            let mut txn = store.env.write_txn()?;
            store.migrate_from_1(&mut txn)?;
            store.dbs.meta.put(&mut txn, b"schema_version", SCHEMA_VERSION)?;
            txn.commit()?;
        }
        Ok(store)
    }

    /// Open an existing store as the role it recorded when first opened (operator
    /// tools: `opts.role` is ignored). Without `opts.centre` an aggregator store opened
    /// this way reads, but refuses to apply or release (it could not attest).
    pub fn open_as_recorded(path: &Path, registry: Registry, opts: StoreOptions) -> Result<Self> {
        if !path.join("data.mdb").is_file() {
            return Err(CoreError::Store(format!("no store at {} (no data.mdb)", path.display())));
        }
        Self::open_with(path, registry, opts, false)
    }

    /// Refuse to write bundles when this handle could not attest them.
    pub(crate) fn can_apply(&self) -> Result<()> {
        if self.opts.role == Role::Aggregator && self.centre_at(0).is_none() {
            return Err(CoreError::Store(
                "this aggregator store was opened without its centre key: it cannot attest and forward; \
                 give the node's config"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn role(&self) -> Role {
        self.opts.role
    }

    pub fn set_registry(&self, registry: Registry) {
        *self.registry.write().expect("registry lock") = Arc::new(registry);
    }

    /// Attest with another key of this centre (a rotation picked up on reload) what is
    /// received from `not_before` (µs) on; before that, the key in use. Refused when the
    /// store has no centre identity (national, read-only). Bundles attested before stay
    /// as they were: the old key verifies them.
    pub fn set_centre_key(&self, key_id: String, key: SigningKey, not_before: u64) -> Result<()> {
        let mut keys = self.centre.write().expect("centre lock");
        let now = now_micros();
        let Some(current) = keys.at(now) else {
            return Err(CoreError::Store("this store has no centre identity: it does not attest".into()));
        };
        let next = Arc::new(Centre { id: current.id.clone(), key_id, key });
        keys.current = Some(current);
        keys.next = Some((next, not_before));
        Ok(())
    }

    /// The centre identity attesting a bundle received at `at` (µs).
    pub(crate) fn centre_at(&self, at: u64) -> Option<Arc<Centre>> {
        self.centre.read().expect("centre lock").at(at)
    }

    /// The key id this centre attests with at `at` (µs); None: it does not attest.
    pub fn centre_key_id(&self, at: u64) -> Option<String> {
        self.centre_at(at).map(|c| c.key_id.clone())
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    // ---- small helpers ------------------------------------------------------------

    fn head(&self, txn: &RoTxn, origin: &str) -> Result<(u64, [u8; 32])> {
        Ok(match self.dbs.heads.get(txn, origin.as_bytes())? {
            Some(v) => (u64_at(v, 0), wire::hash32(&v[8..40], "head")?),
            None => (0, ZERO_HASH),
        })
    }

    pub(crate) fn record(&self, txn: &RoTxn, code: &str) -> Result<Option<Record>> {
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
}
