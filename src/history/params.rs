//! The `search` queryable's parameters (pure; no zenoh):
//!
//! `get <prefix>/<robot>/search?text=…;k=…;modalities=…;sources=…;since=…;until=…`
//! or `example=<modality>/<source>/<seq>` (`example=fused/<seq>` for the fused
//! stream) instead of `text`. Values are percent-decoded (`a%20dog`; `+` is a space).
//! `modalities` and `sources` are comma-separated; `since`/`until` are a duration
//! back from now (`90s`, `15m`, `1h`, `2d`) or absolute Unix time in ns.

use crate::modality::Target;

/// A window of the history, as `example` names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowRef {
    pub source: String,
    pub modality: Target,
    pub seq: i64,
}

impl WindowRef {
    /// `<modality>/<source>/<seq>` or `fused/<seq>`.
    pub fn parse(s: &str) -> Result<WindowRef, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || format!("`example={s}`: expected <modality>/<source>/<seq> (e.g. audio/mic/1234) or fused/<seq>");
        let (modality, source, seq) = match parts.as_slice() {
            ["fused", seq] => (Target::Fused, "fused", *seq),
            [m, src, seq] => (
                m.parse::<Target>().map_err(|e| format!("`example={s}`: {e}"))?,
                *src,
                *seq,
            ),
            _ => return Err(bad()),
        };
        crate::ident::validate_chunk(source).map_err(|e| format!("`example={s}`: source: {e}"))?;
        let seq = seq.parse::<i64>().map_err(|_| bad())?;
        Ok(WindowRef {
            source: source.to_string(),
            modality,
            seq,
        })
    }
}

impl std::fmt::Display for WindowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.modality {
            Target::Fused => write!(f, "fused/{}", self.seq),
            m => write!(f, "{m}/{}/{}", self.source, self.seq),
        }
    }
}

/// A parsed search: what to look for, and the search itself (its `vector` empty
/// until the text or example is embedded or fetched).
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub text: Option<String>,
    pub example: Option<WindowRef>,
    pub search: super::SearchRequest,
}

/// Bounds a search request must keep (from config).
#[derive(Debug, Clone, Copy)]
pub struct SearchLimits {
    pub max_k: usize,
    pub max_text_chars: usize,
}

/// `%XX` and `+` decoded; bad escapes are an error.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad %-escape in `{}`", crate::ident::clip(s, 80)))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "a value is not UTF-8 once decoded".to_string())
}

/// Percent-encode a value for a selector (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~/,".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// A time bound: a duration back from `now_ns` (`1h`) or absolute ns.
pub fn time_bound(v: &str, now_ns: i64) -> Result<i64, String> {
    if let Ok(abs) = v.parse::<i64>() {
        return Ok(abs);
    }
    crate::config::parse_duration_ns(v).map(|d| now_ns.saturating_sub(d))
}

impl SearchParams {
    /// Parse the selector's parameters (`a=1;b=2`).
    pub fn parse(params: &str, limits: SearchLimits, now_ns: i64) -> Result<SearchParams, String> {
        let mut p = SearchParams::default();
        p.search.k = 10;
        for part in params.split(';').filter(|x| !x.is_empty()) {
            let (key, raw) = part.split_once('=').unwrap_or((part, ""));
            let v = percent_decode(raw)?;
            match key {
                "text" => {
                    let t = v.trim();
                    if t.is_empty() {
                        return Err("`text` is empty".into());
                    }
                    if t.chars().count() > limits.max_text_chars {
                        return Err(format!(
                            "`text` is longer than {} characters (`queries.max_text_chars`)",
                            limits.max_text_chars
                        ));
                    }
                    p.text = Some(t.to_string());
                }
                "example" => p.example = Some(WindowRef::parse(&v)?),
                "k" => {
                    p.search.k = v
                        .parse()
                        .ok()
                        .filter(|k| (1..=limits.max_k).contains(k))
                        .ok_or_else(|| format!("`k={v}`: expected 1..={} (`history.max_k`)", limits.max_k))?;
                }
                "modalities" => {
                    p.search.targets = v
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(|m| m.trim().parse::<Target>().map_err(|e| format!("`modalities`: {e}")))
                        .collect::<Result<_, _>>()?;
                }
                "sources" => {
                    let s: Vec<String> = v
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(|x| x.trim().to_string())
                        .collect();
                    if s.len() > 64 {
                        return Err(format!("`sources` lists {} ids (at most 64)", s.len()));
                    }
                    for id in &s {
                        crate::ident::validate_chunk(id).map_err(|e| format!("`sources`: {e}"))?;
                    }
                    p.search.sources = s;
                }
                "since" => p.search.since_ns = Some(time_bound(&v, now_ns).map_err(|e| format!("`since`: {e}"))?),
                "until" => p.search.until_ns = Some(time_bound(&v, now_ns).map_err(|e| format!("`until`: {e}"))?),
                other => {
                    return Err(format!(
                        "unknown parameter `{}` (expected text, example, k, modalities, sources, since, until)",
                        crate::ident::clip(other, 40)
                    ))
                }
            }
        }
        match (&p.text, &p.example) {
            (None, None) => return Err("give `text=…` or `example=<modality>/<source>/<seq>`".into()),
            (Some(_), Some(_)) => return Err("give `text` or `example`, not both".into()),
            _ => {}
        }
        if let (Some(a), Some(b)) = (p.search.since_ns, p.search.until_ns) {
            if a >= b {
                return Err("`since` is not before `until`".into());
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: SearchLimits = SearchLimits {
        max_k: 100,
        max_text_chars: 50,
    };

    #[test]
    fn parameters_parse_and_bad_ones_say_what_is_wrong() {
        let p = SearchParams::parse(
            "text=a%20dog+barking;k=5;modalities=audio,fused;sources=mic;since=1h;until=10",
            L,
            7_200_000_000_000,
        );
        assert!(p.unwrap_err().contains("not before"));
        let p = SearchParams::parse(
            "text=a%20dog+barking;k=5;modalities=audio,fused;sources=mic;since=1h",
            L,
            7_200_000_000_000,
        )
        .unwrap();
        assert_eq!(p.text.as_deref(), Some("a dog barking"));
        assert_eq!((p.search.k, p.search.targets.len(), p.search.sources.len()), (5, 2, 1));
        assert_eq!(p.search.since_ns, Some(3_600_000_000_000));
        let p = SearchParams::parse("example=audio/mic/42", L, 0).unwrap();
        assert_eq!(p.example.unwrap().to_string(), "audio/mic/42");
        assert_eq!(
            SearchParams::parse("example=fused/7", L, 0)
                .unwrap()
                .example
                .unwrap()
                .modality,
            Target::Fused
        );
        for (q, needle) in [
            ("", "give `text=…`"),
            ("text=x;example=fused/1", "not both"),
            ("text=x;k=0", "history.max_k"),
            ("text=x;k=101", "history.max_k"),
            ("text=x;modalities=smell", "unknown stream kind"),
            ("text=x;modalities=text", "not a stream"),
            ("text=x;colour=red", "unknown parameter"),
            ("text=%zz", "bad %-escape"),
            ("text=x;since=yesterday", "`since`"),
            ("example=audio/mic", "expected <modality>"),
            ("example=audio/a*b/3", "source"),
            ("text=x;sources=a/b", "`sources`"),
        ] {
            let e = SearchParams::parse(q, L, 0).unwrap_err();
            assert!(e.contains(needle), "{q}: {e}");
        }
        let long = format!("text={}", "x".repeat(51));
        assert!(SearchParams::parse(&long, L, 0).unwrap_err().contains("max_text_chars"));
        assert_eq!(
            percent_decode(&percent_encode("the number 3; k=∞")).unwrap(),
            "the number 3; k=∞"
        );
    }
}
