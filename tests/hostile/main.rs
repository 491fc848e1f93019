//! Fault injection: the real `convlens` binary driven with crafted files, hostile options,
//! outputs and environments. Each test asserts the exit code, that the message names the file
//! or value and the cause, and that no input changed. One module per area.

#[path = "../common/mod.rs"]
mod common;

mod inputs;
mod models;
mod outputs;
