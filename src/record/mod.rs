//! Recording and reading MCAP files: what `sensebind record` writes (frames, and with
//! `--embeddings` what the pipeline computed), what `type = "mcap"` sources and
//! `sensebind replay` play back. [`codec`] maps frames and bus messages to Foxglove's
//! well-known schemas and ours; [`writer`] writes through the Foxglove SDK; [`reader`]
//! streams a file back; [`tap`] records the pipeline's taps.

pub mod codec;
pub mod reader;
pub mod tap;
pub mod writer;

pub use writer::{RecordError, Recorder};
