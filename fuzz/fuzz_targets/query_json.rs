//! A `queries/<id>` request body from the bus, a query store read at start, and the
//! parameters of a `search` selector.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensebind::history::params::{SearchLimits, SearchParams};
use sensebind::queries::{parse_store, QueryPlan};
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
    let d = defaults();
    if let Ok(plan) = QueryPlan::from_request("q", data, d) {
        let s = &plan.spec;
        assert!((-1.0..=1.0).contains(&s.threshold));
        assert_eq!(plan.probes.len(), s.vectors());
        assert!(plan.probes.len() <= d.max_conditions);
        for terms in &plan.probes {
            assert!(!terms.is_empty() && terms.len() <= d.max_terms);
        }
        for c in &s.conditions {
            assert!((-1.0..=1.0).contains(&c.threshold));
        }
    }
    let (_model, specs, _problem) = parse_store(data);
    for s in specs {
        assert!(sensebind::ident::validate_chunk(&s.spec.id).is_ok());
    }
    let limits = SearchLimits {
        max_k: 100,
        max_text_chars: 1000,
    };
    if let Ok(p) = SearchParams::parse(&String::from_utf8_lossy(data), limits, 1_800_000_000_000_000_000) {
        assert!((1..=100).contains(&p.search.k));
        assert!(p.text.is_some() != p.example.is_some());
    }
});
