use super::*;
use image::{Rgb, RgbImage};
use std::ffi::OsStr;

fn fashion_mini() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/datasets/fashion-mini")
}

/// Writes a small distinct PNG at `path` (creating folders).
pub(crate) fn png(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(6, 5, |x, y| Rgb([shade, x as u8 * 40, y as u8 * 50]))
        .save(path)
        .unwrap();
}

/// `root/<class>/img_<i>.png` with `n` images per class.
pub(crate) fn class_folders(root: &Path, classes: &[(&str, usize)]) {
    for (c, (name, n)) in classes.iter().enumerate() {
        for i in 0..*n {
            png(
                &root.join(name).join(format!("img_{i:02}.png")),
                (c * 50 + i) as u8,
            );
        }
    }
}

fn dataset_error(root: &Path) -> String {
    match ImageFolder::scan(root, &FolderOptions::default()) {
        Ok(_) => panic!("{} scanned without error", root.display()),
        Err(e) => {
            assert!(matches!(e, Error::Dataset(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn fashion_mini_has_four_classes_and_its_splits() {
    let root = fashion_mini();
    let ds = ImageFolder::scan(&root, &FolderOptions::default()).unwrap();
    assert_eq!(ds.classes, ["ankle_boot", "bag", "sandal", "sneaker"]);
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    let count = |split: &str, class: &str| {
        std::fs::read_dir(root.join(split).join(class))
            .unwrap()
            .count()
    };
    for (split, name) in Split::ALL.into_iter().zip(["train", "validation", "test"]) {
        let expect: Vec<usize> = ds.classes.iter().map(|c| count(name, c)).collect();
        assert_eq!(ds.class_counts(split), expect, "{split}");
        assert_eq!(ds.split(split).len(), expect.iter().sum::<usize>());
        for s in ds.split(split) {
            let class = s.path.parent().unwrap().file_name().unwrap();
            assert_eq!(class.to_str().unwrap(), ds.classes[s.label]);
            assert!(s.path.starts_with(root.join(name)));
        }
    }
    assert_eq!(ds.class_counts(Split::Train), [60; 4]);
    assert_eq!(ds.class_counts(Split::Validation), [20; 4]);
    assert_eq!(ds.class_counts(Split::Test), [20; 4]);
}

#[test]
fn class_folders_get_a_seeded_stratified_split() {
    let dir = tempfile::tempdir().unwrap();
    class_folders(dir.path(), &[("cat", 10), ("dog", 5), ("eel", 2)]);
    let scan = |seed| {
        ImageFolder::scan(
            dir.path(),
            &FolderOptions {
                seed,
                ..FolderOptions::default()
            },
        )
        .unwrap()
    };
    let a = scan(42);
    assert_eq!(a.classes, ["cat", "dog", "eel"]);
    // round(0.2 n): 2 of 10, 1 of 5, and at least 1 of 2.
    assert_eq!(a.class_counts(Split::Validation), [2, 1, 1]);
    assert_eq!(a.class_counts(Split::Train), [8, 4, 1]);
    assert!(a.splits.test.is_empty());
    // Disjoint and complete.
    let mut all: Vec<&Sample> = a.splits.train.iter().chain(&a.splits.validation).collect();
    all.sort_by(|x, y| x.path.cmp(&y.path));
    all.dedup();
    assert_eq!(all.len(), 17);

    assert_eq!(scan(42).splits, a.splits, "same seed, same split");
    assert_ne!(scan(7).splits, a.splits, "different seed, different split");

    let half = ImageFolder::scan(
        dir.path(),
        &FolderOptions {
            validation_fraction: 0.5,
            ..FolderOptions::default()
        },
    )
    .unwrap();
    // round(2.5) = 3: halves round away from zero.
    assert_eq!(half.class_counts(Split::Validation), [5, 3, 1]);
    let bad = ImageFolder::scan(
        dir.path(),
        &FolderOptions {
            validation_fraction: 1.0,
            ..FolderOptions::default()
        },
    );
    assert!(bad.is_err());
}

#[test]
fn train_folder_without_validation_is_split_and_test_kept() {
    let dir = tempfile::tempdir().unwrap();
    class_folders(&dir.path().join("train"), &[("a", 5), ("b", 5)]);
    class_folders(&dir.path().join("test"), &[("a", 2), ("b", 3)]);
    let ds = ImageFolder::scan(dir.path(), &FolderOptions::default()).unwrap();
    assert_eq!(ds.classes, ["a", "b"]);
    assert_eq!(ds.class_counts(Split::Train), [4, 4]);
    assert_eq!(ds.class_counts(Split::Validation), [1, 1]);
    assert_eq!(ds.class_counts(Split::Test), [2, 3]);
}

#[test]
fn val_is_accepted_as_the_validation_folder() {
    let dir = tempfile::tempdir().unwrap();
    class_folders(&dir.path().join("train"), &[("a", 3), ("b", 3)]);
    class_folders(&dir.path().join("val"), &[("a", 1), ("b", 2)]);
    let ds = ImageFolder::scan(dir.path(), &FolderOptions::default()).unwrap();
    assert_eq!(ds.class_counts(Split::Train), [3, 3]);
    assert_eq!(ds.class_counts(Split::Validation), [1, 2]);
    assert!(ds.splits.test.is_empty());
}

#[test]
fn hidden_non_image_and_corrupt_files_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    class_folders(root, &[("cat", 5), ("dog", 5)]);
    std::fs::write(root.join("cat/.DS_Store"), b"junk").unwrap();
    png(&root.join("cat/.thumbs/hidden.png"), 9);
    png(&root.join(".cache/cls/x.png"), 9);
    std::fs::write(root.join("dog/notes.txt"), b"some notes").unwrap();
    std::fs::write(root.join("dog/broken.png"), b"this is not a png").unwrap();
    png(&root.join("dog/nested/deep.PNG"), 77);
    std::fs::write(root.join("README.md"), b"# data").unwrap();

    let ds = ImageFolder::scan(root, &FolderOptions::default()).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    let reason_of = |rel: &str| {
        ds.skipped
            .iter()
            .find(|s| s.path == root.join(rel))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{rel} not reported: {:?}", ds.skipped))
    };
    assert!(reason_of("cat/.DS_Store").contains("hidden file"));
    assert!(reason_of("cat/.thumbs").contains("hidden folder"));
    assert!(reason_of(".cache").contains("hidden folder"));
    assert!(reason_of("dog/notes.txt").contains("not an image"));
    assert!(reason_of("README.md").contains("top level"));
    let broken = reason_of("dog/broken.png");
    assert!(!broken.is_empty());
    eprintln!("broken.png: {broken}");
    assert_eq!(ds.skipped.len(), 6, "{:#?}", ds.skipped);
    for s in &ds.skipped {
        eprintln!("skipped {s}");
    }
    // The rest goes on: 10 good images plus the nested upper-case one.
    let n = ds.splits.train.len() + ds.splits.validation.len();
    assert_eq!(n, 11);
    let all: Vec<&Sample> = ds
        .splits
        .train
        .iter()
        .chain(&ds.splits.validation)
        .collect();
    assert!(
        all.iter()
            .any(|s| s.path == root.join("dog/nested/deep.PNG") && s.label == 1)
    );
    assert!(!all.iter().any(|s| s.path.ends_with("broken.png")));

    // Without the header check the corrupt file is kept (load_batch will skip it).
    let unchecked = ImageFolder::scan(
        root,
        &FolderOptions {
            check_decodable: false,
            ..FolderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(unchecked.skipped.len(), 5);
    assert_eq!(
        unchecked.splits.train.len() + unchecked.splits.validation.len(),
        12
    );
}

#[test]
fn unusable_datasets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();

    // Missing root, and a file as root.
    let missing = dir.path().join("nope");
    assert!(dataset_error(&missing).contains("does not exist"));
    let file = dir.path().join("file.png");
    std::fs::write(&file, b"x").unwrap();
    assert!(dataset_error(&file).contains("not a folder"));

    // An empty class folder (a non-image in it does not count).
    let empty = dir.path().join("empty");
    class_folders(&empty, &[("bag", 3), ("shoe", 3)]);
    std::fs::create_dir_all(empty.join("coat")).unwrap();
    std::fs::write(empty.join("coat/notes.txt"), b"x").unwrap();
    let msg = dataset_error(&empty);
    assert!(msg.contains("`coat`") && msg.contains("no image"), "{msg}");
    assert!(
        msg.contains(&empty.join("coat").display().to_string()),
        "{msg}"
    );

    // A class whose only image is corrupt.
    let corrupt = dir.path().join("corrupt");
    class_folders(&corrupt, &[("bag", 3), ("shoe", 3)]);
    std::fs::create_dir_all(corrupt.join("coat")).unwrap();
    std::fs::write(corrupt.join("coat/broken.png"), b"x").unwrap();
    let msg = dataset_error(&corrupt);
    assert!(
        msg.contains("`coat`") && msg.contains("no readable images"),
        "{msg}"
    );

    // A single class, and none.
    let single = dir.path().join("single");
    class_folders(&single, &[("bag", 3)]);
    let msg = dataset_error(&single);
    assert!(
        msg.contains("only one class") && msg.contains("`bag`"),
        "{msg}"
    );
    let none = dir.path().join("none");
    std::fs::create_dir_all(&none).unwrap();
    assert!(dataset_error(&none).contains("no class folders"));

    // Split folders with different classes.
    let mismatch = dir.path().join("mismatch");
    class_folders(
        &mismatch.join("train"),
        &[("bag", 2), ("coat", 2), ("shoe", 2)],
    );
    class_folders(
        &mismatch.join("validation"),
        &[("bag", 1), ("shoe", 1), ("sock", 1)],
    );
    let msg = dataset_error(&mismatch);
    eprintln!("mismatch: {msg}");
    assert!(msg.contains("`coat` missing from"), "{msg}");
    assert!(
        msg.contains(&mismatch.join("validation").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("`sock` missing from"), "{msg}");
    assert!(
        msg.contains(&mismatch.join("train").display().to_string()),
        "{msg}"
    );

    // Both validation/ and val/.
    let both = dir.path().join("both");
    class_folders(&both.join("train"), &[("a", 2), ("b", 2)]);
    class_folders(&both.join("validation"), &[("a", 1), ("b", 1)]);
    class_folders(&both.join("val"), &[("a", 1), ("b", 1)]);
    assert!(dataset_error(&both).contains("both validation/ and val/"));
}

#[test]
fn some_split_folders_are_read_as_splits() {
    let dir = tempfile::tempdir().unwrap();
    // Only test/: a test split, not one class named `test`.
    let only_test = dir.path().join("only_test");
    class_folders(&only_test.join("test"), &[("a", 2), ("b", 3)]);
    let data = ImageFolder::scan(&only_test, &FolderOptions::default()).unwrap();
    assert_eq!(data.classes, ["a", "b"]);
    assert_eq!(data.split_folders, [Split::Test]);
    assert_eq!(data.split(Split::Test).len(), 5);
    assert!(data.split(Split::Train).is_empty());
    // Only val/: a validation split.
    let only_val = dir.path().join("only_val");
    class_folders(&only_val.join("val"), &[("a", 1), ("b", 1)]);
    let data = ImageFolder::scan(&only_val, &FolderOptions::default()).unwrap();
    assert_eq!(data.split_folders, [Split::Validation]);
    assert_eq!(data.split(Split::Validation).len(), 2);
    // Class folders only: no split folders, every image in all_samples.
    let plain = dir.path().join("plain");
    class_folders(&plain, &[("a", 4), ("b", 5)]);
    let data = ImageFolder::scan(&plain, &FolderOptions::default()).unwrap();
    assert!(data.split_folders.is_empty());
    let all = data.all_samples();
    assert_eq!(all.len(), 9);
    assert!(
        all.windows(2)
            .all(|w| (w[0].label, &w[0].path) < (w[1].label, &w[1].path))
    );
}

#[cfg(unix)]
#[test]
fn links_are_followed_loops_and_special_files_skipped() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    class_folders(&root, &[("a", 2)]);
    class_folders(dir.path(), &[("b_elsewhere", 3)]);
    symlink(dir.path().join("b_elsewhere"), root.join("b")).unwrap();
    // A linked file counts; a link back to the root is a loop; a broken link is reported.
    symlink(root.join("a/img_00.png"), root.join("a/linked.png")).unwrap();
    symlink(&root, root.join("a/loop")).unwrap();
    symlink(root.join("nowhere"), root.join("a/broken.png")).unwrap();
    // The same folder twice through two links is read once.
    symlink(dir.path().join("b_elsewhere"), root.join("a/again")).unwrap();
    symlink(dir.path().join("b_elsewhere"), root.join("a/again2")).unwrap();
    #[cfg(target_os = "linux")]
    {
        let fifo = root.join("a/pipe.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let data = ImageFolder::scan(&root, &FolderOptions::default()).unwrap();
    assert_eq!(data.classes, ["a", "b"]);
    assert_eq!(
        data.class_counts(Split::Train)[1] + data.class_counts(Split::Validation)[1],
        3
    );
    // a: 2 images, the linked file, and b_elsewhere's 3 once.
    let a = data.class_counts(Split::Train)[0] + data.class_counts(Split::Validation)[0];
    assert_eq!(a, 6);
    let reason = |name: &str| -> String {
        data.skipped
            .iter()
            .find(|s| s.path.file_name() == Some(OsStr::new(name)))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{name} not skipped: {:?}", data.skipped))
    };
    assert!(reason("loop").contains("symbolic link loop"));
    assert!(reason("broken.png").contains("broken symbolic link"));
    assert!(
        data.skipped
            .iter()
            .any(|s| s.reason.contains("already read")),
        "{:?}",
        data.skipped
    );
    #[cfg(target_os = "linux")]
    assert!(reason("pipe.png").contains("named pipe (FIFO)"));
}

#[test]
fn truncated_jpegs_are_skipped_by_the_header_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    class_folders(root, &[("a", 2), ("b", 2)]);
    let mut jpeg = Vec::new();
    RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8 * 4, y as u8 * 4, 7]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(root.join("a/cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let data = ImageFolder::scan(root, &FolderOptions::default()).unwrap();
    let skipped = data
        .skipped
        .iter()
        .find(|s| s.path.ends_with("a/cut.jpg"))
        .expect("the cut JPEG is skipped");
    assert!(skipped.reason.contains("truncated JPEG"), "{skipped}");
    assert_eq!(data.all_samples().len(), 4);
}
