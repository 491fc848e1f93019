//! The integration tests, in one binary: candle, egui and the crate are linked once instead of
//! once per file, and the tests share one process (see `common` for what they share). One
//! module per area; `cargo test --release --test suite cli::` runs one module,
//! `cargo test --release --test suite -- --list` names every test. The fault injection of
//! `tests/hostile` stays a binary of its own: it bounds its children's peak memory through
//! `wait4`, and a child's peak counts its parent's at the moment it was started (this process
//! holds models and GUI state; that one only spawns).
// Tests and benchmarks may panic on failure, print, and call the APIs the library bans
// (reference softmax, image::open on figures, threads for concurrent runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

#[path = "../common/mod.rs"]
mod common;

mod cam_parity;
mod cli;
mod cli_flows;
mod cli_reproduce;
mod cli_viz;
mod data_map;
mod dataset_lens;
mod explain_methods;
mod explain_metrics;
mod export;
mod fullgrad;
mod gui;
mod lite0_parity;
mod parity_models;
mod ridge_reference;
mod runs;
mod setup;
mod train;
mod viz;
mod weights_audit;
mod zoo;
mod zoo_a;
mod zoo_b;
mod zoo_c;
mod zoo_train;
mod zoo_visuals;
