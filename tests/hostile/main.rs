//! Fault injection: the real `convlens` binary driven with crafted files, hostile options,
//! outputs and environments. Each test asserts the exit code, that the message names the file
//! or value and the cause, and that no input changed. One module per area.
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

mod evidence;
mod exports;
mod folder_views;
mod inputs;
mod models;
mod outputs;
