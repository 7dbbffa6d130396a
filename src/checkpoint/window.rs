//! The durable window: how many requests may be sent but not yet covered by a durably
//! written checkpoint.
//!
//! A sender takes a permit before it posts; the collector gives permits back once a
//! checkpoint covering those requests is on disk. So a crash (even `kill -9`) can replay at
//! most `limit` requests: the bound the README states.

use std::sync::{Condvar, Mutex};

pub struct Window {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Window {
    pub fn new(limit: usize) -> Self {
        Window {
            limit: limit.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Blocks until a permit is free, or `give_up()` says to stop waiting.
    /// Returns whether a permit was taken.
    pub fn acquire(&self, give_up: impl Fn() -> bool) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= self.limit {
            if give_up() {
                return false;
            }
            used = self
                .freed
                .wait_timeout(used, std::time::Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *used += 1;
        true
    }

    /// Gives back `n` permits.
    pub fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }

    /// True when half the permits or more are taken (requests waiting for a sender, in
    /// flight, or acknowledged but not yet covered by a checkpoint): time to write one
    /// as soon as anything is acknowledged, instead of once the senders have run out of
    /// permits and wait. Under load this is nearly always true, so a checkpoint follows
    /// every batch of acknowledgements; each covers more when the disk is slower.
    pub fn is_half_full(&self) -> bool {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) * 2 >= self.limit
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn permits_are_bounded_and_released() {
        let w = Arc::new(Window::new(4));
        assert!(!w.is_half_full());
        for _ in 0..2 {
            assert!(w.acquire(|| false));
        }
        assert!(
            w.is_half_full(),
            "two of four permits taken: time to checkpoint"
        );
        for _ in 0..2 {
            assert!(w.acquire(|| false));
        }
        assert!(!w.acquire(|| true), "a full window gives up when told to");
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.acquire(|| false));
        std::thread::sleep(std::time::Duration::from_millis(100));
        w.release(1);
        assert!(t.join().unwrap());
    }
}
