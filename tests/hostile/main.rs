//! Fault injection: crafted files and hostile options against the real `convlens` binary. Each
//! test asserts the exit code, that the message names the file or value and the cause, and
//! that no input changed.

#[path = "../common/mod.rs"]
mod common;

mod models;
