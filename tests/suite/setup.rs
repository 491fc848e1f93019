//! What `tests/common` sets up for the process and shares between tests: checked here once.

use convlens::workspace::paths::{self, Folder};

use crate::common::process::folder;
use crate::common::{fashion_mini_features, one_epoch};

#[test]
fn the_process_is_set_up_before_main() {
    assert!(std::env::var_os("CANDLE_NUM_THREADS").is_some());
    for kind in [Folder::Config, Folder::Cache, Folder::Data] {
        assert_eq!(
            std::env::var_os(kind.variable()),
            Some(folder(kind).into_os_string())
        );
        assert_eq!(paths::folder(kind).unwrap(), folder(kind));
    }
}

#[test]
fn a_run_on_the_shared_cache_extracts_nothing() {
    assert_eq!(fashion_mini_features(), folder(Folder::Cache));
    // The default cache folder, as the app and the binary use it: `$CONVLENS_CACHE`.
    let stats = one_epoch(None).extract;
    assert_eq!((stats.computed, stats.cached), (0, 320));
}
