//! A node's run slots: at most `max` runs at once; the others wait, first come first served.
//!
//! The run manager keeps one of these under the same lock as its map of runs, so a run is
//! either running (holding a slot) or waiting (in the queue), never both, never neither.

use std::collections::VecDeque;

/// How many runs hold a slot and how many wait for one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotUse {
    pub running: usize,
    pub waiting: usize,
}

impl SlotUse {
    pub fn total(self) -> usize {
        self.running + self.waiting
    }
}

#[derive(Debug)]
pub struct RunSlots<T> {
    max: usize,
    running: usize,
    waiting: VecDeque<T>,
}

impl<T> RunSlots<T> {
    /// `max` runs at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            running: 0,
            waiting: VecDeque::new(),
        }
    }

    pub fn used(&self) -> SlotUse {
        SlotUse {
            running: self.running,
            waiting: self.waiting.len(),
        }
    }

    /// Gives `item` a slot if one is free — it comes back: start it now — or else queues it
    /// behind the others (None).
    #[must_use]
    pub fn admit(&mut self, item: T) -> Option<T> {
        if self.running < self.max && self.waiting.is_empty() {
            self.running += 1;
            Some(item)
        } else {
            self.waiting.push_back(item);
            None
        }
    }

    /// A run ended and gives its slot back. The longest-waiting item takes it over and comes
    /// back (start it now); with nothing waiting the slot is free.
    #[must_use]
    pub fn release(&mut self) -> Option<T> {
        debug_assert!(self.running > 0, "a slot released that was never taken");
        let next = self.waiting.pop_front();
        if next.is_none() {
            self.running = self.running.saturating_sub(1);
        }
        next
    }

    /// Takes a waiting item out of the queue (cancelled before it got a slot).
    pub fn withdraw(&mut self, mut which: impl FnMut(&T) -> bool) -> Option<T> {
        let at = self.waiting.iter().position(&mut which)?;
        self.waiting.remove(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_max_runs_wait_and_take_freed_slots_in_arrival_order() {
        let mut slots = RunSlots::new(2);
        let started: Vec<_> = (0..4).filter_map(|i| slots.admit(i)).collect();
        assert_eq!(started, [0, 1], "exactly two run");
        assert_eq!(
            slots.used(),
            SlotUse {
                running: 2,
                waiting: 2
            }
        );
        assert_eq!(slots.release(), Some(2), "the oldest waiting run goes next");
        assert_eq!(slots.used().running, 2);
        assert_eq!(slots.release(), Some(3));
        assert_eq!(slots.release(), None);
        assert_eq!(slots.release(), None);
        assert_eq!(slots.used(), SlotUse::default());
        // A free slot is taken at once again.
        assert_eq!(slots.admit(9), Some(9));
    }

    #[test]
    fn a_newcomer_never_overtakes_the_queue() {
        let mut slots = RunSlots::new(1);
        assert_eq!(slots.admit("a"), Some("a"));
        assert_eq!(slots.admit("b"), None);
        // "a" ends and "b" takes its slot; "c" arrives while "b" runs: it waits.
        assert_eq!(slots.release(), Some("b"));
        assert_eq!(slots.admit("c"), None);
        assert_eq!(slots.release(), Some("c"));
    }

    #[test]
    fn a_withdrawn_run_leaves_the_queue_and_the_rest_keep_their_order() {
        let mut slots = RunSlots::new(1);
        let _ = slots.admit(0);
        for i in 1..4 {
            assert_eq!(slots.admit(i), None);
        }
        assert_eq!(slots.withdraw(|i| *i == 2), Some(2));
        assert_eq!(slots.withdraw(|i| *i == 2), None, "only once");
        assert_eq!(slots.release(), Some(1));
        assert_eq!(slots.release(), Some(3));
        assert_eq!(
            slots.used(),
            SlotUse {
                running: 1,
                waiting: 0
            }
        );
    }

    #[test]
    fn zero_means_one() {
        let mut slots = RunSlots::new(0);
        assert_eq!(slots.admit(()), Some(()));
        assert_eq!(slots.admit(()), None);
    }
}
