//! The encoders' shared compute: at most `engine.concurrency` encoder calls run at
//! once, across every modality, and when more want to run, the highest
//! `engine.modalities.<m>.priority` goes first (then the one whose oldest window has
//! waited longest, then first come).
//!
//! On a CPU one encoder call already uses every intra-op thread: running several at
//! once only makes them share the cores (and thrash their caches), so a slow encoder
//! delays every cheap one. With one slot, calls run one after another, in priority
//! order, each at full speed. A concurrency of 0 means no gate (every modality runs
//! whenever it has work, as each has its own thread).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    priority: i32,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    waiting: Vec<Waiter>,
    next_ticket: u64,
}

impl State {
    /// The waiter that goes next: highest priority, then longest waiting, then first come.
    fn best(&self) -> Option<u64> {
        self.waiting
            .iter()
            .min_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then(a.since.cmp(&b.since))
                    .then(a.ticket.cmp(&b.ticket))
            })
            .map(|w| w.ticket)
    }
}

/// Encoder calls allowed at once, granted by priority. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Gate {
    slots: usize,
    inner: Arc<(Mutex<State>, Condvar)>,
}

/// A granted slot; dropping it lets the next waiter run.
#[must_use = "the slot is released when the permit is dropped"]
#[derive(Debug)]
pub struct Permit {
    gate: Option<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(g) = self.gate.take() {
            let (m, cv) = &*g.inner;
            let mut s = lock(m);
            s.running = s.running.saturating_sub(1);
            drop(s);
            cv.notify_all();
        }
    }
}

/// The state stays consistent across a panic (every change is one assignment), so a
/// poisoned lock is used as is.
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    /// `slots` calls at once; 0: unlimited (no gate).
    pub fn new(slots: usize) -> Gate {
        Gate {
            slots,
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
        }
    }

    /// Wait for a slot. `since`: when the oldest window this call will embed was
    /// queued (ties between equal priorities go to the longest wait).
    pub fn acquire(&self, priority: i32, since: Instant) -> Permit {
        self.acquire_until(priority, since, None)
            .expect("no deadline, so a slot is always granted")
    }

    /// [`acquire`](Self::acquire), giving up at `deadline` (None: when that passes
    /// first). Strict priority: a waiter gets a slot only when no higher priority
    /// waits, so under sustained overload a low priority waits until its deadline.
    pub fn acquire_until(&self, priority: i32, since: Instant, deadline: Option<Instant>) -> Option<Permit> {
        if self.slots == 0 {
            return Some(Permit { gate: None });
        }
        let (m, cv) = &*self.inner;
        let mut s = lock(m);
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.waiting.push(Waiter {
            ticket,
            priority,
            since,
        });
        while !(s.running < self.slots && s.best() == Some(ticket)) {
            s = match deadline {
                None => cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        s.waiting.retain(|w| w.ticket != ticket);
                        drop(s);
                        // The next-best waiter may now be the best.
                        cv.notify_all();
                        return None;
                    }
                    cv.wait_timeout(s, d - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        s.waiting.retain(|w| w.ticket != ticket);
        s.running += 1;
        drop(s);
        // Another slot may still be free for the next-best waiter.
        cv.notify_all();
        Some(Permit {
            gate: Some(self.clone()),
        })
    }

    /// Calls running now and calls waiting for a slot (tests watch the queue with it).
    #[cfg(test)]
    pub(crate) fn load(&self) -> (usize, usize) {
        let s = lock(&self.inner.0);
        (s.running, s.waiting.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn unlimited_never_blocks() {
        let g = Gate::new(0);
        // Eight callers hold a permit at the same time: none waits for another (a gate
        // that made them queue would never let all eight meet at the barrier).
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (g, b) = (g.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let _p = g.acquire(i, Instant::now());
                    b.wait();
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        for h in handles {
            while !h.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "a caller waited for a slot of an unlimited gate"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            h.join().unwrap();
        }
    }

    #[test]
    fn at_most_slots_run_at_once() {
        let g = Gate::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let (g, running, peak) = (g.clone(), running.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _p = g.acquire(i % 3, Instant::now());
                        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(g.load(), (0, 0));
    }

    /// With the slot held, waiters queue up; on release they run highest priority
    /// first, and equal priorities oldest first, whatever order they arrived in.
    #[test]
    fn waiters_run_by_priority_then_age() {
        let g = Gate::new(1);
        let held = g.acquire(0, Instant::now());
        let order = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        // (name, priority, age): arrive in this order.
        let who = [
            ("low", 0, 0u64),
            ("high", 5, 0),
            ("mid-young", 2, 0),
            ("mid-old", 2, 50),
        ];
        let mut hs = Vec::new();
        for (i, (name, prio, age)) in who.into_iter().enumerate() {
            let (g2, order) = (g.clone(), order.clone());
            let since = t0.checked_sub(Duration::from_millis(age)).unwrap_or(t0);
            hs.push(std::thread::spawn(move || {
                let _p = g2.acquire(prio, since);
                order.lock().unwrap().push(name);
            }));
            // Wait until this one is queued before the next arrives.
            while g.load().1 < i + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(held);
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*order.lock().unwrap(), ["high", "mid-old", "mid-young", "low"]);
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline_and_leaves_the_queue() {
        let g = Gate::new(1);
        let held = g.acquire(0, Instant::now());
        let t = Instant::now();
        let got = g.acquire_until(9, t, Some(t + Duration::from_millis(30)));
        assert!(got.is_none());
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(g.load(), (1, 0), "the waiter left");
        drop(held);
        assert!(
            g.acquire_until(0, t, Some(t)).is_some(),
            "a free slot is granted even at the deadline"
        );
    }

    #[test]
    fn a_panicking_holder_releases_its_slot() {
        let g = Gate::new(1);
        let g2 = g.clone();
        let r = std::thread::spawn(move || {
            let _p = g2.acquire(0, Instant::now());
            panic!("encoder bug");
        })
        .join();
        assert!(r.is_err());
        let _p = g.acquire(0, Instant::now());
        assert_eq!(g.load(), (1, 0));
    }
}
