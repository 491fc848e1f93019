//! Fault-injection tests: the real `convlens` binary driven with hostile input, outputs and
//! environments. One module per area.

#[path = "../common/mod.rs"]
mod common;

mod outputs;
