//! MCAP recording through the Foxglove SDK: one channel per topic, made on first use,
//! with its schema embedded. Chunks are LZ4-compressed and closed at least once a
//! second ([`Recorder::flush`]), so a recording cut short by a crash or power loss is
//! readable up to its last chunk.

use super::codec::{self, Encoded};
use foxglove::{McapCompression, McapWriteOptions, McapWriterHandle, PartialMetadata, RawChannel};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("recording {path}: channel `{topic}`: {reason}")]
    Channel {
        path: PathBuf,
        topic: String,
        reason: String,
    },
    #[error("recording {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// An open MCAP recording.
pub struct Recorder {
    path: PathBuf,
    ctx: Arc<foxglove::Context>,
    handle: Option<McapWriterHandle<BufWriter<File>>>,
    channels: HashMap<String, Arc<RawChannel>>,
    counts: BTreeMap<String, u64>,
    /// Channel metadata to attach when a topic's channel is made.
    metadata: HashMap<String, BTreeMap<String, String>>,
}

/// Bytes of messages per chunk before it is compressed and written.
const CHUNK_BYTES: u64 = 1 << 20;

impl Recorder {
    /// Create `path` (which must not exist yet).
    pub fn create(path: &Path) -> Result<Recorder, RecordError> {
        let ctx = foxglove::Context::new();
        let opts = McapWriteOptions::new()
            .compression(Some(McapCompression::Lz4))
            .chunk_size(Some(CHUNK_BYTES))
            .library(format!("sensebind {}", env!("CARGO_PKG_VERSION")));
        let handle = ctx
            .mcap_writer_with_options(opts)
            .create_new_buffered_file(path)
            .map_err(|e| RecordError::Create {
                path: path.to_path_buf(),
                reason: match &e {
                    foxglove::FoxgloveError::IoError(io) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                        "already exists (choose another --out, or remove it)".to_string()
                    }
                    _ => e.to_string(),
                },
            })?;
        Ok(Recorder {
            path: path.to_path_buf(),
            ctx,
            handle: Some(handle),
            channels: HashMap::new(),
            counts: BTreeMap::new(),
            metadata: HashMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Metadata for `topic`'s channel (before its first message), e.g. a frame
    /// channel's `nominal_rate_hz`, which a replay needs to judge window coverage
    /// exactly as the live run did.
    pub fn set_channel_metadata(&mut self, topic: &str, metadata: BTreeMap<String, String>) {
        self.metadata.insert(topic.to_string(), metadata);
    }

    /// Append one message.
    pub fn write(&mut self, e: &Encoded) -> Result<(), RecordError> {
        let channel = match self.channels.get(&e.topic) {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .ctx
                    .channel_builder(e.topic.clone())
                    .schema(codec::schema_of(e.schema))
                    .message_encoding(codec::message_encoding(e.schema))
                    .metadata(self.metadata.get(&e.topic).cloned().unwrap_or_default())
                    .build_raw()
                    .map_err(|err| RecordError::Channel {
                        path: self.path.clone(),
                        topic: e.topic.clone(),
                        reason: err.to_string(),
                    })?;
                self.channels.insert(e.topic.clone(), c.clone());
                c
            }
        };
        channel.log_with_meta(
            &e.data,
            PartialMetadata {
                log_time: Some(e.log_time_ns),
            },
        );
        *self.counts.entry(e.topic.clone()).or_default() += 1;
        Ok(())
    }

    /// Close the open chunk and hand it to the OS.
    pub fn flush(&self) -> Result<(), RecordError> {
        if let Some(h) = &self.handle {
            h.flush().map_err(|e| RecordError::Write {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Messages written per topic.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Write the summary and close the file.
    pub fn finish(mut self) -> Result<BTreeMap<String, u64>, RecordError> {
        if let Some(h) = self.handle.take() {
            h.close().map_err(|e| RecordError::Write {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(std::mem::take(&mut self.counts))
    }
}
