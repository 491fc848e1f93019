//! The key/shape audit: a weights file that does not fit the architecture is refused with an
//! error naming the tensor, the expected and found shapes, and the file.
use crate::common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::repo;
use convlens::zoo::checkpoint::Checkpoint;
use convlens::zoo::efficientnet_lite;

fn bundled() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(repo("models/efficientnet_lite0.safetensors"), &Device::Cpu)
        .unwrap()
}

fn build_error(tensors: &HashMap<String, Tensor>) -> (String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    let ckpt = Checkpoint::open(&path, &Device::Cpu).unwrap();
    let err = efficientnet_lite::build(&ckpt, "efficientnet_lite0", 1000)
        .err()
        .expect("refused");
    (err.to_string(), path)
}

#[test]
fn a_missing_tensor_is_named() {
    let mut t = bundled();
    t.remove("_blocks.7._depthwise_conv.weight").unwrap();
    let (msg, path) = build_error(&t);
    assert!(msg.contains("_blocks.7._depthwise_conv.weight"), "{msg}");
    assert!(
        msg.contains("[480, 1, 3, 3]") && msg.contains("no such tensor"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn a_misshaped_tensor_is_named_with_both_shapes() {
    let mut t = bundled();
    let w = t["_fc.weight"].narrow(0, 0, 10).unwrap();
    t.insert("_fc.weight".into(), w);
    let (msg, path) = build_error(&t);
    assert!(msg.contains("_fc.weight"), "{msg}");
    assert!(
        msg.contains("[1000, 1280]") && msg.contains("[10, 1280]"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn an_unexpected_tensor_is_named() {
    let mut t = bundled();
    t.insert(
        "_extra.weight".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let (msg, _) = build_error(&t);
    assert!(
        msg.contains("_extra.weight") && msg.contains("no such tensor in efficientnet_lite0"),
        "{msg}"
    );
}

#[test]
fn a_file_that_is_not_safetensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.safetensors");
    std::fs::write(&path, b"these are not weights").unwrap();
    let msg = Checkpoint::open(&path, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains("notes.safetensors") && msg.contains("safetensors"),
        "{msg}"
    );
}

#[test]
fn the_bundled_file_passes_the_audit() {
    let ckpt =
        Checkpoint::open(&repo("models/efficientnet_lite0.safetensors"), &Device::Cpu).unwrap();
    ckpt.audit(
        "efficientnet_lite0",
        &efficientnet_lite::expected_tensors("efficientnet_lite0", 1000).unwrap(),
    )
    .unwrap();
}
