//! Seeing inside a network: algorithms that return plain pixel buffers or tensors, never GUI
//! types. Class-activation maps ([`cam`]), layer activations ([`activations`]), filter patterns
//! by gradient ascent ([`filters`], [`lucid`]), colormaps ([`colormap`]) and the resampling they need
//! ([`resize`]).

pub mod activations;
pub mod cam;
pub mod colormap;
pub mod filters;
pub mod lucid;
pub mod overlay;
pub mod resize;
