//! The pipeline with a recorder on its taps: what `sensebind record` and `sensebind
//! replay --out` run. Frames (and, with `results`, everything the pipeline publishes)
//! go to an MCAP file while the graph runs as `run` does.

use super::{build_sources, run_graph, BuiltSource, PipelineError, Taps};
use crate::config::Config;
use crate::record::{codec, tap, RecordError, Recorder};
use crate::sources::file::Pace;
use crate::sources::StopFlag;
use crate::telemetry::names;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    Replay(String),
}

/// What a recording holds when it is closed.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub messages: u64,
    pub topics: BTreeMap<String, u64>,
    /// Items the disk could not keep up with.
    pub lost: u64,
}

/// Run `sources` through the pipeline until `shutdown` (or every source ended, with
/// `daemon.exit_when_sources_end`), recording the taps into `out` (if any).
pub async fn run_recording(
    cfg: Config,
    sources: Vec<BuiltSource>,
    stop: StopFlag,
    out: Option<&Path>,
    results: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<Recorded>, RecordingError> {
    let taps = Taps::default();
    let recorder = match out {
        Some(path) => {
            let mut rec = Recorder::create(path)?;
            for b in &sources {
                for st in b.source.info().streams {
                    rec.set_channel_metadata(
                        &codec::frame_topic(st.modality, &b.config.id),
                        [
                            ("nominal_rate_hz".to_string(), st.nominal_rate_hz.to_string()),
                            ("source_type".to_string(), b.config.kind.clone()),
                        ]
                        .into(),
                    );
                }
            }
            tracing::info!(event = names::RECORD_STARTED, path = %path.display(), results, "recording");
            Some(tap::start(
                rec,
                taps.frames.listen(),
                results.then(|| taps.published.listen()),
            ))
        }
        None => None,
    };
    let ran = run_graph(cfg, sources, stop, taps, shutdown).await;
    let mut recorded = None;
    if let (Some(r), Some(path)) = (recorder, out) {
        let summary = r.finish().await?;
        let messages: u64 = summary.counts.values().sum();
        tracing::info!(event = names::RECORD_FINISHED, path = %path.display(), messages, lost = summary.lost, "recording closed");
        recorded = Some(Recorded {
            messages,
            topics: summary.counts.into_iter().collect(),
            lost: summary.lost,
        });
    }
    ran?;
    Ok(recorded)
}

/// `cfg` with its sources replaced by the recording's (one `mcap` source per recorded
/// source id, at `pace`), exiting when they end; at `fast` pace nothing may be
/// dropped on the way: the replay waits for the encoders.
pub fn replay_config(mut cfg: Config, file: &Path, pace: Pace) -> Result<Config, RecordingError> {
    let ids = crate::sources::mcap::recorded_sources(file).map_err(|e| RecordingError::Replay(e.to_string()))?;
    if ids.is_empty() {
        return Err(RecordingError::Replay(format!(
            "{}: no frame channels (`frames/<modality>/<source>`) to replay",
            file.display()
        )));
    }
    let pace_name = match pace {
        Pace::Realtime => "realtime",
        Pace::Fast => "fast",
    };
    cfg.sources.clear();
    for id in &ids {
        let mut t = toml::Table::new();
        t.insert("type".into(), "mcap".into());
        t.insert("path".into(), file.display().to_string().into());
        t.insert("source".into(), id.clone().into());
        t.insert("pace".into(), pace_name.into());
        cfg.sources.insert(id.clone(), t);
    }
    cfg.daemon.exit_when_sources_end = true;
    if pace == Pace::Fast {
        cfg.engine.when_full = crate::edge::WhenFull::Block;
        cfg.outputs.when_full = crate::edge::WhenFull::Block;
    }
    Ok(cfg)
}

/// The replay of `file`: its sources, built, with their stop flag.
pub fn replay_sources(cfg: &Config) -> Result<(Vec<BuiltSource>, StopFlag), RecordingError> {
    let stop = StopFlag::default();
    let sources = build_sources(cfg, &stop)?;
    Ok((sources, stop))
}
