//! Health counters, shared by every stage and published on `health`.
//!
//! Names are stable (they are part of the bus contract): per sensor `frames`,
//! `frames_dropped`, `errors`, `reconnects`, `state`, `last_frame_age_s`; per modality
//! `windows_in`, `windows_out`, `windows_dropped.{coverage,backpressure,error}`,
//! `late_frames`, `batch_max`, `latency_ms.{last,p50,p95,max}`, `provider`.

use crate::modality::{Modality, Sensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct SourceHealth {
    state: Mutex<&'static str>,
    description: Mutex<String>,
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    last_frame_ns: AtomicI64,
    last_frame_at: Mutex<Option<Instant>>,
}

impl Default for SourceHealth {
    fn default() -> Self {
        SourceHealth {
            state: Mutex::new("starting"),
            description: Mutex::new(String::new()),
            frames: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_frame_ns: AtomicI64::new(0),
            last_frame_at: Mutex::new(None),
        }
    }
}

impl SourceHealth {
    pub fn set_state(&self, s: &'static str) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
    pub fn state(&self) -> &'static str {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn set_description(&self, d: String) {
        *self.description.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }
    pub fn record_frame(&self, t_ns: i64) {
        self.frames.fetch_add(1, Relaxed);
        self.last_frame_ns.store(t_ns, Relaxed);
        *self.last_frame_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    pub fn record_frame_dropped(&self) {
        self.frames_dropped.fetch_add(1, Relaxed);
    }
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    pub fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    fn snapshot(&self) -> Value {
        let age = self
            .last_frame_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
        json!({
            "state": self.state(),
            "source": *self.description.lock().unwrap_or_else(|e| e.into_inner()),
            "frames": self.frames.load(Relaxed),
            "frames_dropped": self.frames_dropped.load(Relaxed),
            "errors": self.errors.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "last_frame_ns": self.last_frame_ns.load(Relaxed),
            "last_frame_age_s": age,
        })
    }
}

#[derive(Debug, Default)]
pub struct ModalityHealth {
    pub windows_in: AtomicU64,
    pub windows_out: AtomicU64,
    pub dropped_coverage: AtomicU64,
    pub dropped_backpressure: AtomicU64,
    pub dropped_error: AtomicU64,
    pub late_frames: AtomicU64,
    /// Largest encoder batch seen (windows per encoder call).
    pub batch_max: AtomicU64,
    latency: Mutex<LatencyWindow>,
    provider: Mutex<String>,
}

/// The last N latencies, for percentiles.
#[derive(Debug, Default)]
struct LatencyWindow {
    recent: VecDeque<f64>,
    max: f64,
    last: f64,
}

const LATENCY_SAMPLES: usize = 200;

impl ModalityHealth {
    pub fn record_latency(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if l.recent.len() == LATENCY_SAMPLES {
            l.recent.pop_front();
        }
        l.recent.push_back(ms);
        l.max = l.max.max(ms);
        l.last = ms;
    }
    pub fn set_provider(&self, p: &str) {
        *self.provider.lock().unwrap_or_else(|e| e.into_inner()) = p.to_string();
    }
    fn snapshot(&self) -> Value {
        let l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<f64> = l.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            if v.is_empty() {
                None
            } else {
                let i = ((v.len() - 1) as f64 * p).round() as usize;
                Some((v[i] * 100.0).round() / 100.0)
            }
        };
        let r = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "windows_in": self.windows_in.load(Relaxed),
            "windows_out": self.windows_out.load(Relaxed),
            "windows_dropped": {
                "coverage": self.dropped_coverage.load(Relaxed),
                "backpressure": self.dropped_backpressure.load(Relaxed),
                "error": self.dropped_error.load(Relaxed),
            },
            "late_frames": self.late_frames.load(Relaxed),
            "batch_max": self.batch_max.load(Relaxed),
            "latency_ms": {
                "last": if v.is_empty() { None } else { Some(r(l.last)) },
                "p50": pct(0.5),
                "p95": pct(0.95),
                "max": if v.is_empty() { None } else { Some(r(l.max)) },
            },
            "provider": *self.provider.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// All counters of one daemon.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    pub sources: BTreeMap<Sensor, Arc<SourceHealth>>,
    pub modalities: BTreeMap<Modality, Arc<ModalityHealth>>,
    pub alerts: AtomicU64,
    pub queries: AtomicU64,
    pub bus_errors: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Health {
            started: Instant::now(),
            sources: Sensor::ALL
                .iter()
                .map(|s| (*s, Arc::new(SourceHealth::default())))
                .collect(),
            modalities: Modality::SENSED
                .iter()
                .map(|m| (*m, Arc::new(ModalityHealth::default())))
                .collect(),
            alerts: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            bus_errors: AtomicU64::new(0),
        }
    }

    pub fn source(&self, s: Sensor) -> Arc<SourceHealth> {
        self.sources[&s].clone()
    }

    pub fn modality(&self, m: Modality) -> Arc<ModalityHealth> {
        self.modalities.get(&m).cloned().unwrap_or_default()
    }

    /// The JSON published on `health`.
    pub fn snapshot(&self, robot: &str, t_ns: i64, active: &[Sensor]) -> Value {
        let sensors: serde_json::Map<String, Value> = active
            .iter()
            .map(|s| (s.to_string(), self.sources[s].snapshot()))
            .collect();
        let mods: serde_json::Map<String, Value> = active
            .iter()
            .map(|s| (s.modality().to_string(), self.modality(s.modality()).snapshot()))
            .collect();
        let ok = active
            .iter()
            .all(|s| matches!(self.sources[s].state(), "running" | "ended"));
        json!({
            "robot": robot,
            "t_ns": t_ns,
            "uptime_s": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "status": if ok { "ok" } else { "degraded" },
            "sensors": sensors,
            "modalities": mods,
            "queries": self.queries.load(Relaxed),
            "alerts": self.alerts.load(Relaxed),
            "bus_errors": self.bus_errors.load(Relaxed),
        })
    }
}
