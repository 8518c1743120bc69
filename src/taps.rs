//! Taps: attach points on the pipeline where recorders, live viewers and metrics
//! listen without touching the wiring. A tap is a bounded broadcast ring: every
//! listener gets every item unless it falls behind, in which case it loses the
//! oldest items (and is told how many); the pipeline itself never waits on a tap.
//!
//! The graph has two: raw frames after each source ([`crate::sources::TappedFrame`])
//! and embeddings after the encoders ([`crate::engine::worker::Embedded`]).

use std::sync::Arc;
use tokio::sync::broadcast;

/// Items a listener may lag behind before it loses the oldest.
pub const TAP_CAPACITY: usize = 1024;

pub struct Tap<T> {
    tx: broadcast::Sender<Arc<T>>,
}

impl<T> Clone for Tap<T> {
    fn clone(&self) -> Self {
        Tap { tx: self.tx.clone() }
    }
}

impl<T: Send + Sync + 'static> Default for Tap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync + 'static> Tap<T> {
    pub fn new() -> Self {
        Tap {
            tx: broadcast::channel(TAP_CAPACITY).0,
        }
    }

    /// Whether anyone listens (producers skip building items otherwise).
    pub fn is_listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Offer an item to every listener; never blocks.
    pub fn offer(&self, item: Arc<T>) {
        if self.is_listened() {
            let _ = self.tx.send(item);
        }
    }

    /// Listen from now on.
    pub fn listen(&self) -> broadcast::Receiver<Arc<T>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_get_items_and_a_slow_one_loses_the_oldest() {
        let tap: Tap<u32> = Tap::new();
        tap.offer(Arc::new(0)); // nobody listens: dropped, no error
        let mut rx = tap.listen();
        for i in 1..=(TAP_CAPACITY as u32 + 5) {
            tap.offer(Arc::new(i));
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(5))));
        assert_eq!(*rx.try_recv().unwrap(), 6);
    }
}
