//! Where convlens keeps what it writes: see [`paths`].

pub mod paths;
