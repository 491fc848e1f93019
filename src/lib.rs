//! convlens: transfer learning and a look inside convnets, on candle.
//!
//! Data flows one way: [`zoo`] turns weights into a [`graph::Network`], [`data`] turns image
//! files into tensors, [`predict`] ranks classes; the CLI ([`cli`]) and the desktop app (`gui`,
//! cargo feature `gui`) are thin shells over them.

pub mod cancel;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod fsutil;
pub mod graph;
pub mod insight;
pub mod interchange;
pub mod jobs;
pub mod ops;
pub mod predict;
pub mod text;
pub mod train;
pub mod viz;
pub mod workspace;
pub mod zoo;

#[cfg(feature = "gui")]
pub mod gui;

pub use error::{Error, Result};
