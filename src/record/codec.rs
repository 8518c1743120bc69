//! Pipeline results ↔ MCAP messages, and the schema of every channel a recording or
//! the live view writes. Frames are encoded by [`crate::sources::mcap::frames`]
//! (re-exported here); this adds what the pipeline computes:
//!
//! | topic | schema (jsonschema) | message encoding |
//! |---|---|---|
//! | `embedding/<modality>/<source>` | `sensebind.Embedding` | json |
//! | `labels/<modality>/<source>` | `sensebind.Labels` | json |
//! | `events/<modality>/<source>` | `sensebind.Event` | json |
//! | `alerts/<id>` | `sensebind.Alert` | json |
//!
//! The schemas are embedded in the file, so any MCAP reader decodes every channel.

pub use crate::sources::mcap::frames::*;

use crate::bus::EmbeddingMsg;

pub const EMBEDDING: &str = "sensebind.Embedding";
pub const LABELS: &str = "sensebind.Labels";
pub const EVENT: &str = "sensebind.Event";
pub const ALERT: &str = "sensebind.Alert";

/// JSON Schema of `sensebind.Embedding`: one window's embedding.
pub const EMBEDDING_SCHEMA: &str = r#"{"title":"sensebind.Embedding","description":"A window's embedding, as published on embedding/<modality>/<source> (there as CBOR with packed f32).","type":"object","properties":{"robot":{"type":"string"},"source":{"type":"string"},"modality":{"type":"string"},"seq":{"type":"integer"},"t_start_ns":{"type":"integer"},"t_end_ns":{"type":"integer"},"model":{"type":"string"},"dim":{"type":"integer"},"embedding":{"type":"array","items":{"type":"number"},"description":"unit-norm f32 values"},"scale":{"type":"number"},"coverage":{"type":"number"},"members":{"type":"array","description":"embedding/fused only: the streams summed, [{source, modality, weight, coverage}]"},"complete":{"type":"boolean","description":"embedding/fused only: every expected stream is a member"}},"required":["source","modality","seq","t_start_ns","t_end_ns","dim","embedding"]}"#;

/// JSON Schema of `sensebind.Labels` (the bus message of labels/<modality>/<source>).
pub const LABELS_SCHEMA: &str = r#"{"title":"sensebind.Labels","type":"object","properties":{"robot":{"type":"string"},"source":{"type":"string"},"modality":{"type":"string"},"seq":{"type":"integer"},"t_start_ns":{"type":"integer"},"t_end_ns":{"type":"integer"},"model":{"type":"string"},"top":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"prob":{"type":"number"},"score":{"type":"number"}}}}},"required":["source","modality","seq","top"]}"#;

/// JSON Schema of `sensebind.Event` (events/<modality>/<source>).
pub const EVENT_SCHEMA: &str = r#"{"title":"sensebind.Event","type":"object","properties":{"robot":{"type":"string"},"source":{"type":"string"},"modality":{"type":"string"},"label":{"type":"string"},"state":{"type":"string","enum":["start","end"]},"start_ns":{"type":"integer"},"end_ns":{"type":["integer","null"]},"prob":{"type":"number"},"seq":{"type":"integer"}},"required":["source","modality","label","state"]}"#;

/// JSON Schema of `sensebind.Alert` (alerts/<id>).
pub const ALERT_SCHEMA: &str = r#"{"title":"sensebind.Alert","type":"object","properties":{"robot":{"type":"string"},"query_id":{"type":"string"},"text":{"type":"string"},"source":{"type":"string"},"modality":{"type":"string"},"score":{"type":"number"},"threshold":{"type":"number"},"seq":{"type":"integer"},"t_start_ns":{"type":"integer"},"t_end_ns":{"type":"integer"},"conditions":{"type":"array","description":"all-of queries: the window that met each condition"}},"required":["query_id","source","modality","score","seq"]}"#;

/// The schema a channel with `schema` name uses: (encoding, data) for the MCAP schema
/// record and the channel's message encoding.
pub fn schema_of(name: &str) -> Option<foxglove::Schema> {
    let json = |text: &'static str| foxglove::Schema::new(name.to_string(), "jsonschema", text.as_bytes());
    match name {
        EMBEDDING => Some(json(EMBEDDING_SCHEMA)),
        LABELS => Some(json(LABELS_SCHEMA)),
        EVENT => Some(json(EVENT_SCHEMA)),
        ALERT => Some(json(ALERT_SCHEMA)),
        _ => frame_schema(name),
    }
}

/// A published bus message (key relative to `<prefix>/<robot>/`) as an MCAP message,
/// or `None` for keys that are not recorded (health).
pub fn encode_published(topic: &str, payload: &[u8], cbor: bool) -> Option<Result<Encoded, DecodeError>> {
    let kind = topic.split('/').next()?;
    let schema = match kind {
        "embedding" => EMBEDDING,
        "labels" => LABELS,
        "events" => EVENT,
        "alerts" => ALERT,
        _ => return None,
    };
    let result = (|| {
        let value: serde_json::Value = if cbor && topic == "embedding/fused" {
            let m = crate::bus::FusedMsg::from_cbor(payload).map_err(DecodeError)?;
            let vector = m.vector();
            serde_json::json!({
                "robot": m.robot, "source": m.source, "modality": m.modality, "seq": m.seq,
                "t_start_ns": m.t_start_ns, "t_end_ns": m.t_end_ns, "model": m.model, "dim": m.dim,
                "embedding": vector, "scale": m.scale, "coverage": m.coverage,
                "members": m.members, "complete": m.complete,
            })
        } else if cbor {
            let m = EmbeddingMsg::from_cbor(payload).map_err(DecodeError)?;
            let vector = m.vector();
            serde_json::json!({
                "robot": m.robot, "source": m.source, "modality": m.modality, "seq": m.seq,
                "t_start_ns": m.t_start_ns, "t_end_ns": m.t_end_ns, "model": m.model, "dim": m.dim,
                "embedding": vector, "scale": m.scale, "coverage": m.coverage,
            })
        } else {
            serde_json::from_slice(payload).map_err(|e| DecodeError(format!("{topic}: {e}")))?
        };
        let t = ["t_end_ns", "end_ns", "start_ns"]
            .iter()
            .find_map(|k| value.get(*k).and_then(|v| v.as_i64()))
            .unwrap_or_else(crate::clock::realtime_ns);
        Ok(Encoded {
            topic: topic.to_string(),
            schema,
            log_time_ns: t.max(0) as u64,
            data: serde_json::to_vec(&value).map_err(|e| DecodeError(e.to_string()))?,
        })
    })();
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modality::Modality;

    #[test]
    fn embeddings_are_recorded_as_json_with_f32_values() {
        let v = vec![0.6f32, -0.8];
        let m = EmbeddingMsg {
            robot: "r".into(),
            source: "mic".into(),
            modality: Modality::Audio,
            seq: 3,
            t_start_ns: 10,
            t_end_ns: 20,
            model: "tiny".into(),
            dim: 2,
            embedding: EmbeddingMsg::pack_vector(&v),
            scale: 1.0,
            coverage: 1.0,
        };
        let e = encode_published("embedding/audio/mic", &m.to_cbor().unwrap(), true)
            .unwrap()
            .unwrap();
        assert_eq!((e.schema, e.log_time_ns), (EMBEDDING, 20));
        let back: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        let got: Vec<f32> = back["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, v);
        assert!(encode_published("health", b"{}", false).is_none());
    }
}
