//! A `queries/<id>` request body from the bus, and a query store read at start.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::queries::{parse_store, QuerySpec};
use std::sync::OnceLock;

fn defaults() -> &'static sensebind::config::QueriesConfig {
    static D: OnceLock<sensebind::config::QueriesConfig> = OnceLock::new();
    D.get_or_init(|| {
        sensebind::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .queries
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = QuerySpec::from_request("q", data, defaults()) {
        assert!(spec.text.chars().count() <= defaults().max_text_chars);
        assert!((-1.0..=1.0).contains(&spec.threshold));
    }
    let (specs, _problem) = parse_store(data);
    for s in specs {
        assert!(sensebind::ident::validate_chunk(&s.id).is_ok());
    }
});
