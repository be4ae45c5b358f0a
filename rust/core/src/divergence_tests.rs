//! Issue 9 in the core: the 個人番号 index as a set (case 3), `check`, the Merkle sums,
//! `reconcile`, the rebuilds and the recorded role.

use crate::store::{Role, Store};
use crate::tests::{update, Net, A, B};

const K: &str = "123456789018";

/// A resident moves A → B, B changes the code X → Y, the resident moves back to A
/// (same 個人番号 throughout). Bundles: A [birth X, move-out X, move-in Y], B [move-in X,
/// code change, move-out Y].
fn story(net: &mut Net) -> Vec<Vec<u8>> {
    let a1 = net.bundle(A, vec![update(0, "00000099999", A, "birth", "2026-04-01")]);
    let a2 = net.bundle(A, vec![update(0, "00000099999", A, "move_out", "2026-04-10")]);
    let b1 = net.bundle(B, vec![update(0, "00000099999", B, "move_in", "2026-04-11")]);
    let mut change = update(0, "00000088888", B, "juminhyo_code_change", "2026-05-01");
    change.previous_juminhyo_code = Some("00000099999".into());
    let b2 = net.bundle(B, vec![change]);
    let b3 = net.bundle(B, vec![update(0, "00000088888", B, "move_out", "2026-06-01")]);
    let a3 = net.bundle(A, vec![update(0, "00000088888", A, "move_in", "2026-06-02")]);
    vec![a1, a2, a3, b1, b2, b3]
}

#[test]
fn number_index_keeps_the_resident_in_every_order() {
    let mut net = Net::new();
    let bundles = story(&mut net);
    let dir = tempfile::tempdir().unwrap();
    // orders that respect each chain, interleaved differently (and one by one)
    let orders: [[usize; 6]; 4] = [[0, 1, 2, 3, 4, 5], [3, 4, 5, 0, 1, 2], [0, 3, 1, 4, 2, 5], [0, 1, 3, 2, 4, 5]];
    let mut stores: Vec<Store> = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let store = net.store(&dir.path().join(i.to_string()), Role::Aggregator);
        for &n in order {
            store.apply(&[bundles[n].as_slice()], crate::tests::NOW).unwrap();
        }
        let held = store.by_number(K).unwrap().expect("the 個人番号 index lost the resident");
        assert_eq!(
            (held.juminhyo_code.as_str(), held.status.as_str(), held.municipality.as_str()),
            ("00000088888", "active", A)
        );
        assert_eq!(store.check().unwrap(), vec![]);
        stores.push(store);
    }
    for other in &stores[1..] {
        assert!(stores[0].reconcile(other).unwrap().equal());
    }
}

#[test]
fn check_finds_a_lost_index_entry_and_rebuild_fixes_it() {
    let mut net = Net::new();
    let bundles = story(&mut net);
    let dir = tempfile::tempdir().unwrap();
    let store = net.store(dir.path(), Role::Aggregator);
    let raws: Vec<&[u8]> = bundles.iter().map(Vec::as_slice).collect();
    store.apply(&raws, crate::tests::NOW).unwrap();
    {
        let mut txn = store.env.write_txn().unwrap();
        store.dbs.by_number.delete_one_duplicate(&mut txn, K.as_bytes(), b"00000088888").unwrap();
        txn.commit().unwrap();
    }
    let found = store.check().unwrap();
    assert_eq!(found.iter().map(|i| i.kind).collect::<Vec<_>>(), vec!["number_index_missing"]);
    store.rebuild_indexes().unwrap();
    assert_eq!(store.check().unwrap(), vec![]);
    assert_eq!(store.rebuild_codes(&["00000088888".into(), "00000099999".into()]).unwrap(), 0);
}

#[test]
fn reconcile_names_what_one_side_lacks() {
    let mut net = Net::new();
    let bundles = story(&mut net);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) =
        (net.store(&dir.path().join("a"), Role::Aggregator), net.store(&dir.path().join("b"), Role::Aggregator));
    let raws: Vec<&[u8]> = bundles.iter().map(Vec::as_slice).collect();
    a.apply(&raws, crate::tests::NOW).unwrap();
    b.apply(&raws[3..], crate::tests::NOW).unwrap(); // B's chain: records equal to a's but for Y
    b.apply(&raws[..2], crate::tests::NOW).unwrap(); // b lacks A's move-in of Y (a3)
    let found = a.reconcile(&b).unwrap();
    let summary: Vec<_> = found
        .origins
        .iter()
        .map(|o| (o.origin.as_str(), o.a_head.map(|h| h.0), o.b_head.map(|h| h.0), o.codes.len()))
        .collect();
    // Y is A's record in a (moved back in) and B's (moved out) in b: it differs in both
    // origins' trees; only A's head differs.
    assert_eq!(summary, vec![(B, Some(3), Some(3), 1), (A, Some(3), Some(2), 1)]);
    for diff in &found.origins {
        let codes: Vec<_> = diff.codes.iter().map(|c| (c.code.as_str(), c.newer)).collect();
        assert_eq!(codes, vec![("00000088888", "a")]);
    }
    assert_eq!(found.nodes_compared, 2 * (1 + 10 * 3)); // one path of siblings per origin
    b.apply(&raws[2..3], crate::tests::NOW).unwrap();
    assert!(a.reconcile(&b).unwrap().equal());
}
#[test]
fn a_store_keeps_its_role() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    drop(net.store(dir.path(), Role::Aggregator));
    let opts = crate::store::StoreOptions {
        role: Role::National,
        centre: None,
        map_size: 1 << 26,
        max_bundle_bytes: 1 << 20,
        pending_limit: 100,
        require_attestation: true,
        max_skew_us: crate::validate::DEFAULT_SKEW_US,
        prefectures: None,
    };
    let registry = || net.registry_with(|_| {});
    let refused = Store::open(dir.path(), registry(), opts).err().unwrap().to_string();
    assert!(refused.contains("aggregator"), "{refused}");
    let opts = crate::store::StoreOptions {
        role: Role::National,
        centre: None,
        map_size: 1 << 26,
        max_bundle_bytes: 1 << 20,
        pending_limit: 100,
        require_attestation: true,
        max_skew_us: crate::validate::DEFAULT_SKEW_US,
        prefectures: None,
    };
    let recorded = Store::open_as_recorded(dir.path(), registry(), opts).unwrap();
    assert_eq!(recorded.role(), Role::Aggregator);
    // without the centre key it reads but cannot apply (it could not attest)
    assert!(recorded.apply(&[], crate::tests::NOW).is_err());
    assert_eq!(recorded.check().unwrap(), vec![]);
}
