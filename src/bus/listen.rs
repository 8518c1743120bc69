//! What `sensebind listen` prints: one readable line per window (time, stream, top
//! labels with probabilities), with that window's events and alerts marked on it;
//! errors on lines of their own. Pure (no zenoh): [`Lines::push`] takes each bus
//! sample and returns the lines that are complete, [`Lines::flush`] the rest.
//!
//! ```text
//! 14:02:06.0  vision/camera        seven 97%  one 2%  four 1%  ▶ seven  ! seven 0.62
//! 14:02:06.0  audio/microphone     seven 88%  eight 6%  three 3%
//! 14:02:12.0  vision/camera        one 95%  seven 3%  four 1%  ■ seven
//! ```
//! `▶ label`: an event starts; `■ label`: an event ends; `! id score`: the query `id`
//! fired. With `--json` the tool prints the raw messages instead.

use serde_json::Value;

/// The window a message belongs to: (source, modality, seq).
type WindowKey = (String, String, i64);

struct Pending {
    key: WindowKey,
    line: String,
    marks: Vec<String>,
}

/// Assembles listen lines from bus samples.
#[derive(Default)]
pub struct Lines {
    pending: Option<Pending>,
}

fn clock(ns: i64) -> String {
    let s = ns.div_euclid(1_000_000_000);
    let tenth = ns.rem_euclid(1_000_000_000) / 100_000_000;
    let day = s.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}.{}", day / 3600, day / 60 % 60, day % 60, tenth)
}

fn window_key(v: &Value) -> Option<WindowKey> {
    Some((
        v.get("source")?.as_str()?.to_string(),
        v.get("modality")?.as_str()?.to_string(),
        v.get("seq")?.as_i64()?,
    ))
}

/// The readable line of a `labels/…` message (without marks).
pub fn labels_line(v: &Value) -> Option<String> {
    let (source, modality, _) = window_key(v)?;
    let t = v.get("t_start_ns")?.as_i64()?;
    let top: Vec<String> = v
        .get("top")?
        .as_array()?
        .iter()
        .filter_map(|s| {
            let label = s.get("label")?.as_str()?;
            let p = s.get("prob")?.as_f64()?;
            Some(format!("{label} {:.0}%", p * 100.0))
        })
        .collect();
    Some(format!(
        "{}  {:<20} {}",
        clock(t),
        format!("{modality}/{source}"),
        top.join("  ")
    ))
}

fn event_mark(v: &Value) -> Option<String> {
    let label = v.get("label")?.as_str()?;
    Some(match v.get("state")?.as_str()? {
        "start" => format!("▶ {label}"),
        _ => format!("■ {label}"),
    })
}

fn alert_mark(v: &Value) -> Option<String> {
    let id = v.get("query_id")?.as_str()?;
    let score = v.get("score")?.as_f64()?;
    Some(format!("! {id} {score:.2}"))
}

impl Lines {
    pub fn new() -> Self {
        Lines::default()
    }

    /// The line held back for its window's events and alerts, if any.
    pub fn flush(&mut self) -> Option<String> {
        self.pending.take().map(|p| {
            if p.marks.is_empty() {
                p.line
            } else {
                format!("{}  {}", p.line, p.marks.join("  "))
            }
        })
    }

    /// Whether a line is held back (the caller flushes it after a short quiet spell).
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// One bus sample (`key` relative or absolute, JSON `body`) → completed lines.
    pub fn push(&mut self, key: &str, body: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let kind = ["/labels/", "/events/", "/alerts/", "/errors/"]
            .into_iter()
            .find(|k| key.contains(k));
        let Some(kind) = kind else { return out };
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                out.extend(self.flush());
                out.push(format!("? {key}: not JSON ({e})"));
                return out;
            }
        };
        match kind {
            "/labels/" => {
                out.extend(self.flush());
                match (window_key(&v), labels_line(&v)) {
                    (Some(key), Some(line)) => {
                        self.pending = Some(Pending {
                            key,
                            line,
                            marks: Vec::new(),
                        })
                    }
                    _ => out.push(format!("? {key}: {v}")),
                }
            }
            "/events/" | "/alerts/" => {
                let mark = if kind == "/events/" {
                    event_mark(&v)
                } else {
                    alert_mark(&v)
                };
                let wk = window_key(&v);
                match (&mut self.pending, mark) {
                    (Some(p), Some(m)) if wk.as_ref() == Some(&p.key) => p.marks.push(m),
                    (_, mark) => {
                        // Not this window's (e.g. a label-less stream): a line of its own.
                        out.extend(self.flush());
                        let t = v.get("t_start_ns").or(v.get("start_ns")).and_then(Value::as_i64);
                        let stream = match &wk {
                            Some((s, m, _)) => format!("{m}/{s}"),
                            None => key.to_string(),
                        };
                        out.push(format!(
                            "{}  {:<20} {}",
                            t.map(clock).unwrap_or_else(|| "--:--:--.-".into()),
                            stream,
                            mark.unwrap_or_else(|| v.to_string())
                        ));
                    }
                }
            }
            _ => {
                out.extend(self.flush());
                let msg = match v.get("error") {
                    Some(Value::String(e)) => e.clone(),
                    _ => v.to_string(),
                };
                out.push(format!("ERROR {key}: {msg}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(src: &str, seq: i64, top: &[(&str, f64)]) -> Vec<u8> {
        let top: Vec<Value> = top
            .iter()
            .map(|(l, p)| serde_json::json!({"label": l, "prob": p}))
            .collect();
        serde_json::json!({"robot": "r", "source": src, "modality": "vision", "seq": seq,
            "t_start_ns": 1_700_000_006_000_000_000i64 + seq * 2_000_000_000, "t_end_ns": 0, "top": top})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_window_line_carries_its_events_and_alerts() {
        let mut l = Lines::new();
        assert!(l
            .push(
                "sensebind/r/labels/vision/cam",
                &labels("cam", 0, &[("seven", 0.97), ("one", 0.02)])
            )
            .is_empty());
        let ev = serde_json::json!({"source": "cam", "modality": "vision", "seq": 0, "label": "seven", "state": "start", "start_ns": 0, "prob": 0.97});
        assert!(l
            .push("sensebind/r/events/vision/cam", ev.to_string().as_bytes())
            .is_empty());
        let al = serde_json::json!({"source": "cam", "modality": "vision", "seq": 0, "query_id": "seven", "score": 0.623, "t_start_ns": 0});
        assert!(l.push("sensebind/r/alerts/seven", al.to_string().as_bytes()).is_empty());
        let out = l.push("sensebind/r/labels/vision/cam", &labels("cam", 1, &[("one", 0.9)]));
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("22:13:26.0  vision/cam"), "{}", out[0]);
        assert!(
            out[0].contains("seven 97%  one 2%  ▶ seven  ! seven 0.62"),
            "{}",
            out[0]
        );
        assert!(l.flush().unwrap().contains("one 90%"));
        assert!(l.flush().is_none());
    }

    #[test]
    fn errors_and_garbage_get_lines_of_their_own() {
        let mut l = Lines::new();
        assert_eq!(
            l.push("sensebind/r/errors/queries/x", b"{\"error\":\"bad\"}"),
            vec!["ERROR sensebind/r/errors/queries/x: bad"]
        );
        assert!(l.push("sensebind/r/labels/vision/cam", b"not json")[0].contains("not JSON"));
        assert!(l.push("sensebind/r/health", b"{}").is_empty());
    }
}
