//! The fused stream: one embedding per window `seq` from every stream's embedding of
//! that window, the normalised weighted sum (ImageBind's embedding arithmetic: the
//! modalities share one space, so the sum points at what they agree on).
//!
//! A pure state machine, like the windower: [`Fuser::push`] takes each stream's
//! embedding, [`Fuser::tick`] is called now and then, and both return the windows
//! that are ready. A window is ready when every *expected* stream has reported it.
//! Expected: the stream published a window within `active_s` and its frame-rate
//! budget keeps this seq (a budget of every other window keeps even seqs only). A
//! window is also ready, with fewer members, when each missing stream has already
//! reported a later seq (its window was dropped), or `deadline_s` after its first
//! member arrived. Time is passed in, so tests and replays control it.

use crate::engine::l2_normalise;
use crate::engine::worker::Embedded;
use crate::modality::Modality;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One stream's part in a fused window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Member {
    pub source: String,
    pub modality: Modality,
    pub weight: f32,
    pub coverage: f32,
}

/// A fused window.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    /// Unit L2 norm.
    pub vector: Vec<f32>,
    pub members: Vec<Member>,
    /// Every expected stream is a member.
    pub complete: bool,
}

struct StreamState {
    last_seq: i64,
    last_seen: Instant,
}

struct Pending {
    first: Instant,
    t_start_ns: i64,
    t_end_ns: i64,
    parts: Vec<(Member, Vec<f32>)>,
}

/// See the module documentation.
pub struct Fuser {
    weights: BTreeMap<Modality, f32>,
    strides: BTreeMap<Modality, i64>,
    deadline: Option<Duration>,
    active: Duration,
    streams: BTreeMap<(String, Modality), StreamState>,
    pending: BTreeMap<i64, Pending>,
    /// Seqs already published (the highest `REMEMBERED`): a late member is ignored.
    published: std::collections::BTreeSet<i64>,
    /// Every seq at or below this counts as published: the highest seq forgotten from
    /// `published`. A stream far behind another (a replay, a slow encoder) so brings
    /// only late members, never a second fused window for a seq.
    forgotten: i64,
}

/// At most this many windows wait for members.
const MAX_PENDING: usize = 256;

/// How many published seqs are remembered to ignore late members.
const REMEMBERED: usize = 4096;

impl Fuser {
    /// `weights`: a modality's weight (missing: 1; 0 leaves it out); `strides`: the
    /// seq stride a modality's frame-rate budget keeps (missing: 1); `deadline`: how
    /// long a window waits for its missing streams (`None`: until they move past it).
    pub fn new(
        weights: BTreeMap<Modality, f32>,
        strides: BTreeMap<Modality, i64>,
        deadline: Option<Duration>,
        active: Duration,
    ) -> Fuser {
        Fuser {
            weights,
            strides,
            deadline,
            active,
            streams: BTreeMap::new(),
            pending: BTreeMap::new(),
            published: Default::default(),
            forgotten: i64::MIN,
        }
    }

    /// Expect these streams from `now` (the graph's streams, known before any window:
    /// otherwise the first windows of a fast replay would be fused from whichever
    /// stream came first). A stream that never reports stops being expected after
    /// `active`, like one that goes silent.
    pub fn expect(mut self, streams: impl IntoIterator<Item = (String, Modality)>, now: Instant) -> Fuser {
        for key in streams {
            self.streams.entry(key).or_insert(StreamState {
                last_seq: i64::MIN,
                last_seen: now,
            });
        }
        self
    }

    fn weight(&self, m: Modality) -> f32 {
        self.weights.get(&m).copied().unwrap_or(1.0)
    }

    /// Add one stream's embedding; returns the windows that became ready.
    pub fn push(&mut self, e: &Embedded, now: Instant) -> Vec<Fused> {
        let key = (e.source.to_string(), e.modality);
        let st = self.streams.entry(key).or_insert(StreamState {
            last_seq: i64::MIN,
            last_seen: now,
        });
        st.last_seq = st.last_seq.max(e.seq);
        st.last_seen = now;
        let weight = self.weight(e.modality);
        if weight > 0.0 && !self.was_published(e.seq) {
            let p = self.pending.entry(e.seq).or_insert(Pending {
                first: now,
                t_start_ns: e.t_start_ns,
                t_end_ns: e.t_end_ns,
                parts: Vec::new(),
            });
            let same = |m: &Member| *m.source == *e.source && m.modality == e.modality;
            if !p.parts.iter().any(|(m, _)| same(m)) {
                p.parts.push((
                    Member {
                        source: e.source.to_string(),
                        modality: e.modality,
                        weight,
                        coverage: e.coverage as f32,
                    },
                    e.vector.clone(),
                ));
            }
        }
        self.tick(now)
    }

    /// The windows whose wait is over at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Fused> {
        let mut ready = Vec::new();
        // Bounded: past MAX_PENDING windows, the oldest go out with what they have.
        let excess = self.pending.len().saturating_sub(MAX_PENDING);
        ready.extend(self.pending.keys().take(excess).map(|s| (*s, false)));
        for (&seq, p) in self.pending.iter().skip(excess) {
            let missing = self.missing(seq, p, now);
            let past = missing.iter().all(|(_, last)| *last > seq);
            let late = self
                .deadline
                .is_some_and(|d| now.saturating_duration_since(p.first) >= d);
            if missing.is_empty() || past || late {
                ready.push((seq, missing.is_empty()));
            }
        }
        ready
            .into_iter()
            .filter_map(|(seq, complete)| {
                let p = self.pending.remove(&seq)?;
                self.remember(seq);
                Some(fuse(seq, p, complete))
            })
            .collect()
    }

    /// Everything still waiting (at shutdown, or when the streams end).
    pub fn flush(&mut self) -> Vec<Fused> {
        let all = std::mem::take(&mut self.pending);
        all.into_iter()
            .map(|(seq, p)| {
                self.remember(seq);
                fuse(seq, p, false)
            })
            .collect()
    }

    fn remember(&mut self, seq: i64) {
        self.published.insert(seq);
        while self.published.len() > REMEMBERED {
            if let Some(old) = self.published.pop_first() {
                self.forgotten = self.forgotten.max(old);
            }
        }
    }

    fn was_published(&self, seq: i64) -> bool {
        seq <= self.forgotten || self.published.contains(&seq)
    }

    /// Expected streams missing from `p`, with the last seq each reported.
    fn missing(&self, seq: i64, p: &Pending, now: Instant) -> Vec<((String, Modality), i64)> {
        self.streams
            .iter()
            .filter(|((_, m), st)| {
                self.weight(*m) > 0.0
                    && now.saturating_duration_since(st.last_seen) <= self.active
                    && seq.rem_euclid(self.strides.get(m).copied().unwrap_or(1).max(1)) == 0
            })
            .filter(|((s, m), _)| !p.parts.iter().any(|(mem, _)| mem.source == *s && mem.modality == *m))
            .map(|(k, st)| (k.clone(), st.last_seq))
            .collect()
    }

    /// Windows waiting for members.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn fuse(seq: i64, p: Pending, complete: bool) -> Fused {
    let dim = p.parts.first().map_or(0, |(_, v)| v.len());
    let mut acc = vec![0.0f32; dim];
    let mut members = Vec::with_capacity(p.parts.len());
    for (m, v) in p.parts {
        if v.len() == dim {
            acc.iter_mut().zip(&v).for_each(|(a, x)| *a += m.weight * x);
        }
        members.push(m);
    }
    members.sort_by(|a, b| (a.modality, &a.source).cmp(&(b.modality, &b.source)));
    l2_normalise(&mut acc);
    Fused {
        seq,
        t_start_ns: p.t_start_ns,
        t_end_ns: p.t_end_ns,
        vector: acc,
        members,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn emb(source: &str, m: Modality, seq: i64, v: Vec<f32>) -> Embedded {
        Embedded {
            source: Arc::from(source),
            modality: m,
            seq,
            t_start_ns: seq * 2_000_000_000,
            t_end_ns: seq * 2_000_000_000 + 2_000_000_000,
            coverage: 1.0,
            vector: v,
            latency: Duration::ZERO,
            batch_size: 1,
        }
    }

    fn fuser(deadline_ms: u64) -> Fuser {
        Fuser::new(
            [(Modality::Imu, 0.0), (Modality::Vision, 3.0)].into_iter().collect(),
            [(Modality::Depth, 2)].into_iter().collect(),
            Some(Duration::from_millis(deadline_ms)),
            Duration::from_secs(10),
        )
    }

    /// A stream 10 000 windows behind another (an unpaced replay): every seq is fused
    /// once. Remembering only the last 4096 published seqs fused 5904 of them twice.
    #[test]
    fn a_stream_far_behind_never_fuses_a_window_twice() {
        let t0 = Instant::now();
        let mut f = fuser(0);
        let mut seqs = Vec::new();
        for seq in 0..10_000 {
            seqs.extend(
                f.push(&emb("cam", Modality::Vision, seq, vec![1.0, 0.0]), t0)
                    .iter()
                    .map(|x| x.seq),
            );
        }
        for seq in 0..10_000 {
            seqs.extend(
                f.push(&emb("mic", Modality::Audio, seq, vec![0.0, 1.0]), t0)
                    .iter()
                    .map(|x| x.seq),
            );
        }
        seqs.extend(f.flush().iter().map(|x| x.seq));
        assert_eq!(seqs, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_window_is_fused_once_every_expected_stream_reported() {
        let t0 = Instant::now();
        let mut f = fuser(1000);
        // Streams become known as they report: the first window goes out with the one
        // stream known then, and later members of it are not published again.
        assert_eq!(f.push(&emb("cam", Modality::Vision, 0, vec![1.0, 0.0]), t0).len(), 1);
        for (s, m) in [("mic", Modality::Audio), ("imu", Modality::Imu), ("d", Modality::Depth)] {
            assert!(f.push(&emb(s, m, 0, vec![0.0, 1.0]), t0).is_empty());
        }
        // seq 1: depth's budget keeps even seqs, IMU weighs 0: cam + mic complete it.
        assert!(f.push(&emb("mic", Modality::Audio, 1, vec![0.0, 1.0]), t0).is_empty());
        assert!(f.push(&emb("imu", Modality::Imu, 1, vec![1.0, 0.0]), t0).is_empty());
        let out = f.push(&emb("cam", Modality::Vision, 1, vec![1.0, 0.0]), t0);
        assert_eq!(out.len(), 1);
        let w = &out[0];
        assert!(w.complete);
        assert_eq!(w.seq, 1);
        let names: Vec<_> = w.members.iter().map(|m| (m.modality, m.weight)).collect();
        assert_eq!(names, [(Modality::Vision, 3.0), (Modality::Audio, 1.0)]);
        // (3·[1,0] + [0,1]) / √10
        let n = 10f32.sqrt();
        assert!((w.vector[0] - 3.0 / n).abs() < 1e-6 && (w.vector[1] - 1.0 / n).abs() < 1e-6);
        assert_eq!((w.t_start_ns, w.t_end_ns), (2_000_000_000, 4_000_000_000));
        // seq 2 needs depth as well.
        assert!(f.push(&emb("cam", Modality::Vision, 2, vec![1.0, 0.0]), t0).is_empty());
        assert!(f.push(&emb("mic", Modality::Audio, 2, vec![0.0, 1.0]), t0).is_empty());
        let out = f.push(&emb("d", Modality::Depth, 2, vec![0.0, 1.0]), t0);
        assert_eq!((out[0].members.len(), out[0].complete), (3, true));
    }

    #[test]
    fn a_dropped_member_or_the_deadline_releases_the_window() {
        let t0 = Instant::now();
        let mut f = fuser(1000);
        for s in ["a", "b"] {
            f.push(&emb(s, Modality::Audio, 0, vec![1.0, 0.0]), t0);
        }
        // b's window 1 was dropped; b reports 2: window 1 is released without b.
        assert!(f.push(&emb("a", Modality::Audio, 1, vec![1.0, 0.0]), t0).is_empty());
        let out = f.push(&emb("b", Modality::Audio, 2, vec![0.0, 1.0]), t0);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].seq, out[0].complete, out[0].members.len()), (1, false, 1));
        // Window 2 waits for a until the deadline.
        assert!(f.tick(t0 + Duration::from_millis(999)).is_empty());
        let out = f.tick(t0 + Duration::from_millis(1000));
        assert_eq!((out[0].seq, out[0].complete), (2, false));
        // A member arriving after its window was published is not published again.
        assert!(f
            .push(
                &emb("a", Modality::Audio, 2, vec![1.0, 0.0]),
                t0 + Duration::from_secs(2)
            )
            .is_empty());
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn streams_known_in_advance_are_waited_for_from_the_first_window() {
        let t0 = Instant::now();
        let f = Fuser::new(BTreeMap::new(), BTreeMap::new(), None, Duration::from_secs(5));
        let mut f = f.expect(
            [
                ("th".to_string(), Modality::Thermal),
                ("mic".to_string(), Modality::Audio),
            ],
            t0,
        );
        // A fast replay: the thermal stream's windows all come first.
        for seq in 0..5 {
            assert!(f
                .push(&emb("th", Modality::Thermal, seq, vec![1.0, 0.0]), t0)
                .is_empty());
        }
        for seq in 0..5 {
            let out = f.push(&emb("mic", Modality::Audio, seq, vec![0.0, 1.0]), t0);
            assert_eq!((out.len(), out[0].members.len(), out[0].complete), (1, 2, true));
        }
    }

    #[test]
    fn a_silent_stream_stops_being_expected() {
        let t0 = Instant::now();
        let mut f = Fuser::new(BTreeMap::new(), BTreeMap::new(), None, Duration::from_secs(5));
        f.push(&emb("cam", Modality::Vision, 0, vec![1.0, 0.0]), t0);
        f.push(&emb("mic", Modality::Audio, 0, vec![1.0, 0.0]), t0);
        // The camera is unplugged: with no deadline, window 1 waits for it…
        let later = t0 + Duration::from_secs(1);
        assert!(f
            .push(&emb("mic", Modality::Audio, 1, vec![0.0, 1.0]), later)
            .is_empty());
        // …until it has been silent for `active`.
        let out = f.tick(t0 + Duration::from_secs(6));
        assert_eq!((out.len(), out[0].members.len()), (1, 1));
        // Then the microphone alone completes windows.
        assert_eq!(
            f.push(
                &emb("mic", Modality::Audio, 2, vec![0.0, 1.0]),
                t0 + Duration::from_secs(6)
            )
            .len(),
            1
        );
        // flush publishes what waits.
        f.push(
            &emb("cam", Modality::Vision, 3, vec![1.0, 0.0]),
            t0 + Duration::from_secs(7),
        );
        assert_eq!(f.flush().len(), 1);
    }
}
