//! The zenoh session: built from `[bus]`, loopback-only peer by default.

use super::{BusError, Enc, Sink};
use crate::config::{BusConfig, ZenohMode};
use std::future::Future;
use zenoh::bytes::Encoding;
use zenoh::qos::CongestionControl;

/// Build the zenoh config from `[bus]`.
pub fn zenoh_config(cfg: &BusConfig) -> Result<zenoh::Config, BusError> {
    let zerr = |what: &str, e: zenoh::Error| BusError::Zenoh(format!("{what}: {e}"));
    let mut z = if cfg.zenoh_config.is_empty() {
        zenoh::Config::default()
    } else {
        zenoh::Config::from_file(&cfg.zenoh_config)
            .map_err(|e| zerr(&format!("`bus.zenoh_config` {}", cfg.zenoh_config), e))?
    };
    let mode = match cfg.resolved_mode() {
        ZenohMode::Peer | ZenohMode::Auto => "peer",
        ZenohMode::Client => "client",
        ZenohMode::Router => "router",
    };
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    z.insert_json5("mode", &format!("\"{mode}\""))
        .map_err(|e| zerr("`bus.mode`", e))?;
    // A client listens nowhere: it reaches everyone through what it connects to.
    let listen = if mode == "client" {
        Vec::new()
    } else {
        cfg.listen.clone()
    };
    z.insert_json5("listen/endpoints", &json(&listen))
        .map_err(|e| zerr("`bus.listen`", e))?;
    z.insert_json5("connect/endpoints", &json(&cfg.connect))
        .map_err(|e| zerr("`bus.connect`", e))?;
    z.insert_json5("scouting/multicast/enabled", &cfg.multicast_scouting.to_string())
        .map_err(|e| zerr("`bus.multicast_scouting`", e))?;
    z.insert_json5("scouting/gossip/enabled", &cfg.gossip_scouting.to_string())
        .map_err(|e| zerr("`bus.gossip_scouting`", e))?;
    // Alerts are published with congestion control Block: a peer that cannot take
    // one for this long has its session closed, so it never holds the daemon longer.
    z.insert_json5(
        "transport/link/tx/queue/congestion_control/block/wait_before_close",
        &((cfg.alert_block_ms * 1000).to_string()),
    )
    .map_err(|e| zerr("`bus.alert_block_ms`", e))?;
    Ok(z)
}

pub async fn open(cfg: &BusConfig) -> Result<zenoh::Session, BusError> {
    let z = zenoh_config(cfg)?;
    zenoh::open(z).await.map_err(|e| {
        BusError::Zenoh(format!(
            "cannot open a {:?} session (listen {:?}, connect {:?}): {e}; is another process already listening there?",
            cfg.resolved_mode(),
            cfg.listen,
            cfg.connect
        ))
    })
}

/// Whether `[bus]` reaches other peers through a router: with zenoh 1.10 a peer whose
/// gossip scouting is off exchanges nothing through a router with the router's other
/// peers (the router cannot de-duplicate what crosses it), so two robots that are
/// peers of one router would never see each other. `Some(why)` when that is the case.
pub fn router_isolation(cfg: &BusConfig, routers_connected: usize) -> Option<String> {
    (cfg.resolved_mode() == ZenohMode::Peer && routers_connected > 0).then(|| {
        if cfg.gossip_scouting {
            format!(
                "connected to {routers_connected} zenoh router(s) as a peer: zenoh routes nothing between the router's peers, they connect to each other directly, so other machines reach this daemon only if they can connect to `bus.listen` {:?}; with `bus.mode = \"auto\"` (the default) or \"client\" everything goes through the router",
                cfg.listen
            )
        } else {
            format!(
                "connected to {routers_connected} zenoh router(s) as a peer with `bus.gossip_scouting = false`: nothing is routed between this daemon and the router's other peers; set `bus.mode = \"auto\"` (the default) or \"client\""
            )
        }
    })
}

/// Log a warning (event `bus_isolated`) when [`router_isolation`] says the daemon
/// cannot reach other peers through the routers it is connected to.
pub async fn warn_if_isolated(cfg: &BusConfig, session: &zenoh::Session) {
    let routers = session.info().routers_zid().await.count();
    if let Some(why) = router_isolation(cfg, routers) {
        if cfg.gossip_scouting {
            // Works on one machine (rmw_zenoh's own layout); say how it is wired.
            tracing::info!(event = crate::telemetry::names::BUS_ISOLATED, "{why}");
        } else {
            tracing::warn!(event = crate::telemetry::names::BUS_ISOLATED, "{why}");
        }
    }
}

/// Publishing through a zenoh session, with the congestion control `bus.when_full`
/// names for embeddings, labels, events and health: `drop_newest` → `Drop` (a slow
/// subscriber never stalls the pipeline), `block` → `Block`. Alerts (keys under
/// `alerts_prefix`) are always published with `Block` at priority `DataHigh`: a slow
/// peer may hold them at most `bus.alert_block_ms`, then zenoh closes its session.
pub struct ZenohSink {
    pub session: zenoh::Session,
    pub congestion: CongestionControl,
    pub alerts_prefix: String,
}

impl ZenohSink {
    pub fn new(session: zenoh::Session, when_full: crate::edge::WhenFull, topics: &super::Topics) -> Self {
        let congestion = match when_full {
            crate::edge::WhenFull::Block => CongestionControl::Block,
            _ => CongestionControl::Drop,
        };
        ZenohSink {
            session,
            congestion,
            alerts_prefix: format!("{}/alerts/", topics.base()),
        }
    }
}

impl Sink for ZenohSink {
    #[allow(clippy::manual_async_fn)]
    fn put(&self, key: String, payload: Vec<u8>, enc: Enc) -> impl Future<Output = Result<(), BusError>> + Send {
        async move {
            let encoding = match enc {
                Enc::Cbor => Encoding::APPLICATION_CBOR,
                Enc::Json => Encoding::APPLICATION_JSON,
            };
            let (congestion, priority) = if key.starts_with(&self.alerts_prefix) {
                (CongestionControl::Block, zenoh::qos::Priority::DataHigh)
            } else {
                (self.congestion, zenoh::qos::Priority::Data)
            };
            self.session
                .put(&key, payload)
                .encoding(encoding)
                .congestion_control(congestion)
                .priority(priority)
                .await
                .map_err(|e| BusError::Zenoh(format!("put {key}: {e}")))
        }
    }
}

#[cfg(test)]
mod router_tests {
    use super::*;

    #[test]
    fn a_gossip_off_peer_connected_to_a_router_is_reported_isolated() {
        let mut bus = crate::config::Config::load_with_env(None, Vec::new()).unwrap().bus;
        assert_eq!(bus.mode, ZenohMode::Auto);
        assert_eq!(bus.resolved_mode(), ZenohMode::Peer, "nothing to connect to: a peer");
        bus.connect = vec!["tcp/10.0.0.1:7447".into()];
        assert_eq!(bus.resolved_mode(), ZenohMode::Client, "connecting: a client of it");
        let z = zenoh_config(&bus).unwrap();
        assert_eq!(z.get_json("mode").unwrap(), "\"client\"");
        assert_eq!(z.get_json("listen/endpoints").unwrap(), "[]");
        assert_eq!(router_isolation(&bus, 1), None);
        bus.mode = ZenohMode::Peer;
        assert!(router_isolation(&bus, 1)
            .unwrap()
            .contains("connect to each other directly"));
        bus.gossip_scouting = false;
        assert_eq!(router_isolation(&bus, 0), None, "no router: nothing to say");
        let why = router_isolation(&bus, 1).unwrap();
        assert!(why.contains("bus.gossip_scouting") && why.contains("client"), "{why}");
        bus.mode = ZenohMode::Client;
        assert_eq!(router_isolation(&bus, 1), None, "a client is routed by its router");
    }
}
