//! What a client puts on `queries/<id>` (JSON), validated into a [`QueryPlan`]: the
//! spec that is listed and stored, and what to embed for each of its vectors.
//!
//! One of four forms:
//! - `{"text": "a dog"}`: the original form;
//! - `{"terms": [{"text": "a dog", "weight": 1}, {"example": {…}, "weight": 0.5},
//!   {"embedding": [f32; dim]}]}`: the normalised weighted sum of unit vectors
//!   (ImageBind's embedding arithmetic);
//! - `{"example": {"media": base64, "mime": "audio/wav" | "image/png" | "image/jpeg"}}`
//!   (embedded by the daemon through its own preprocessing) or
//!   `{"example": {"window": {"source", "modality", "seq"}}}` (from the history);
//! - `{"all": [condition, …], "within_windows": n}`: every condition must hold in
//!   windows at most `n` seqs apart; each condition has `text`, `terms` or `example`
//!   and its own `threshold`, `modalities`, `sources`.
//!
//! plus `threshold`, `modalities`, `sources`, `cooldown_s` as before. Sizes are
//! bounded by `[queries]` (`max_terms`, `max_conditions`, `max_media_bytes`).

use super::QueryError;
use crate::bus::validate_chunk;
use crate::config::QueriesConfig;
use crate::history::params::WindowRef;
use crate::modality::{Modality, Target};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// `{"media", "mime"}` or `{"window"}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExampleRequest {
    #[serde(default)]
    pub media: Option<String>,
    #[serde(default)]
    pub mime: Option<String>,
    #[serde(default)]
    pub window: Option<WindowRef>,
}

/// One term of a weighted sum.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TermRequest {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub example: Option<ExampleRequest>,
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    #[serde(default)]
    pub weight: Option<f32>,
}

/// One condition of an `all` query.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionRequest {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub terms: Option<Vec<TermRequest>>,
    #[serde(default)]
    pub example: Option<ExampleRequest>,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub modalities: Option<Vec<Target>>,
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

/// A request body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub terms: Option<Vec<TermRequest>>,
    #[serde(default)]
    pub example: Option<ExampleRequest>,
    #[serde(default)]
    pub all: Option<Vec<ConditionRequest>>,
    #[serde(default)]
    pub within_windows: Option<u32>,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub modalities: Option<Vec<Target>>,
    /// Source ids to match (default: every source).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub cooldown_s: Option<f64>,
}

/// Media an example may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mime {
    Wav,
    Png,
    Jpeg,
}

impl Mime {
    pub fn as_str(self) -> &'static str {
        match self {
            Mime::Wav => "audio/wav",
            Mime::Png => "image/png",
            Mime::Jpeg => "image/jpeg",
        }
    }
}

/// What one term embeds.
#[derive(Debug, Clone, PartialEq)]
pub enum TermSource {
    Text(String),
    Media { mime: Mime, bytes: Vec<u8> },
    Window(WindowRef),
    Embedding(Vec<f32>),
}

impl TermSource {
    fn describe(&self) -> String {
        match self {
            TermSource::Text(t) => format!("\"{}\"", crate::ident::clip(t, 60)),
            TermSource::Media { mime, bytes } => format!("[{} example, {} bytes]", mime.as_str(), bytes.len()),
            TermSource::Window(w) => format!("[window {w}]"),
            TermSource::Embedding(v) => format!("[embedding, {} dims]", v.len()),
        }
    }
}

/// A weighted term.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub weight: f32,
    pub source: TermSource,
}

/// The kind of a query (stored, so a restart knows what it can re-embed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryKind {
    #[default]
    Text,
    Terms,
    Example,
    All,
}

/// One condition of a registered `all` query (as listed and stored).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ConditionSpec {
    /// What it looks for, in words.
    pub text: String,
    pub threshold: f32,
    pub modalities: Vec<Target>,
    #[serde(default)]
    pub sources: Vec<String>,
}

/// A registered query (what `get queries/**` returns and what is stored).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct QuerySpec {
    pub id: String,
    /// The text (text queries) or what the query looks for, in words.
    pub text: String,
    pub threshold: f32,
    pub modalities: Vec<Target>,
    /// Source ids to match; empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    pub cooldown_s: f64,
    #[serde(default)]
    pub kind: QueryKind,
    /// `all` queries: the conditions (each with its own threshold, modalities, sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionSpec>,
    /// `all` queries: the conditions hold in windows at most this many seqs apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub within_windows: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl QuerySpec {
    /// How many vectors the query holds: one, or one per condition.
    pub fn vectors(&self) -> usize {
        self.conditions.len().max(1)
    }
}

/// A validated request: the spec, and the terms of each vector to embed (one list,
/// or one per condition of an `all` query).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    pub spec: QuerySpec,
    pub probes: Vec<Vec<Term>>,
}

const SHAPE: &str = "expected JSON with one of {\"text\": string}, {\"terms\": [{\"text\"|\"example\"|\"embedding\", \"weight\"?}]}, {\"example\": {\"media\": base64, \"mime\": \"audio/wav\"|\"image/png\"|\"image/jpeg\"} | {\"window\": {\"source\", \"modality\", \"seq\"}}}, {\"all\": [condition], \"within_windows\"?: n}; and optionally \"threshold\": number in [-1,1], \"modalities\": [\"vision\"|\"audio\"|\"depth\"|\"thermal\"|\"imu\"|\"fused\"], \"sources\": [source id], \"cooldown_s\": number >= 0";

struct Check<'a> {
    id: &'a str,
    d: &'a QueriesConfig,
}

impl Check<'_> {
    fn inv(&self, reason: String) -> QueryError {
        QueryError::Invalid {
            id: self.id.to_string(),
            reason,
        }
    }

    fn text(&self, at: &str, t: &str) -> Result<String, QueryError> {
        let t = t.trim();
        if t.is_empty() {
            return Err(self.inv(format!("`{at}` is empty")));
        }
        if t.chars().count() > self.d.max_text_chars {
            return Err(self.inv(format!(
                "`{at}` is longer than {} characters (`queries.max_text_chars`)",
                self.d.max_text_chars
            )));
        }
        Ok(t.to_string())
    }

    fn example(&self, at: &str, e: &ExampleRequest) -> Result<TermSource, QueryError> {
        match (&e.media, &e.mime, &e.window) {
            (Some(media), Some(mime), None) => {
                let mime = match mime.as_str() {
                    "audio/wav" | "audio/x-wav" | "audio/wave" => Mime::Wav,
                    "image/png" => Mime::Png,
                    "image/jpeg" | "image/jpg" => Mime::Jpeg,
                    m => {
                        return Err(self.inv(format!(
                            "`{at}.mime` is `{}`: expected \"audio/wav\", \"image/png\" or \"image/jpeg\"",
                            crate::ident::clip(m, 40)
                        )))
                    }
                };
                let max = self.d.max_media_bytes;
                if media.len() / 4 * 3 > max + 3 {
                    return Err(self.inv(format!(
                        "`{at}.media` holds more than {max} bytes (`queries.max_media_bytes`)"
                    )));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(media.trim())
                    .map_err(|e| self.inv(format!("`{at}.media` is not base64: {e}")))?;
                if bytes.len() > max {
                    return Err(self.inv(format!(
                        "`{at}.media` holds {} bytes, more than {max} (`queries.max_media_bytes`)",
                        bytes.len()
                    )));
                }
                if bytes.is_empty() {
                    return Err(self.inv(format!("`{at}.media` is empty")));
                }
                Ok(TermSource::Media { mime, bytes })
            }
            (None, None, Some(w)) => {
                validate_chunk(&w.source).map_err(|e| self.inv(format!("`{at}.window.source`: {e}")))?;
                Ok(TermSource::Window(w.clone()))
            }
            _ => Err(self.inv(format!(
                "`{at}`: expected {{\"media\": base64, \"mime\": …}} or {{\"window\": {{\"source\", \"modality\", \"seq\"}}}}"
            ))),
        }
    }

    fn terms(&self, at: &str, terms: &[TermRequest]) -> Result<Vec<Term>, QueryError> {
        if terms.is_empty() {
            return Err(self.inv(format!("`{at}` is empty")));
        }
        if terms.len() > self.d.max_terms {
            return Err(self.inv(format!(
                "`{at}` has {} terms, more than {} (`queries.max_terms`)",
                terms.len(),
                self.d.max_terms
            )));
        }
        terms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let at = format!("{at}[{i}]");
                let weight = t.weight.unwrap_or(1.0);
                if !(weight.is_finite() && weight.abs() <= 100.0) {
                    return Err(self.inv(format!("`{at}.weight` must be a number in [-100, 100], got {weight}")));
                }
                let source = match (&t.text, &t.example, &t.embedding) {
                    (Some(x), None, None) => TermSource::Text(self.text(&format!("{at}.text"), x)?),
                    (None, Some(e), None) => self.example(&format!("{at}.example"), e)?,
                    (None, None, Some(v)) => {
                        if v.is_empty() || v.len() > 8192 || v.iter().any(|x| !x.is_finite()) {
                            return Err(self.inv(format!(
                                "`{at}.embedding` must be 1..=8192 finite numbers (the pack's dimension)"
                            )));
                        }
                        TermSource::Embedding(v.clone())
                    }
                    _ => {
                        return Err(self.inv(format!(
                            "`{at}`: expected exactly one of \"text\", \"example\", \"embedding\""
                        )))
                    }
                };
                Ok(Term { weight, source })
            })
            .collect()
    }

    /// The terms of a condition or of the top level: exactly one of text, terms, example.
    fn probe(
        &self,
        at: &str,
        text: &Option<String>,
        terms: &Option<Vec<TermRequest>>,
        example: &Option<ExampleRequest>,
    ) -> Result<(QueryKind, Vec<Term>), QueryError> {
        let pre = if at.is_empty() { String::new() } else { format!("{at}.") };
        match (text, terms, example) {
            (Some(t), None, None) => Ok((
                QueryKind::Text,
                vec![Term {
                    weight: 1.0,
                    source: TermSource::Text(self.text(&format!("{pre}text"), t)?),
                }],
            )),
            (None, Some(ts), None) => Ok((QueryKind::Terms, self.terms(&format!("{pre}terms"), ts)?)),
            (None, None, Some(e)) => Ok((
                QueryKind::Example,
                vec![Term {
                    weight: 1.0,
                    source: self.example(&format!("{pre}example"), e)?,
                }],
            )),
            _ => Err(self.inv(format!(
                "{}expected exactly one of \"text\", \"terms\", \"example\"{}",
                if at.is_empty() {
                    String::new()
                } else {
                    format!("`{at}`: ")
                },
                if at.is_empty() { ", \"all\"" } else { "" }
            ))),
        }
    }

    fn threshold(&self, at: &str, t: Option<f32>) -> Result<f32, QueryError> {
        let t = t.unwrap_or(self.d.default_threshold);
        if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
            return Err(self.inv(format!("`{at}` must be a cosine in [-1, 1], got {t}")));
        }
        Ok(t)
    }

    fn modalities(&self, at: &str, m: &Option<Vec<Target>>) -> Result<Vec<Target>, QueryError> {
        let m = m
            .clone()
            .unwrap_or_else(|| Modality::SENSED.iter().map(|m| Target::Modality(*m)).collect());
        if m.is_empty() {
            return Err(self.inv(format!("`{at}` is empty")));
        }
        // A repeated name means nothing more: kept once, in first-seen order (so the
        // list is never longer than the targets there are).
        let mut seen = Vec::with_capacity(Modality::SENSED.len() + 1);
        for t in m {
            if !seen.contains(&t) {
                seen.push(t);
            }
        }
        Ok(seen)
    }

    fn sources(&self, at: &str, s: &Option<Vec<String>>) -> Result<Vec<String>, QueryError> {
        let mut s = s.clone().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        s.retain(|id| seen.insert(id.clone()));
        if s.len() > 64 {
            return Err(self.inv(format!("`{at}` lists {} ids (at most 64)", s.len())));
        }
        for src in &s {
            validate_chunk(src).map_err(|e| self.inv(format!("`{at}`: {e}")))?;
        }
        Ok(s)
    }
}

fn describe(terms: &[Term]) -> String {
    if let [Term {
        weight,
        source: TermSource::Text(t),
    }] = terms
    {
        if *weight == 1.0 {
            return t.clone();
        }
    }
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let sign = if t.weight < 0.0 {
                " - "
            } else if i > 0 {
                " + "
            } else {
                ""
            };
            let w = t.weight.abs();
            let w = if w == 1.0 { String::new() } else { format!("{w} × ") };
            format!("{sign}{w}{}", t.source.describe())
        })
        .collect()
}

impl QueryPlan {
    /// Parse and validate a request body, filling defaults.
    pub fn from_request(id: &str, body: &[u8], d: &QueriesConfig) -> Result<QueryPlan, QueryError> {
        let c = Check { id, d };
        validate_chunk(id).map_err(|e| c.inv(format!("bad id: {e}")))?;
        if body.len() > d.max_request_bytes {
            return Err(c.inv(format!(
                "request of {} bytes is larger than {} (`queries.max_request_bytes`)",
                body.len(),
                d.max_request_bytes
            )));
        }
        let req: QueryRequest = serde_json::from_slice(body).map_err(|e| c.inv(format!("{SHAPE}: {e}")))?;
        let threshold = c.threshold("threshold", req.threshold)?;
        let modalities = c.modalities("modalities", &req.modalities)?;
        let sources = c.sources("sources", &req.sources)?;
        let cooldown_s = req.cooldown_s.unwrap_or(d.default_cooldown_s);
        if !(cooldown_s.is_finite() && cooldown_s >= 0.0) {
            return Err(c.inv(format!("`cooldown_s` must be >= 0, got {cooldown_s}")));
        }
        let spec = |text: String, kind: QueryKind| QuerySpec {
            id: id.to_string(),
            text,
            threshold,
            modalities: modalities.clone(),
            sources: sources.clone(),
            cooldown_s,
            kind,
            conditions: Vec::new(),
            within_windows: 0,
        };
        match &req.all {
            None => {
                if req.within_windows.is_some() {
                    return Err(c.inv("`within_windows` applies to `all` queries".into()));
                }
                let (kind, terms) = c.probe("", &req.text, &req.terms, &req.example)?;
                Ok(QueryPlan {
                    spec: spec(describe(&terms), kind),
                    probes: vec![terms],
                })
            }
            Some(all) => {
                if req.text.is_some() || req.terms.is_some() || req.example.is_some() {
                    return Err(
                        c.inv("`all` replaces \"text\", \"terms\" and \"example\": put them in its conditions".into())
                    );
                }
                if req.threshold.is_some() || req.modalities.is_some() || req.sources.is_some() {
                    return Err(
                        c.inv("`all` queries take \"threshold\", \"modalities\" and \"sources\" per condition".into())
                    );
                }
                if !(2..=d.max_conditions).contains(&all.len()) {
                    return Err(c.inv(format!(
                        "`all` has {} conditions: expected 2..={} (`queries.max_conditions`)",
                        all.len(),
                        d.max_conditions
                    )));
                }
                let within = req.within_windows.unwrap_or(0);
                if within > 1000 {
                    return Err(c.inv(format!("`within_windows` is {within}: at most 1000")));
                }
                let mut conditions = Vec::new();
                let mut probes = Vec::new();
                for (i, cond) in all.iter().enumerate() {
                    let at = format!("all[{i}]");
                    let (_, terms) = c.probe(&at, &cond.text, &cond.terms, &cond.example)?;
                    conditions.push(ConditionSpec {
                        text: describe(&terms),
                        threshold: c.threshold(&format!("{at}.threshold"), cond.threshold)?,
                        modalities: c.modalities(&format!("{at}.modalities"), &cond.modalities)?,
                        sources: c.sources(&format!("{at}.sources"), &cond.sources)?,
                    });
                    probes.push(terms);
                }
                let text = format!(
                    "all of: {}",
                    conditions
                        .iter()
                        .map(|c| c.text.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let mut s = spec(text, QueryKind::All);
                s.modalities = Vec::new();
                s.conditions = conditions;
                s.within_windows = within;
                Ok(QueryPlan { spec: s, probes })
            }
        }
    }
}

/// The normalised weighted sum of unit vectors (each term's vector is normalised
/// first, so weights are relative importances). Errors when dimensions differ or the
/// terms cancel out.
pub fn combine(parts: &[(f32, Vec<f32>)]) -> Result<Vec<f32>, String> {
    let dim = parts.first().map_or(0, |p| p.1.len());
    if dim == 0 {
        return Err("no terms".into());
    }
    let mut acc = vec![0.0f32; dim];
    for (i, (w, v)) in parts.iter().enumerate() {
        if v.len() != dim {
            return Err(format!("term {i} has {} dims, term 0 has {dim}", v.len()));
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !(n > 0.0 && n.is_finite()) {
            return Err(format!("term {i} is a zero vector"));
        }
        acc.iter_mut().zip(v).for_each(|(a, x)| *a += w * x / n);
    }
    let n = acc.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n.is_nan() || n <= 1e-6 {
        return Err("the terms cancel out (their weighted sum is zero)".into());
    }
    acc.iter_mut().for_each(|a| *a /= n);
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> QueriesConfig {
        crate::config::Config::load_with_env(None, Vec::new()).unwrap().queries
    }

    #[test]
    fn every_form_parses_into_a_plan() {
        let d = d();
        let p = QueryPlan::from_request("q", br#"{"text":" a dog "}"#, &d).unwrap();
        assert_eq!(
            (p.spec.text.as_str(), p.spec.kind, p.probes.len()),
            ("a dog", QueryKind::Text, 1)
        );
        let wav = base64::engine::general_purpose::STANDARD.encode(b"RIFF....WAVE");
        let body = format!(
            r#"{{"terms":[{{"text":"a dog"}},{{"example":{{"media":"{wav}","mime":"audio/wav"}},"weight":0.5}},{{"embedding":[1,0],"weight":-1}}],"modalities":["fused","audio"]}}"#
        );
        let p = QueryPlan::from_request("q", body.as_bytes(), &d).unwrap();
        assert_eq!(p.spec.kind, QueryKind::Terms);
        assert_eq!(
            p.spec.text,
            "\"a dog\" + 0.5 × [audio/wav example, 12 bytes] - [embedding, 2 dims]"
        );
        assert_eq!(
            p.probes[0][1].source,
            TermSource::Media {
                mime: Mime::Wav,
                bytes: b"RIFF....WAVE".to_vec()
            }
        );
        assert_eq!(p.spec.modalities, vec![Target::Fused, Modality::Audio.into()]);
        let p = QueryPlan::from_request(
            "q",
            br#"{"example":{"window":{"source":"mic","modality":"audio","seq":42}}}"#,
            &d,
        )
        .unwrap();
        assert_eq!(p.spec.text, "[window audio/mic/42]");
        let p = QueryPlan::from_request(
            "q",
            br#"{"all":[{"text":"the number three","modalities":["thermal"],"threshold":0.4},{"text":"the number three","modalities":["audio"]}],"within_windows":1,"cooldown_s":0}"#,
            &d,
        )
        .unwrap();
        assert_eq!(
            (p.spec.kind, p.probes.len(), p.spec.within_windows),
            (QueryKind::All, 2, 1)
        );
        assert_eq!(p.spec.conditions[0].threshold, 0.4);
        assert_eq!(p.spec.conditions[1].threshold, d.default_threshold);
        assert_eq!(p.spec.text, "all of: the number three; the number three");
        // The listed spec round-trips through JSON (the store, `get queries/**`).
        let back: QuerySpec = serde_json::from_str(&serde_json::to_string(&p.spec).unwrap()).unwrap();
        assert_eq!(back, p.spec);
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let d = QueriesConfig {
            max_terms: 2,
            max_media_bytes: 10,
            max_conditions: 2,
            ..d()
        };
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        for (body, needle) in [
            (r#"{}"#.to_string(), "exactly one of"),
            (r#"{"text":"x","terms":[{"text":"y"}]}"#.into(), "exactly one of"),
            (r#"{"terms":[]}"#.into(), "`terms` is empty"),
            (
                r#"{"terms":[{"text":"a"},{"text":"b"},{"text":"c"}]}"#.into(),
                "queries.max_terms",
            ),
            (
                r#"{"terms":[{"text":"a","embedding":[1]}]}"#.into(),
                "`terms[0]`: expected exactly one",
            ),
            (r#"{"terms":[{"text":"a","weight":1e9}]}"#.into(), "`terms[0].weight`"),
            (r#"{"terms":[{"embedding":[]}]}"#.into(), "`terms[0].embedding`"),
            (
                r#"{"example":{"media":"AAAA","mime":"video/mp4"}}"#.into(),
                "`example.mime`",
            ),
            (r#"{"example":{"media":"%%%","mime":"image/png"}}"#.into(), "not base64"),
            (
                format!(r#"{{"example":{{"media":"{}","mime":"image/png"}}}}"#, b64(&[0u8; 11])),
                "queries.max_media_bytes",
            ),
            (r#"{"example":{"mime":"image/png"}}"#.into(), "`example`: expected"),
            (
                r#"{"example":{"window":{"source":"a/b","modality":"audio","seq":1}}}"#.into(),
                "window.source",
            ),
            (r#"{"all":[{"text":"a"}]}"#.into(), "expected 2..=2"),
            (
                r#"{"all":[{"text":"a"},{"text":"b"},{"text":"c"}]}"#.into(),
                "queries.max_conditions",
            ),
            (r#"{"all":[{"text":"a"},{}]}"#.into(), "`all[1]`: expected exactly one"),
            (
                r#"{"all":[{"text":"a"},{"text":"b","threshold":2}]}"#.into(),
                "`all[1].threshold`",
            ),
            (
                r#"{"all":[{"text":"a"},{"text":"b"}],"threshold":0.1}"#.into(),
                "per condition",
            ),
            (
                r#"{"all":[{"text":"a"},{"text":"b"}],"text":"c"}"#.into(),
                "put them in its conditions",
            ),
            (r#"{"text":"a","within_windows":1}"#.into(), "applies to `all`"),
            (
                r#"{"all":[{"text":"a"},{"text":"b","colour":1}]}"#.into(),
                "unknown field",
            ),
        ] {
            let e = QueryPlan::from_request("q1", body.as_bytes(), &d)
                .unwrap_err()
                .to_string();
            assert!(e.contains("query `q1`") && e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn terms_combine_as_a_normalised_weighted_sum_of_unit_vectors() {
        let v = combine(&[(1.0, vec![2.0, 0.0]), (1.0, vec![0.0, 5.0])]).unwrap();
        let r = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[0] - r).abs() < 1e-6 && (v[1] - r).abs() < 1e-6);
        assert!(combine(&[(1.0, vec![1.0, 0.0]), (-1.0, vec![3.0, 0.0])])
            .unwrap_err()
            .contains("cancel"));
        assert!(combine(&[(1.0, vec![1.0, 0.0]), (1.0, vec![1.0])])
            .unwrap_err()
            .contains("dims"));
    }
}
