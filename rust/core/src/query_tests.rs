//! Tests of the purpose-bound queries and the audit trail: real bundles applied to a
//! real store, and the audit chain tampered with underneath.

use heed::types::Bytes;
use heed::{Database, EnvOpenOptions};

use crate::audit::{self, AuditDbs, AuditEntry, Event};
use crate::crypto;
use crate::query::{self, Matched, SearchQuery};
use crate::registry::{sign_registry, KeyEntry, Registry, RegistryBody};
use crate::store::{Access, Role, Status, Store, StoreOptions};
use crate::tests::NOW;
use crate::wire::{self, Bin, BundleBody, Envelope, Update, ZERO_HASH};

const A: &str = "352039"; // 山口市

struct Origin {
    root: [u8; 32],
    secret: [u8; 32],
    head: (u64, [u8; 32]),
}

impl Origin {
    fn new() -> Self {
        Origin { root: crypto::generate_secret(), secret: crypto::generate_secret(), head: (0, ZERO_HASH) }
    }

    fn store(&self, dir: &std::path::Path) -> Store {
        let entries = vec![KeyEntry {
            owner: A.into(),
            key_id: "a-k1".into(),
            public_key: Bin::from(crypto::public_key(&self.secret).unwrap().to_vec()),
            not_before: 0,
            not_after: None,
            revoked_at: None,
            role: None,
            prefectures: vec![],
        }];
        let bytes = sign_registry(&RegistryBody { version: 1, issued_at: 0, entries }, &self.root).unwrap();
        let registry = Registry::load(&bytes, &crypto::public_key(&self.root).unwrap()).unwrap();
        let opts = StoreOptions {
            role: Role::National,
            centre: None,
            map_size: 1 << 30,
            max_bundle_bytes: 1 << 20,
            pending_limit: 100,
            require_attestation: false,
            max_skew_us: crate::validate::DEFAULT_SKEW_US,
            prefectures: None,
        };
        Store::open(dir, registry, opts).unwrap()
    }

    fn apply(&mut self, store: &Store, mut updates: Vec<Update>) {
        let (head, prev) = self.head;
        for (i, u) in updates.iter_mut().enumerate() {
            u.seq = head + 1 + i as u64;
            u.recorded_at = u.seq;
        }
        let body = BundleBody {
            origin: A.into(),
            first_seq: head + 1,
            last_seq: head + updates.len() as u64,
            prev_hash: Bin::from(prev.to_vec()),
            created_at: 1_000,
            updates,
            supersedes: None,
        };
        let bytes = wire::encode(&body).unwrap();
        self.head = (body.last_seq, crypto::sha256(&bytes));
        let sig = crypto::sign(&self.secret, &bytes).unwrap();
        let env = wire::encode(&Envelope {
            body: Bin::from(bytes),
            key_id: "a-k1".into(),
            sig: Bin::from(sig.to_vec()),
            attestations: vec![],
        })
        .unwrap();
        let out = store.apply(&[&env], NOW).unwrap();
        assert_eq!(out[0].status, Status::Applied, "{:?}", out[0].reason);
    }
}

fn person(code: &str, name: &str, kana: &str, address: &str, reason: &str, changed_on: &str) -> Update {
    Update {
        seq: 0,
        juminhyo_code: code.into(),
        previous_juminhyo_code: None,
        kojin_bango: "123456789018".into(),
        name: name.into(),
        name_kana: kana.into(),
        former_surname: None,
        alias: None,
        birth_date: "1980-04-01".into(),
        sex: 1,
        address: address.into(),
        municipality: A.into(),
        reason: reason.into(),
        changed_on: changed_on.into(),
        recorded_at: 0,
    }
}

fn access(requester: &str) -> Access {
    Access { time: 1_700_000_000_000_000, requester: requester.into(), task: "B5-11".into(), detail: String::new() }
}

fn search(name: &str, address: Option<&str>) -> SearchQuery {
    SearchQuery {
        name: name.into(),
        birth_date: "1980-04-01".into(),
        sex: 1,
        address: address.map(Into::into),
        limit: 10,
    }
}

#[test]
fn four_item_search_by_reading_or_name_ranked_by_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut origin = Origin::new();
    let store = origin.store(dir.path());
    origin.apply(
        &store,
        vec![
            person("00000000011", "山口 太郎", "ヤマグチ タロウ", "山口県山口市亀山町1番1号", "birth", "1980-04-01"),
            person("00000000022", "山口 太郎", "ヤマグチ タロウ", "山口県山口市中央3丁目2番1号", "birth", "1980-04-01"),
            person("00000000033", "山口 太郎", "ヤマグチ タロウ", "山口県萩市土原5番地", "birth", "1980-04-01"),
            person("00000000044", "山口 花子", "ヤマグチ ハナコ", "山口県山口市亀山町1番1号", "birth", "1980-04-01"),
        ],
    );
    // One dies: a removed record (除票) is still a candidate, ranked after by address.
    origin.apply(
        &store,
        vec![person("00000000033", "山口 太郎", "ヤマグチ タロウ", "山口県萩市土原5番地", "death", "2020-01-01")],
    );
    let out = store.search(&search("やまぐち　たろう", Some("山口市中央３－２－１")), &access("r1")).unwrap();
    let codes: Vec<&str> = out.candidates.iter().map(|c| c.record.juminhyo_code.as_str()).collect();
    assert_eq!(out.total, 3);
    assert_eq!(codes[0], "00000000022", "best address match first: {codes:?}");
    assert!(codes.contains(&"00000000033"));
    assert!(out.candidates.iter().all(|c| c.matched == Matched::Reading));
    // by kanji name, half-width kana, and with no address
    let by_name = store.search(&search("山口太郎", None), &access("r1")).unwrap();
    assert_eq!(by_name.total, 3);
    assert!(by_name.candidates.iter().all(|c| c.matched == Matched::Name));
    assert_eq!(by_name.candidates[2].record.status, "removed", "removed last when addresses say nothing");
    assert_eq!(store.search(&search("ﾔﾏｸﾞﾁ ﾀﾛｳ", None), &access("r1")).unwrap().total, 3);
    // wrong sex or birth date: nothing
    let mut other = search("山口太郎", None);
    other.sex = 2;
    assert_eq!(store.search(&other, &access("r1")).unwrap().total, 0);
    other.sex = 1;
    other.birth_date = "1980-04-02".into();
    assert_eq!(store.search(&other, &access("r1")).unwrap().total, 0);
    // the limit caps the answer, not the count
    let mut few = search("ヤマグチタロウ", Some("萩市"));
    few.limit = 1;
    let top = store.search(&few, &access("r1")).unwrap();
    assert_eq!((top.total, top.candidates.len()), (3, 1));
    assert_eq!(top.candidates[0].record.juminhyo_code, "00000000033");
    // every search logged, touching what it returned
    let entries = store.audit_entries(0, u64::MAX, true).unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[5].codes.as_deref(), Some(&["00000000033".to_string()][..]));
    assert!(store.search(&search("  ", None), &access("r1")).is_err());
}

#[test]
fn name_index_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut origin = Origin::new();
    let store = origin.store(dir.path());
    origin.apply(&store, vec![person("00000000011", "田中 一郎", "タナカ イチロウ", "萩市1", "birth", "1980-04-01")]);
    assert_eq!(store.search(&search("田中一郎", None), &access("r")).unwrap().total, 1);
    // a name change, an alias, then a code change
    let mut renamed = person("00000000011", "佐藤 一郎", "サトウ イチロウ", "萩市1", "error_correction", "2001-01-01");
    renamed.alias = Some("John Sato".into());
    origin.apply(&store, vec![renamed.clone()]);
    assert_eq!(store.search(&search("田中一郎", None), &access("r")).unwrap().total, 0);
    assert_eq!(store.search(&search("佐藤 一郎", None), &access("r")).unwrap().total, 1);
    assert_eq!(store.search(&search("ＪｏｈｎＳａｔｏ", None), &access("r")).unwrap().total, 1);
    let mut moved = renamed.clone();
    moved.juminhyo_code = "00000000099".into();
    moved.previous_juminhyo_code = Some("00000000011".into());
    moved.reason = "juminhyo_code_change".into();
    moved.changed_on = "2002-01-01".into();
    origin.apply(&store, vec![moved]);
    let found = store.search(&search("佐藤一郎", None), &access("r")).unwrap();
    assert_eq!(found.candidates.iter().map(|c| c.record.juminhyo_code.as_str()).collect::<Vec<_>>(), ["00000000099"]);
    // the reading index (written by apply) and the name index agree on one record
    let both = store.search(&search("サトウイチロウ", None), &access("r")).unwrap();
    assert_eq!(both.total, 1);
}

#[test]
fn batch_confirmation_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut origin = Origin::new();
    let store = origin.store(dir.path());
    let p = |code: &str, reason: &str| person(code, "山口 太郎", "ヤマグチ タロウ", "萩市1", reason, "2001-02-03");
    origin.apply(&store, vec![p("00000000001", "birth"), p("00000000002", "birth"), p("00000000003", "birth")]);
    let mut changed = p("00000000005", "juminhyo_code_change");
    changed.previous_juminhyo_code = Some("00000000004".into());
    origin.apply(&store, vec![p("00000000002", "move_out"), p("00000000003", "death"), p("00000000004", "birth")]);
    origin.apply(&store, vec![changed]);
    let asked =
        ["00000000003", "00000000001", "00000000002", "99999999999", "00000000004", "0000000000x", "00000000001"];
    let (c, id) = store.confirm(asked.concat().as_bytes(), &access("pension")).unwrap();
    use query::{CURRENT, MOVED_OUT, REMOVED, UNKNOWN};
    assert_eq!(c.status, vec![REMOVED, CURRENT, MOVED_OUT, UNKNOWN, CURRENT, UNKNOWN, CURRENT]);
    assert_eq!(c.reason[0], query::reason_code("death"));
    assert_eq!(c.reason[2], query::reason_code("move_out"));
    assert_eq!(c.reason[3], 0);
    assert_eq!(c.changed_on[0], 20010203);
    assert_eq!(c.redirected, vec![(4, "00000000005".to_string())]);
    assert_eq!(c.touched, b"00000000001000000000020000000000300000000005".to_vec());
    let entry = store.audit_entry(id, true).unwrap().unwrap();
    assert_eq!((entry.kind.as_str(), entry.items, entry.touched), ("confirm", 7, 4));
    assert!(entry.detail.contains("unknown 2, redirected 1"), "{}", entry.detail);
    assert!(store.confirm(b"0123", &access("pension")).is_err());
    // the disclosure of one resident finds it
    let history = store.audit_touching("00000000005").unwrap();
    assert_eq!(history.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
    // lookups follow the code change too
    let l = store.lookup("00000000004", &access("r")).unwrap();
    assert_eq!(l.record.unwrap().juminhyo_code, "00000000005");
    assert_eq!(l.redirected_from.as_deref(), Some("00000000004"));
    assert!(store.lookup("99999999999", &access("r")).unwrap().record.is_none());
    assert!(store.lookup_number("123456789018", &access("r")).unwrap().record.is_some());
    assert!(store.audit_verify(&[]).unwrap().ok);
}

// ---- the chain itself, tampered with underneath -------------------------------------------

struct Log {
    _dir: tempfile::TempDir,
    env: heed::Env,
    dbs: AuditDbs,
}

fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    #[allow(unsafe_code)]
    let env = unsafe { EnvOpenOptions::new().map_size(1 << 24).max_dbs(4).open(dir.path()).unwrap() };
    let mut txn = env.write_txn().unwrap();
    let mut create = |name: &str| -> Database<Bytes, Bytes> { env.create_database(&mut txn, Some(name)).unwrap() };
    let dbs = AuditDbs { entries: create("audit"), index: create("audit_index"), meta: create("meta") };
    txn.commit().unwrap();
    Log { _dir: dir, env, dbs }
}

impl Log {
    fn append(&self, time: u64, codes: &[&str]) -> u64 {
        let mut txn = self.env.write_txn().unwrap();
        let event = Event {
            time,
            requester: "r".into(),
            task: "t".into(),
            kind: "code".into(),
            items: 1,
            ..Default::default()
        };
        let packed = audit::pack_codes(codes.iter().map(|c| <[u8; 11]>::try_from(c.as_bytes()).unwrap()));
        let id = self.dbs.append(&mut txn, event, packed).unwrap();
        txn.commit().unwrap();
        id
    }

    fn verify(&self) -> audit::Verification {
        self.dbs.verify(&self.env.read_txn().unwrap(), &[]).unwrap()
    }

    fn edit(&self, id: u64, f: impl Fn(&mut AuditEntry)) {
        let mut txn = self.env.write_txn().unwrap();
        let bytes = self.dbs.entries.get(&txn, &id.to_be_bytes()).unwrap().unwrap().to_vec();
        let mut e: AuditEntry = wire::decode(&bytes, "e").unwrap();
        f(&mut e);
        self.dbs.entries.put(&mut txn, &id.to_be_bytes(), &wire::encode(&e).unwrap()).unwrap();
        txn.commit().unwrap();
    }

    fn delete(&self, id: u64) {
        let mut txn = self.env.write_txn().unwrap();
        self.dbs.entries.delete(&mut txn, &id.to_be_bytes()).unwrap();
        txn.commit().unwrap();
    }
}

fn filled() -> Log {
    let log = log();
    for i in 0..10u64 {
        log.append(1_000 + i * 100, &[&format!("{:011}", i % 3)]);
    }
    assert!(log.verify().ok);
    log
}

#[test]
fn chain_detects_edits_deletions_and_a_cut_tail() {
    let log = filled();
    log.edit(4, |e| e.requester = "someone else".into());
    let v = log.verify();
    assert!(!v.ok);
    assert_eq!(v.problems[0].0, 5, "{:?}", v.problems);
    assert!(v.problems[0].1.contains("entry 4 was edited"), "{:?}", v.problems);

    let log = filled();
    log.delete(6);
    let v = log.verify();
    assert!(v.problems.iter().any(|(id, what)| *id == 7 && what.contains("missing")), "{:?}", v.problems);

    let log = filled();
    log.delete(10);
    let v = log.verify();
    assert!(v.problems.iter().any(|(_, what)| what.contains("tail removed")), "{:?}", v.problems);

    let log = filled();
    log.edit(10, |e| e.allowed = !e.allowed);
    assert!(log.verify().problems[0].1.contains("does not hash to the head"));

    let log = filled();
    log.delete(1);
    assert!(!log.verify().ok, "deleting the first entry is caught too");
}

#[test]
fn checkpoints_catch_a_rewritten_chain() {
    let log = filled();
    let txn = log.env.read_txn().unwrap();
    let (_, head) = log.dbs.head(&txn).unwrap();
    drop(txn);
    let checkpoint = [(10u64, head)];
    assert!(log.dbs.verify(&log.env.read_txn().unwrap(), &checkpoint).unwrap().ok);
    // Rewrite entry 10 and recompute the head, as someone with write access could.
    log.edit(10, |e| e.requester = "forged".into());
    let mut txn = log.env.write_txn().unwrap();
    let bytes = log.dbs.entries.get(&txn, &10u64.to_be_bytes()).unwrap().unwrap().to_vec();
    let mut head = 11u64.to_be_bytes().to_vec();
    head.extend_from_slice(&crypto::sha256(&bytes));
    log.dbs.meta.put(&mut txn, b"audit:head", &head).unwrap();
    txn.commit().unwrap();
    assert!(log.verify().ok, "internally consistent again");
    let v = log.dbs.verify(&log.env.read_txn().unwrap(), &checkpoint).unwrap();
    assert!(!v.ok && v.problems[0].1.contains("checkpoint"), "{:?}", v.problems);
}

#[test]
fn purge_keeps_the_rest_verifiable_and_indexes_clean() {
    let log = filled();
    let mut txn = log.env.write_txn().unwrap();
    let event = Event {
        time: 5_000,
        requester: "auditor".into(),
        task: "audit".into(),
        kind: "purge".into(),
        ..Default::default()
    };
    let p = log.dbs.purge(&mut txn, 1_450, event).unwrap();
    txn.commit().unwrap();
    assert_eq!((p.purged, p.first_kept, p.entry_id), (5, 6, 11));
    let v = log.verify();
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!((v.first_id, v.last_id, v.entries), (6, 11, 6));
    let txn = log.env.read_txn().unwrap();
    let kept = log.dbs.range(&txn, 0, u64::MAX, false).unwrap();
    assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10, 11]);
    let touching: Vec<u64> = log.dbs.touching(&txn, "00000000000").unwrap().iter().map(|e| e.id).collect();
    assert_eq!(touching, vec![7, 10], "entries 1 and 4 purged with their index keys");
    assert!(log.dbs.index.iter(&txn).unwrap().count() > 0);
    let purge_entry = log.dbs.entry(&txn, 11, false).unwrap().unwrap();
    assert_eq!((purge_entry.kind.as_str(), purge_entry.items), ("purge", 5));
    drop(txn);
    // a purge that removes nothing is still logged, and deleting a kept entry is caught
    let mut txn = log.env.write_txn().unwrap();
    let event = Event { time: 6_000, kind: "purge".into(), ..Default::default() };
    assert_eq!(log.dbs.purge(&mut txn, 0, event).unwrap().purged, 0);
    txn.commit().unwrap();
    assert!(log.verify().ok);
    log.delete(6);
    assert!(!log.verify().ok);
}

#[test]
fn purge_by_time_reaches_entries_logged_out_of_order() {
    let log = log();
    // times: entry 3 is logged late with an old time, entry 5 too
    for (time, code) in [
        (1_000, "00000000001"),
        (3_000, "00000000002"),
        (500, "00000000003"),
        (4_000, "00000000002"),
        (900, "00000000003"),
    ] {
        log.append(time, &[code]);
    }
    let before_purge = log.verify();
    let mut txn = log.env.write_txn().unwrap();
    let event = Event { time: 9_000, kind: "purge".into(), ..Default::default() };
    let p = log.dbs.purge(&mut txn, 2_000, event).unwrap();
    txn.commit().unwrap();
    // entry 1 removed from the front; 3 and 5 reduced to tombstones
    assert_eq!((p.purged, p.first_kept, p.entry_id), (3, 2, 6));
    let v = log.dbs.verify(&log.env.read_txn().unwrap(), &[(before_purge.last_id, before_purge.head)]).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    let txn = log.env.read_txn().unwrap();
    let kept: Vec<u64> = log.dbs.range(&txn, 0, u64::MAX, false).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(kept, vec![2, 4, 6]);
    assert!(log.dbs.touching(&txn, "00000000003").unwrap().is_empty());
    assert!(log.dbs.entry(&txn, 3, false).unwrap().is_none(), "a tombstone reads as gone");
    drop(txn);
    // once entry 2 goes too, the tombstone after it leaves the chain's front with it
    let mut txn = log.env.write_txn().unwrap();
    let event = Event { time: 9_500, kind: "purge".into(), ..Default::default() };
    let p = log.dbs.purge(&mut txn, 3_500, event).unwrap();
    txn.commit().unwrap();
    assert_eq!((p.purged, p.first_kept), (1, 4));
    assert!(log.verify().ok);
    // a tombstone cannot stand for an edited entry: its hash must still chain
    log.edit(4, |e| e.requester = "someone else".into());
    assert!(!log.verify().ok);
}

#[test]
fn bulk_entries_are_found_without_a_code_index() {
    let log = log();
    let many: Vec<String> = (0..(audit::INDEX_LIMIT as u64 + 5)).map(|i| format!("{:011}", i * 7)).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let bulk = log.append(100, &refs);
    let small = log.append(200, &["00000000007"]);
    let txn = log.env.read_txn().unwrap();
    let ids = |code: &str| log.dbs.touching(&txn, code).unwrap().iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids("00000000007"), vec![bulk, small]);
    assert_eq!(ids("00000000014"), vec![bulk]);
    assert_eq!(ids("00000000015"), Vec::<u64>::new());
    let code_keys = log.dbs.index.iter(&txn).unwrap().filter(|i| i.as_ref().unwrap().0[0] == b'c').count();
    assert_eq!(code_keys, 1, "only the small entry is indexed code by code");
}
