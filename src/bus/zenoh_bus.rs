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
/// names: `drop_newest` → `Drop` (a slow subscriber never stalls the pipeline),
/// `block` → `Block`.
pub struct ZenohSink {
    pub session: zenoh::Session,
    pub congestion: CongestionControl,
}

impl ZenohSink {
    pub fn new(session: zenoh::Session, when_full: crate::edge::WhenFull) -> Self {
        let congestion = match when_full {
            crate::edge::WhenFull::Block => CongestionControl::Block,
            _ => CongestionControl::Drop,
        };
        ZenohSink { session, congestion }
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
            self.session
                .put(&key, payload)
                .encoding(encoding)
                .congestion_control(self.congestion)
                .await
                .map_err(|e| BusError::Zenoh(format!("put {key}: {e}")))
        }
    }
}
