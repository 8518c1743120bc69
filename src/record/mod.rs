//! Recording MCAP files: what `sensebind record` writes (frames, and with
//! `--embeddings` what the pipeline computed). [`codec`] maps pipeline results to our
//! schemas (frames are mapped by [`crate::sources::mcap::frames`], which the `mcap`
//! replay source also reads with); [`writer`] writes through the Foxglove SDK; [`tap`]
//! records the pipeline's taps.

pub mod codec;
pub mod tap;
pub mod writer;

pub use writer::{RecordError, Recorder};
