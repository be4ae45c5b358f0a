//! Group commit of audit entries: concurrent queries share one durable LMDB commit.
//!
//! A durable commit (fsync of the data and meta pages) costs hundreds of µs whatever it
//! holds, so one commit per query caps a tier at ~1-2k audited queries a second. Here
//! each query appends its entry to a queue and waits; whichever waiter finds no commit
//! in flight becomes the leader: it takes the whole queue, appends every entry in queue
//! order in one write transaction, commits it, and hands each waiter its entry id. The
//! entries queued while that commit was syncing form the next group. Nobody waits on a
//! timer: a lone query commits at once, and the groups grow with the load.
//!
//! Nothing is answered before its entry is durable: `Store::audit_commit` returns only
//! after the commit holding the entry returned; a crash before that loses the entry
//! and the answer with it (the caller never had the answer). The chain stays one chain:
//! the leader reads the head inside its write transaction, and every other writer of
//! the audit log (`audit_purge`, LMDB's one writer at a time) does the same.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::audit::Event;
use crate::error::{CoreError, Result};
use crate::store::Store;

/// The queue of entries waiting for a commit and the outcomes of the committed ones.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    committed: Condvar,
}

#[derive(Default)]
struct State {
    /// Entries waiting for the next commit; `queue[k]` holds ticket `first_queued + k`.
    queue: Vec<(Event, Vec<u8>)>,
    first_queued: u64,
    /// A leader is writing (and syncing) a group.
    leading: bool,
    /// ticket -> entry id, or why its commit failed; each waiter removes its own.
    outcomes: HashMap<u64, std::result::Result<u64, String>>,
    /// Commits made and entries they held (for tests and the bench's report).
    commits: u64,
    entries: u64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking leader resolves its group first (`Resolve`), so the state stays
        // consistent even when the lock was poisoned.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (durable commits made, entries they held) since the store was opened.
    pub fn counts(&self) -> (u64, u64) {
        let st = self.lock();
        (st.commits, st.entries)
    }
}

/// Resolves a leader's group when dropped, also when writing it panicked: the waiters
/// are told (an error) instead of waiting for ever, and the next leader can go.
struct Resolve<'a> {
    group: &'a GroupCommit,
    first: u64,
    len: usize,
    outcome: Option<Result<Vec<u64>>>,
}

impl Drop for Resolve<'_> {
    fn drop(&mut self) {
        let mut st = self.group.lock();
        st.leading = false;
        match self.outcome.take() {
            Some(Ok(ids)) => {
                st.commits += 1;
                st.entries += ids.len() as u64;
                for (k, id) in ids.into_iter().enumerate() {
                    st.outcomes.insert(self.first + k as u64, Ok(id));
                }
            }
            failed => {
                let why = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => "the audit commit panicked".to_string(),
                };
                for k in 0..self.len as u64 {
                    st.outcomes.insert(self.first + k, Err(why.clone()));
                }
            }
        }
        self.group.committed.notify_all();
    }
}

impl Store {
    /// Append an audit entry and return its id once it is durable, sharing the commit
    /// with the entries of concurrent callers; `codes` as from `audit::pack_codes`.
    pub fn audit_commit(&self, event: Event, codes: Vec<u8>) -> Result<u64> {
        let group = &self.group;
        let mut st = group.lock();
        let ticket = st.first_queued + st.queue.len() as u64;
        st.queue.push((event, codes));
        loop {
            if let Some(outcome) = st.outcomes.remove(&ticket) {
                return outcome.map_err(CoreError::Store);
            }
            if st.leading {
                st = group.committed.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.leading = true;
            let batch = std::mem::take(&mut st.queue);
            let first = st.first_queued;
            st.first_queued += batch.len() as u64;
            drop(st);
            let mut resolve = Resolve { group, first, len: batch.len(), outcome: None };
            resolve.outcome = Some(self.write_group(batch));
            drop(resolve);
            st = group.lock();
        }
    }

    /// One write transaction appending `batch` in order, committed durably.
    fn write_group(&self, batch: Vec<(Event, Vec<u8>)>) -> Result<Vec<u64>> {
        let mut txn = self.env.write_txn()?;
        let mut ids = Vec::with_capacity(batch.len());
        for (event, codes) in batch {
            ids.push(self.dbs.audit.append(&mut txn, event, codes)?);
        }
        txn.commit()?;
        Ok(ids)
    }

    /// (durable commits made by the group commit, entries they held) since opened.
    pub fn audit_commit_counts(&self) -> (u64, u64) {
        self.group.counts()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use crate::audit::Event;
    use crate::store::Role;
    use crate::tests::Net;

    #[test]
    fn concurrent_entries_share_commits_and_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Net::new().store(dir.path(), Role::National));
        const THREADS: usize = 16;
        const EACH: usize = 50;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..EACH)
                        .map(|n| {
                            let event = Event {
                                time: 1,
                                requester: format!("r{t}"),
                                kind: "code".into(),
                                allowed: true,
                                items: 1,
                                detail: format!("{t}/{n}"),
                                ..Event::default()
                            };
                            (store.audit_commit(event, Vec::new()).unwrap(), format!("{t}/{n}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let answered: Vec<(u64, String)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let ids: HashSet<u64> = answered.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), THREADS * EACH, "every entry its own id");
        for (id, detail) in &answered {
            let entry = store.audit_entry(*id, false).unwrap().expect("answered, so stored");
            assert_eq!(&entry.detail, detail);
        }
        let v = store.audit_verify(&[]).unwrap();
        assert!(v.ok, "{:?}", v.problems);
        assert_eq!(v.entries, (THREADS * EACH) as u64);
        let (commits, entries) = store.audit_commit_counts();
        assert_eq!(entries, (THREADS * EACH) as u64);
        assert!(commits <= entries);
    }
}
