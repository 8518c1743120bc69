//! The checks serde cannot express: ranges and cross-field rules, one function per
//! section, every error collected (a config with three mistakes names all three).
//!
//! Every duration key (`*_s`) is listed once in [`DURATIONS`] with its range, checked
//! here, and read through [`secs`], the one conversion from seconds to a `Duration`
//! (it saturates instead of panicking, so even an unchecked value cannot crash).

use super::{Config, ConfigError, ThermalRange};
use crate::edge::WhenFull;
use crate::modality::Modality;
use std::fmt::Display;
use std::time::Duration;

/// Seconds → `Duration`, the one conversion every duration key goes through. NaN and
/// negatives give zero, values beyond `Duration::MAX` saturate (validation refuses
/// both long before: see [`DURATIONS`]).
pub fn secs(v: f64) -> Duration {
    if v.is_nan() || v <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX)
}

/// Seconds → nanoseconds, saturating (for time arithmetic on the sensor axis).
pub fn secs_ns(v: f64) -> i64 {
    if v.is_nan() {
        return 0;
    }
    (v * 1e9).clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// The range of a duration key.
#[derive(Debug, Clone, Copy)]
pub struct SecsRange {
    /// Lowest value; with `zero_off`, 0 is also allowed and means "off".
    pub min: f64,
    /// `min` itself is allowed.
    pub min_inclusive: bool,
    pub max: f64,
    /// 0 is allowed (the key's "off" or "wait for all").
    pub zero_off: bool,
}

const fn above(min: f64, max: f64) -> SecsRange {
    SecsRange {
        min,
        min_inclusive: false,
        max,
        zero_off: false,
    }
}
const fn from(min: f64, max: f64) -> SecsRange {
    SecsRange {
        min,
        min_inclusive: true,
        max,
        zero_off: false,
    }
}
const fn off_or(min: f64, max: f64) -> SecsRange {
    SecsRange {
        min,
        min_inclusive: true,
        max,
        zero_off: true,
    }
}

const HOUR: f64 = 3600.0;
const DAY: f64 = 86_400.0;

/// A duration key: its path, range and value in a config.
pub struct DurationKey {
    pub key: &'static str,
    pub range: SecsRange,
    pub get: fn(&Config) -> f64,
}

const fn key(key: &'static str, range: SecsRange, get: fn(&Config) -> f64) -> DurationKey {
    DurationKey { key, range, get }
}

/// Every duration key of the config with its documented range (`configs/default.toml`
/// states the same ranges). Source keys (`sources.<id>.restart_backoff_s`) are checked
/// by their parser with the same [`SecsRange`].
pub static DURATIONS: &[DurationKey] = &[
    key("window.length_s", above(0.0, 60.0), |c| c.window.length_s),
    key("window.hop_s", above(0.0, 60.0), |c| c.window.hop_s),
    key("window.idle_flush_s", above(0.0, HOUR), |c| c.window.idle_flush_s),
    key("engine.max_wait_s", off_or(0.001, HOUR), |c| c.engine.max_wait_s),
    key("limits.max_time_jump_s", above(0.0, 365.0 * DAY), |c| {
        c.limits.max_time_jump_s
    }),
    key("daemon.shutdown_timeout_s", above(0.0, HOUR), |c| {
        c.daemon.shutdown_timeout_s
    }),
    key("daemon.watchdog_stall_s", from(0.1, DAY), |c| c.daemon.watchdog_stall_s),
    key("queries.default_cooldown_s", from(0.0, DAY), |c| {
        c.queries.default_cooldown_s
    }),
    key("queries.id_min_interval_s", from(0.0, HOUR), |c| {
        c.queries.id_min_interval_s
    }),
    key("fusion.deadline_s", off_or(0.001, HOUR), |c| c.fusion.deadline_s),
    key("fusion.active_s", above(0.0, DAY), |c| c.fusion.active_s),
    key("history.segment_s", from(10.0, DAY), |c| c.history.segment_s),
    key("history.sync_s", above(0.0, 60.0), |c| c.history.sync_s),
    // Each health message is a publish and a log line: at most 10 a second.
    key("health.interval_s", from(0.1, HOUR), |c| c.health.interval_s),
    key("health.stall_s", from(0.1, DAY), |c| c.health.stall_s),
];

/// The range of `sources.<id>.restart_backoff_s`.
pub const RESTART_BACKOFF: SecsRange = above(0.0, 30.0);

impl SecsRange {
    pub fn contains(&self, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        if self.zero_off && v == 0.0 {
            return true;
        }
        let low = if self.min_inclusive {
            v >= self.min
        } else {
            v > self.min
        };
        low && v <= self.max
    }

    /// What the key expects, for error messages.
    pub fn describe(&self) -> String {
        let lo = if self.min_inclusive { "[" } else { "(" };
        let off = if self.zero_off { "0 (off) or " } else { "" };
        format!("expected {off}seconds in {lo}{}, {}]", self.min, self.max)
    }

    /// Check `v`, or say what was expected and what was found.
    pub fn check(&self, v: f64) -> Result<Duration, String> {
        if self.contains(v) {
            Ok(secs(v))
        } else {
            Err(format!("{}, got {v:?}", self.describe()))
        }
    }
}

/// Errors collected while validating, each naming its key.
#[derive(Default)]
pub struct Checks {
    errors: Vec<String>,
}

impl Checks {
    /// `key` is wrong: `what` says what was expected (and found).
    pub fn fail(&mut self, key: &str, what: impl Display) {
        self.errors.push(format!("`{key}`: {what}"));
    }
    /// An error that already names its key.
    pub fn fail_raw(&mut self, what: impl Display) {
        self.errors.push(what.to_string());
    }
    /// `ok`, or `key` fails with `what`.
    pub fn ensure(&mut self, ok: bool, key: &str, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(key, what());
        }
    }
    /// An integer (or any ordered value) in `lo..=hi`.
    pub fn range<T: PartialOrd + Display + Copy>(&mut self, key: &str, v: T, lo: T, hi: T) {
        if !(lo <= v && v <= hi) {
            self.fail(key, format!("expected {lo}..={hi}, got {v}"));
        }
    }
    /// A finite number in `[lo, hi]`.
    pub fn real(&mut self, key: &str, v: f64, lo: f64, hi: f64, unit: &str) {
        if !(v.is_finite() && lo <= v && v <= hi) {
            self.fail(key, format!("expected {unit} in [{lo}, {hi}], got {v:?}"));
        }
    }
    /// A finite number > `lo` and <= `hi`.
    pub fn positive(&mut self, key: &str, v: f64, hi: f64, unit: &str) {
        if !(v.is_finite() && v > 0.0 && v <= hi) {
            self.fail(key, format!("expected {unit} in (0, {hi}], got {v:?}"));
        }
    }
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.errors.join("\n")))
        }
    }
}

impl Config {
    /// Every check serde cannot express; all errors at once, one line each.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checks::default();
        for d in DURATIONS {
            if let Err(e) = d.range.check((d.get)(self)) {
                c.fail(d.key, e);
            }
        }
        self.check_window(&mut c);
        self.check_engine(&mut c);
        self.check_preprocess(&mut c);
        if let Err(errors) = crate::sources::parse_all_errors(&self.sources) {
            for e in errors {
                c.fail_raw(e);
            }
        }
        self.check_limits(&mut c);
        self.check_outputs_and_bus(&mut c);
        self.check_labels_and_events(&mut c);
        self.check_queries(&mut c);
        self.check_fusion(&mut c);
        self.check_history(&mut c);
        self.check_log(&mut c);
        if let Err(e) = crate::ident::validate_chunk(&self.robot_id()) {
            c.fail("robot.id", e);
        }
        c.into_result()
    }

    fn check_window(&self, c: &mut Checks) {
        c.real("window.min_coverage", self.window.min_coverage, 0.0, 1.0, "a fraction");
        c.range("window.origin_ns", self.window.origin_ns, -(1i64 << 62), 1i64 << 62);
    }

    fn check_engine(&self, c: &mut Checks) {
        let e = &self.engine;
        c.ensure(!e.providers.is_empty(), "engine.providers", || {
            "expected at least one of tensorrt, cuda, cpu".into()
        });
        c.range("engine.max_batch", e.max_batch, 1, 256);
        c.range("engine.queue_depth", e.queue_depth, 1, 65_536);
        c.ensure(e.concurrency <= 64, "engine.concurrency", || {
            format!("expected 0 (no limit) or 1..=64, got {}", e.concurrency)
        });
        c.range("engine.intra_threads", e.intra_threads, 0, 1024);
        for (m, b) in &e.modalities {
            if *m == Modality::Text {
                c.fail(
                    "engine.modalities.text",
                    "text is embedded on demand (queries, labels), not from streams: expected one of vision, audio, depth, thermal, imu",
                );
                continue;
            }
            if !(b.max_rate_hz.is_finite() && (0.0..=1000.0).contains(&b.max_rate_hz)) {
                c.fail(
                    &format!("engine.modalities.{m}.max_rate_hz"),
                    format!(
                        "expected windows per second in [0, 1000] (0: no budget), got {}",
                        b.max_rate_hz
                    ),
                );
            }
            c.range(&format!("engine.modalities.{m}.priority"), b.priority, -1000, 1000);
        }
    }

    fn check_preprocess(&self, c: &mut Checks) {
        let p = &self.preprocess;
        c.ensure(p.audio.std > 0.0, "preprocess.audio.std", || "expected > 0".into());
        c.range("preprocess.vision.frames", p.vision.frames, 1, 64);
        let d = &p.depth;
        c.ensure(
            d.min_depth_m > 0.0 && d.max_depth_m > d.min_depth_m,
            "preprocess.depth.min_depth_m",
            || "expected 0 < min_depth_m < max_depth_m".into(),
        );
        let t = &p.thermal;
        c.ensure(
            t.range != ThermalRange::Fixed || t.raw_max > t.raw_min,
            "preprocess.thermal.raw_max",
            || "expected raw_max > raw_min".into(),
        );
        c.ensure(
            t.range != ThermalRange::Kelvin || (t.kelvin_min >= 0.0 && t.kelvin_max > t.kelvin_min),
            "preprocess.thermal.kelvin_max",
            || "expected 0 <= kelvin_min < kelvin_max".into(),
        );
        c.range("preprocess.imu.samples", p.imu.samples, 2, 100_000);
        c.ensure(p.imu.channels.len() == 6, "preprocess.imu.channels", || {
            format!(
                "expected 6 axes (the IMU encoder takes 6 channels), got {}",
                p.imu.channels.len()
            )
        });
    }

    fn check_limits(&self, c: &mut Checks) {
        let l = &self.limits;
        c.range("limits.max_image_side", l.max_image_side, 16, 65_535);
        c.real("limits.max_aspect_ratio", l.max_aspect_ratio, 1.0, 1e6, "a ratio");
        c.range("limits.max_window_frames", l.max_window_frames, 16, 10_000_000);
        c.range("limits.max_window_bytes", l.max_window_bytes, 1 << 20, 1 << 40);
        // Checked against a valid window length only (a bad one has its own error).
        let ok = |key: &str, v: f64| DURATIONS.iter().any(|d| d.key == key && d.range.contains(v));
        let both_ok = ok("window.length_s", self.window.length_s) && ok("limits.max_time_jump_s", l.max_time_jump_s);
        c.ensure(
            !both_ok || l.max_time_jump_s >= 2.0 * self.window.length_s,
            "limits.max_time_jump_s",
            || {
                format!(
                    "expected seconds >= 2 × window.length_s ({}), got {}",
                    2.0 * self.window.length_s,
                    l.max_time_jump_s
                )
            },
        );
    }

    fn check_outputs_and_bus(&self, c: &mut Checks) {
        let r = &self.ros2;
        if let Some(d) = r.domain_id {
            c.range("ros2.domain_id", d, 0, super::MAX_ROS_DOMAIN);
        }
        if let Ok(v) = std::env::var("ROS_DOMAIN_ID") {
            c.ensure(
                r.domain_id.is_some() || v.trim().parse::<u32>().is_ok_and(|d| d <= super::MAX_ROS_DOMAIN),
                "ros2.domain_id",
                || {
                    format!(
                        "unset, so ROS_DOMAIN_ID is used, but it is `{}` (expected 0..={})",
                        crate::ident::clip(&v, 20),
                        super::MAX_ROS_DOMAIN
                    )
                },
            );
        }
        c.ensure(crate::ros2::wire::valid_namespace(&r.namespace), "ros2.namespace", || {
            format!(
                "expected a ROS namespace such as `/sensebind` (`/`-separated names of letters, digits and `_`, not starting with a digit), got `{}`",
                crate::ident::clip(&r.namespace, 60)
            )
        });
        c.ensure(crate::ros2::wire::valid_name(&r.node), "ros2.node", || {
            format!(
                "expected a ROS node name such as `sensebind` (letters, digits and `_`, not starting with a digit), got `{}`",
                crate::ident::clip(&r.node, 60)
            )
        });
        let f = &self.foxglove;
        c.ensure(!f.host.trim().is_empty(), "foxglove.host", || {
            "expected a host to listen on, e.g. 127.0.0.1".into()
        });
        c.range("foxglove.image_max_side", f.image_max_side, 16, 4096);
        c.positive("foxglove.image_rate_hz", f.image_rate_hz, 60.0, "Hz");
        c.range("foxglove.max_client_errors", f.max_client_errors, 1, 1_000_000);
        c.range("outputs.queue", self.outputs.queue, 1, 65_536);
        c.range("bus.alert_block_ms", self.bus.alert_block_ms, 10, 60_000);
        c.ensure(self.bus.when_full != WhenFull::DropOldest, "bus.when_full", || {
            "expected `drop_newest` or `block` (zenoh cannot drop a message it already sent)".into()
        });
        c.ensure(
            !(self.bus.prefix.is_empty() || self.bus.prefix.contains(['*', '$', '?', '#'])),
            "bus.prefix",
            || "expected a plain key expression such as `sensebind`".into(),
        );
    }

    fn check_labels_and_events(&self, c: &mut Checks) {
        c.range("labels.top_k", self.labels.top_k, 1, 100);
        for (m, set) in &self.labels.sets {
            if *m == Modality::Text {
                c.fail("labels.sets.text", "labels apply to sensed modalities, not text");
                continue;
            }
            for (label, prompts) in set {
                c.ensure(!prompts.is_empty(), &format!("labels.sets.{m}.{label}"), || {
                    "expected at least one prompt".into()
                });
            }
        }
        let e = &self.events;
        c.ensure(
            (0.0..=1.0).contains(&e.start_prob) && (0.0..=1.0).contains(&e.end_prob) && e.end_prob <= e.start_prob,
            "events.end_prob",
            || "expected 0 <= end_prob <= start_prob <= 1".into(),
        );
    }

    fn check_queries(&self, c: &mut Checks) {
        let q = &self.queries;
        c.range("queries.max_queries", q.max_queries, 1, 100_000);
        c.range("queries.max_text_chars", q.max_text_chars, 1, 1_000_000);
        c.range("queries.max_request_bytes", q.max_request_bytes, 64, 64 << 20);
        c.positive(
            "queries.registrations_per_s",
            q.registrations_per_s,
            1e6,
            "a rate per second",
        );
        c.range("queries.registration_burst", q.registration_burst, 1, 1_000_000);
        c.range("queries.max_terms", q.max_terms, 1, 64);
        c.range("queries.max_conditions", q.max_conditions, 2, 16);
        c.range("queries.max_media_bytes", q.max_media_bytes, 1024, 64 << 20);
        c.real(
            "queries.max_example_seconds",
            q.max_example_seconds,
            1.0,
            600.0,
            "seconds",
        );
        c.range("queries.max_store_bytes", q.max_store_bytes, 64 << 10, 1 << 30);
        c.ensure(
            (-1.0..=1.0).contains(&q.default_threshold),
            "queries.default_threshold",
            || format!("expected a cosine in [-1, 1], got {}", q.default_threshold),
        );
    }

    fn check_fusion(&self, c: &mut Checks) {
        for (m, w) in &self.fusion.weights {
            if *m == Modality::Text {
                c.fail(
                    "fusion.weights.text",
                    "text is not a stream; weights apply to sensed modalities",
                );
                continue;
            }
            c.real(&format!("fusion.weights.{m}"), *w as f64, 0.0, 1e6, "a weight");
        }
    }

    fn check_history(&self, c: &mut Checks) {
        let h = &self.history;
        if let Err(e) = h.retention_ns() {
            c.fail_raw(e.to_string().trim_start_matches("configuration: "));
        }
        match h.max_bytes() {
            Ok(b) if b < 1 << 20 => c.fail(
                "history.max_bytes",
                format!("expected at least 1MiB, got `{}`", h.max_bytes),
            ),
            Ok(_) => {}
            Err(e) => c.fail_raw(e.to_string().trim_start_matches("configuration: ")),
        }
        c.range("history.max_k", h.max_k, 1, 10_000);
        c.positive("history.searches_per_s", h.searches_per_s, 1e6, "a rate per second");
        c.range("history.search_burst", h.search_burst, 1, 1_000_000);
    }

    fn check_log(&self, c: &mut Checks) {
        if let Err(e) = check_log_level(&self.log.level) {
            c.fail(
                "log.level",
                format!(
                    "expected a level (off, error, warn, info, debug, trace) or directives such as `info,sensebind=debug`, got `{}`: {e}",
                    crate::ident::clip(&self.log.level, 80)
                ),
            );
        }
    }
}

/// A log level or `tracing` filter directives; a bare word must be a level (a typo
/// such as `verbose` would otherwise be read as a target name and silence the log).
pub fn check_log_level(s: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if s.trim().is_empty() {
        return Err("empty".into());
    }
    for d in s.split(',').map(str::trim) {
        if !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            return Err(format!("`{}` is not a level", crate::ident::clip(d, 40)));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIC: &str = "[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n";

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml_str("t.toml", &format!("{MIC}{text}")).map_err(|e| e.to_string())
    }

    /// `a.b.c = v` as TOML (`[a.b]\nc = v`).
    fn key_toml(key: &str, v: &str) -> String {
        let (section, name) = key.rsplit_once('.').unwrap();
        format!("[{section}]\n{name} = {v}\n")
    }

    #[test]
    fn every_duration_key_is_refused_out_of_range_naming_it() {
        // The defaults are inside every range.
        let c = load("").unwrap();
        for d in DURATIONS {
            assert!(d.range.contains((d.get)(&c)), "{}'s default", d.key);
        }
        for d in DURATIONS {
            for v in ["1e300", "-1.0", "nan", "inf"] {
                let e = load(&key_toml(d.key, v)).unwrap_err();
                assert!(e.contains(&format!("`{}`", d.key)), "{} = {v}: {e}", d.key);
                assert_eq!(e.lines().count(), 1, "{} = {v}: one error, one line: {e}", d.key);
            }
        }
        let e = load("[health]\ninterval_s = 1e-6\n").unwrap_err();
        assert!(e.contains("`health.interval_s`") && e.contains("[0.1, 3600]"), "{e}");
        let e = Config::from_toml_str("t.toml", &format!("{MIC}restart_backoff_s = 1e300\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sources.mic.restart_backoff_s`"), "{e}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = load(
            "[health]\ninterval_s = 1e300\nstall_s = 1e300\n[engine]\nmax_batch = 0\n[log]\nlevel = \"verbose\"\n",
        )
        .unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        for key in ["health.interval_s", "health.stall_s", "engine.max_batch", "log.level"] {
            assert!(lines.iter().any(|l| l.contains(&format!("`{key}`"))), "{key}: {e}");
        }
    }

    #[test]
    fn queue_start_and_log_level_are_bounded() {
        let with = |extra: &str| {
            Config::from_toml_str("t.toml", &format!("{MIC}{extra}\n"))
                .unwrap_err()
                .to_string()
        };
        let e = with("queue = 18446744073709551615");
        assert!(
            e.contains("queue = 18446744073709551615"),
            "the TOML error shows the key: {e}"
        );
        let e = with("queue = 9223372036854775807");
        assert!(e.contains("`sources.mic.queue`"), "{e}");
        let e = Config::from_toml_str(
            "t.toml",
            &format!(
                "[sources.f]\ntype = \"file\"\nsensor = \"imu\"\npath = \"x.csv\"\nstart_ns = {}\n",
                i64::MAX
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`sources.f.start_ns`"), "{e}");
        for bad in ["verbose", "info,loud", "sensebind=loudest", ""] {
            let e = load(&format!("[log]\nlevel = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("`log.level`"), "{bad}: {e}");
        }
        for good in ["info", "DEBUG", "warn,sensebind=debug", "sensebind::queries=trace"] {
            load(&format!("[log]\nlevel = \"{good}\"\n")).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn the_one_conversion_never_panics() {
        assert_eq!(secs(1e300), Duration::MAX);
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(-3.0), Duration::ZERO);
        assert_eq!(secs(1.5), Duration::from_millis(1500));
        assert_eq!(secs_ns(1e300), i64::MAX);
        assert_eq!(secs_ns(2.0), 2_000_000_000);
    }
}
