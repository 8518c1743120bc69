//! The daemon's log: human lines or JSON on stderr, at `log.level`.
//!
//! Every string that reaches a log field may come from outside (a query's text from
//! the bus, a file name, a device's error): in the human format each field and the
//! message are written with their control characters escaped (`\n`, `\r`, `\u{1b}`…),
//! so no input can start a line of its own or send terminal escapes; the JSON format
//! escapes them as JSON does.

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `s` with control characters (C0, DEL, C1, Unicode line and paragraph separators)
/// escaped as Rust writes them (`\n`, `\u{1b}`); everything else unchanged.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The human format's fields: as `tracing`'s default (`message key=value …`), with
/// control characters escaped.
#[derive(Default)]
pub struct EscapedFields(DefaultFields);

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut raw = String::new();
        self.0.format_fields(Writer::new(&mut raw), fields)?;
        writer.write_str(&escape_controls(&raw))
    }
}

/// Whether `level` is a valid `log.level` (see [`crate::config`]).
pub use crate::config::check_log_level;

/// Records of other crates (the Foxglove server logs an ERROR for every bad message a
/// WebSocket client sends) pass at most this many times per call site per
/// [`THIRD_PARTY_WINDOW`]; the daemon's own records are never dropped.
pub const THIRD_PARTY_MAX: u32 = 5;
pub const THIRD_PARTY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// The rate limit of records from other crates (see [`THIRD_PARTY_MAX`]).
#[derive(Default)]
pub struct ThirdPartyLimit {
    seen: std::sync::Mutex<std::collections::HashMap<tracing::callsite::Identifier, (std::time::Instant, u32)>>,
    /// Records dropped so far.
    pub suppressed: std::sync::atomic::AtomicU64,
}

fn ours(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("sensebind")
}

impl<S> tracing_subscriber::layer::Filter<S> for ThirdPartyLimit {
    fn enabled(&self, _: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        true
    }
    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if ours(meta) || !meta.is_event() {
            tracing::subscriber::Interest::always()
        } else {
            // Asked at every record, so the limit can count.
            tracing::subscriber::Interest::sometimes()
        }
    }
    fn event_enabled(&self, event: &tracing::Event<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        let meta = event.metadata();
        if ours(meta) {
            return true;
        }
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let slot = seen.entry(meta.callsite()).or_insert((now, 0));
        if now.duration_since(slot.0) >= THIRD_PARTY_WINDOW {
            *slot = (now, 0);
        }
        slot.1 += 1;
        let pass = slot.1 <= THIRD_PARTY_MAX;
        if !pass {
            self.suppressed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        pass
    }
}

/// Install the global subscriber: `filter` directives (RUST_LOG overrides them), human
/// lines (coloured on a terminal) or JSON, on stderr; other crates' records rate
/// limited ([`ThirdPartyLimit`]).
pub fn init(filter: &str, json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let layer = if json {
        layer.json().with_current_span(false).boxed()
    } else {
        layer.fmt_fields(EscapedFields::default()).boxed()
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(ThirdPartyLimit::default()))
        .with(filter)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(json: bool) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let b = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone());
        let forged =
            "x\n2026-12-06T00:00:00.000000Z ERROR sensebind::pipeline: event=\"stage_failed\"\u{1b}[2J\r\u{2028}";
        let emit = || {
            tracing::info!(event = "query_registered", query = %forged, text = forged, "registered {forged}");
        };
        if json {
            tracing::subscriber::with_default(b.json().finish(), emit);
        } else {
            tracing::subscriber::with_default(b.fmt_fields(EscapedFields::default()).finish(), emit);
        }
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        out
    }

    #[test]
    fn other_crates_records_are_rate_limited_ours_never() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let buf = Buf::default();
        let w = buf.clone();
        let limit = std::sync::Arc::new(ThirdPartyLimit::default());
        struct Shared(std::sync::Arc<ThirdPartyLimit>);
        impl<S> tracing_subscriber::layer::Filter<S> for Shared {
            fn enabled(&self, m: &tracing::Metadata<'_>, c: &tracing_subscriber::layer::Context<'_, S>) -> bool {
                <ThirdPartyLimit as tracing_subscriber::layer::Filter<S>>::enabled(&self.0, m, c)
            }
            fn callsite_enabled(&self, m: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
                <ThirdPartyLimit as tracing_subscriber::layer::Filter<S>>::callsite_enabled(&self.0, m)
            }
            fn event_enabled(&self, e: &tracing::Event<'_>, c: &tracing_subscriber::layer::Context<'_, S>) -> bool {
                <ThirdPartyLimit as tracing_subscriber::layer::Filter<S>>::event_enabled(&self.0, e, c)
            }
        }
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || w.clone())
                .with_filter(Shared(limit.clone())),
        );
        tracing::subscriber::with_default(sub, || {
            // 100 000 subscriptions to unknown channels, as the Foxglove server logs them.
            for id in 0..100_000 {
                tracing::error!(target: "foxglove::websocket::connected_client", "Client 127.0.0.1:5 attempted to subscribe to unknown channel: {id}");
            }
            for i in 0..50 {
                tracing::warn!(target: "sensebind::liveview", event = "x", "ours {i}");
            }
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out.matches("unknown channel").count(),
            THIRD_PARTY_MAX as usize,
            "{out}"
        );
        assert_eq!(out.matches("ours").count(), 50);
        assert_eq!(limit.suppressed.load(std::sync::atomic::Ordering::Relaxed), 100_000 - 5);
    }

    #[test]
    fn outside_strings_cannot_forge_lines_or_send_escapes() {
        for json in [false, true] {
            let out = logged(json);
            assert_eq!(out.lines().count(), 1, "one event, one line: {out}");
            assert!(out.ends_with('\n'));
            assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
            assert_eq!(out.matches("stage_failed").count(), 3, "all three fields kept: {out}");
        }
        let human = logged(false);
        assert!(
            human.contains(r"x\n2026") && !human.contains('\u{2028}'),
            "escaped, not dropped: {human}"
        );
        assert_eq!(escape_controls("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape_controls("a\u{1b}b\u{85}"), "a\\u{1b}b\\u{85}");
    }
}
