//! The desktop app driven headless with egui_kittest (no display needed), on the real engine
//! and the bundled model, photos and dataset.
#![cfg(feature = "gui")]
// Tests and benchmarks may panic on failure, print, and call the APIs the library bans
// (reference softmax, image::open on figures, threads for concurrent runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use std::time::{Duration, Instant};

use crate::common::{fashion_mini_features, process};
use convlens::gui::{AppOptions, ConvlensApp, Tab};
use convlens::train::Mode;
use convlens::viz::cam::CamMethod;
use convlens::viz::filters::FilterMethod;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

/// The window sizes every layout test runs at.
const SIZES: [(f32, f32); 2] = [(1024.0, 700.0), (1920.0, 1080.0)];

/// The app with `options` in a window of `size`. Without a workspace in `options`, one that
/// does not exist (no runs), so that no test sees another's runs.
fn harness_with(mut options: AppOptions, size: (f32, f32)) -> Harness<'static, ConvlensApp> {
    options
        .workspace
        .get_or_insert_with(|| process::root().join("gui-no-runs"));
    let app = ConvlensApp::new(options, || {});
    Harness::builder()
        .with_size(egui::vec2(size.0, size.1))
        .build_ui_state(|ui, app: &mut ConvlensApp| app.draw(ui), app)
}

fn harness(tab: Tab) -> Harness<'static, ConvlensApp> {
    harness_sized(tab, (1280.0, 800.0))
}

fn harness_sized(tab: Tab, size: (f32, f32)) -> Harness<'static, ConvlensApp> {
    let options = AppOptions {
        tab: Some(tab),
        ..AppOptions::default()
    };
    harness_with(options, size)
}

/// Asserts that the widgets labelled `label` (at least one: a label and the control it names)
/// lie inside the window.
fn assert_in_window(h: &Harness<'_, ConvlensApp>, label: &str, size: (f32, f32)) {
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(size.0, size.1));
    let rects: Vec<egui::Rect> = h.query_all_by_label(label).map(|n| n.rect()).collect();
    assert!(!rects.is_empty(), "no widget labelled `{label}`");
    for rect in rects {
        assert!(
            window.contains_rect(rect),
            "`{label}` at {rect:?} is outside the {}x{} window",
            size.0,
            size.1
        );
    }
}

/// How many times longer than on an idle machine [`step_until`] waits: the tests share the
/// cores with each other (and CI machines with other jobs), and a bound only matters when the
/// awaited state never comes.
const LOADED_MACHINE: u64 = 5;

/// Steps frames (the UI keeps animating while jobs run) until `done`, or fails after `secs`
/// seconds (an idle machine's generous bound) times [`LOADED_MACHINE`].
fn step_until(
    h: &mut Harness<'_, ConvlensApp>,
    secs: u64,
    what: &str,
    done: impl Fn(&ConvlensApp) -> bool,
) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(secs * LOADED_MACHINE),
            "timed out waiting for {what}; last error: {:?}",
            h.state().last_error()
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
}

fn idle(h: &mut Harness<'_, ConvlensApp>) {
    step_until(h, 120, "the worker to finish", |a| !a.busy());
    h.step();
}

#[test]
fn layer_table_click_shows_that_layers_grid() {
    let mut h = harness(Tab::Model);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    h.step();
    h.get_by_label("1280x7x7");
    h.get_by_label("4,652,008");
    h.get_by_label("blocks.4").click();
    h.step();
    assert_eq!(h.state().selected_layer(), Some("blocks.4"));
    step_until(&mut h, 60, "the blocks.4 grid", |a| {
        a.activation_view().is_some_and(|v| v.layer == "blocks.4")
    });
    let view = h.state().activation_view().unwrap();
    assert_eq!(view.stats.len(), 40, "blocks.4 has 40 channels");
    assert_eq!(view.layout.tile, (28, 28));
    h.get_by_label("Activations").click();
    h.step();
    h.step();
    h.get_by_label_contains("blocks.4: 40 channels");
}

#[test]
fn heatmap_method_change_recomputes() {
    let mut h = harness(Tab::Heatmap);
    step_until(&mut h, 60, "the first heatmap", |a| a.cam_view().is_some());
    idle(&mut h);
    let first = h.state().cam_view().unwrap().clone();
    assert_eq!(first.options.method, CamMethod::GradCam);
    assert_eq!(first.class_name, "Egyptian cat");
    h.get_by_label_contains("Egyptian cat (p = 0.351)");
    h.get_by_label("layercam").click();
    h.step();
    step_until(&mut h, 60, "the layercam heatmap", |a| {
        a.cam_view()
            .is_some_and(|v| v.options.method == CamMethod::LayerCam)
    });
    let second = h.state().cam_view().unwrap();
    assert_ne!(first.images.heatmap, second.images.heatmap);
    // Export the figure on screen: a PNG and its JSON sidecar.
    let out = tempfile::tempdir().unwrap();
    h.state_mut().settings_mut().export.dir = out.path().to_string_lossy().into_owned();
    h.get_by_label("Export PNG").click();
    h.step();
    step_until(&mut h, 60, "the export", |a| {
        a.last_note().is_some_and(|n| n.starts_with("exported"))
    });
    let files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("layercam.png")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("layercam.json")),
        "{files:?}"
    );
    // Another class from the top-5 row.
    h.get_by_label("tiger cat 0.323").click();
    h.step();
    step_until(&mut h, 60, "the tiger cat heatmap", |a| {
        a.cam_view().is_some_and(|v| v.class_name == "tiger cat")
    });
}

#[test]
fn training_from_the_train_tab_fills_curves_and_confusion() {
    fashion_mini_features();
    let out = tempfile::tempdir().unwrap();
    let size = SIZES[0];
    let mut h = harness_sized(Tab::Train, size);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.train.epochs = 3;
        s.train.out_dir = out.path().join("model").to_string_lossy().into_owned();
    }
    h.get_by_label("Start training").click();
    h.step();
    step_until(&mut h, 300, "training", |a| {
        a.train_outcome().is_some() || a.last_error().is_some()
    });
    let app = h.state();
    assert_eq!(app.last_error(), None);
    assert_eq!(app.history().len(), 3, "one point per epoch");
    let outcome = app.train_outcome().unwrap();
    let total: usize = outcome.evaluation.confusion.iter().flatten().sum();
    assert_eq!(total, 80, "the validation split has 80 images");
    // Click a confusion cell: its images are listed.
    let diagonal = outcome.evaluation.confusion[1][1];
    h.step();
    let cells = h.query_all_by_label(&diagonal.to_string()).count();
    assert!(cells >= 1);
    h.get_all_by_label(&diagonal.to_string())
        .next()
        .unwrap()
        .click();
    h.step();
    let ((t, p), n) = h.state().selected_cell().expect("a cell is selected");
    assert_eq!(
        n,
        h.state().train_outcome().unwrap().evaluation.confusion[t][p]
    );
    h.get_by_label_contains("images: true");
    // At 1024x700 the last image of the cell's list can be scrolled into view.
    let (t, p) = h.state().selected_cell().unwrap().0;
    let last = h
        .state()
        .train_outcome()
        .unwrap()
        .evaluation
        .predictions
        .iter()
        .rev()
        .find(|(_, tt, pp, _)| (*tt, *pp) == (t, p))
        .map(|(path, ..)| path.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap();
    step_until(&mut h, 60, "the thumbnails", |a| !a.busy());
    h.run_steps(2);
    h.get_by_label(&last).scroll_to_me();
    h.run_steps(3);
    assert_in_window(&h, &last, size);
}

#[test]
fn the_window_paints_while_a_job_runs() {
    let mut h = harness(Tab::Filters);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.filters.count = 10; // two batches of the ascent (8 + 2): tiles come in twice
        s.filters.steps = 30;
    }
    h.get_by_label("Compute").click();
    h.step();
    // Tiles appear one by one while the window keeps painting: a frame shows some of them.
    let mut partial_seen = false;
    let start = Instant::now();
    loop {
        let (done, total) = h.state().filter_progress();
        assert_eq!(total, 10);
        assert_eq!(h.state().last_error(), None);
        if done == total {
            break;
        }
        partial_seen |= done > 0;
        assert!(
            start.elapsed() < Duration::from_secs(120 * LOADED_MACHINE),
            "filters timed out"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(partial_seen, "tiles arrive one by one");
    h.step();
    h.get_by_label("filter 9");
}

#[test]
fn the_lucid_method_computes_tiles() {
    let mut h = harness(Tab::Filters);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    h.get_by_label("method");
    {
        let s = h.state_mut().settings_mut();
        s.filters.method = FilterMethod::Lucid;
        s.filters.count = 2;
        s.filters.steps = 4;
        s.filters.size = 64;
    }
    h.step();
    h.get_by_label("Compute").click();
    h.step();
    step_until(&mut h, 120, "the lucid tiles", |a| {
        let (done, total) = a.filter_progress();
        done == total || a.last_error().is_some()
    });
    assert_eq!(h.state().last_error(), None);
    assert_eq!(h.state().filter_progress(), (2, 2));
    h.step();
    h.get_by_label("filter 1");
}

#[test]
fn a_model_that_cannot_load_is_shown_not_panicked() {
    let options = AppOptions {
        model: Some("no_such_model".into()),
        tab: Some(Tab::Activations),
        ..AppOptions::default()
    };
    let mut h = harness_with(options, (1280.0, 800.0));
    step_until(&mut h, 30, "the error", |a| a.last_error().is_some());
    idle(&mut h);
    h.get_by_label_contains("no model `no_such_model`");
    // The tabs say what to do instead of "Loading…" forever.
    assert!(h.query_by_label_contains("Loading").is_none());
    h.get_by_label_contains("No model is loaded");
}

#[test]
fn a_resnet_weights_file_opens_with_its_own_layers() {
    // A bare ResNet-18 file (architecture detected): the Lite0 layer in the default settings
    // is replaced by one of its own, and the heatmap uses its CAM layer.
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resnet18_random_fp16.safetensors"
    );
    let options = AppOptions {
        model: Some(model.to_string()),
        tab: Some(Tab::Heatmap),
        ..AppOptions::default()
    };
    let mut h = harness_with(options, (1280.0, 800.0));
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    let info = h.state().model_info().unwrap();
    assert_eq!(info.default_cam_layer, "layer4");
    assert!(info.spatial.contains(&"maxpool".to_string()));
    let layer = h.state().selected_layer().map(str::to_string);
    assert!(
        layer.as_ref().is_some_and(|l| info.spatial.contains(l)),
        "{layer:?}"
    );
    step_until(&mut h, 60, "the heatmap", |a| a.cam_view().is_some());
    idle(&mut h);
    assert_eq!(h.state().cam_view().unwrap().options.layer, "layer4");
    assert!(
        h.state().last_error().is_none(),
        "{:?}",
        h.state().last_error()
    );
}

#[test]
fn launch_opens_on_the_start_view_with_the_bundled_data() {
    for size in SIZES {
        let mut h = harness_with(AppOptions::default(), size);
        step_until(&mut h, 60, "the model and the data", |a| {
            a.model_info().is_some() && a.dataset().is_some()
        });
        h.step();
        assert_eq!(h.state().tab(), Tab::Start);
        for step in ["1. Data", "2. Train", "3. Look inside"] {
            assert_in_window(&h, step, size);
        }
        h.get_by_label_contains("fashion-mini: ");
        assert!(
            !h.get_by_label_contains("Train now")
                .accesskit_node()
                .is_disabled()
        );
        h.get_by_label("Open Filters").click();
        h.step();
        assert_eq!(h.state().tab(), Tab::Filters);
        h.step();
        // The empty state offers the one-click computation.
        h.get_by_label_contains("Compute 16 filters of");
    }
}

#[test]
fn a_filter_grid_wraps_and_its_last_tile_scrolls_into_view() {
    for size in SIZES {
        let mut h = harness_sized(Tab::Filters, size);
        step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
        idle(&mut h);
        {
            let s = h.state_mut().settings_mut();
            s.filters.count = 16;
            s.filters.steps = 2;
            s.filters.size = 32;
        }
        h.state_mut().start_filters();
        step_until(&mut h, 120, "16 tiles", |a| a.filter_progress() == (16, 16));
        idle(&mut h);
        h.get_by_label("filter 15").scroll_to_me();
        h.run_steps(3);
        assert_in_window(&h, "filter 15", size);
        assert_in_window(&h, "filter 0", (size.0, f32::INFINITY));
    }
}

#[test]
fn heatmap_controls_and_overlay_fit_at_1024() {
    for size in SIZES {
        let mut h = harness_sized(Tab::Heatmap, size);
        step_until(&mut h, 60, "the heatmap", |a| a.cam_view().is_some());
        idle(&mut h);
        assert_in_window(&h, "alpha", size);
        h.get_by_label("overlay").scroll_to_me();
        h.run_steps(3);
        assert_in_window(&h, "overlay", size);
    }
}

#[test]
fn a_failed_model_load_keeps_the_previous_model() {
    let mut h = harness(Tab::Activations);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    let before = h.state().model_info().unwrap().key.clone();
    h.state_mut().settings_mut().model = "/no/such/model.safetensors".into();
    h.get_by_label("Load").click();
    h.step();
    step_until(&mut h, 30, "the error", |a| a.last_error().is_some());
    idle(&mut h);
    let app = h.state();
    assert!(
        app.last_error()
            .unwrap()
            .contains("/no/such/model.safetensors")
    );
    assert_eq!(
        app.model_info().unwrap().key,
        before,
        "the working model stays"
    );
    assert!(h.query_by_label_contains("Loading").is_none());
    // The model still works: another layer is computed.
    h.state_mut().settings_mut().activations.cols = 8;
    h.get_by_label("shared scale").click();
    h.step();
    step_until(&mut h, 60, "a new grid", |a| {
        a.activation_view().is_some_and(|v| v.options.shared_scale)
    });
}

#[test]
fn a_bad_data_folder_keeps_the_dataset_and_no_dataset_disables_training() {
    let mut h = harness(Tab::Train);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    let root = h.state().dataset().unwrap().root.clone();
    h.state_mut().settings_mut().data_dir = "/no/such/folder".into();
    h.get_by_label("Scan").click();
    h.step();
    step_until(&mut h, 30, "the error", |a| a.last_error().is_some());
    idle(&mut h);
    assert!(h.state().last_error().unwrap().contains("/no/such/folder"));
    assert_eq!(h.state().dataset().unwrap().root, root, "the dataset stays");
    assert!(
        !h.get_by_label("Start training")
            .accesskit_node()
            .is_disabled()
    );

    // Started on a folder that does not scan: no dataset, so no training.
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        r#"{"data_dir": "/no/such/folder", "tab": "Train"}"#,
    )
    .unwrap();
    let options = AppOptions {
        settings_path: Some(settings),
        ..AppOptions::default()
    };
    let mut h = harness_with(options, (1280.0, 800.0));
    step_until(&mut h, 60, "the error", |a| a.last_error().is_some());
    idle(&mut h);
    assert!(h.state().dataset().is_none());
    assert!(
        h.get_by_label("Start training")
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_label_contains("No dataset");
}

#[test]
fn cancelling_filters_leaves_no_spinner_and_no_error() {
    let mut h = harness(Tab::Filters);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.filters.count = 16;
        s.filters.steps = 400;
    }
    h.get_by_label("Compute").click();
    h.step();
    step_until(&mut h, 60, "ascent progress", |a| {
        a.status_line()
            .is_some_and(|l| l.contains("ascent steps") && l.contains(" of 800"))
    });
    h.get_by_label("Cancel filters").click();
    h.step();
    idle(&mut h);
    let app = h.state();
    assert_eq!(app.last_error(), None);
    assert_eq!(app.last_note(), Some("filters cancelled"));
    assert_eq!(app.status_line(), None);
    assert!(app.filter_progress().0 < 16);
    h.get_by_label("ready");
    assert!(h.query_all_by_label("not computed").count() > 0);
    // A later job shows no stale message as an error.
    h.get_by_label("dismiss").click();
    h.step();
    assert!(h.state().last_note().is_none());
}

#[test]
fn cancelling_training_leaves_no_spinner_and_no_error() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(Tab::Train);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    {
        // Every epoch through the base (augmented images, no feature cache), so that the second
        // lasts seconds on any machine and a frame shows it running (cached features would
        // train 200 epochs between two frames).
        let s = h.state_mut().settings_mut();
        s.train.mode = Mode::ExtractAugment;
        s.train.epochs = 200;
        s.train.out_dir = out.path().join("model").to_string_lossy().into_owned();
    }
    h.get_by_label("Start training").click();
    h.step();
    step_until(&mut h, 120, "the first epochs", |a| {
        a.status_line()
            .is_some_and(|l| l.contains("epoch 2 of 200, batch"))
    });
    h.get_by_label("Cancel training").click();
    h.step();
    idle(&mut h);
    let app = h.state();
    assert_eq!(app.last_error(), None);
    assert!(
        app.last_note()
            .is_some_and(|n| n.starts_with("training cancelled")),
        "{:?}",
        app.last_note()
    );
    assert_eq!(app.status_line(), None);
    h.get_by_label("ready");
    assert!(
        !h.get_by_label("Start training")
            .accesskit_node()
            .is_disabled()
    );
}

#[test]
fn training_modes_are_explained_and_fields_that_do_not_apply_are_disabled() {
    let mut h = harness(Tab::Train);
    h.step();
    let disabled = |h: &Harness<'_, ConvlensApp>, label: &str| {
        h.query_all_by_label(label)
            .any(|n| n.accesskit_node().is_disabled())
    };
    h.get_by_label_contains("only a small head is trained");
    assert!(disabled(&h, "unfreeze (stages)"));
    assert!(disabled(&h, "fine-tune epochs"));
    h.state_mut().settings_mut().train.mode = Mode::Finetune;
    h.step();
    h.get_by_label_contains("unfrozen and trained at a low learning rate");
    assert!(!disabled(&h, "unfreeze (stages)"));
    assert!(!disabled(&h, "fine-tune epochs"));
}

/// Steps until the worker is idle and `done` holds.
fn settle(h: &mut Harness<'_, ConvlensApp>, what: &str, done: impl Fn(&ConvlensApp) -> bool) {
    step_until(h, 60, what, |a| !a.busy() && done(a));
    h.run_steps(2);
}

#[test]
fn a_trained_run_is_listed_survives_a_restart_and_can_be_compared_renamed_and_deleted() {
    fashion_mini_features();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let options = AppOptions {
        settings_path: Some(tmp.path().join("settings.json")),
        tab: Some(Tab::Train),
        workspace: Some(runs.clone()),
        ..AppOptions::default()
    };
    let size = SIZES[0];
    let mut h = harness_with(options.clone(), size);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    h.get_by_label_contains("No runs yet");
    h.state_mut().settings_mut().train.epochs = 2;
    h.get_by_label("Start training").click();
    h.step();
    step_until(&mut h, 300, "the run", |a| {
        a.train_outcome().is_some() || a.last_error().is_some()
    });
    settle(&mut h, "the list", |a| a.runs().len() == 1);
    assert_eq!(h.state().last_error(), None);
    let run = h.state().runs()[0].clone();
    assert_eq!(run.mode, Some(Mode::Extract));
    assert_eq!(run.epochs, 2);
    assert!(run.best_val_accuracy.is_some() && run.problem.is_none());
    assert!(runs.join(&run.name).join("evaluation.json").is_file());
    assert_eq!(h.state().shown_run(), Some(run.name.as_str()));
    // Listed, and the title of the run on screen.
    assert_eq!(h.query_all_by_label(&run.name).count(), 2);
    drop(h);

    // A restart with the same settings and workspace reselects the run, read from disk.
    let mut h = harness_with(options, size);
    settle(&mut h, "the run reselected", |a| {
        a.shown_run() == Some(run.name.as_str())
    });
    assert_eq!(h.state().runs(), std::slice::from_ref(&run));
    let kept = h.state().shown_history().kept.expect("a kept epoch");
    assert_eq!(h.state().shown_history().epochs.len(), 2);
    let marker = format!("kept (epoch {})", kept + 1);
    assert_eq!(h.query_all_by_label(&marker).count(), 2, "in both legends");
    h.get_by_label_contains(&format!("kept: epoch {}", kept + 1));
    h.get_by_label_contains("confusion matrix");

    // A second run (a copy made outside the app) is overlaid.
    let copy = runs.join("copy-run");
    std::fs::create_dir(&copy).unwrap();
    for file in std::fs::read_dir(runs.join(&run.name)).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
    }
    h.get_by_label("Refresh").click();
    settle(&mut h, "two runs", |a| a.runs().len() == 2);
    h.get_by_role_and_label(egui::accesskit::Role::ComboBox, "compare with")
        .click();
    h.run_steps(2);
    h.query_all_by_label("copy-run").last().unwrap().click();
    settle(&mut h, "the overlay", |a| {
        a.compared_run() == Some("copy-run")
    });
    assert_eq!(h.state().shown_run(), Some(run.name.as_str()));
    h.get_by_label("copy-run: validation accuracy");

    // Renamed: the list shows the new name; deleted after a confirmation.
    let row = |h: &Harness<'_, ConvlensApp>| {
        h.state()
            .runs()
            .iter()
            .position(|r| r.name == run.name)
            .unwrap()
    };
    h.get_all_by_label("Rename…").nth(row(&h)).unwrap().click();
    h.run_steps(2);
    let field = format!("name shown for {}", run.name);
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, &field)
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, &field)
        .type_text("baseline");
    h.run_steps(1);
    h.get_by_label("Save name").click();
    settle(&mut h, "the new name", |a| {
        a.runs()
            .iter()
            .any(|r| r.display_name.as_deref() == Some("baseline"))
    });
    assert_eq!(h.query_all_by_label("baseline").count(), 2);
    h.get_all_by_label("Delete…").nth(row(&h)).unwrap().click();
    h.run_steps(2);
    h.get_by_label_contains("Delete run baseline and its model?");
    h.get_by_label("Delete run").click();
    settle(&mut h, "the deletion", |a| a.runs().len() == 1);
    assert!(!runs.join(&run.name).exists());
    assert!(copy.join("model.json").is_file(), "the other run stays");
    assert_eq!(h.state().shown_run(), None);
    assert_eq!(h.state().last_error(), None);
}

/// The app on `tab` with a model trained briefly (extract, one epoch) into a temporary folder
/// (returned, so it lives as long as the test).
fn with_trained_model(tab: Tab) -> (Harness<'static, ConvlensApp>, tempfile::TempDir) {
    fashion_mini_features();
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(tab);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.train.mode = Mode::Extract;
        s.train.epochs = 1;
        s.train.out_dir = out.path().join("model").to_string_lossy().into_owned();
    }
    h.state_mut().start_training();
    step_until(&mut h, 300, "training", |a| {
        a.train_outcome().is_some() || a.last_error().is_some()
    });
    assert_eq!(h.state().last_error(), None);
    assert!(h.state().trained_model().is_some());
    idle(&mut h);
    (h, out)
}

/// Picks `choice` (a label part) in the `nth` combo box labelled "model".
fn choose_model(h: &mut Harness<'_, ConvlensApp>, nth: usize, choice: &str) {
    use egui::accesskit::Role;
    h.get_all_by_role_and_label(Role::ComboBox, "model")
        .nth(nth)
        .expect("a model chooser")
        .click();
    h.run_steps(2);
    h.get_all_by_label_contains(choice)
        .last()
        .expect("the choice in the open list")
        .click();
    h.run_steps(2);
}

#[test]
fn predict_lists_the_bundled_photos_and_switches_between_trained_and_base() {
    let (mut h, _out) = with_trained_model(Tab::Predict);
    let classes = h.state().dataset().unwrap().classes.clone();
    h.run_steps(2);
    // The list starts with the bundled photos; the answers come in that order, by default
    // from the model trained in this session: the dataset's classes.
    h.get_all_by_label("Predict").last().unwrap().click();
    step_until(&mut h, 60, "the predictions", |a| {
        !a.predictions().is_empty() && !a.busy()
    });
    let mut bundled: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    bundled.sort();
    let top = |a: &ConvlensApp| -> Vec<String> {
        a.predictions()
            .iter()
            .map(|(_, r)| r.as_ref().expect("classified")[0].class.clone())
            .collect()
    };
    let listed: Vec<_> = h
        .state()
        .predictions()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(listed, bundled);
    assert!(
        top(h.state()).iter().all(|c| classes.contains(c)),
        "{:?}",
        top(h.state())
    );
    // The base model answers with its own (ImageNet) classes, for the same photos.
    choose_model(&mut h, 0, "base: ");
    step_until(&mut h, 60, "the base model's predictions", |a| {
        !a.busy() && top(a).iter().all(|c| !classes.contains(c))
    });
    assert_eq!(h.state().predictions().len(), bundled.len());
    assert!(
        top(h.state()).contains(&"espresso".to_string()),
        "{:?}",
        top(h.state())
    );
    // Each answer shows its photo's thumbnail once decoded (no spinner left).
    idle(&mut h);
    h.run_steps(3);
    assert_eq!(h.state().last_error(), None);
}

#[test]
fn predict_with_an_empty_list_says_what_to_do() {
    let mut h = harness(Tab::Predict);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    // The list starts with the bundled photos; emptied, Predict says what to do.
    let list = egui::accesskit::Role::MultilineTextInput;
    assert!(
        h.get_by_role(list)
            .value()
            .is_some_and(|v| v.contains("chelsea.png")),
        "the bundled photos are listed"
    );
    h.get_by_role(list).focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.key_press(egui::Key::Backspace);
    h.run_steps(2);
    assert_eq!(h.get_by_role(list).value().as_deref(), Some(""));
    h.get_all_by_label("Predict").last().unwrap().click();
    h.run_steps(2);
    // Said on the tab under the buttons (and in the message log).
    assert!(
        h.query_all_by_label_contains("list at least one image file")
            .count()
            >= 1
    );
    assert!(h.state().predictions().is_empty());
}

#[test]
fn heatmap_rows_have_their_own_model_and_class() {
    let (mut h, _out) = with_trained_model(Tab::Heatmap);
    let classes = h.state().dataset().unwrap().classes.clone();
    step_until(&mut h, 120, "both heatmaps", |a| {
        a.cam_view().is_some() && a.compared_cam_view().is_some() && !a.busy()
    });
    h.run_steps(2);
    // The rows are named by kind: the loaded base model, the model trained in this session.
    assert!(h.query_all_by_label_contains("base: ").count() >= 1);
    assert!(h.query_all_by_label_contains("(this session)").count() >= 1);
    let base_class = h.state().cam_view().unwrap().class;
    let trained = h.state().compared_cam_view().unwrap().clone();
    assert!(
        classes.contains(&trained.class_name),
        "{}",
        trained.class_name
    );
    // The trained row's class buttons change its class only.
    let other = trained
        .top5
        .iter()
        .find(|c| c.index != trained.class)
        .expect("a second class")
        .clone();
    h.get_by_label(&format!("{} {:.3}", other.class, other.prob))
        .click();
    h.run_steps(2);
    step_until(&mut h, 120, "the trained row's new class", |a| {
        !a.busy()
            && a.compared_cam_view()
                .is_some_and(|v| v.class == other.index)
    });
    assert_eq!(h.state().cam_view().unwrap().class, base_class);
    assert_eq!(h.state().last_error(), None);
}

#[test]
fn run_starts_the_tabs_job_once_the_model_is_in() {
    let options = AppOptions {
        tab: Some(Tab::Predict),
        run: true,
        ..AppOptions::default()
    };
    let mut h = harness_with(options, (1280.0, 800.0));
    assert!(h.state().run_pending());
    step_until(&mut h, 60, "the bundled photos' predictions", |a| {
        !a.run_pending() && !a.predictions().is_empty() && !a.busy()
    });
    assert_eq!(h.state().predictions().len(), 4, "the four bundled photos");
    assert_eq!(h.state().last_error(), None);
}
