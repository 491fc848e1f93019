//! `convlens train` without `--out` saves each run into a new folder of the workspace;
//! `convlens runs` lists, shows, renames and deletes them; a run's name works as a model.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{repo, small_dataset};

/// `convlens ARGS` run in `cwd`, with the data and cache folders inside `home`.
fn convlens_in(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .env("CONVLENS_DATA", home.join("data"))
        .env("CONVLENS_CACHE", home.join("cache"))
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

/// `convlens ARGS` run in the repository, with the data and cache folders inside `home`.
fn convlens(home: &Path, args: &[&str]) -> Output {
    convlens_in(&repo(""), home, args)
}

/// Its stdout, after checking that it succeeded.
fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Its stderr, after checking that it failed with exit code 1.
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&success(out)).expect("valid JSON")
}

/// Trains a linear head for one epoch on `home/shoes` (given as a relative path) without
/// `--out`; returns the folder it saved into.
fn train(home: &Path) -> PathBuf {
    let out = convlens_in(
        home,
        home,
        &[
            "train",
            "shoes",
            "--mode",
            "extract",
            "--epochs",
            "1",
            "--head",
            "linear",
            "--batch-size",
            "8",
        ],
    );
    let stdout = success(&out);
    let saved = stdout
        .lines()
        .find_map(|l| l.strip_prefix("saved "))
        .and_then(|l| l.split(" (best").next())
        .unwrap_or_else(|| panic!("no `saved` line: {stdout}"));
    PathBuf::from(saved)
}

#[test]
fn runs_are_kept_listed_used_renamed_and_deleted() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("shoes");
    small_dataset(&data, 4, 2);
    let runs_dir = home.path().join("data").join("runs");

    let first = train(home.path());
    let second = train(home.path());
    assert_ne!(first, second);
    for dir in [&first, &second] {
        assert_eq!(dir.parent(), Some(runs_dir.as_path()));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.contains("-extract-shoes"), "{name}");
        let eval: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("evaluation.json")).unwrap()).unwrap();
        assert_eq!(eval["split"], "validation");
        let images: u64 = eval["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
            .sum();
        assert_eq!(images, 8, "two validation images of each of four classes");
        for wrong in eval["misclassified"].as_array().unwrap() {
            let path = Path::new(wrong["path"].as_str().unwrap());
            assert!(path.is_absolute() && path.is_file(), "{}", path.display());
        }
    }

    let listed = json(&convlens(home.path(), &["runs", "list", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(PathBuf::from(listed[0]["path"].as_str().unwrap()), second);
    assert_eq!(PathBuf::from(listed[1]["path"].as_str().unwrap()), first);
    for run in listed {
        assert_eq!(run["mode"], "Extract");
        assert_eq!(run["dataset"], "shoes");
        assert_eq!(run["epochs"], 1);
        assert!(run["problem"].is_null(), "{run}");
        let acc = run["best_val_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{acc}");
    }
    let table = success(&convlens(home.path(), &["runs", "list"]));
    assert!(table.contains(runs_dir.to_str().unwrap()), "{table}");

    let first_name = first.file_name().unwrap().to_str().unwrap();
    let second_name = second.file_name().unwrap().to_str().unwrap();
    let shown = json(&convlens(
        home.path(),
        &["runs", "show", first_name, "--json"],
    ));
    assert_eq!(shown["history"]["phases"][0]["name"], "head");
    assert_eq!(shown["evaluation"]["classes"].as_array().unwrap().len(), 4);
    let text = success(&convlens(home.path(), &["runs", "show", first_name]));
    assert!(text.contains("kept:"), "{text}");
    assert!(text.contains("confusion"), "{text}");

    // The run's name works as a model.
    let image = data.join("validation/bag");
    let image = std::fs::read_dir(image)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let predicted = success(&convlens(
        home.path(),
        &[
            "predict",
            "--model",
            second_name,
            image.to_str().unwrap(),
            "--top",
            "1",
        ],
    ));
    assert!(
        ["ankle_boot", "bag", "sandal", "sneaker"]
            .iter()
            .any(|c| predicted.contains(c)),
        "{predicted}"
    );

    // Rename: a free name works, a taken one is refused.
    success(&convlens(
        home.path(),
        &["runs", "rename", first_name, "baseline"],
    ));
    assert!(runs_dir.join("baseline").join("model.json").is_file());
    assert!(!first.exists());
    let err = failure(&convlens(
        home.path(),
        &["runs", "rename", second_name, "baseline"],
    ));
    assert!(err.contains("already exists"), "{err}");
    assert!(second.join("model.json").is_file());

    // Delete: a run goes; a folder that is not a run, and names outside the workspace, stay.
    success(&convlens(home.path(), &["runs", "delete", "baseline"]));
    assert!(!runs_dir.join("baseline").exists());
    let photos = runs_dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::write(photos.join("cat.jpg"), b"precious").unwrap();
    let err = failure(&convlens(home.path(), &["runs", "delete", "photos"]));
    assert!(err.contains("photos") && err.contains("not a run"), "{err}");
    assert_eq!(std::fs::read(photos.join("cat.jpg")).unwrap(), b"precious");
    let err = failure(&convlens(home.path(), &["runs", "delete", "../../shoes"]));
    assert!(err.contains("cannot name a run"), "{err}");
    assert!(data.join("train").is_dir());
    let left = json(&convlens(home.path(), &["runs", "list", "--json"]));
    let names: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&second_name) && names.contains(&"photos"),
        "{names:?}"
    );
}

/// Without `CONVLENS_DATA` the workspace is in the platform's data folder, which on Linux
/// follows `XDG_DATA_HOME`.
#[cfg(target_os = "linux")]
#[test]
fn the_workspace_follows_xdg_data_home() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(["runs", "list"])
        .env_remove("CONVLENS_DATA")
        .env("HOME", home.path().join("home"))
        .env("XDG_DATA_HOME", home.path().join("xdg"))
        .output()
        .unwrap();
    let stdout = success(&out);
    let expected = home.path().join("xdg").join("convlens").join("runs");
    assert!(stdout.contains(expected.to_str().unwrap()), "{stdout}");
}
