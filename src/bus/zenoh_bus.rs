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
    let mode = match cfg.mode {
        ZenohMode::Peer => "peer",
        ZenohMode::Client => "client",
        ZenohMode::Router => "router",
    };
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    z.insert_json5("mode", &format!("\"{mode}\""))
        .map_err(|e| zerr("`bus.mode`", e))?;
    z.insert_json5("listen/endpoints", &json(&cfg.listen))
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
            cfg.mode, cfg.listen, cfg.connect
        ))
    })
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
