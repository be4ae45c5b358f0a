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
//! Each group has its own slot (outcome + condvar), so a commit wakes only the members
//! of its group, and one member of the next group to lead it: with 32 requesters, a
//! shared condvar woke every waiter at every commit, and the half not yet committed
//! went back to sleep, which cost a context switch per query on 2 cores.
//!
//! Nothing is answered before its entry is durable: `Store::audit_commit` returns only
//! after the commit holding the entry returned; a crash before that loses the entry
//! and the answer with it (the caller never had the answer). The chain stays one chain:
//! the leader reads the head inside its write transaction, and every other writer of
//! the audit log (`audit_purge`, LMDB's one writer at a time) does the same.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::audit::Event;
use crate::error::{CoreError, Result};
use crate::store::Store;

/// The queue of entries waiting for a commit, and whether a commit is in flight.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Entries waiting for the next commit, in the order they will be chained.
    queue: Vec<(Event, Vec<u8>)>,
    /// The slot of the entries in `queue` (a new one whenever a leader takes them).
    queued: Arc<Slot>,
    /// A leader is writing (and syncing) a group.
    leading: bool,
    /// Commits made and entries they held (for tests and the bench's report).
    commits: u64,
    entries: u64,
    /// Wall time leaders spent writing and committing groups, µs: next to the elapsed
    /// time it says whether the chain of commits is what bounds the rate.
    busy_us: u64,
}

/// One group's outcome, which only its members wait on.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// The group's entry ids in queue order, or why its commit failed.
    outcome: Option<std::result::Result<Vec<u64>, String>>,
    /// The previous commit is done and this group, still queued, has no leader yet:
    /// the member that takes this flag tries to lead it.
    lead_wanted: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking leader resolves its group first (`Lead`), so the state stays
    // consistent even when a lock was poisoned.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// Member `index`'s entry id once its group committed (`Some`), or `None` when it
    /// was asked to lead the group.
    fn wait(&self, index: usize) -> Option<Result<u64>> {
        let mut s = locked(&self.state);
        loop {
            if let Some(outcome) = &s.outcome {
                return Some(pick(outcome, index));
            }
            if s.lead_wanted {
                s.lead_wanted = false;
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn resolve(&self, outcome: std::result::Result<Vec<u64>, String>) {
        locked(&self.state).outcome = Some(outcome);
        self.changed.notify_all();
    }

    fn want_leader(&self) {
        locked(&self.state).lead_wanted = true;
        self.changed.notify_one();
    }
}

fn pick(outcome: &std::result::Result<Vec<u64>, String>, index: usize) -> Result<u64> {
    match outcome {
        Ok(ids) => ids.get(index).copied().ok_or_else(|| CoreError::Store("audit commit: entry lost".into())),
        Err(why) => Err(CoreError::Store(why.clone())),
    }
}

impl GroupCommit {
    /// (durable commits made, entries they held) since the store was opened.
    pub fn counts(&self) -> (u64, u64) {
        let st = locked(&self.state);
        (st.commits, st.entries)
    }

    /// Wall time (µs) leaders spent writing and committing groups since opened.
    pub fn busy_us(&self) -> u64 {
        locked(&self.state).busy_us
    }
}

/// A leader's group, resolved when dropped, also when writing it panicked: the members
/// are told (an error) instead of waiting for ever, and the next group gets a leader.
struct Lead<'a> {
    group: &'a GroupCommit,
    slot: &'a Slot,
    outcome: Option<Result<Vec<u64>>>,
    began: Instant,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let outcome = match self.outcome.take() {
            Some(Ok(ids)) => Ok(ids),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the audit commit panicked".to_string()),
        };
        let next = {
            let mut st = locked(&self.group.state);
            st.leading = false;
            st.busy_us += self.began.elapsed().as_micros() as u64;
            if let Ok(ids) = &outcome {
                st.commits += 1;
                st.entries += ids.len() as u64;
            }
            (!st.queue.is_empty()).then(|| Arc::clone(&st.queued))
        };
        // Whoever queued while this group synced waits on the next slot: wake one of
        // them to lead (a newcomer finding no leader may have taken the lead already;
        // then the woken one goes back to waiting). First, before this group's members:
        // the next commit is the critical path, their answers are not.
        if let Some(next) = next {
            next.want_leader();
        }
        self.slot.resolve(outcome);
    }
}

impl Store {
    /// Append an audit entry and return its id once it is durable, sharing the commit
    /// with the entries of concurrent callers; `codes` as from `audit::pack_codes`.
    pub fn audit_commit(&self, event: Event, codes: Vec<u8>) -> Result<u64> {
        let group = &self.group;
        let mut st = locked(&group.state);
        let index = st.queue.len();
        st.queue.push((event, codes));
        let slot = Arc::clone(&st.queued);
        loop {
            // Lead when no commit is in flight and this entry's group is still queued
            // (otherwise its outcome is set or being made: wait for it).
            if !st.leading && Arc::ptr_eq(&st.queued, &slot) {
                st.leading = true;
                let batch = std::mem::take(&mut st.queue);
                st.queued = Arc::new(Slot::default());
                drop(st);
                let mut lead = Lead { group, slot: &slot, outcome: None, began: Instant::now() };
                lead.outcome = Some(self.write_group(batch));
                drop(lead);
                return slot.wait(index).unwrap_or_else(|| Err(CoreError::Store("audit commit: unresolved".into())));
            }
            drop(st);
            if let Some(outcome) = slot.wait(index) {
                return outcome;
            }
            st = locked(&group.state);
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

    /// Wall time (µs) the group commit's leaders spent writing and committing.
    pub fn audit_commit_busy_us(&self) -> u64 {
        self.group.busy_us()
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
