//! What the tests of this process share instead of each making its own: the bundled Lite0,
//! loaded once, and Lite0's features of the bundled dataset, extracted once into the process's
//! feature cache (see [`super::process`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use convlens::cancel::CancelToken;
use convlens::data::folder::{FolderOptions, ImageFolder};
use convlens::train::{TrainConfig, TrainReport, train};
use convlens::workspace::paths::Folder;
use convlens::zoo::Model;

use super::repo;

/// A fresh copy of the bundled Lite0 on the CPU, for a test that changes it.
pub fn load_lite0() -> Model {
    convlens::zoo::resolve(repo("models/efficientnet_lite0.json").to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .expect("the bundled model loads")
}

/// The bundled Lite0 on the CPU, loaded once per process and shared (read only).
pub fn lite0() -> Shared<Model> {
    static LITE0: OnceLock<Model> = OnceLock::new();
    Shared(LITE0.get_or_init(load_lite0))
}

/// A value the tests of this process share, used like an owned one: `&x` is a `&T` and
/// `x.field` reads `T`'s field.
#[derive(Clone, Copy)]
pub struct Shared<T: 'static>(&'static T);

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0
    }
}

/// The bundled dataset, `assets/datasets/fashion-mini` (train, validation and test splits of
/// 4 classes: 240, 80 and 80 images).
pub fn fashion_mini() -> ImageFolder {
    ImageFolder::scan(
        &repo("assets/datasets/fashion-mini"),
        &FolderOptions::default(),
    )
    .unwrap()
}

/// The process's feature cache (`$CONVLENS_CACHE`, where the app and the binary put theirs)
/// holding Lite0's features of the bundled dataset's 320 train and validation images, extracted
/// by a one-epoch run the first time a test asks. A test that trains Lite0 on the bundled
/// dataset calls this first (or passes it as the cache folder), so that the process extracts
/// those 320 images once, not once per test.
pub fn fashion_mini_features() -> &'static Path {
    static FILLED: OnceLock<PathBuf> = OnceLock::new();
    FILLED.get_or_init(|| {
        let cache = super::process::folder(Folder::Cache);
        let stats = one_epoch(Some(cache.clone())).extract;
        assert_eq!(stats.computed + stats.cached, 320, "{stats:?}");
        cache
    })
}

/// One epoch of Lite0's default (extract) run on the bundled dataset, features cached in
/// `cache_dir` (`None`: the default folder), into a temporary folder.
pub fn one_epoch(cache_dir: Option<PathBuf>) -> TrainReport {
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        cache_dir,
        ..TrainConfig::default()
    };
    let (base, data) = (lite0(), fashion_mini());
    train(
        &base,
        &data,
        &cfg,
        out.path(),
        &mut |_| {},
        &CancelToken::new(),
    )
    .unwrap()
}
