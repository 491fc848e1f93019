//! Seeing inside a network: algorithms that return plain pixel buffers or tensors, never GUI
//! types. Class-activation maps ([`cam`]) and the resampling they need ([`resize`]).

pub mod cam;
pub mod resize;
