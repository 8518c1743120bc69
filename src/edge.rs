//! Edges: the bounded queues between pipeline stages, each with a named policy for
//! when it is full (as vector's `when_full`, zenoh's ring vs fifo handlers).
//!
//! - `drop_newest`: the item being sent is discarded (the producer never waits);
//! - `drop_oldest`: the oldest waiting item is discarded to make room (newest data wins);
//! - `block`: the producer waits for room (safe where the producer can wait: a replay,
//!   or an encoder feeding the outputs).
//!
//! Every discarded item is handed back to the sender, so the stage that sent it counts
//! it. When every [`Sender`] is gone the receiver drains what is queued and then sees
//! [`Recv::Closed`]; when the [`Receiver`] is gone (its stage died), senders get
//! [`Sent::Closed`], so a dead consumer is never mistaken for backpressure.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What an edge does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    DropNewest,
    DropOldest,
    Block,
}

impl WhenFull {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::DropNewest => "drop_newest",
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::Block => "block",
        }
    }
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
}

struct Inner<T> {
    name: String,
    capacity: usize,
    policy: WhenFull,
    state: Mutex<State<T>>,
    /// Signalled when an item is queued or the last sender leaves.
    not_empty: Condvar,
    /// Signalled when room is made or the receiver leaves.
    not_full: Condvar,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic elsewhere never makes the queue unusable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producing end; clone it for several producers.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// The consuming end (one per edge).
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// What [`Sender::send`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent<T> {
    Queued,
    /// Queued after discarding the oldest waiting item (returned).
    DroppedOldest(T),
    /// The queue was full; the item sent was discarded (returned).
    DroppedNewest(T),
    /// The receiving stage is gone; the item is returned.
    Closed(T),
}

/// What [`Receiver::recv_timeout`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv<T> {
    Item(T),
    Timeout,
    /// Every sender is gone and the queue is empty.
    Closed,
}

/// A new edge named `name` (for logs and health) holding at most `capacity` items.
pub fn edge<T>(name: impl Into<String>, capacity: usize, policy: WhenFull) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        name: name.into(),
        capacity: capacity.max(1),
        policy,
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    (Sender { inner: inner.clone() }, Receiver { inner })
}

impl<T> Sender<T> {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn policy(&self) -> WhenFull {
        self.inner.policy
    }

    /// Send by the edge's policy.
    pub fn send(&self, item: T) -> Sent<T> {
        let inner = &*self.inner;
        let mut st = inner.lock();
        loop {
            if !st.receiver_alive {
                return Sent::Closed(item);
            }
            if st.items.len() < inner.capacity {
                st.items.push_back(item);
                drop(st);
                inner.not_empty.notify_one();
                return Sent::Queued;
            }
            match inner.policy {
                WhenFull::DropNewest => return Sent::DroppedNewest(item),
                WhenFull::DropOldest => {
                    let old = st.items.pop_front().expect("full queue has an item");
                    st.items.push_back(item);
                    drop(st);
                    inner.not_empty.notify_one();
                    return Sent::DroppedOldest(old);
                }
                WhenFull::Block => {
                    st = inner.not_full.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Whether the receiving stage is gone.
    pub fn is_closed(&self) -> bool {
        !self.inner.lock().receiver_alive
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.senders -= 1;
        if st.senders == 0 {
            drop(st);
            self.inner.not_empty.notify_all();
        }
    }
}

impl<T> Receiver<T> {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Wait up to `timeout` for an item.
    pub fn recv_timeout(&self, timeout: Duration) -> Recv<T> {
        let inner = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut st = inner.lock();
        loop {
            if let Some(item) = st.items.pop_front() {
                drop(st);
                inner.not_full.notify_one();
                return Recv::Item(item);
            }
            if st.senders == 0 {
                return Recv::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Recv::Timeout;
            }
            st = inner
                .not_empty
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Block until an item arrives or every sender is gone.
    pub fn recv(&self) -> Option<T> {
        loop {
            match self.recv_timeout(Duration::from_secs(3600)) {
                Recv::Item(t) => return Some(t),
                Recv::Closed => return None,
                Recv::Timeout => {}
            }
        }
    }

    /// Take every waiting item without blocking (up to `max`).
    pub fn try_take(&self, max: usize) -> Vec<T> {
        let mut st = self.inner.lock();
        let n = st.items.len().min(max);
        let out: Vec<T> = st.items.drain(..n).collect();
        drop(st);
        if !out.is_empty() {
            self.inner.not_full.notify_all();
        }
        out
    }

    /// Remove and return everything still queued (at shutdown, to count it).
    pub fn drain(&self) -> Vec<T> {
        self.try_take(usize::MAX)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.receiver_alive = false;
        drop(st);
        self.inner.not_full.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_when_full() {
        let (tx, rx) = edge("t", 2, WhenFull::DropNewest);
        assert_eq!(tx.send(1), Sent::Queued);
        assert_eq!(tx.send(2), Sent::Queued);
        assert_eq!(tx.send(3), Sent::DroppedNewest(3));
        assert_eq!(rx.drain(), vec![1, 2]);

        let (tx, rx) = edge("t", 2, WhenFull::DropOldest);
        for i in 1..=4 {
            tx.send(i);
        }
        assert_eq!(rx.drain(), vec![3, 4]);

        let (tx, rx) = edge("t", 1, WhenFull::Block);
        tx.send(1);
        let t = std::thread::spawn(move || tx.send(2));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Recv::Item(1));
        assert_eq!(t.join().unwrap(), Sent::Queued);
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Recv::Item(2));
        // The only sender is gone: closed once drained.
        assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Recv::Closed);
    }

    #[test]
    fn a_dead_receiver_is_closed_not_backpressure() {
        let (tx, rx) = edge("t", 1, WhenFull::DropOldest);
        tx.send(1);
        drop(rx);
        assert_eq!(tx.send(2), Sent::Closed(2));
        assert!(tx.is_closed());
        // A blocked sender wakes up when the receiver dies.
        let (tx, rx) = edge("t", 1, WhenFull::Block);
        tx.send(1);
        let t = std::thread::spawn(move || tx.send(2));
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert_eq!(t.join().unwrap(), Sent::Closed(2));
    }
}
