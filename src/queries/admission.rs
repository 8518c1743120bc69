//! Admission of requests from the bus (hostile input): token buckets for the overall
//! rate, and one request per id per interval. Time is passed in (tests, replays).

use crate::config::QueriesConfig;
use std::collections::BTreeMap;
use std::time::Instant;

/// A token bucket: `burst` tokens, refilled at `rate` per second; one per request.
/// The one rate limiter of the bus services (query registrations, history searches).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    pub rate: f64,
    pub burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        TokenBucket {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            last: None,
        }
    }

    /// Take a token at `now` (`false`: none left; try later).
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now.max(self.last.unwrap_or(now)));
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Admission of requests from the bus (hostile input): an overall token bucket
/// (`registrations_per_s`, `registration_burst`) and at most one request per id per
/// `id_min_interval_s`, so no client can drive the text encoder or the disk at an
/// unbounded rate. Time is passed in (tests, replays).
#[derive(Debug)]
pub struct Admission {
    bucket: TokenBucket,
    id_interval: std::time::Duration,
    /// Ids admitted within the last `id_interval` (at most burst + rate × interval).
    pub(super) recent: BTreeMap<String, std::time::Instant>,
}

impl Admission {
    pub fn new(cfg: &QueriesConfig) -> Self {
        Admission {
            bucket: TokenBucket::new(cfg.registrations_per_s, cfg.registration_burst),
            id_interval: crate::config::secs(cfg.id_min_interval_s),
            recent: BTreeMap::new(),
        }
    }

    /// Admit one request for `id` at `now`, or say why not. `put` (a registration)
    /// also counts against the id's own interval; a removal only against the
    /// overall rate.
    pub fn admit(&mut self, id: &str, put: bool, now: std::time::Instant) -> Result<(), String> {
        let interval = self.id_interval;
        self.recent.retain(|_, t| now.saturating_duration_since(*t) < interval);
        if let Some(t) = self.recent.get(id).filter(|_| put) {
            return Err(format!(
                "query `{id}` was registered {:.2} s ago: at most one request per id every {} s (`queries.id_min_interval_s`)",
                now.saturating_duration_since(*t).as_secs_f64(),
                interval.as_secs_f64()
            ));
        }
        if !self.bucket.take(now) {
            return Err(format!(
                "too many query requests: at most {} per second, bursts of {} (`queries.registrations_per_s`, `queries.registration_burst`); try again later",
                self.bucket.rate, self.bucket.burst
            ));
        }
        if put {
            self.recent.insert(id.to_string(), now);
        }
        Ok(())
    }
}
