//! The integration tests, in one binary: candle, egui and the crate are linked once instead of
//! once per file, and the tests share one process (see `common` for what they share). One
//! module per area; `cargo test --release --test suite cli::` runs one module,
//! `cargo test --release --test suite -- --list` names every test.
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
mod cli_viz;
mod gui;
mod hostile;
mod lite0_parity;
mod runs;
mod train;
mod viz;
mod weights_audit;
mod zoo;
mod zoo_train;
