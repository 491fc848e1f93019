// Vendored from candle-onnx 0.11.1 (see README.md): the ONNX message types are pre-generated
// (`src/onnx.rs`), so building needs no `protoc`.
#![allow(clippy::all, warnings)]

use candle::Result;
use prost::Message;

pub mod onnx {
    include!("onnx.rs");
}

pub mod eval;
pub use eval::{dtype, simple_eval};

pub fn read_file<P: AsRef<std::path::Path>>(p: P) -> Result<onnx::ModelProto> {
    let buf = std::fs::read(p)?;
    onnx::ModelProto::decode(buf.as_slice()).map_err(candle::Error::wrap)
}
