//! Deadlines of forwards and TCP connections: a min-heap of (when, token, generation).
//!
//! Entries are never removed early: an entry whose slot was reused (another generation) or
//! whose deadline moved is checked and skipped (or pushed again) by the owner when it pops,
//! so setting a deadline is one push and cancelling one is free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl Timers {
    pub fn push(&mut self, when: Instant, token: u64, gen: u64) {
        self.heap.push(Reverse((when, token, gen)));
    }

    /// How long until the earliest deadline (zero when one is due), None when there is none.
    pub fn next_timeout(&self) -> Option<Duration> {
        let Reverse((when, _, _)) = self.heap.peek()?;
        // Rounded up to the next millisecond so the wait does not end just before it.
        Some(when.saturating_duration_since(Instant::now()) + Duration::from_micros(999))
    }

    /// The next entry due at `now`, if any: (token, generation).
    pub fn pop_due(&mut self, now: Instant) -> Option<(u64, u64)> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => {
                self.heap.pop().map(|Reverse((_, tok, gen))| (tok, gen))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_only_when_due() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.push(now + Duration::from_secs(5), 1, 1);
        t.push(now, 2, 7);
        t.push(now + Duration::from_secs(1), 3, 1);
        assert_eq!(t.pop_due(now), Some((2, 7)));
        assert_eq!(t.pop_due(now), None);
        assert!(t.next_timeout().unwrap() <= Duration::from_secs(1) + Duration::from_millis(1));
        assert_eq!(t.pop_due(now + Duration::from_secs(9)), Some((3, 1)));
        assert_eq!(t.pop_due(now + Duration::from_secs(9)), Some((1, 1)));
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_timeout(), None);
    }
}
