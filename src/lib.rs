//! sensebind: one ImageBind embedding space for everything a robot senses.
//!
//! The modules follow the data path:
//! [`sources`] → [`window`] → [`preprocess`] → [`engine`] → [`outputs`] / [`bus`],
//! wired together by [`daemon`]. Each stage has one trait or one pure type and is
//! tested alone.

pub mod bus;
pub mod calibration;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod modality;
pub mod offline;
pub mod outputs;
pub mod pack;
pub mod preprocess;
pub mod queries;
pub mod sources;
pub mod window;
pub mod zeroshot;

pub use modality::{Modality, Sensor};
