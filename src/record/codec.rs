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

use crate::bus::msg::{schema_json, AlertMsg, EventMsg, LabelsMsg, RecordedEmbedding};
use crate::bus::{EmbeddingMsg, FusedMsg};

pub const EMBEDDING: &str = "sensebind.Embedding";
pub const LABELS: &str = "sensebind.Labels";
pub const EVENT: &str = "sensebind.Event";
pub const ALERT: &str = "sensebind.Alert";

/// The schema a channel with `schema` name uses: (encoding, data) for the MCAP schema
/// record and the channel's message encoding. The JSON Schemas are generated from the
/// bus message types ([`crate::bus::msg`]).
pub fn schema_of(name: &str) -> Option<foxglove::Schema> {
    let text = match name {
        EMBEDDING => schema_json::<RecordedEmbedding>(),
        LABELS => schema_json::<LabelsMsg>(),
        EVENT => schema_json::<EventMsg>(),
        ALERT => schema_json::<AlertMsg>(),
        _ => return frame_schema(name),
    };
    Some(foxglove::Schema::new(name.to_string(), "jsonschema", text.into_bytes()))
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
            let m = FusedMsg::from_cbor(payload).map_err(DecodeError)?;
            serde_json::to_value(RecordedEmbedding::from(m)).map_err(|e| DecodeError(e.to_string()))?
        } else if cbor {
            let m = EmbeddingMsg::from_cbor(payload).map_err(DecodeError)?;
            serde_json::to_value(RecordedEmbedding::from(m)).map_err(|e| DecodeError(e.to_string()))?
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
