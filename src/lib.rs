//! sensebind: one ImageBind embedding space for everything a robot senses.
//!
//! The modules follow the data path:
//! [`sources`] → [`window`] → [`preprocess`] → [`engine`] → [`outputs`] → [`bus`],
//! connected by [`edge`]s and wired into one supervised graph by [`pipeline`]. Each
//! stage has one trait or one pure type and is tested alone. At the bottom:
//! [`clock`] (clock domains), [`telemetry`] (events → counters → health), [`taps`],
//! [`ident`], [`modality`] and [`config`]. Tools on top: [`offline`] (`embed`) and
//! [`bench`].

pub mod bench;
pub mod bus;
pub mod calibration;
pub mod client;
pub mod clock;
pub mod config;
pub mod edge;
pub mod engine;
pub mod fusion;
pub mod history;
pub mod ident;
pub mod liveview;
pub mod logging;
pub mod modality;
pub mod offline;
pub mod outputs;
pub mod pack;
pub mod pipeline;
pub mod preprocess;
pub mod prometheus;
pub mod queries;
pub mod record;
pub mod ros2;
pub mod sources;
pub mod taps;
pub mod telemetry;
pub mod window;
pub mod zeroshot;

pub use modality::{Modality, Sensor};
