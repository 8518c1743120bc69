//! Per-modality inference workers, and the one path from windows to embeddings.
//!
//! [`embed_windows`] is that path: preprocess each window (one or more views), run one
//! batched encoder call, average each window's views. The daemon's workers and
//! `sensebind embed` (and so the parity tests) all go through it. A window whose
//! preprocessing fails or panics is dropped alone; if a batched encoder call fails or
//! panics, its windows are retried one by one, so only the bad window is lost.
//!
//! Each modality gets one OS thread fed by an [`edge`](crate::edge) (policy
//! `engine.when_full`). The thread blocks for one window, takes whatever else is
//! waiting (up to `max_batch`), embeds the batch and sends the results on to the
//! outputs edge.

use super::gate::Gate;
use super::Encoder;
use crate::clock::Nanos;
use crate::edge::{self, Sender, Sent, WhenFull};
use crate::modality::Modality;
use crate::preprocess::{ModelInput, Preprocessor};
use crate::telemetry::{names, LogLimiter, StreamEvent, StreamStats, WindowDrop};
use crate::window::Window;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A window's embedding, with the metadata needed to publish it.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub source: Arc<str>,
    pub modality: Modality,
    pub seq: i64,
    pub t_start_ns: Nanos,
    pub t_end_ns: Nanos,
    pub coverage: f64,
    /// Unit-L2-normalised embedding.
    pub vector: Vec<f32>,
    /// Time from the window being queued to its embedding being ready.
    pub latency: Duration,
    pub batch_size: usize,
}

/// Mean of unit vectors, renormalised (one vector is returned as is).
pub fn mean_of(vs: impl Iterator<Item = Vec<f32>>) -> Vec<f32> {
    let mut acc: Option<Vec<f32>> = None;
    let mut n = 0usize;
    for v in vs {
        n += 1;
        match &mut acc {
            None => acc = Some(v),
            Some(a) => a.iter_mut().zip(&v).for_each(|(x, y)| *x += y),
        }
    }
    let mut a = acc.unwrap_or_default();
    if n > 1 {
        super::l2_normalise(&mut a);
    }
    a
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    format!("panicked: {}", crate::ident::panic_message(p))
}

fn encode_guarded(enc: &dyn Encoder, inputs: &[ModelInput]) -> Result<Vec<Vec<f32>>, String> {
    match catch_unwind(AssertUnwindSafe(|| enc.encode(inputs))) {
        Ok(Ok(v)) if v.len() == inputs.len() => Ok(v),
        Ok(Ok(v)) => Err(format!(
            "encoder returned {} vectors for {} inputs",
            v.len(),
            inputs.len()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!("{} encoder {}", enc.modality(), panic_message(&*p))),
    }
}

/// One window's preprocessing, panics caught: its views, or why it has none.
fn views_of(prep: &dyn Preprocessor, w: &Window) -> Result<Vec<ModelInput>, String> {
    match catch_unwind(AssertUnwindSafe(|| prep.views(w))) {
        Ok(Ok(v)) if !v.is_empty() => Ok(v),
        Ok(Ok(_)) => Err(format!("{} window {}: no input", w.modality, w.seq)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!(
            "{} window {}: preprocessing {}",
            w.modality,
            w.seq,
            panic_message(&*p)
        )),
    }
}

/// Preprocess `windows` on up to `threads` threads (in order; 1: on this thread).
fn preprocess_all(
    prep: &dyn Preprocessor,
    windows: &[&Window],
    threads: usize,
) -> Vec<Result<Vec<ModelInput>, String>> {
    let threads = threads.clamp(1, windows.len().max(1));
    if threads == 1 {
        return windows.iter().map(|w| views_of(prep, w)).collect();
    }
    let per = windows.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = windows
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(|w| views_of(prep, w)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(windows.chunks(per))
            .flat_map(|(h, chunk)| {
                // views_of catches panics, so a join error cannot happen; keep the
                // windows' places anyway.
                h.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|w| Err(format!("{} window {}: preprocessing thread failed", w.modality, w.seq)))
                        .collect()
                })
            })
            .collect()
    })
}

/// Threads that preprocess a batch: one per window, at most one per CPU.
pub fn preprocess_threads(batch: usize) -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    batch.min(cpus).max(1)
}

/// The one path: windows → views → one batched encoder call → one unit vector per
/// window (views averaged). Each window's result is independent of the others'.
/// A batch's windows are preprocessed in parallel (one thread per window, at most one
/// per CPU): on a GPU, preprocessing is otherwise half of a batch's time.
pub fn embed_windows(prep: &dyn Preprocessor, enc: &dyn Encoder, windows: &[&Window]) -> Vec<Result<Vec<f32>, String>> {
    embed_windows_with(prep, enc, windows, preprocess_threads(windows.len()))
}

/// [`embed_windows`] with an explicit number of preprocessing threads (benchmarks
/// compare 1 with the default).
pub fn embed_windows_with(
    prep: &dyn Preprocessor,
    enc: &dyn Encoder,
    windows: &[&Window],
    threads: usize,
) -> Vec<Result<Vec<f32>, String>> {
    let mut results: Vec<Result<Vec<f32>, String>> = Vec::with_capacity(windows.len());
    // The views move into one input list (no copies); `spans` says whose they are.
    let mut inputs: Vec<ModelInput> = Vec::new();
    let mut spans: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    for (i, r) in preprocess_all(prep, windows, threads).into_iter().enumerate() {
        match r {
            Ok(v) => {
                spans.push((i, inputs.len()..inputs.len() + v.len()));
                inputs.extend(v);
                results.push(Ok(Vec::new()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if spans.is_empty() {
        return results;
    }
    match encode_guarded(enc, &inputs) {
        Ok(vectors) => {
            let mut it = vectors.into_iter();
            for (i, r) in &spans {
                results[*i] = Ok(mean_of(it.by_ref().take(r.len())));
            }
        }
        Err(e) if spans.len() == 1 => results[spans[0].0] = Err(e),
        Err(_) => {
            // One bad window must not take its batch with it: retry alone.
            for (i, r) in &spans {
                results[*i] = encode_guarded(enc, &inputs[r.clone()]).map(|vs| mean_of(vs.into_iter()));
            }
        }
    }
    results
}

/// A window waiting for its encoder.
pub struct Job {
    pub window: Window,
    pub queued: Instant,
    pub stats: Arc<StreamStats>,
}

/// Handle to submit windows to a modality's worker. When every handle is gone the
/// worker finishes what is queued and exits.
#[derive(Clone)]
pub struct WorkerHandle {
    modality: Modality,
    tx: Sender<Job>,
    prep: Arc<dyn Preprocessor>,
    /// The frame-rate budget: only windows whose seq is a multiple of this are queued.
    stride: i64,
}

/// What `submit` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Submit {
    Queued,
    /// Queued, but the queue's policy dropped a window (this seq) to make room or
    /// refused the new one (its seq).
    Dropped(i64),
    /// Not queued: over the modality's frame-rate budget (`max_rate_hz`).
    OverBudget,
    /// The worker has stopped (its thread is gone).
    Closed,
}

impl WorkerHandle {
    pub fn modality(&self) -> Modality {
        self.modality
    }

    /// Queue a window for embedding: windows over the frame-rate budget are dropped
    /// (counted as `budget`), the rest are cut down to what preprocessing reads
    /// ([`Preprocessor::retain`]) and queued.
    pub fn submit(&self, window: Window, stats: Arc<StreamStats>) -> Submit {
        if window.seq.rem_euclid(self.stride) != 0 {
            stats.emit(StreamEvent::WindowDropped(WindowDrop::Budget));
            return Submit::OverBudget;
        }
        let job = Job {
            window: self.prep.retain(window),
            queued: Instant::now(),
            stats,
        };
        match self.tx.send(job) {
            Sent::Queued => Submit::Queued,
            Sent::DroppedOldest(old) | Sent::DroppedNewest(old) => {
                old.stats.emit(StreamEvent::WindowDropped(WindowDrop::Backpressure));
                Submit::Dropped(old.window.seq)
            }
            Sent::Closed(_) => Submit::Closed,
        }
    }
}

/// Settings of one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub max_batch: usize,
    pub queue_depth: usize,
    pub when_full: WhenFull,
    /// Its place in the queue for the shared [`Gate`] (higher first).
    pub priority: i32,
    /// Windows that waited longer are dropped as stale (None: never).
    pub max_wait: Option<Duration>,
    /// Frame-rate budget: embed only windows whose seq is a multiple of this (1: all).
    pub stride: i64,
}

impl WorkerConfig {
    /// A worker that embeds every window, in its own time (no budget, no staleness).
    pub fn unlimited(max_batch: usize, queue_depth: usize, when_full: WhenFull) -> WorkerConfig {
        WorkerConfig {
            max_batch,
            queue_depth,
            when_full,
            priority: 0,
            max_wait: None,
            stride: 1,
        }
    }
}

/// The seq stride that keeps a stream of windows (one every `hop_s`) within
/// `max_rate_hz` windows per second: 1 for no budget (0) or a budget at or over the
/// window rate. Kept windows are those whose seq is a multiple of it, so every stream
/// with the same budget keeps the same seqs.
pub fn budget_stride(hop_s: f64, max_rate_hz: f64) -> i64 {
    if !(max_rate_hz > 0.0 && hop_s > 0.0) {
        return 1;
    }
    // Rounded down a hair first: 0.5 windows/s over 0.1 is 5, not 5.000000001 → 6.
    let k = (1.0 / (hop_s * max_rate_hz) - 1e-9).ceil();
    k.clamp(1.0, 1e9) as i64
}

/// Set when the shutdown deadline has passed: workers stop encoding and count what is
/// still queued as dropped (`windows_dropped.shutdown`).
#[derive(Clone, Default)]
pub struct Discard(Arc<AtomicBool>);

impl Discard {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counts stale windows and says so in the log, at most every 30 s.
struct Behind {
    modality: Modality,
    max_wait: Option<Duration>,
    log: LogLimiter,
    since_log: u64,
}

impl Behind {
    fn new(modality: Modality, max_wait: Option<Duration>) -> Behind {
        Behind {
            modality,
            max_wait,
            log: LogLimiter::new(Duration::from_secs(30)),
            since_log: 0,
        }
    }

    fn stale(&mut self, j: &Job) {
        j.stats.emit(StreamEvent::WindowDropped(WindowDrop::Stale));
        self.since_log += 1;
        if self.log.allow().is_some() {
            let (m, n) = (self.modality, self.since_log);
            tracing::warn!(event = names::ENCODER_BEHIND, modality = %m, stale_windows = n, max_wait_s = self.max_wait.unwrap_or_default().as_secs_f64(), "the {m} encoder is behind its sensors: {n} windows waited longer than engine.max_wait_s and were dropped (see engine.modalities.{m}.priority / max_rate_hz)");
            self.since_log = 0;
        }
    }
}

/// Start the worker thread for one modality; results go to `out`.
pub fn spawn(
    prep: Arc<dyn Preprocessor>,
    encoder: Arc<dyn Encoder>,
    cfg: WorkerConfig,
    gate: Gate,
    out: Sender<Embedded>,
    discard: Discard,
) -> std::io::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let (handle, run) = worker(prep, encoder, cfg, gate, out, discard);
    let join = std::thread::Builder::new()
        .name(format!("enc-{}", handle.modality))
        .spawn(run)?;
    Ok((handle, join))
}

/// One modality's worker: its handle, and the loop to run on a thread of the caller's
/// (the pipeline's supervisor). The loop ends when every handle is gone and the
/// queue is drained.
///
/// Each turn: wait for a window, wait for a slot of the shared `gate` (by
/// `cfg.priority`, then the window's age), take whatever else is queued (up to
/// `max_batch`), drop what waited over `max_wait` (stale), embed the rest as one batch.
pub fn worker(
    prep: Arc<dyn Preprocessor>,
    encoder: Arc<dyn Encoder>,
    cfg: WorkerConfig,
    gate: Gate,
    out: Sender<Embedded>,
    discard: Discard,
) -> (WorkerHandle, impl FnOnce() + Send + 'static) {
    let modality = prep.modality();
    let (tx, rx) = edge::edge::<Job>(format!("encoder/{modality}"), cfg.queue_depth, cfg.when_full);
    let handle = WorkerHandle {
        modality,
        tx,
        prep: prep.clone(),
        stride: cfg.stride.max(1),
    };
    let run = move || {
        let mut behind = Behind::new(modality, cfg.max_wait);
        while let Some(first) = rx.recv() {
            if discard.is_set() {
                first.stats.emit(StreamEvent::WindowDropped(WindowDrop::Shutdown));
                for j in rx.try_take(usize::MAX) {
                    j.stats.emit(StreamEvent::WindowDropped(WindowDrop::Shutdown));
                }
                continue;
            }
            // A window that waited over max_wait (in the queue, or for a slot) is
            // dropped as stale, one by one as they expire: a strict lower priority
            // under sustained overload sheds its windows instead of hoarding them.
            if cfg.max_wait.is_some_and(|max| first.queued.elapsed() > max) {
                behind.stale(&first);
                continue;
            }
            let deadline = cfg.max_wait.map(|max| first.queued + max);
            let Some(permit) = gate.acquire_until(cfg.priority, first.queued, deadline) else {
                behind.stale(&first);
                continue;
            };
            let mut jobs = vec![first];
            jobs.extend(rx.try_take(cfg.max_batch.saturating_sub(1)));
            if discard.is_set() {
                for j in jobs {
                    j.stats.emit(StreamEvent::WindowDropped(WindowDrop::Shutdown));
                }
                continue;
            }
            if let Some(max) = cfg.max_wait {
                jobs.retain(|j| {
                    let fresh = j.queued.elapsed() <= max;
                    if !fresh {
                        behind.stale(j);
                    }
                    fresh
                });
                if jobs.is_empty() {
                    continue;
                }
            }
            let windows: Vec<&Window> = jobs.iter().map(|j| &j.window).collect();
            let results = embed_windows(prep.as_ref(), encoder.as_ref(), &windows);
            drop(permit);
            let n = jobs.len();
            for (j, r) in jobs.into_iter().zip(results) {
                match r {
                    Ok(vector) => {
                        let latency = j.queued.elapsed();
                        j.stats.emit(StreamEvent::Embedded { latency, batch: n });
                        let w = j.window;
                        let e = Embedded {
                            source: w.source,
                            modality,
                            seq: w.seq,
                            t_start_ns: w.t_start_ns,
                            t_end_ns: w.t_end_ns,
                            coverage: w.coverage,
                            vector,
                            latency,
                            batch_size: n,
                        };
                        match out.send(e) {
                            Sent::Queued => {}
                            Sent::DroppedNewest(_) | Sent::DroppedOldest(_) => {
                                j.stats.emit(StreamEvent::WindowDropped(WindowDrop::Backpressure))
                            }
                            Sent::Closed(_) => {
                                // The outputs stage is gone: nothing can be published.
                                j.stats.emit(StreamEvent::WindowDropped(WindowDrop::Shutdown));
                            }
                        }
                    }
                    Err(error) => {
                        j.stats.emit(StreamEvent::WindowDropped(WindowDrop::Error));
                        tracing::warn!(event = names::WINDOW_FAILED, source = %j.window.source, modality = %modality, seq = j.window.seq, error = %crate::ident::clip(&error, 300), "window dropped");
                    }
                }
            }
        }
    };
    (handle, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::preprocess::{ModelInput, PreprocessError};
    use crate::window::WindowData;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Mutex;

    /// A preprocessor that turns the window's seq into a 2-vector; seq 13 is an
    /// error and seq 17 panics.
    struct SeqPrep;
    impl Preprocessor for SeqPrep {
        fn modality(&self) -> Modality {
            Modality::Imu
        }
        fn shape(&self) -> Vec<usize> {
            vec![2]
        }
        fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
            if w.seq == 13 {
                return Err(crate::preprocess::bad(w, "unlucky"));
            }
            if w.seq == 17 {
                panic!("preprocessor bug");
            }
            Ok(ModelInput::F32(vec![w.seq as f32, 1.0]))
        }
    }

    /// An encoder that is slow, records batch sizes, and panics on input seq 5.
    struct SlowEnc(Mutex<Vec<usize>>);
    impl Encoder for SlowEnc {
        fn modality(&self) -> Modality {
            Modality::Imu
        }
        fn dim(&self) -> usize {
            2
        }
        fn logit_scale(&self) -> f32 {
            5.0
        }
        fn input_shape(&self) -> &[usize] {
            &[2]
        }
        fn provider(&self) -> &str {
            "test"
        }
        fn encode(&self, batch: &[ModelInput]) -> Result<Vec<Vec<f32>>, EngineError> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.lock().unwrap().push(batch.len());
            batch
                .iter()
                .map(|b| match b {
                    ModelInput::F32(v) if v[0] == 5.0 => panic!("encoder bug"),
                    ModelInput::F32(v) => {
                        // Each item's result depends only on itself.
                        let mut v = vec![v[0].sin(), v[0].cos() + 2.0];
                        crate::engine::l2_normalise(&mut v);
                        Ok(v)
                    }
                    _ => unreachable!(),
                })
                .collect()
        }
    }

    fn win(seq: i64) -> Window {
        Window {
            source: "imu0".into(),
            modality: Modality::Imu,
            seq,
            t_start_ns: seq,
            t_end_ns: seq + 1,
            coverage: 1.0,
            data: WindowData::Imu(vec![]),
        }
    }

    #[test]
    fn batched_equals_one_by_one_and_bad_windows_drop_alone() {
        let enc = SlowEnc(Mutex::new(Vec::new()));
        let ws: Vec<Window> = (0..20).map(win).collect();
        let refs: Vec<&Window> = ws.iter().collect();
        let batched = embed_windows(&SeqPrep, &enc, &refs);
        assert_eq!(
            enc.0.lock().unwrap()[0],
            18,
            "one batch of the 18 windows that preprocess"
        );
        for (w, r) in ws.iter().zip(&batched) {
            let single = embed_windows(&SeqPrep, &enc, &[w]);
            match (r, &single[0]) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "seq {}", w.seq),
                (Err(_), Err(_)) => assert!([5, 13, 17].contains(&w.seq), "seq {}", w.seq),
                _ => panic!("seq {}: batched {r:?} vs single {:?}", w.seq, single[0]),
            }
        }
        let failed: Vec<i64> = ws
            .iter()
            .zip(&batched)
            .filter(|(_, r)| r.is_err())
            .map(|(w, _)| w.seq)
            .collect();
        assert_eq!(failed, vec![5, 13, 17]);
        assert!(batched[17].as_ref().unwrap_err().contains("panicked"));
    }

    #[test]
    fn worker_batches_sheds_load_and_accounts_for_every_window() {
        let enc = Arc::new(SlowEnc(Mutex::new(Vec::new())));
        let (out_tx, out_rx) = edge::edge("outputs", 100, WhenFull::Block);
        let cfg = WorkerConfig::unlimited(4, 6, WhenFull::DropOldest);
        let (h, join) = spawn(
            Arc::new(SeqPrep),
            enc.clone(),
            cfg,
            Gate::new(1),
            out_tx,
            Discard::default(),
        )
        .unwrap();
        let stats = Arc::new(StreamStats::new("imu0", Modality::Imu));
        let mut dropped = Vec::new();
        for s in 0..40 {
            if let Submit::Dropped(d) = h.submit(win(s), stats.clone()) {
                dropped.push(d);
            }
        }
        drop(h);
        join.join().unwrap();
        let got: Vec<i64> = out_rx.drain().iter().map(|e| e.seq).collect();
        assert!(!dropped.is_empty(), "a slow encoder must shed load");
        assert_eq!(stats.dropped_backpressure.load(Relaxed), dropped.len() as u64);
        let errors = stats.dropped_error.load(Relaxed);
        assert_eq!(
            got.len() as u64 + dropped.len() as u64 + errors,
            40,
            "every window accounted for"
        );
        assert!(got.contains(&39), "the newest window always gets through");
        assert!(
            enc.0.lock().unwrap().iter().any(|&b| b > 1),
            "queued windows must be batched"
        );
    }

    #[test]
    fn a_dead_worker_is_closed_not_backpressure() {
        // The worker thread holds the receiving end; when it dies, so does the edge.
        let (tx, rx) = edge::edge::<Job>("encoder/imu", 1, WhenFull::DropOldest);
        let handle = WorkerHandle {
            modality: Modality::Imu,
            tx,
            prep: Arc::new(SeqPrep),
            stride: 1,
        };
        let t = std::thread::spawn(move || {
            let _rx = rx;
            panic!("encoder thread crashed");
        });
        assert!(t.join().is_err());
        let stats = Arc::new(StreamStats::new("imu0", Modality::Imu));
        assert_eq!(handle.submit(win(1), stats.clone()), Submit::Closed);
        assert_eq!(handle.submit(win(2), stats.clone()), Submit::Closed);
        assert_eq!(stats.dropped_backpressure.load(Relaxed), 0);
    }

    #[test]
    fn budget_strides_keep_within_the_rate() {
        assert_eq!(budget_stride(2.0, 0.0), 1, "no budget");
        assert_eq!(budget_stride(2.0, 0.5), 1, "the window rate itself");
        assert_eq!(budget_stride(2.0, 5.0), 1, "over the window rate");
        assert_eq!(budget_stride(2.0, 0.25), 2);
        assert_eq!(budget_stride(2.0, 0.1), 5, "0.5 / 0.1 is 5, not 6");
        assert_eq!(budget_stride(2.0, 0.2), 3, "0.5 / 3 windows/s is within 0.2");
        assert_eq!(budget_stride(0.5, 1.0), 2);
        for (hop, rate) in [(2.0, 0.3), (0.5, 0.7), (1.0, 0.01), (0.1, 3.0)] {
            let k = budget_stride(hop, rate);
            assert!(1.0 / (hop * k as f64) <= rate + 1e-9, "{hop} {rate}: {k}");
            assert!(
                k == 1 || 1.0 / (hop * (k - 1) as f64) > rate,
                "{hop} {rate}: {k} is not the least"
            );
        }
    }

    #[test]
    fn windows_over_the_budget_are_dropped_and_counted_on_the_grid() {
        let enc = Arc::new(SlowEnc(Mutex::new(Vec::new())));
        let (out_tx, out_rx) = edge::edge("outputs", 100, WhenFull::Block);
        let cfg = WorkerConfig {
            stride: 3,
            ..WorkerConfig::unlimited(8, 100, WhenFull::Block)
        };
        let (h, join) = spawn(Arc::new(SeqPrep), enc, cfg, Gate::new(1), out_tx, Discard::default()).unwrap();
        let stats = Arc::new(StreamStats::new("imu0", Modality::Imu));
        let over: Vec<i64> = (-4..20)
            .filter(|&s| h.submit(win(s), stats.clone()) == Submit::OverBudget)
            .collect();
        drop(h);
        join.join().unwrap();
        let mut got: Vec<i64> = out_rx.drain().iter().map(|e| e.seq).collect();
        got.sort();
        // 5 is the encoder's bad input, 13 and 17 the preprocessor's: none is on the grid.
        assert_eq!(got, [-3, 0, 3, 6, 9, 12, 15, 18]);
        assert_eq!(over.len(), 24 - 8);
        assert_eq!(stats.dropped_budget.load(Relaxed), 16);
        assert_eq!(stats.dropped_backpressure.load(Relaxed), 0);
    }

    /// An encoder of 2-vectors that takes at least 20 ms a call and notes when each
    /// call began and ended, and which windows (seqs) it embedded.
    #[derive(Default)]
    struct TimedEnc(Mutex<Vec<(Instant, Instant, Vec<i64>)>>);
    impl Encoder for TimedEnc {
        fn modality(&self) -> Modality {
            Modality::Imu
        }
        fn dim(&self) -> usize {
            2
        }
        fn logit_scale(&self) -> f32 {
            5.0
        }
        fn input_shape(&self) -> &[usize] {
            &[2]
        }
        fn provider(&self) -> &str {
            "test"
        }
        fn encode(&self, batch: &[ModelInput]) -> Result<Vec<Vec<f32>>, EngineError> {
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(20));
            let seqs = batch
                .iter()
                .map(|b| match b {
                    ModelInput::F32(v) => v[0] as i64,
                    _ => unreachable!(),
                })
                .collect();
            let out = batch.iter().map(|_| vec![0.6, 0.8]).collect();
            self.0.lock().unwrap().push((start, Instant::now(), seqs));
            Ok(out)
        }
    }

    /// Windows that waited over `max_wait` are dropped as stale, so what is embedded
    /// is never older than that (plus one batch). No wall-clock allowance: the bounds
    /// come from instants the test observes around the worker (a loaded machine
    /// stretches them, it cannot break them). The worker checks a window's age after
    /// the previous encoder call has returned, so a window embedded in call b (b ≥ 1)
    /// was queued no earlier than max_wait before call b − 1 ended, and its latency is
    /// taken before call b + 1 begins (or the worker ends).
    #[test]
    fn stale_windows_are_dropped_and_latency_stays_bounded() {
        let enc = Arc::new(TimedEnc::default());
        let (out_tx, out_rx) = edge::edge("outputs", 100, WhenFull::Block);
        let max_wait = Duration::from_millis(50);
        let cfg = WorkerConfig {
            max_wait: Some(max_wait),
            ..WorkerConfig::unlimited(1, 100, WhenFull::DropNewest)
        };
        let (h, join) = spawn(
            Arc::new(SeqPrep),
            enc.clone(),
            cfg,
            Gate::new(1),
            out_tx,
            Discard::default(),
        )
        .unwrap();
        let stats = Arc::new(StreamStats::new("imu0", Modality::Imu));
        // 30 windows at once, one ≥ 20 ms encoder call each: most go stale.
        let mut submitted = std::collections::BTreeMap::new();
        for s in 20..50 {
            let before = Instant::now();
            assert_eq!(h.submit(win(s), stats.clone()), Submit::Queued);
            submitted.insert(s, (before, Instant::now()));
        }
        drop(h);
        join.join().unwrap();
        let ended = Instant::now();
        let got = out_rx.drain();
        let stale = stats.dropped_stale.load(Relaxed);
        assert_eq!(got.len() as u64 + stale, 30, "every window accounted for");
        let calls = enc.0.lock().unwrap().clone();
        let embedded: Vec<i64> = calls.iter().flat_map(|c| c.2.clone()).collect();
        assert_eq!(
            embedded,
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            "one call per window, in order"
        );
        // Each call takes ≥ 20 ms and the i-th embedded window was at most max_wait
        // old when call i began (≥ 20·i ms after the first submission), so at most
        // 1 + (spread of the submissions + max_wait) / 20 ms windows are embedded.
        let spread = submitted[&49].1 - submitted[&20].0;
        let most = 1 + ((spread + max_wait).as_millis() / 20) as usize;
        assert!(
            got.len() <= most,
            "{} of 30 embedded, at most {most} were young enough (submitted over {spread:?})",
            got.len()
        );
        assert!(stale > 0);
        for (b, (e, call)) in got.iter().zip(&calls).enumerate().skip(1) {
            let prev_end = calls[b - 1].1;
            let next = calls.get(b + 1).map_or(ended, |c| c.0);
            let (_, after) = submitted[&e.seq];
            // Queued (before `after`) no earlier than max_wait before the previous call ended.
            assert!(
                prev_end.saturating_duration_since(after) <= max_wait,
                "seq {} was embedded {:?} after it was queued, over max_wait {max_wait:?}",
                e.seq,
                prev_end.saturating_duration_since(after)
            );
            let bound = max_wait + next.saturating_duration_since(prev_end);
            assert!(
                e.latency <= bound,
                "seq {}: latency {:?} > max_wait + the time from the previous call's end to the next call ({bound:?}); call {:?}",
                e.seq,
                e.latency,
                call.1 - call.0
            );
        }
    }

    /// A modality that never gets the slot (a higher priority holds it) still drops
    /// its windows as they go stale, instead of hoarding them.
    #[test]
    fn a_starved_modality_drops_its_windows_while_it_waits() {
        let gate = Gate::new(1);
        let held = gate.acquire(10, Instant::now());
        let (out_tx, out_rx) = edge::edge("outputs", 100, WhenFull::Block);
        let cfg = WorkerConfig {
            max_wait: Some(Duration::from_millis(40)),
            ..WorkerConfig::unlimited(8, 16, WhenFull::DropOldest)
        };
        let enc = Arc::new(SlowEnc(Mutex::new(Vec::new())));
        let (h, join) = spawn(Arc::new(SeqPrep), enc, cfg, gate.clone(), out_tx, Discard::default()).unwrap();
        let stats = Arc::new(StreamStats::new("imu0", Modality::Imu));
        for s in 20..25 {
            h.submit(win(s), stats.clone());
        }
        let t = Instant::now();
        while stats.dropped_stale.load(Relaxed) < 5 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            stats.dropped_stale.load(Relaxed),
            5,
            "all dropped while the slot was held"
        );
        assert_eq!(gate.load(), (1, 0), "the starved worker is not left queued at the gate");
        h.submit(win(30), stats.clone());
        drop(held);
        drop(h);
        join.join().unwrap();
        let got: Vec<i64> = out_rx.drain().iter().map(|e| e.seq).collect();
        assert_eq!(got, [30], "a fresh window runs once the slot is free");
    }

    /// A preprocessor of any modality, for workers that share a gate.
    struct ModPrep(Modality);
    impl Preprocessor for ModPrep {
        fn modality(&self) -> Modality {
            self.0
        }
        fn shape(&self) -> Vec<usize> {
            vec![2]
        }
        fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
            Ok(ModelInput::F32(vec![w.seq as f32 + 100.0, 1.0]))
        }
    }

    /// Two modalities contending for one slot: the higher priority's waiting windows
    /// all run before the lower one's, though the lower one queued first.
    #[test]
    fn the_higher_priority_modality_runs_first() {
        let gate = Gate::new(1);
        let (out_tx, out_rx) = edge::edge("outputs", 100, WhenFull::Block);
        let start = |m: Modality, priority: i32| {
            let cfg = WorkerConfig {
                priority,
                ..WorkerConfig::unlimited(8, 16, WhenFull::DropOldest)
            };
            let enc = Arc::new(SlowEnc(Mutex::new(Vec::new())));
            spawn(
                Arc::new(ModPrep(m)),
                enc,
                cfg,
                gate.clone(),
                out_tx.clone(),
                Discard::default(),
            )
            .unwrap()
        };
        let (low, low_join) = start(Modality::Vision, 0);
        let (high, high_join) = start(Modality::Imu, 5);
        let held = gate.acquire(100, Instant::now());
        let stats = Arc::new(StreamStats::new("s", Modality::Imu));
        for s in 0..4 {
            low.submit(win(s), stats.clone());
        }
        std::thread::sleep(Duration::from_millis(20));
        for s in 0..4 {
            high.submit(win(s), stats.clone());
        }
        while gate.load().1 < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        drop((low, high));
        low_join.join().unwrap();
        high_join.join().unwrap();
        drop(out_tx);
        let order: Vec<Modality> = out_rx.drain().iter().map(|e| e.modality).collect();
        assert_eq!(order.len(), 8);
        assert!(order[..4].iter().all(|m| *m == Modality::Imu), "{order:?}");
        assert!(order[4..].iter().all(|m| *m == Modality::Vision), "{order:?}");
    }
}
