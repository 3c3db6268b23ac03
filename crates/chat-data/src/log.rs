//! What the data plane knows of the local log: the term of every epoch (as runs), the tail,
//! and a bounded cache of recent entries to serve children's catch-ups from memory.

use std::collections::VecDeque;

use crate::frame::{Entry, Epoch, Position, Term, TermRun};

/// The local log as the store holds it, handed to [`crate::DataPlane::new`] at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalLog {
    /// The position the store's snapshot (its oldest state) reflects; entries at or below it
    /// are not in the log. `Position::default()` for an empty store.
    pub base: Position,
    /// Term runs of the entries above `base`, oldest first (may be empty).
    pub runs: Vec<TermRun>,
    /// The last durable entry's epoch (`base.epoch` when the log is empty).
    pub last: Epoch,
    /// Recent entries (the newest up to the cache size) to serve catch-ups; may be empty.
    pub recent: Vec<Entry>,
}

/// The local log's shape and recent entries.
#[derive(Debug, Clone)]
pub(crate) struct LogIndex {
    base: Position,
    runs: Vec<TermRun>,
    last: Epoch,
    cache: VecDeque<Entry>,
    cache_limit: usize,
    /// Entries above this are never evicted: a child that needs them could not get them from
    /// a snapshot (snapshots reflect committed state).
    commit: Epoch,
}

impl LogIndex {
    pub(crate) fn new(log: LocalLog, cache_limit: usize) -> Self {
        let mut runs: Vec<TermRun> = log
            .runs
            .into_iter()
            .filter(|r| r.first_epoch > log.base.epoch && r.first_epoch <= log.last)
            .collect();
        runs.dedup_by_key(|r| r.term);
        let mut index = LogIndex {
            base: log.base,
            runs,
            last: log.last.max(log.base.epoch),
            cache: VecDeque::new(),
            cache_limit: cache_limit.max(1),
            commit: 0,
        };
        for entry in log.recent {
            let epoch = entry.position.epoch;
            if epoch > index.base.epoch
                && epoch <= index.last
                && index.term_at(epoch) == Some(entry.position.term)
                && index
                    .cache
                    .back()
                    .is_none_or(|b| b.position.epoch + 1 == epoch)
            {
                index.cache.push_back(entry);
            }
        }
        index.trim_cache();
        index
    }

    pub(crate) fn base(&self) -> Position {
        self.base
    }

    pub(crate) fn last(&self) -> Epoch {
        self.last
    }

    pub(crate) fn last_position(&self) -> Position {
        self.position_at(self.last).unwrap_or(self.base)
    }

    /// The term of the entry at `epoch`; `None` above the tail or below the base.
    pub(crate) fn term_at(&self, epoch: Epoch) -> Option<Term> {
        term_in_runs(&self.runs, self.base, self.last, epoch)
    }

    pub(crate) fn position_at(&self, epoch: Epoch) -> Option<Position> {
        self.term_at(epoch).map(|term| Position::new(term, epoch))
    }

    /// The first epoch of the run holding `epoch` (the base for the base itself).
    pub(crate) fn run_start(&self, epoch: Epoch) -> Epoch {
        if epoch <= self.base.epoch {
            return 0;
        }
        self.runs
            .iter()
            .rev()
            .find(|r| r.first_epoch <= epoch)
            .map_or(self.base.epoch, |r| r.first_epoch)
    }

    /// The runs covering `from..=last`.
    pub(crate) fn runs_from(&self, from: Epoch) -> Vec<TermRun> {
        let start = self.runs.partition_point(|r| r.first_epoch <= from);
        let mut runs = Vec::new();
        if start > 0 {
            runs.push(self.runs[start - 1]);
        }
        runs.extend_from_slice(&self.runs[start..]);
        runs
    }

    /// Appends entries that follow the tail directly.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            debug_assert_eq!(entry.position.epoch, self.last + 1);
            if self.runs.last().map(|r| r.term) != Some(entry.position.term) {
                self.runs.push(TermRun {
                    term: entry.position.term,
                    first_epoch: entry.position.epoch,
                });
            }
            self.last = entry.position.epoch;
            if self
                .cache
                .back()
                .is_none_or(|b| b.position.epoch + 1 == entry.position.epoch)
            {
                self.cache.push_back(entry.clone());
            }
        }
        self.trim_cache();
    }

    /// Forgets every entry above `epoch`.
    pub(crate) fn truncate_after(&mut self, epoch: Epoch) {
        let epoch = epoch.max(self.base.epoch);
        self.runs.retain(|r| r.first_epoch <= epoch);
        self.last = self.last.min(epoch);
        while self.cache.back().is_some_and(|b| b.position.epoch > epoch) {
            self.cache.pop_back();
        }
    }

    /// Replaces the whole log by a snapshot's state.
    pub(crate) fn reset_to(&mut self, base: Position) {
        self.base = base;
        self.runs.clear();
        self.last = base.epoch;
        self.cache.clear();
    }

    /// Entries `from..=to` if the cache holds all of them.
    pub(crate) fn cached(&self, from: Epoch, to: Epoch) -> Option<Vec<Entry>> {
        if from > to {
            return Some(Vec::new());
        }
        let first = self.cache.front()?.position.epoch;
        let last = self.cache.back()?.position.epoch;
        if from < first || to > last {
            return None;
        }
        let start = (from - first) as usize;
        let end = (to - first) as usize;
        Some(self.cache.range(start..=end).cloned().collect())
    }

    /// Entries up to `commit` are majority-durable and may leave the cache.
    pub(crate) fn set_commit(&mut self, commit: Epoch) {
        self.commit = commit;
        self.trim_cache();
    }

    fn trim_cache(&mut self) {
        while self.cache.len() > self.cache_limit
            && self
                .cache
                .front()
                .is_some_and(|e| e.position.epoch <= self.commit)
        {
            self.cache.pop_front();
        }
    }
}

/// The term at `epoch` in a log described by runs above `base` up to `last`.
pub(crate) fn term_in_runs(
    runs: &[TermRun],
    base: Position,
    last: Epoch,
    epoch: Epoch,
) -> Option<Term> {
    if epoch == base.epoch {
        return Some(base.term);
    }
    if epoch < base.epoch || epoch > last {
        return None;
    }
    runs.iter()
        .rev()
        .find(|r| r.first_epoch <= epoch)
        .map(|r| r.term)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: Term, epoch: Epoch) -> Entry {
        Entry {
            position: Position::new(term, epoch),
            payload: vec![epoch as u8],
        }
    }

    #[test]
    fn runs_track_terms_and_truncation() {
        let mut log = LogIndex::new(LocalLog::default(), 3);
        log.set_commit(4);
        log.append(&[entry(1, 1), entry(1, 2), entry(2, 3), entry(2, 4)]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(4), Some(2));
        assert_eq!(log.term_at(5), None);
        assert_eq!(log.run_start(4), 3);
        assert_eq!(log.run_start(2), 1);
        assert_eq!(log.cached(2, 4).map(|v| v.len()), Some(3));
        assert_eq!(log.cached(1, 4), None, "the cache keeps three");
        log.truncate_after(2);
        assert_eq!(log.last(), 2);
        assert_eq!(log.term_at(3), None);
        log.append(&[entry(3, 3)]);
        assert_eq!(log.term_at(3), Some(3));
        assert_eq!(log.runs_from(3).len(), 1);
        assert_eq!(log.runs_from(2).len(), 2);
    }
}
