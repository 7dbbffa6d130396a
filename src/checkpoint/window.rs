//! The durable window: how many requests may be sent but not yet covered by a durably
//! written checkpoint.
//!
//! The gate forwarder ([`Window::forward`]) takes a permit before it hands a request to
//! the senders; the collector gives permits back once a checkpoint covering those
//! requests is on disk. So a crash (even `kill -9`) can replay at
//! most `limit` requests: the bound the README states. With adaptive concurrency the
//! limit follows it: twice the requests allowed on the wire now ([`Window::following`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};

use crate::pack::Request;
use crate::send::Flow;

pub struct Window {
    limit: usize,
    /// When set, the limit is twice this flow's limit now (at most `limit`).
    flow: Option<Arc<Flow>>,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Window {
    pub fn new(limit: usize) -> Self {
        Window {
            limit: limit.max(1),
            flow: None,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// A window of twice the requests `flow` allows on the wire now, so a crash replays
    /// no more than twice the concurrency of the moment (at most `2 × flow`'s bound).
    pub fn following(flow: Arc<Flow>) -> Self {
        Window {
            limit: 2 * flow.bound(),
            flow: Some(flow),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Blocks until a permit is free, or `give_up()` says to stop waiting.
    /// Returns whether a permit was taken.
    pub fn acquire(&self, give_up: impl Fn() -> bool) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= self.limit() {
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
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) * 2 >= self.limit()
    }

    /// Requests that may be sent but not yet durable, now.
    pub fn limit(&self) -> usize {
        match &self.flow {
            Some(f) => (2 * f.now().limit).clamp(1, self.limit),
            None => self.limit,
        }
    }

    /// The gate forwarder, between the packer and the senders: holds each request with a
    /// body until a permit is free (when `checkpointing`), then hands it on; `forwarded`
    /// counts each one handed on. Runs until `packed` closes, and owns `gated`, so the
    /// senders see it close then.
    ///
    /// Once `halted` (an interrupt) it forwards nothing more, not even a request it was
    /// waiting to forward, and discards the rest, so the packer is never blocked (even
    /// with every sender stuck in a request, as when the drain times out): every request
    /// a sender was handed is still delivered, so nothing delivered can lie beyond the
    /// watermark and a resume replays nothing. `stop` (a failure) ends the wait for a
    /// permit.
    pub fn forward(
        &self,
        packed: Receiver<Request>,
        gated: Sender<Request>,
        checkpointing: bool,
        stop: &AtomicBool,
        halted: &AtomicBool,
        forwarded: impl Fn(),
    ) {
        let is_halted = || halted.load(Ordering::Relaxed);
        for mut r in packed {
            if is_halted() {
                continue;
            }
            let has_body = r.body.is_some();
            let permit = has_body
                && checkpointing
                && self.acquire(|| stop.load(Ordering::Relaxed) || is_halted());
            // The senders may all be stuck in requests (a drain that times out): wait
            // for room only until an interrupt.
            let handed = !is_halted()
                && loop {
                    match gated.send_timeout(r, Duration::from_millis(50)) {
                        Ok(()) => break true,
                        Err(SendTimeoutError::Timeout(_)) if is_halted() => break false,
                        Err(SendTimeoutError::Timeout(back)) => r = back,
                        Err(SendTimeoutError::Disconnected(_)) => return,
                    }
                };
            if !handed {
                if permit {
                    self.release(1);
                }
                continue;
            }
            if has_body {
                forwarded();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
