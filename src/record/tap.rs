//! Recording from the pipeline's taps: raw frames (always) and, when asked, what the
//! outputs stage published (embeddings, labels, events, alerts). Runs as one task;
//! the recording is flushed every second and finished after the pipeline has stopped,
//! so the last windows' results are in it.

use super::codec;
use super::writer::{RecordError, Recorder};
use crate::outputs::Published;
use crate::sources::TappedFrame;
use crate::telemetry::names;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// What a finished recording holds.
#[derive(Debug, Default)]
pub struct RecordSummary {
    /// Messages per topic.
    pub counts: BTreeMap<String, u64>,
    /// Items the recorder fell too far behind to write (0 unless the disk is too slow).
    pub lost: u64,
}

/// A running recorder.
pub struct TapRecorder {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Result<RecordSummary, RecordError>>,
}

/// Start recording `frames` and, if given, `published` into `recorder`.
pub fn start(
    recorder: Recorder,
    frames: broadcast::Receiver<Arc<TappedFrame>>,
    published: Option<broadcast::Receiver<Arc<Published>>>,
) -> TapRecorder {
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(run(recorder, frames, published, stop.clone()));
    TapRecorder { stop, task }
}

impl TapRecorder {
    /// Write what is still queued, then close the file. Call after the pipeline ended.
    pub async fn finish(self) -> Result<RecordSummary, RecordError> {
        self.stop.notify_one();
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(RecordError::Write {
                path: "recording".into(),
                reason: format!("the recorder task failed: {e}"),
            }),
        }
    }
}

fn write_frame(rec: &mut Recorder, f: &TappedFrame) -> Result<(), RecordError> {
    rec.write(&codec::encode_frame(&f.source, &f.frame))
}

fn write_published(rec: &mut Recorder, p: &Published) -> Result<(), RecordError> {
    match codec::encode_published(&p.topic, &p.payload, p.enc == crate::bus::Enc::Cbor) {
        Some(Ok(e)) => rec.write(&e),
        Some(Err(err)) => {
            tracing::warn!(event = names::RECORD_SKIPPED, topic = %p.topic, error = %err, "message not recorded");
            Ok(())
        }
        None => Ok(()),
    }
}

async fn run(
    mut rec: Recorder,
    mut frames: broadcast::Receiver<Arc<TappedFrame>>,
    mut published: Option<broadcast::Receiver<Arc<Published>>>,
    stop: Arc<tokio::sync::Notify>,
) -> Result<RecordSummary, RecordError> {
    let mut lost = 0u64;
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    let lagged = |n: u64, what: &str, lost: &mut u64| {
        *lost += n;
        tracing::warn!(
            event = names::RECORD_LAGGED,
            lost = n,
            what,
            "the recorder fell behind; items lost"
        );
    };
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            _ = flush.tick() => rec.flush()?,
            f = frames.recv() => match f {
                Ok(f) => write_frame(&mut rec, &f)?,
                Err(RecvError::Lagged(n)) => lagged(n, "frames", &mut lost),
                Err(RecvError::Closed) => {}
            },
            p = async { match published.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match p {
                Ok(p) => write_published(&mut rec, &p)?,
                Err(RecvError::Lagged(n)) => lagged(n, "results", &mut lost),
                Err(RecvError::Closed) => published = None,
            },
        }
    }
    // Drain what the pipeline produced before it stopped.
    loop {
        match frames.try_recv() {
            Ok(f) => write_frame(&mut rec, &f)?,
            Err(TryRecvError::Lagged(n)) => lagged(n, "frames", &mut lost),
            Err(_) => break,
        }
    }
    if let Some(p) = published.as_mut() {
        loop {
            match p.try_recv() {
                Ok(m) => write_published(&mut rec, &m)?,
                Err(TryRecvError::Lagged(n)) => lagged(n, "results", &mut lost),
                Err(_) => break,
            }
        }
    }
    let counts = rec.finish()?;
    Ok(RecordSummary { counts, lost })
}
