//! The CheckpointTracker: decides when a cursor may be committed.
//!
//! Pages arrive from the source in order, each with the cursor value it completes (if any). A
//! page is finished once it has been fully encoded (its record count is known) and every one of
//! its records has been acknowledged by the destination or recorded as a per-row failure. The
//! cursor advances only over a prefix of finished pages, so a crash at any moment resumes at a
//! point before which everything was acknowledged; the deterministic `$insert_id` makes anything
//! sent twice harmless.

use std::collections::VecDeque;

/// Identifies a page within one run, in source order.
pub type PageSeq = u64;

#[derive(Debug)]
struct PageState<C> {
    seq: PageSeq,
    cursor: Option<C>,
    /// Records the page produced; `None` until the page is fully encoded.
    expected: Option<u64>,
    finished: u64,
}

impl<C> PageState<C> {
    fn is_finished(&self) -> bool {
        self.expected.is_some_and(|n| self.finished >= n)
    }
}

#[derive(Debug)]
pub struct CheckpointTracker<C> {
    pages: VecDeque<PageState<C>>,
    next_seq: PageSeq,
}

impl<C> Default for CheckpointTracker<C> {
    fn default() -> Self {
        Self {
            pages: VecDeque::new(),
            next_seq: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("page {0} is not open (already committed or never opened)")]
    UnknownPage(PageSeq),
    #[error("page {seq} was acknowledged {finished} records but produced only {expected}")]
    OverAcknowledged {
        seq: PageSeq,
        finished: u64,
        expected: u64,
    },
}

impl<C> CheckpointTracker<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next page from the source; returns its sequence number.
    pub fn open_page(&mut self, cursor: Option<C>) -> PageSeq {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pages.push_back(PageState {
            seq,
            cursor,
            expected: None,
            finished: 0,
        });
        seq
    }

    fn page(&mut self, seq: PageSeq) -> Result<&mut PageState<C>, TrackerError> {
        let front = self
            .pages
            .front()
            .map(|p| p.seq)
            .ok_or(TrackerError::UnknownPage(seq))?;
        let idx = seq
            .checked_sub(front)
            .ok_or(TrackerError::UnknownPage(seq))? as usize;
        self.pages
            .get_mut(idx)
            .ok_or(TrackerError::UnknownPage(seq))
    }

    /// The page is fully encoded into `records` records (per-row errors count as finished).
    pub fn seal_page(&mut self, seq: PageSeq, records: u64) -> Result<(), TrackerError> {
        let page = self.page(seq)?;
        page.expected = Some(records);
        Self::check(page)
    }

    /// `n` records of the page were acknowledged or recorded as failed.
    pub fn finish_records(&mut self, seq: PageSeq, n: u64) -> Result<(), TrackerError> {
        let page = self.page(seq)?;
        page.finished += n;
        Self::check(page)
    }

    fn check(page: &PageState<C>) -> Result<(), TrackerError> {
        match page.expected {
            Some(expected) if page.finished > expected => Err(TrackerError::OverAcknowledged {
                seq: page.seq,
                finished: page.finished,
                expected,
            }),
            _ => Ok(()),
        }
    }

    /// Removes the finished prefix of pages and returns the newest cursor it completes, if it
    /// moved. Call after every update; commit what it returns.
    pub fn take_commit(&mut self) -> Option<C> {
        let mut newest = None;
        while self.pages.front().is_some_and(PageState::is_finished) {
            if let Some(page) = self.pages.pop_front() {
                if page.cursor.is_some() {
                    newest = page.cursor;
                }
            }
        }
        newest
    }

    /// Pages still waiting (for progress reporting and for the end-of-run check).
    pub fn pending_pages(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_a_fully_acknowledged_prefix() {
        let mut t = CheckpointTracker::new();
        let p0 = t.open_page(Some(10));
        let p1 = t.open_page(None); // a page that ends inside a run of equal cursor values
        let p2 = t.open_page(Some(30));
        t.seal_page(p0, 2).unwrap();
        t.seal_page(p1, 1).unwrap();
        t.seal_page(p2, 3).unwrap();
        t.finish_records(p2, 3).unwrap();
        t.finish_records(p1, 1).unwrap();
        assert_eq!(t.take_commit(), None, "page 0 is not acknowledged yet");
        t.finish_records(p0, 1).unwrap();
        assert_eq!(t.take_commit(), None);
        t.finish_records(p0, 1).unwrap();
        assert_eq!(
            t.take_commit(),
            Some(30),
            "all three finished: the newest cursor"
        );
        assert_eq!(t.pending_pages(), 0);
        assert_eq!(t.take_commit(), None, "nothing new");
    }

    #[test]
    fn an_unsealed_page_blocks_even_when_its_records_are_acknowledged() {
        let mut t = CheckpointTracker::new();
        let p0 = t.open_page(Some(1));
        t.finish_records(p0, 5).unwrap();
        assert_eq!(t.take_commit(), None);
        t.seal_page(p0, 5).unwrap();
        assert_eq!(t.take_commit(), Some(1));
    }

    #[test]
    fn empty_pages_and_errors() {
        let mut t: CheckpointTracker<i32> = CheckpointTracker::new();
        let p0 = t.open_page(Some(7));
        t.seal_page(p0, 0).unwrap();
        assert_eq!(
            t.take_commit(),
            Some(7),
            "a page of only invalid rows still advances"
        );
        assert_eq!(t.finish_records(p0, 1), Err(TrackerError::UnknownPage(0)));
        let p1 = t.open_page(None);
        t.seal_page(p1, 1).unwrap();
        assert!(matches!(
            t.finish_records(p1, 2),
            Err(TrackerError::OverAcknowledged { .. })
        ));
    }
}
