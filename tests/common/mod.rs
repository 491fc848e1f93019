//! Helpers shared by the integration tests: repo paths, tensor comparisons, a small dataset;
//! the process's setup and what its tests share (a loaded Lite0, a filled feature cache).
#![allow(dead_code)]

pub mod process;
mod shared;

// Each test binary uses a part of these (`hostile` none of the shared state).
#[allow(unused_imports)]
pub use shared::{fashion_mini, fashion_mini_features, lite0, load_lite0, one_epoch};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use convlens::data::folder::{FolderOptions, ImageFolder};

pub mod seeded;

/// Runs the convlens binary with `args` in the repository root and waits for it.
pub fn convlens(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("the binary runs")
}

/// A process's output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The tensors of a fixture file in `tests/fixtures`.
pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = repo(&format!("tests/fixtures/{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `__metadata__` strings of a fixture file in `tests/fixtures` (read from its header).
pub fn fixture_metadata(name: &str) -> HashMap<String, String> {
    use std::io::Read;
    let path = repo(&format!("tests/fixtures/{name}.safetensors"));
    let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut len = [0u8; 8];
    file.read_exact(&mut len).unwrap();
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    file.read_exact(&mut header).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    serde_json::from_value(header["__metadata__"].clone())
        .unwrap_or_else(|e| panic!("{}: metadata: {e}", path.display()))
}

/// `max|a - b| / max|reference|` over the whole tensor (shapes must agree).
pub fn rel_to_max(actual: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(actual.dims(), reference.dims(), "shapes differ");
    let diff = (actual - reference)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = reference
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff / scale.max(1e-12)
}

/// Class indices sorted by decreasing score.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// The fashion-mini classes.
pub const FASHION_CLASSES: [&str; 4] = ["ankle_boot", "bag", "sandal", "sneaker"];

/// Copies the first `n` files (sorted by name) of the folder `from` into `to`.
fn copy_first(from: &Path, to: &Path, n: usize) {
    std::fs::create_dir_all(to).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files.iter().take(n) {
        std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// The first `train` and `validation` images of each fashion-mini class, copied into `dir`.
pub fn small_dataset(dir: &Path, train: usize, validation: usize) -> ImageFolder {
    let source = repo("assets/datasets/fashion-mini");
    for (split, n) in [("train", train), ("validation", validation)] {
        for class in FASHION_CLASSES {
            copy_first(
                &source.join(split).join(class),
                &dir.join(split).join(class),
                n,
            );
        }
    }
    ImageFolder::scan(dir, &FolderOptions::default()).unwrap()
}

/// The first `n` training images of each fashion-mini class copied into `dir/<class>/`: a
/// folder without split folders (training draws its validation split).
pub fn unsplit_dataset(dir: &Path, n: usize) {
    let source = repo("assets/datasets/fashion-mini/train");
    for class in FASHION_CLASSES {
        copy_first(&source.join(class), &dir.join(class), n);
    }
}

/// Every tensor of a model's network, flattened, by name.
pub fn tensors(model: &mut convlens::zoo::Model) -> HashMap<String, Vec<f32>> {
    model
        .network
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// Writes a manifest naming `architecture` for `weights` into `dir` (1000 dummy labels).
pub fn manifest_for(dir: &Path, weights: &Path, architecture: &str) -> PathBuf {
    let labels: String = (0..1000).map(|i| format!("c{i}\n")).collect();
    std::fs::write(dir.join("labels.txt"), labels).unwrap();
    let manifest = serde_json::json!({
        "name": "wrong",
        "architecture": architecture,
        "weights": weights,
        "num_classes": 1000,
        "input_size": 224,
        "resize_shorter": 256,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "labels": "labels.txt",
        "default_cam_layer": "features.28",
    });
    let path = dir.join("wrong.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}
