//! `sensebind check`: load everything the daemon would (configuration, ONNX Runtime,
//! model pack, sources) without running it, and say what was found, a line each.

use super::{build_sources, modalities_of, BuiltSource, Models, PipelineError};
use crate::config::Config;
use crate::engine::ort_backend;
use crate::sources::StopFlag;

/// What `check` found: lines to print, and what failed (each naming the source).
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub lines: Vec<String>,
    pub failed: Vec<String>,
}

/// Check `cfg`: the runtime and its providers, the pack's encoders for every enabled
/// source's modality, and every source opened once (so a missing file or device is
/// reported now rather than as a reconnect loop later). A step that fails ends the
/// check; the lines before it are kept.
pub fn check(cfg: &Config) -> CheckReport {
    let mut r = CheckReport::default();
    if let Err(e) = steps(cfg, &mut r) {
        r.failed.push(e.to_string());
    }
    r
}

fn steps(cfg: &Config, r: &mut CheckReport) -> Result<(), PipelineError> {
    r.lines.push(format!(
        "config: ok (robot id `{}`, state dir {})",
        cfg.robot_id(),
        cfg.state_dir().display()
    ));
    let lib = ort_backend::library_path(&cfg.engine.ort_library)?;
    ort_backend::init_runtime(&cfg.engine.ort_library)?;
    r.lines.push(format!("onnxruntime: {}", lib.display()));
    let provs: Vec<String> = ort_backend::available_providers()
        .into_iter()
        .map(|(n, ok)| format!("{n}={}", if ok { "available" } else { "not in this build" }))
        .collect();
    r.lines.push(format!(
        "execution providers: {} (configured order: {:?})",
        provs.join(", "),
        cfg.engine.providers
    ));
    let built = build_sources(cfg, &StopFlag::default())?;
    let models = Models::load(cfg, &modalities_of(&built))?;
    r.lines
        .push(format!("pack: {} ({})", models.pack.name(), models.pack.location));
    for (m, e) in &models.encoders {
        let nodes: Vec<String> = e.nodes_per_provider().iter().map(|(p, n)| format!("{p}:{n}")).collect();
        r.lines.push(format!(
            "  {m:<8} dim={} scale={} input={:?} provider={} nodes={}",
            e.dim(),
            e.logit_scale(),
            e.input_shape(),
            e.provider(),
            nodes.join(",")
        ));
    }
    for BuiltSource {
        config,
        source: mut src,
        ..
    } in built
    {
        let id = config.id;
        let info = src.info();
        if config.kind == "ros2" {
            // It needs the robot's bus, which `check` does not join.
            r.lines.push(format!(
                "source {id}: {} (subscribes when the daemon runs; `check` does not join the bus)",
                info.description
            ));
            continue;
        }
        let streams: Vec<String> = info.streams.iter().map(|s| s.modality.to_string()).collect();
        match src.open() {
            Ok(()) => r.lines.push(format!(
                "source {id}: ok ({}; streams {}; clock {})",
                info.description,
                streams.join(", "),
                src.clock().kind()
            )),
            Err(e) => {
                r.lines.push(format!("source {id}: FAILED: {e}"));
                r.failed.push(format!("source {id}: {e}"));
            }
        }
    }
    r.lines.push(format!(
        "bus: {}/{} mode {:?} listen {:?} connect {:?}",
        cfg.bus.prefix,
        cfg.robot_id(),
        cfg.bus.mode,
        cfg.bus.listen,
        cfg.bus.connect
    ));
    Ok(())
}
