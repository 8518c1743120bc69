//! Every integration test in one binary: one link and one copy of `common` instead of
//! one per file (the test build was most of CI's time). Each file is a module, so a
//! test is named by its file: `cargo test --release --test integration parity::`.
//! ALSA capture keeps its own binary (tests/alsa_capture.rs): it sets the process's
//! HOME for ALSA's configuration, which must not leak into other tests' children.

mod common;

mod bus_faults;
mod cli;
mod daemon_bus;
mod demo_real;
mod faults;
mod fusion_search;
mod hostile_bus;
mod hostile_two;
mod minibind;
mod pack_fixture;
mod parity;
mod pipeline;
mod replay;
mod security;
mod soak;
mod systemd;
