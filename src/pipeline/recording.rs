//! The pipeline with a recorder on its taps: what `sensebind record` and `sensebind
//! replay --out` run. Frames (and, with `results`, everything the pipeline publishes)
//! go to an MCAP file while the graph runs as `run` does.

use super::{build_sources, run_graph, BuiltSource, PipelineError, Taps};
use crate::config::Config;
use crate::modality::Sensor;
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
///
/// A ROS 2 bag (its `.mcap` file or its directory) plays every topic a source reads,
/// one source per topic, named after it (`/camera/image_raw` → `camera_image_raw`);
/// `sensors` sets a topic's sensor (`--sensor TOPIC=SENSOR`).
pub fn replay_config(
    mut cfg: Config,
    file: &Path,
    pace: Pace,
    sensors: &[(String, Sensor)],
) -> Result<Config, RecordingError> {
    let pace_name = match pace {
        Pace::Realtime => "realtime",
        Pace::Fast => "fast",
    };
    let bag = crate::sources::mcap::bag_file(file).map_err(RecordingError::Replay)?;
    let ros = crate::sources::mcap::ros_topics(&bag).map_err(RecordingError::Replay)?;
    cfg.sources.clear();
    let source = |keys: &[(&str, String)]| -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("type".into(), "mcap".into());
        t.insert("path".into(), bag.display().to_string().into());
        t.insert("pace".into(), pace_name.into());
        for (k, v) in keys {
            t.insert((*k).into(), v.clone().into());
        }
        t
    };
    if ros.is_empty() {
        if let Some((topic, _)) = sensors.first() {
            return Err(RecordingError::Replay(format!(
                "--sensor {topic}=…: {} is not a ROS 2 bag",
                file.display()
            )));
        }
        let ids = crate::sources::mcap::recorded_sources(&bag).map_err(|e| RecordingError::Replay(e.to_string()))?;
        if ids.is_empty() {
            return Err(RecordingError::Replay(format!(
                "{}: no frame channels (`frames/<modality>/<source>`) and no ROS 2 topics to replay",
                file.display()
            )));
        }
        for id in &ids {
            cfg.sources.insert(id.clone(), source(&[("source", id.clone())]));
        }
    } else {
        for (topic, _) in sensors {
            if !ros.iter().any(|(t, _)| t == topic) {
                let have: Vec<&str> = ros.iter().map(|(t, _)| t.as_str()).collect();
                return Err(RecordingError::Replay(format!(
                    "--sensor {topic}=…: the bag has no such topic (it has {})",
                    have.join(", ")
                )));
            }
        }
        let mut skipped = Vec::new();
        for (topic, t) in &ros {
            if t.is_none() {
                skipped.push(topic.as_str());
                continue;
            }
            let mut keys = vec![("topic", topic.clone())];
            if let Some((_, s)) = sensors.iter().find(|(t, _)| t == topic) {
                keys.push(("sensor", s.as_str().to_string()));
            }
            cfg.sources.insert(crate::sources::ros2::topic_id(topic), source(&keys));
        }
        if !skipped.is_empty() {
            tracing::info!(event = names::REPLAY_SKIPPED, topics = %skipped.join(", "), "ROS 2 topics of types no source reads are not played");
        }
        if cfg.sources.is_empty() {
            return Err(RecordingError::Replay(format!(
                "{}: none of its ROS 2 topics is of a type a source reads (Image, CompressedImage, Imu, AudioData, AudioDataStamped)",
                file.display()
            )));
        }
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
