//! Fault injection: the real `convlens` binary against crafted files and hostile conditions,
//! one module per area. Each test makes its inputs in a temporary folder, checks the exit code,
//! that the message names the file and the cause, and that no input changed.

#[path = "../common/mod.rs"]
mod common;

mod inputs;
