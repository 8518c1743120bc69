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

use super::msg::{AlertMsg, EventMsg, EventState, JsonMsg, LabelsMsg, QueryErrorMsg};

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

/// The readable line of a labels message (without marks).
pub fn labels_line(v: &LabelsMsg) -> String {
    let top: Vec<String> = v
        .top
        .iter()
        .map(|s| format!("{} {:.0}%", s.label, s.prob * 100.0))
        .collect();
    format!(
        "{}  {:<20} {}",
        clock(v.t_start_ns),
        format!("{}/{}", v.modality, v.source),
        top.join("  ")
    )
}

/// An event or an alert: the mark it puts on its window's line.
struct Mark {
    window: WindowKey,
    t_ns: i64,
    text: String,
}

impl From<EventMsg> for Mark {
    fn from(e: EventMsg) -> Self {
        let sign = match e.state {
            EventState::Start => "▶",
            EventState::End => "■",
        };
        Mark {
            window: (e.source, e.modality.to_string(), e.seq),
            t_ns: e.start_ns,
            text: format!("{sign} {}", e.label),
        }
    }
}

impl From<AlertMsg> for Mark {
    fn from(a: AlertMsg) -> Self {
        Mark {
            window: (a.source, a.modality.to_string(), a.seq),
            t_ns: a.t_start_ns,
            text: format!("! {} {:.2}", a.query_id, a.score),
        }
    }
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
        let garbage = |out: &mut Vec<String>, e: super::msg::MsgError| out.push(format!("? {key}: {e}"));
        match kind {
            "/labels/" => {
                out.extend(self.flush());
                match LabelsMsg::from_json(body) {
                    Ok(v) => {
                        self.pending = Some(Pending {
                            key: (v.source.clone(), v.modality.to_string(), v.seq),
                            line: labels_line(&v),
                            marks: Vec::new(),
                        })
                    }
                    Err(e) => garbage(&mut out, e),
                }
            }
            "/events/" | "/alerts/" => {
                let mark: Result<Mark, _> = if kind == "/events/" {
                    EventMsg::from_json(body).map(Mark::from)
                } else {
                    AlertMsg::from_json(body).map(Mark::from)
                };
                let mark = match mark {
                    Ok(m) => m,
                    Err(e) => {
                        out.extend(self.flush());
                        garbage(&mut out, e);
                        return out;
                    }
                };
                match &mut self.pending {
                    Some(p) if mark.window == p.key => p.marks.push(mark.text),
                    _ => {
                        // Not this window's (e.g. a label-less stream): a line of its own.
                        out.extend(self.flush());
                        let (source, modality, _) = &mark.window;
                        out.push(format!(
                            "{}  {:<20} {}",
                            clock(mark.t_ns),
                            format!("{modality}/{source}"),
                            mark.text
                        ));
                    }
                }
            }
            _ => {
                out.extend(self.flush());
                let msg = match QueryErrorMsg::from_json(body) {
                    Ok(e) => e.error,
                    Err(_) => String::from_utf8_lossy(body).into_owned(),
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

    use crate::bus::msg::{LabelScore, QueryErrorMsg};
    use crate::modality::{Modality, Target};

    const CAM: Target = Target::Modality(Modality::Vision);

    fn labels(src: &str, seq: i64, top: &[(&str, f32)]) -> Vec<u8> {
        LabelsMsg {
            robot: "r".into(),
            source: src.into(),
            modality: CAM,
            seq,
            t_start_ns: 1_700_000_006_000_000_000i64 + seq * 2_000_000_000,
            t_end_ns: 0,
            model: "m".into(),
            top: top
                .iter()
                .map(|(l, p)| LabelScore {
                    label: l.to_string(),
                    score: 0.0,
                    prob: *p,
                })
                .collect(),
        }
        .to_json()
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
        let ev = EventMsg {
            robot: "r".into(),
            source: "cam".into(),
            modality: CAM,
            label: "seven".into(),
            state: EventState::Start,
            start_ns: 0,
            end_ns: None,
            prob: 0.97,
            seq: 0,
        };
        assert!(l.push("sensebind/r/events/vision/cam", &ev.to_json()).is_empty());
        let al = AlertMsg {
            robot: "r".into(),
            query_id: "seven".into(),
            text: "seven".into(),
            source: "cam".into(),
            modality: CAM,
            score: 0.623,
            threshold: 0.5,
            seq: 0,
            t_start_ns: 0,
            t_end_ns: 0,
            conditions: None,
        };
        assert!(l.push("sensebind/r/alerts/seven", &al.to_json()).is_empty());
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
        let e = QueryErrorMsg {
            query_id: "x".into(),
            key: "sensebind/r/queries/x".into(),
            code: "invalid".into(),
            error: "bad".into(),
        };
        assert_eq!(
            l.push("sensebind/r/errors/queries/x", &e.to_json()),
            vec!["ERROR sensebind/r/errors/queries/x: bad"]
        );
        let out = l.push("sensebind/r/labels/vision/cam", b"not json");
        assert!(
            out[0].starts_with("? sensebind/r/labels/vision/cam: labels: expected"),
            "{out:?}"
        );
        // A label-less stream's event: a line of its own.
        let out = l.push("sensebind/r/events/audio/mic", br#"{"robot":"r","source":"mic","modality":"audio","label":"x","state":"end","start_ns":0,"end_ns":5,"prob":0.1,"seq":3}"#);
        assert_eq!(out.len(), 1);
        assert!(out[0].ends_with("audio/mic            ■ x"), "{out:?}");
        assert!(l.push("sensebind/r/health", b"{}").is_empty());
    }
}
