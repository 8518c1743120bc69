//! Per-modality inference workers.
//!
//! Each modality gets one OS thread and a bounded queue. The thread blocks for one
//! window, then takes whatever else is already waiting (up to `max_batch`), runs
//! preprocessing and one batched encoder call, and sends the results on. When the
//! queue is full the *oldest* waiting window is dropped and reported, so the newest
//! data wins and nothing upstream ever waits on an encoder.

use super::Encoder;
use crate::modality::{Modality, Sensor};
use crate::preprocess::Preprocessor;
use crate::sources::Nanos;
use crate::window::Window;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A window's embedding, with the metadata needed to publish it.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub modality: Modality,
    pub sensor: Sensor,
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

/// What a worker reports.
#[derive(Debug)]
pub enum WorkerEvent {
    Embedded(Embedded),
    /// The window could not be preprocessed or encoded; it is dropped.
    Failed {
        modality: Modality,
        seq: i64,
        error: String,
    },
}

struct Job {
    window: Window,
    queued: Instant,
}

/// Handle to submit windows to a modality's worker.
#[derive(Clone)]
pub struct WorkerHandle {
    modality: Modality,
    tx: Sender<Job>,
    rx: Receiver<Job>,
}

/// What `submit` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Submit {
    Queued,
    /// Queued, after dropping the oldest waiting window (its seq).
    QueuedDroppedOldest(i64),
    /// The worker has stopped.
    Closed,
}

impl WorkerHandle {
    pub fn modality(&self) -> Modality {
        self.modality
    }

    pub fn submit(&self, window: Window) -> Submit {
        let mut job = Job {
            window,
            queued: Instant::now(),
        };
        let mut dropped = None;
        loop {
            match self.tx.try_send(job) {
                Ok(()) => return dropped.map_or(Submit::Queued, Submit::QueuedDroppedOldest),
                Err(TrySendError::Full(j)) => {
                    job = j;
                    if let Ok(old) = self.rx.try_recv() {
                        dropped = Some(old.window.seq);
                    }
                }
                Err(TrySendError::Disconnected(_)) => return Submit::Closed,
            }
        }
    }
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

/// Start the worker thread for one modality. Dropping every handle stops it.
pub fn spawn(
    prep: Arc<dyn Preprocessor>,
    encoder: Arc<dyn Encoder>,
    max_batch: usize,
    queue_depth: usize,
    out: tokio::sync::mpsc::Sender<WorkerEvent>,
) -> std::io::Result<WorkerHandle> {
    let modality = prep.modality();
    let (tx, rx) = bounded::<Job>(queue_depth);
    let handle = WorkerHandle {
        modality,
        tx,
        rx: rx.clone(),
    };
    std::thread::Builder::new()
        .name(format!("enc-{modality}"))
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                // Each window gives one or more views (multi-crop); their embeddings are
                // averaged and renormalised.
                let mut inputs = Vec::with_capacity(jobs.len());
                let mut ok_jobs = Vec::with_capacity(jobs.len());
                for j in jobs {
                    match prep.views(&j.window) {
                        Ok(v) if !v.is_empty() => {
                            ok_jobs.push((j, v.len()));
                            inputs.extend(v);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let ev = WorkerEvent::Failed {
                                modality,
                                seq: j.window.seq,
                                error: e.to_string(),
                            };
                            if out.blocking_send(ev).is_err() {
                                return;
                            }
                        }
                    }
                }
                if inputs.is_empty() {
                    continue;
                }
                let n = ok_jobs.len();
                let events: Vec<WorkerEvent> = match encoder.encode(&inputs) {
                    Ok(vectors) => {
                        let mut it = vectors.into_iter();
                        ok_jobs
                            .into_iter()
                            .map(|(j, views)| {
                                let vector = mean_of(it.by_ref().take(views));
                                WorkerEvent::Embedded(Embedded {
                                    modality,
                                    sensor: j.window.sensor,
                                    seq: j.window.seq,
                                    t_start_ns: j.window.t_start_ns,
                                    t_end_ns: j.window.t_end_ns,
                                    coverage: j.window.coverage,
                                    vector,
                                    latency: j.queued.elapsed(),
                                    batch_size: n,
                                })
                            })
                            .collect()
                    }
                    Err(e) => ok_jobs
                        .into_iter()
                        .map(|(j, _)| WorkerEvent::Failed {
                            modality,
                            seq: j.window.seq,
                            error: e.to_string(),
                        })
                        .collect(),
                };
                for ev in events {
                    if out.blocking_send(ev).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::preprocess::{ModelInput, PreprocessError};
    use crate::window::WindowData;
    use std::sync::Mutex;

    /// A preprocessor that turns the window's seq into a 2-vector.
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
            Ok(ModelInput::F32(vec![w.seq as f32, 1.0]))
        }
    }

    /// An encoder that is slow and records batch sizes.
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
            std::thread::sleep(Duration::from_millis(50));
            self.0.lock().unwrap().push(batch.len());
            Ok(batch
                .iter()
                .map(|b| match b {
                    ModelInput::F32(v) => {
                        let mut v = v.clone();
                        crate::engine::l2_normalise(&mut v);
                        v
                    }
                    _ => unreachable!(),
                })
                .collect())
        }
    }

    fn win(seq: i64) -> Window {
        Window {
            sensor: Sensor::Imu,
            seq,
            t_start_ns: seq,
            t_end_ns: seq + 1,
            coverage: 1.0,
            data: WindowData::Imu(vec![]),
        }
    }

    #[test]
    fn batches_queued_windows_and_drops_oldest_when_full() {
        let enc = Arc::new(SlowEnc(Mutex::new(Vec::new())));
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let h = spawn(Arc::new(SeqPrep), enc.clone(), 4, 6, tx).unwrap();
        let mut dropped = Vec::new();
        for s in 0..20 {
            if let Submit::QueuedDroppedOldest(d) = h.submit(win(s)) {
                dropped.push(d);
            }
        }
        drop(h);
        let mut got = Vec::new();
        let mut failed = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                WorkerEvent::Embedded(e) => {
                    let n: f32 = e.vector.iter().map(|x| x * x).sum();
                    assert!((n - 1.0).abs() < 1e-5);
                    got.push(e.seq)
                }
                WorkerEvent::Failed { seq, .. } => failed.push(seq),
            }
        }
        // Everything submitted is either embedded, failed, or reported dropped.
        let mut all: Vec<i64> = got.iter().chain(&failed).chain(&dropped).copied().collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert!(!dropped.is_empty(), "a slow encoder must shed load");
        assert_eq!(
            failed,
            vec![13]
                .into_iter()
                .filter(|s| !dropped.contains(s))
                .collect::<Vec<_>>()
        );
        assert!(
            enc.0.lock().unwrap().iter().any(|&b| b > 1),
            "queued windows must be batched"
        );
        // The newest window always gets through.
        assert!(got.contains(&19));
    }
}
