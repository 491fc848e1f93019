//! The test process's setup, done once before `main` (so before libtest starts its threads, as
//! `src/main.rs` does it first thing): candle's element-wise ops on the calling thread
//! ([`convlens::ops::configure_cpu_threads`], so candle's spinning pool does not fight rayon),
//! and the config, cache and data folders of [`convlens::workspace::paths`] set to folders of
//! this process, so that no test writes into the user's home and the tests share one feature
//! cache. The tests run as threads of one process: a variable set per test would race, so a
//! test that needs other folders passes them explicitly (an `AppOptions` field, a `TrainConfig`
//! field, `--cache`, or `Command::env` for a child process). The folder is removed at exit.

use std::path::PathBuf;

use convlens::workspace::paths::Folder;

/// This process's folder: `convlens-tests-PID` in the temporary directory.
pub fn root() -> PathBuf {
    std::env::temp_dir().join(format!("convlens-tests-{}", std::process::id()))
}

/// The folder of `kind` every test of this process shares (what `$CONVLENS_CONFIG`,
/// `$CONVLENS_CACHE` and `$CONVLENS_DATA` name).
pub fn folder(kind: Folder) -> PathBuf {
    root().join(match kind {
        Folder::Config => "config",
        Folder::Cache => "cache",
        Folder::Data => "data",
    })
}

/// Runs before `main`, while this is the only thread (see [`SETUP`]).
extern "C" fn setup() {
    // SAFETY: before `main`, no other thread exists.
    unsafe { convlens::ops::configure_cpu_threads() };
    let _ = std::fs::remove_dir_all(root()); // left by a killed process with the same id
    for kind in [Folder::Config, Folder::Cache, Folder::Data] {
        // SAFETY: as above, nothing else reads the environment yet.
        unsafe { std::env::set_var(kind.variable(), folder(kind)) };
    }
    // SAFETY: `remove_root` is an `extern "C" fn()` that lives as long as the process.
    unsafe { atexit(remove_root) };
}

extern "C" fn remove_root() {
    let _ = std::fs::remove_dir_all(root());
}

unsafe extern "C" {
    /// C's `atexit`: runs `f` when the process exits (after `main` returns or on `exit`, which
    /// libtest calls when a test failed).
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

/// [`setup`] in the platform's table of functions run before `main` (what the `ctor` crate
/// does): the only way to change the environment before libtest starts threads.
#[used]
#[cfg_attr(
    any(target_os = "linux", target_os = "android", target_os = "freebsd"),
    unsafe(link_section = ".init_array")
)]
#[cfg_attr(
    target_vendor = "apple",
    unsafe(link_section = "__DATA,__mod_init_func")
)]
#[cfg_attr(windows, unsafe(link_section = ".CRT$XCU"))]
static SETUP: extern "C" fn() = setup;
