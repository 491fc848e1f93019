//! The desktop app driven headless with egui_kittest (no display needed), on the real engine
//! and the bundled model, photos and dataset.
#![cfg(feature = "gui")]

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
    let class = outcome.evaluation.classes[1].clone();
    h.step();
    h.get_by_label(&format!("true {class}, predicted {class}: {diagonal}"))
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
    for size in SIZES {
        resize(&mut h, size);
        h.get_by_label(&last).scroll_to_me();
        h.run_steps(3);
        assert_in_window(&h, &last, size);
    }
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
    for size in SIZES {
        let options = AppOptions {
            model: Some("no_such_model".into()),
            tab: Some(Tab::Activations),
            ..AppOptions::default()
        };
        let mut h = harness_with(options, size);
        step_until(&mut h, 30, "the error", |a| a.last_error().is_some());
        idle(&mut h);
        h.get_by_label_contains("no model `no_such_model`");
        // The tabs say what to do instead of "Loading…" forever.
        assert!(h.query_by_label_contains("Loading").is_none());
        assert_reachable(&mut h, "No model is loaded", size);
    }
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
    for size in SIZES {
        failed_model_load_keeps_the_previous_model(size);
    }
}

fn failed_model_load_keeps_the_previous_model(size: (f32, f32)) {
    let mut h = harness_sized(Tab::Activations, size);
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

    // A restart with the same settings and workspace (in the other window size) reselects
    // the run, read from disk.
    let mut h = harness_with(options, SIZES[1]);
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
    with_model_trained_as(tab, Mode::Extract)
}

/// [`with_trained_model`] trained in `mode` (a fine-tuned model computes features of its own,
/// none of them cached yet; a head on the frozen base shares the base's cached features).
fn with_model_trained_as(
    tab: Tab,
    mode: Mode,
) -> (Harness<'static, ConvlensApp>, tempfile::TempDir) {
    fashion_mini_features();
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(tab);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.train.mode = mode;
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

/// The heatmap's class search: typing part of a class name lists the matching ImageNet classes
/// (their index beside), and clicking one recomputes the row for that class.
#[test]
fn the_class_search_finds_a_class_and_the_map_follows_it() {
    use egui::accesskit::Role;
    let mut h = harness(Tab::Heatmap);
    settle(&mut h, "the heatmap", |a| a.cam_view().is_some());
    assert_eq!(
        h.state().cam_view().unwrap().class,
        285,
        "Egyptian cat first"
    );
    h.get_by_role_and_label(Role::TextInput, "any class:")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "any class:")
        .type_text("retriever");
    h.run_steps(2);
    // ImageNet's five retrievers, in index order; nothing else matches.
    let hits: Vec<String> = h
        .query_all_by_label_contains("retriever (")
        .filter_map(|n| n.accesskit_node().label())
        .collect();
    assert_eq!(
        hits,
        [
            "flat-coated retriever (205)",
            "curly-coated retriever (206)",
            "golden retriever (207)",
            "Labrador retriever (208)",
            "Chesapeake Bay retriever (209)"
        ],
        "{hits:?}"
    );
    h.get_by_label("golden retriever (207)").click();
    h.run_steps(2);
    settle(&mut h, "the golden retriever's map", |a| {
        a.cam_view().is_some_and(|v| v.class == 207)
    });
    assert_eq!(h.state().cam_view().unwrap().class_name, "golden retriever");
    assert_eq!(h.state().last_error(), None);
}

/// A path typed into the Image field (no file dialog needed) is shown with "Show": the
/// heatmap follows the typed image.
#[test]
fn a_typed_image_path_is_shown() {
    use egui::accesskit::Role;
    let mut h = harness(Tab::Heatmap);
    settle(&mut h, "the heatmap", |a| a.cam_view().is_some());
    assert_eq!(h.state().cam_view().unwrap().class, 285, "chelsea first");
    let coffee = common::repo("assets/images/coffee.png");
    h.state_mut().settings_mut().image.clear();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "Image").focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "Image")
        .type_text(coffee.to_str().unwrap());
    h.run_steps(1);
    h.get_by_label("Show").click();
    h.run_steps(2);
    settle(&mut h, "the coffee's heatmap", |a| {
        a.cam_view().is_some_and(|v| v.class_name == "espresso")
    });
    assert_eq!(h.state().settings().image, coffee.to_string_lossy());
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

// --- gui-workflow ---

use crate::common;

use convlens::data::folder::Split;
use convlens::workspace::RunSummary;
use egui::accesskit::Role;

/// Options for an app whose settings and runs live in `dir`, so a second harness on the same
/// `dir` is a restart.
fn options_in(dir: &std::path::Path) -> AppOptions {
    AppOptions {
        settings_path: Some(dir.join("settings.json")),
        workspace: Some(dir.join("runs")),
        ..AppOptions::default()
    }
}

/// In `dir`: a small copy of fashion-mini (4 training and 2 validation images per class) made
/// the data folder of the settings, and one epoch of extract trained on it from the Train tab
/// and saved as a run. Returns the harness and the run.
fn train_small_run(dir: &std::path::Path) -> (Harness<'static, ConvlensApp>, RunSummary) {
    let data = dir.join("data");
    common::small_dataset(&data, 4, 2);
    let settings = serde_json::json!({ "data_dir": data, "tab": "Train" });
    std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
    let mut h = harness_with(options_in(dir), SIZES[0]);
    settle(&mut h, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    assert_eq!(h.state().dataset().unwrap().root, data);
    h.state_mut().settings_mut().train.epochs = 1;
    h.state_mut().start_training();
    step_until(&mut h, 300, "the run", |a| {
        a.train_outcome().is_some() || a.last_error().is_some()
    });
    settle(&mut h, "the run listed", |a| a.runs().len() == 1);
    assert_eq!(h.state().last_error(), None);
    let run = h.state().runs()[0].clone();
    assert!(run.problem.is_none() && run.best_val_accuracy.is_some());
    (h, run)
}

/// The names of the gallery's thumbnails on screen (`FILE (CLASS, SPLIT)`), once the worker
/// has decoded them.
fn gallery_names(h: &mut Harness<'_, ConvlensApp>) -> Vec<String> {
    let names = |h: &Harness<'_, ConvlensApp>| -> Vec<String> {
        h.query_all_by_role(Role::Image)
            .filter_map(|n| n.accesskit_node().label())
            .filter(|l| l.ends_with(')'))
            .collect()
    };
    let start = Instant::now();
    while names(h).is_empty() || h.state().busy() {
        assert!(start.elapsed() < Duration::from_secs(60), "no thumbnails");
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.run_steps(2);
    names(h)
}

/// The gallery name of each image of `split`.
fn split_names(data: &convlens::data::folder::ImageFolder, split: Split) -> Vec<String> {
    data.split(split)
        .iter()
        .map(|x| {
            let file = x.path.file_name().unwrap().to_string_lossy();
            format!("{file} ({}, {split})", data.classes[x.label])
        })
        .collect()
}

#[test]
fn a_saved_run_is_offered_in_a_new_sessions_choosers_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, run) = train_small_run(tmp.path());
    let classes = h.state().dataset().unwrap().classes.clone();
    drop(h);

    // A new session on the same folders: nothing trained in it, the run is in the workspace.
    let options = AppOptions {
        tab: Some(Tab::Predict),
        ..options_in(tmp.path())
    };
    let mut h = harness_with(options, SIZES[0]);
    settle(&mut h, "the model and the runs", |a| {
        a.model_info().is_some() && a.runs().len() == 1
    });
    assert_eq!(h.state().trained_model(), None);
    let base = h.state().model_info().unwrap().key.clone();
    let label = format!(
        "run: {} (extract, val. acc. {:.3})",
        run.name,
        run.best_val_accuracy.unwrap()
    );
    choose_model(&mut h, 0, &label);
    h.get_all_by_label("Predict").last().unwrap().click();
    let top = |a: &ConvlensApp| -> Vec<String> {
        a.predictions()
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|top| top[0].class.clone()))
            .collect()
    };
    step_until(&mut h, 120, "the run's predictions", |a| {
        !a.busy() && !a.predictions().is_empty()
    });
    // The run answers with the dataset's classes, for every bundled photo; the loaded model
    // stays the base model.
    assert_eq!(top(h.state()).len(), 4, "{:?}", h.state().predictions());
    assert!(
        top(h.state()).iter().all(|c| classes.contains(c)),
        "{:?}",
        top(h.state())
    );
    assert_eq!(h.state().model_info().unwrap().key, base);

    // The Heatmap tab offers it too, and explains the dataset's classes through it.
    h.state_mut().settings_mut().tab = Tab::Heatmap;
    settle(&mut h, "the base model's heatmap", |a| {
        a.cam_view().is_some()
    });
    choose_model(&mut h, 0, &label);
    settle(&mut h, "the run's heatmap", |a| {
        a.cam_view()
            .is_some_and(|v| classes.contains(&v.class_name))
    });
    assert_eq!(h.state().model_info().unwrap().key, base);

    // Opened as the loaded model from the Train tab, it is named "trained", not "base".
    h.state_mut().settings_mut().tab = Tab::Train;
    settle(&mut h, "the run shown", |a| {
        a.shown_run() == Some(run.name.as_str())
    });
    h.get_by_label("Open as model").click();
    settle(&mut h, "the run loaded", |a| {
        a.model_info().is_some_and(|m| m.key != base)
    });
    assert!(h.state().model_info().unwrap().trained);
    h.state_mut().settings_mut().tab = Tab::Heatmap;
    settle(&mut h, "its heatmap", |a| a.cam_view().is_some());
    h.get_by_label_contains(&format!("trained: {} — ", run.name));
    assert_eq!(h.state().last_error(), None);
}

#[test]
fn a_restart_restores_model_data_image_tab_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut h, run) = train_small_run(tmp.path());
    let model = h.state().model_info().unwrap().key.clone();
    let data = h.state().dataset().unwrap().clone();
    // An image picked in the gallery, the run chosen for the heatmap, the Data tab.
    h.state_mut().settings_mut().tab = Tab::Data;
    h.run_steps(2);
    let first = gallery_names(&mut h)[0].clone();
    h.get_by_label(&first).click();
    h.run_steps(2);
    let image = h.state().settings().image.clone();
    assert!(image.starts_with(data.root.to_str().unwrap()), "{image}");
    let run_key = run.path.to_string_lossy().into_owned();
    h.state_mut().settings_mut().heatmap.rows[0].model = Some(run_key.clone());
    h.run_steps(2);
    drop(h);

    let mut h = harness_with(options_in(tmp.path()), SIZES[0]);
    settle(&mut h, "the restored session", |a| {
        a.model_info().is_some() && a.dataset().is_some() && a.shown_run().is_some()
    });
    let app = h.state();
    assert_eq!(app.tab(), Tab::Data);
    assert_eq!(app.model_info().unwrap().key, model);
    assert_eq!(app.dataset().unwrap().root, data.root);
    assert_eq!(app.settings().image, image);
    assert_eq!(app.shown_run(), Some(run.name.as_str()));
    assert_eq!(app.shown_history().epochs.len(), 1, "its curves");
    assert_eq!(
        app.settings().heatmap.rows[0].model.as_deref(),
        Some(run_key.as_str())
    );
    assert_eq!(app.last_error(), None);
    h.get_by_label(&format!("current image: {first}"));
    drop(h);

    // The run and the image gone meanwhile: the chooser falls back to the loaded model, the
    // image to the bundled one, each said in the log.
    std::fs::remove_dir_all(&run.path).unwrap();
    std::fs::remove_file(&image).unwrap();
    let mut h = harness_with(options_in(tmp.path()), SIZES[0]);
    settle(&mut h, "the runs listed", |a| {
        a.model_info().is_some() && a.settings().heatmap.rows[0].model.is_none()
    });
    let app = h.state();
    assert_eq!(app.shown_run(), None);
    assert!(app.settings().image.ends_with("chelsea.png"));
    let log: Vec<&str> = app.messages().iter().map(|m| m.text.as_str()).collect();
    for expected in [
        "the last session's image",
        "Heatmap row 1: the run",
        "shown last time is no longer in the workspace",
    ] {
        assert!(
            log.iter().any(|m| m.contains(expected)),
            "{expected}: {log:?}"
        );
    }
}

#[test]
fn the_gallery_filters_by_split_and_a_click_keeps_the_tab() {
    for size in SIZES {
        let mut h = harness_sized(Tab::Data, size);
        settle(&mut h, "the data", |a| a.dataset().is_some());
        let data = h.state().dataset().unwrap().clone();
        let total: usize = Split::ALL.iter().map(|&s| data.split(s).len()).sum();
        h.get_by_label(&format!("showing {total} of {total} images"));
        let all = gallery_names(&mut h);
        assert!(all.iter().any(|n| n.ends_with(", train)")), "{all:?}");

        let validation = data.split(Split::Validation).len();
        h.get_by_role_and_label(Role::ComboBox, "split").click();
        h.run_steps(2);
        h.get_all_by_label(&format!("validation: {validation} images"))
            .last()
            .unwrap()
            .click();
        h.run_steps(2);
        h.get_by_label(&format!("showing {validation} of {total} images"));
        let shown = gallery_names(&mut h);
        let expected = split_names(&data, Split::Validation);
        assert!(!shown.is_empty());
        assert!(
            shown.iter().all(|n| expected.contains(n)),
            "{shown:?} are not all validation images"
        );
        // The thumbnails on screen are the first of the split, in its order.
        assert_eq!(shown, expected[..shown.len()]);

        // A click makes the image current and stays on the Data tab.
        let before = h.state().settings().image.clone();
        let pick = shown[shown.len() / 2].clone();
        h.get_by_label(&pick).click();
        h.run_steps(2);
        let index = expected.iter().position(|n| *n == pick).unwrap();
        let path = &data.split(Split::Validation)[index].path;
        assert_eq!(h.state().tab(), Tab::Data);
        assert_ne!(h.state().settings().image, before);
        assert_eq!(h.state().settings().image, path.to_string_lossy());
        h.get_by_label(&format!("current image: {pick}"));
        h.get_by_label("Open in Heatmap").click();
        h.run_steps(2);
        assert_eq!(h.state().tab(), Tab::Heatmap);
    }
}

// --- gui-flows ---

/// Resizes the window to `size` and lets the layout follow.
/// A box dragged with the primary button: pressed at `from`, one jump to `to` (the drag is
/// recognised there), released there.
fn drag_box(h: &mut Harness<'_, ConvlensApp>, from: egui::Pos2, to: egui::Pos2) {
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    h.hover_at(to);
    h.step();
    h.event(egui::Event::PointerButton {
        pos: to,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(2);
}

fn resize(h: &mut Harness<'_, ConvlensApp>, size: (f32, f32)) {
    h.set_size(egui::vec2(size.0, size.1));
    h.run_steps(3);
}

/// Scrolls the first widget whose label contains `part` into view and asserts that it then
/// lies inside the window.
fn assert_reachable(h: &mut Harness<'_, ConvlensApp>, part: &str, size: (f32, f32)) {
    h.get_all_by_label_contains(part)
        .next()
        .unwrap_or_else(|| panic!("no widget labelled `…{part}…`"))
        .scroll_to_me();
    h.run_steps(3);
    let rect = h.get_all_by_label_contains(part).next().unwrap().rect();
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(size.0, size.1));
    assert!(
        window.contains_rect(rect),
        "`{part}` at {rect:?} is outside the {}x{} window",
        size.0,
        size.1
    );
}

#[test]
fn a_misclassified_image_opens_the_heatmaps_of_its_true_and_predicted_class() {
    let (mut h, _out) = with_trained_model(Tab::Train);
    let trained = h.state().trained_model().unwrap().to_string();
    let base = h.state().model_info().unwrap().key.clone();
    let e = h.state().train_outcome().unwrap().evaluation.clone();
    // One error of the trained model (a one-epoch head on fashion-mini makes some).
    let (path, t, p, prob) = e
        .predictions
        .iter()
        .find(|(_, t, p, _)| t != p)
        .cloned()
        .expect("a misclassified validation image");
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let cell = format!(
        "true {}, predicted {}: {}",
        e.classes[t], e.classes[p], e.confusion[t][p]
    );
    for size in SIZES {
        resize(&mut h, size);
        h.state_mut().settings_mut().tab = Tab::Train;
        h.run_steps(2);
        assert_reachable(&mut h, &cell, size);
        h.get_by_label(&cell).click();
        h.run_steps(2);
        settle(&mut h, "the cell's thumbnails", |_| true);
        assert_reachable(&mut h, &name, size);
        h.get_by_label(&name).click();
        h.run_steps(2);
        assert_eq!(h.state().tab(), Tab::Heatmap);
        settle(&mut h, "three heatmaps", |a| {
            let rows = a.cam_rows();
            rows.len() == 3 && rows.iter().all(|(v, _)| v.is_some())
        });
        assert_eq!(h.state().last_error(), None);
        let rows: Vec<_> = h
            .state()
            .cam_rows()
            .into_iter()
            .map(|(v, role)| (v.unwrap().clone(), role))
            .collect();
        let [
            (truth, truth_role),
            (predicted, predicted_role),
            (top, top_role),
        ] = &rows[..]
        else {
            unreachable!()
        };
        assert_eq!(truth.image, path);
        assert_eq!((truth.model.as_str(), truth.class), (trained.as_str(), t));
        assert_eq!(truth.class_name, e.classes[t]);
        assert_eq!(*truth_role, Some("true class"));
        assert_eq!(
            (predicted.model.as_str(), predicted.class),
            (trained.as_str(), p)
        );
        assert_eq!(*predicted_role, Some("predicted class"));
        // The map's class score is the one the evaluation gave the prediction.
        assert!(
            (predicted.prob - prob).abs() < 0.02,
            "{} vs {prob}",
            predicted.prob
        );
        assert!(
            truth.prob < predicted.prob,
            "the model preferred the wrong class"
        );
        assert_eq!(top.model, base);
        assert_eq!(*top_role, Some("top class"));
        // Each row is labelled with its model, class and score, and can be scrolled to.
        for (view, role) in &rows {
            let label = format!(
                "{}: {} (p = {:.3})",
                role.unwrap(),
                view.class_name,
                view.prob
            );
            assert_reachable(&mut h, &label, size);
        }
        assert_eq!(
            h.query_all_by_label_contains("(this session) — ").count(),
            2
        );
        let top_title = h.get_by_label_contains(" — top class: ").value();
        assert!(top_title.unwrap().starts_with("base: "));
        // Each row has its colour bar.
        assert_eq!(h.query_all_by_label("colour scale").count(), 3);
        assert_reachable(&mut h, "colour scale", size);
    }
}

#[test]
fn export_all_writes_safe_unique_names_and_never_overwrites() {
    let out = tempfile::tempdir().unwrap();
    let mut h = harness_sized(Tab::Heatmap, SIZES[0]);
    step_until(&mut h, 60, "the heatmap", |a| a.cam_view().is_some());
    idle(&mut h);
    h.state_mut().settings_mut().export.dir = out.path().to_string_lossy().into_owned();
    let files = || -> Vec<(String, Vec<u8>)> {
        let mut f: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        f.sort();
        f
    };
    let mut before: Vec<(String, Vec<u8>)> = Vec::new();
    for (round, size) in SIZES.into_iter().enumerate() {
        resize(&mut h, size);
        assert_reachable(&mut h, "Export all", size);
        h.get_by_label("Export all").click();
        h.run_steps(2);
        // Five methods, Score-CAM among them (its forward passes take a while).
        step_until(&mut h, 300, "the export", |a| {
            !a.busy() && a.last_note().is_some_and(|n| n.starts_with("exported"))
        });
        assert_eq!(h.state().last_error(), None);
        let after = files();
        // One figure and one sidecar per method, each round; the first round's untouched.
        assert_eq!(
            after.len(),
            2 * CamMethod::ALL.len() * (round + 1),
            "{after:?}"
        );
        for f in &before {
            assert!(after.contains(f), "{} was changed", f.0);
        }
        for (name, _) in &after {
            let stem = name.trim_end_matches(".png").trim_end_matches(".json");
            assert!(
                stem.starts_with("chelsea_efficientnet_lite0_Egyptian_cat_"),
                "{name}"
            );
            assert!(
                stem.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !stem.contains("__"),
                "{name}"
            );
        }
        for m in CamMethod::ALL {
            let method = m.name().replace('+', "p");
            let png = if round == 0 {
                format!("chelsea_efficientnet_lite0_Egyptian_cat_{method}.png")
            } else {
                format!("chelsea_efficientnet_lite0_Egyptian_cat_{method}_2.png")
            };
            assert!(after.iter().any(|(n, _)| *n == png), "{png} in {after:?}");
            // Every file written is named in the message log.
            let written = out.path().join(&png).display().to_string();
            assert!(
                h.state()
                    .messages()
                    .iter()
                    .any(|m| m.text == format!("wrote {written}")),
                "{written} not in the log"
            );
        }
        before = after;
    }
}

/// Starts a job with `start`, waits until `started` says it runs, clicks the status bar's
/// Cancel and checks the window is left consistent: no job and no spinner ("ready"), no
/// error, the cancel said as a note.
/// `running` checks the window while the job runs.
fn cancel_leaves_no_trace(
    h: &mut Harness<'_, ConvlensApp>,
    what: &str,
    start: impl FnOnce(&mut Harness<'_, ConvlensApp>),
    started: impl Fn(&ConvlensApp) -> bool,
    running: impl FnOnce(&Harness<'_, ConvlensApp>),
) {
    start(h);
    step_until(h, 60, what, &started);
    h.step();
    running(h);
    h.get_by_label("Cancel").click();
    h.run_steps(2);
    idle(h);
    h.run_steps(2);
    let app = h.state();
    assert_eq!(app.last_error(), None, "{what}");
    assert_eq!(app.status_line(), None, "{what}");
    assert_eq!(app.last_note(), Some(format!("{what} cancelled").as_str()));
    h.get_by_label("ready");
}

#[test]
fn cancelling_a_heatmap_activations_or_predictions_leaves_no_spinner_and_no_error() {
    for size in SIZES {
        // Score-CAM: batches done of total with the time left, the old map dimmed meanwhile.
        let mut h = harness_sized(Tab::Heatmap, size);
        step_until(&mut h, 60, "the heatmap", |a| a.cam_view().is_some());
        idle(&mut h);
        let before = h.state().cam_view().unwrap().images.heatmap.clone();
        cancel_leaves_no_trace(
            &mut h,
            "heatmap",
            |h| {
                h.get_by_label("scorecam").click();
                h.run_steps(1);
            },
            |a| {
                a.status_line().is_some_and(|l| {
                    l.starts_with("Score-CAM batches: ")
                        && l.contains(" of ")
                        && l.contains(" left")
                })
            },
            |h| {
                h.get_by_label_contains("the maps shown are the previous ones");
                h.get_by_label("Cancel heatmap");
                assert!(h.state().cam_view().is_some(), "the old map stays (dimmed)");
            },
        );
        // Nothing half-done: the previous map stays, no "computing" line or Cancel button.
        assert_eq!(h.state().cam_view().unwrap().images.heatmap, before);
        assert!(h.query_by_label("Cancel heatmap").is_none());
        assert!(
            h.query_by_label_contains("computing the heatmaps")
                .is_none()
        );

        // Activations: a grid asked for and cancelled (it may finish first: then it is shown).
        h.state_mut().settings_mut().tab = Tab::Activations;
        h.run_steps(2);
        idle(&mut h);
        h.get_by_label("shared scale").click();
        h.run_steps(1);
        if h.state().busy() && h.query_by_label("Cancel").is_some() {
            h.get_by_label("Cancel").click();
        }
        idle(&mut h);
        h.run_steps(2);
        assert_eq!(h.state().last_error(), None);
        assert!(h.state().activation_view().is_some());
        h.get_by_label("ready");

        // Predict: a long list is cancelled between chunks of images.
        h.state_mut().settings_mut().tab = Tab::Predict;
        h.run_steps(2);
        let list: Vec<String> = h
            .state()
            .dataset()
            .unwrap()
            .splits
            .train
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        cancel_leaves_no_trace(
            &mut h,
            "predicting",
            |h| {
                let input = egui::accesskit::Role::MultilineTextInput;
                h.get_by_role(input).focus();
                h.run_steps(1);
                h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
                h.get_by_role(input).type_text(&list.join("\n"));
                h.run_steps(1);
                h.get_all_by_label("Predict").last().unwrap().click();
                h.run_steps(1);
            },
            |a| a.status_line().is_some_and(|l| l.starts_with("images: ")),
            |_| {},
        );
        assert!(h.state().predictions().len() < list.len());
    }
}

// --- gui-inside ---

/// The side, on screen, below which an activation tile is too small to read.
const LEGIBLE_TILE: f32 = 80.0;

/// Shows `layer` on the Activations tab and waits for its grid (and the sparsity profile).
fn show_layer(h: &mut Harness<'_, ConvlensApp>, layer: &str) {
    h.state_mut().select_layer(layer);
    settle(h, "the layer's grid", |a| {
        a.activation_view().is_some_and(|v| v.layer == layer)
    });
}

/// The on-screen rectangle of the widget labelled exactly `label`.
fn rect_of(h: &Harness<'_, ConvlensApp>, label: &str) -> egui::Rect {
    h.get_by_label(label).rect()
}

#[test]
fn activation_tiles_are_legible_and_the_heads_last_tile_scrolls_into_view() {
    for size in SIZES {
        let mut h = harness_sized(Tab::Activations, size);
        settle(&mut h, "the model", |a| a.model_info().is_some());
        let spatial = h.state().model_info().unwrap().spatial.clone();
        let (stem, head) = (spatial[0].clone(), spatial.last().unwrap().clone());
        show_layer(&mut h, &stem);
        let view = h.state().activation_view().unwrap();
        assert_eq!((view.stats.len(), view.layout.tile), (32, (112, 112)));
        // The stem's 32 maps of 112 pixels are shown 1:1, in rows that use the width: the
        // second tile sits beside the first.
        let (first, second) = (rect_of(&h, "channel 0"), rect_of(&h, "channel 1"));
        assert!(first.width() >= 110.0, "stem tile {first:?} at {size:?}");
        assert_eq!(first.top(), second.top(), "tiles 0 and 1 share a row");
        assert!(second.left() > first.right());
        // The input image is shown as the model sees it.
        h.get_by_label_contains("input as the model sees it (224×224 centre crop)");
        // The head's 1,280 maps of 7 pixels are scaled up to a legible size, not shrunk to
        // fit; the last one is reached by scrolling.
        show_layer(&mut h, &head);
        assert_eq!(h.state().activation_view().unwrap().stats.len(), 1280);
        let last = "channel 1279";
        assert!(rect_of(&h, last).width() >= LEGIBLE_TILE);
        let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(size.0, size.1));
        assert!(
            !window.contains_rect(rect_of(&h, last)),
            "it needs a scroll"
        );
        h.get_by_label(last).scroll_to_me();
        h.run_steps(3);
        assert_in_window(&h, last, size);
        // The sparsity plot marks the layer on show.
        h.get_by_label_contains(&format!("{head} (marked): "));
        assert_eq!(h.state().last_error(), None);
    }
}

#[test]
fn filters_export_writes_png_and_json_and_never_overwrites() {
    let mut h = harness_sized(Tab::Filters, SIZES[0]);
    settle(&mut h, "the model", |a| a.model_info().is_some());
    {
        let s = h.state_mut().settings_mut();
        s.filters.count = 4;
        s.filters.steps = 2;
        s.filters.size = 32;
    }
    h.state_mut().start_filters();
    settle(&mut h, "4 tiles", |a| a.filter_progress() == (4, 4));
    let out = tempfile::tempdir().unwrap();
    h.state_mut().settings_mut().export.dir = out.path().to_string_lossy().into_owned();
    // File-name-safe: every character but ASCII letters and digits becomes `_`.
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let layer = safe(h.state().selected_layer().unwrap());
    let key = h.state().model_info().unwrap().key.clone();
    let model = safe(
        &std::path::Path::new(&key)
            .file_name()
            .unwrap()
            .to_string_lossy(),
    );
    let stem = format!("filters_{model}_{layer}");
    let exported = |a: &ConvlensApp| {
        a.messages()
            .iter()
            .filter(|m| m.text.starts_with("exported "))
            .count()
    };
    let mut listed = Vec::new();
    for n in 1..=2 {
        h.get_by_label("Export PNG").click();
        h.run_steps(2);
        settle(&mut h, "the export", |a| exported(a) == n);
        let mut files: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        listed.push(files);
    }
    assert_eq!(
        listed[0],
        [format!("{stem}.json"), format!("{stem}.png")],
        "a PNG and its sidecar"
    );
    // The second export gets the next free name; the first is left as it was.
    assert_eq!(
        listed[1],
        [
            format!("{stem}.json"),
            format!("{stem}.png"),
            format!("{stem}_2.json"),
            format!("{stem}_2.png")
        ]
    );
    // The log names both files of the second export, in full.
    let png = out.path().join(format!("{stem}_2.png"));
    let wrote = format!("wrote {}", png.display());
    assert!(
        h.state().messages().iter().any(|m| m.text == wrote),
        "the log names {wrote}"
    );
    // The sidecar records the filters on screen: the 4 computed, in one row at this width.
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join(format!("{stem}.json"))).unwrap())
            .unwrap();
    assert_eq!(sidecar["kind"], "filters");
    assert_eq!(sidecar["filters"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(sidecar["cols"], 4);
    let img = image::load_from_memory(&std::fs::read(&png).unwrap()).unwrap();
    assert!(
        img.width() > 4 * 32,
        "four tiles side by side: {}",
        img.width()
    );
    assert_eq!(h.state().last_error(), None);
}

#[test]
fn compare_shows_base_and_trained_side_by_side_in_activations_and_filters() {
    let (mut h, _out) = with_trained_model(Tab::Activations);
    let layer = "blocks.4";
    show_layer(&mut h, layer);
    use egui::accesskit::Role;
    let compare = |h: &mut Harness<'_, ConvlensApp>, choice: &str| {
        h.get_by_role_and_label(Role::ComboBox, "compare with")
            .click();
        h.run_steps(2);
        h.get_all_by_label_contains(choice).last().unwrap().click();
        h.run_steps(2);
    };
    compare(&mut h, "(this session)");
    settle(&mut h, "the compared grid", |a| {
        a.compared_activation_view()
            .is_some_and(|v| v.layer == layer)
    });
    let trained = h.state().trained_model().unwrap().to_string();
    assert_eq!(h.state().compared_activation_view().unwrap().model, trained);
    // Two grids, each under its model's name.
    let title = format!("— {layer}: 40 channels");
    assert_eq!(h.query_all_by_label_contains(&title).count(), 2);
    let base = h.state().model_info().unwrap().key.clone();
    h.get_by_label_contains(&format!("base: {base} {title}"));
    h.get_by_label_contains(&format!("(this session) {title}"));
    assert_eq!(h.query_all_by_label("channel 39").count(), 2);
    // A click on the second grid enlarges that model's channel, named so.
    h.get_all_by_label("channel 0").nth(1).unwrap().click();
    h.run_steps(2);
    h.get_by_label_contains("(this session), channel 0: min ");
    // The export writes both grids on screen.
    assert_eq!(
        export_on_screen(&mut h),
        2,
        "one activation figure per model"
    );
    // Filters: both models' filters of the layer, each labelled; the export writes both.
    h.get_by_label("Filters").click();
    h.run_steps(2);
    {
        let s = h.state_mut().settings_mut();
        s.filters.count = 2;
        s.filters.steps = 2;
        s.filters.size = 64;
    }
    compare(&mut h, "(this session)");
    settle(&mut h, "the compared model's layers", |_| true);
    h.get_by_label("Compute").click();
    h.run_steps(2);
    settle(&mut h, "both grids", |a| {
        a.filter_progress() == (2, 2) && a.compared_filter_progress() == (2, 2)
    });
    let titles = h
        .query_all_by_label_contains(&format!("2 of 2 filters of {layer} computed"))
        .count();
    assert_eq!(titles, 2);
    assert_eq!(export_on_screen(&mut h), 2, "one figure per model");
    assert_eq!(h.state().last_error(), None);
}

/// Clicks the tab's "Export PNG" with a new temp folder as the export folder, waits for every
/// export it started (one per model on screen) and returns how many figures were written.
fn export_on_screen(h: &mut Harness<'_, ConvlensApp>) -> usize {
    let out = tempfile::tempdir().unwrap();
    h.state_mut().settings_mut().export.dir = out.path().to_string_lossy().into_owned();
    let exported = |a: &ConvlensApp| {
        a.messages()
            .iter()
            .filter(|m| m.text.starts_with("exported "))
            .count()
    };
    let before = exported(h.state());
    h.get_by_label("Export PNG").click();
    h.run_steps(2);
    settle(h, "the exports", |a| !a.busy() && exported(a) > before);
    std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count()
}

#[test]
fn ctrl_wheel_zooms_at_the_cursor_and_a_drag_pans() {
    let mut h = harness_sized(Tab::Activations, SIZES[0]);
    settle(&mut h, "the first grid", |a| a.activation_view().is_some());
    // A point 30% across and 60% down the first tile.
    let tile = rect_of(&h, "channel 0");
    let at = tile.min + tile.size() * egui::vec2(0.3, 0.6);
    h.hover_at(at);
    h.run_steps(2);
    h.event(egui::Event::Zoom(2.0));
    h.run_steps(3);
    let zoomed = rect_of(&h, "channel 0");
    assert!(
        (zoomed.width() - 2.0 * tile.width()).abs() < 1.0,
        "{tile:?} -> {zoomed:?}"
    );
    // The same point of the tile is still under the cursor.
    let under = (at - zoomed.min) / zoomed.size();
    assert!(
        (under.x - 0.3).abs() < 0.02 && (under.y - 0.6).abs() < 0.02,
        "{under:?}"
    );
    h.get_by_label_contains("zoom 200%");
    // Dragging moves the content with the pointer.
    let before = rect_of(&h, "channel 0");
    h.drag_at(at);
    h.run_steps(1);
    h.hover_at(at - egui::vec2(0.0, 40.0));
    h.run_steps(1);
    h.drop_at(at - egui::vec2(0.0, 40.0));
    h.run_steps(3);
    let moved = rect_of(&h, "channel 0").min - before.min;
    assert!((moved.y + 40.0).abs() < 2.0, "moved {moved:?}");
}

/// The model trained in this session (a Lite0 with a new head) while the loaded model is a
/// ResNet-18, whose layers the trained model does not have: the harness, its temp folder, the
/// Lite0's layers and the selected (ResNet) layer.
fn trained_lite0_beside_a_resnet() -> (
    Harness<'static, ConvlensApp>,
    tempfile::TempDir,
    Vec<String>,
    String,
) {
    let (mut h, out) = with_trained_model(Tab::Activations);
    let lite0 = h.state().model_info().unwrap().spatial.clone();
    let resnet = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resnet18_random_fp16.safetensors"
    );
    h.state_mut().settings_mut().model = resnet.into();
    h.get_by_label("Load").click();
    h.run_steps(2);
    settle(&mut h, "the ResNet", |a| {
        a.model_info().is_some_and(|m| m.key == resnet)
    });
    let layer = h.state().selected_layer().unwrap().to_string();
    assert!(!lite0.contains(&layer), "{layer} is a ResNet layer");
    (h, out, lite0, layer)
}

/// Choosing, as the model of Activations and Filters, a model without the selected layer
/// shows that model's own layers (a third of the way in first) and says why, instead of
/// asking the worker for a layer the model does not have.
#[test]
fn a_chosen_model_of_other_layers_shows_its_own_layers() {
    let (mut h, _out, lite0, layer) = trained_lite0_beside_a_resnet();
    let own = lite0[lite0.len() / 3].clone();
    choose_model(&mut h, 0, "(this session)");
    settle(&mut h, "the trained model's grid", |a| {
        a.activation_view().is_some_and(|v| v.layer == own)
    });
    let why = format!("has no layer {layer}: it was built with its own layers");
    h.get_by_label_contains(&why);
    h.get_by_label_contains(&format!("its own layer {own} is shown"));
    h.get_by_label("Filters").click();
    h.run_steps(2);
    {
        let s = h.state_mut().settings_mut();
        (s.filters.count, s.filters.steps, s.filters.size) = (2, 2, 128);
    }
    choose_model(&mut h, 0, "(this session)");
    h.get_by_label_contains(&why);
    h.get_by_label("Compute").click();
    h.run_steps(2);
    settle(&mut h, "the filters", |a| a.filter_progress() == (2, 2));
    h.get_by_label_contains(&format!("2 of 2 filters of {own} computed"));
    assert_eq!(h.state().last_error(), None);
}

#[test]
fn compare_with_a_model_of_other_layers_says_so_and_filters_show_its_own() {
    let (mut h, _out, lite0, layer) = trained_lite0_beside_a_resnet();
    use egui::accesskit::Role;
    let compare = |h: &mut Harness<'_, ConvlensApp>| {
        h.get_by_role_and_label(Role::ComboBox, "compare with")
            .click();
        h.run_steps(2);
        h.get_all_by_label_contains("(this session)")
            .last()
            .unwrap()
            .click();
        h.run_steps(2);
        settle(h, "the trained model's layers", |_| true);
    };
    compare(&mut h);
    // Said beside the first grid; no second grid.
    h.get_by_label_contains(&format!("This model has no layer {layer}"));
    assert!(h.state().compared_activation_view().is_none());
    // Filters: the trained model's filters are of its own layer (a third of the way in, as
    // nothing else was chosen), and it says why.
    h.get_by_label("Filters").click();
    h.run_steps(2);
    {
        let s = h.state_mut().settings_mut();
        s.filters.count = 2;
        s.filters.steps = 2;
        s.filters.size = 128;
    }
    compare(&mut h);
    h.get_by_label("Compute").click();
    h.run_steps(2);
    settle(&mut h, "both grids", |a| {
        a.filter_progress() == (2, 2) && a.compared_filter_progress() == (2, 2)
    });
    h.get_by_label_contains(&format!(
        "has no layer {layer}: it was built with its own layers"
    ));
    h.get_by_role_and_label(Role::ComboBox, "its layer");
    let own = &lite0[lite0.len() / 3];
    h.get_by_label_contains(&format!("2 of 2 filters of {own} computed"));
    h.get_by_label_contains(&format!("2 of 2 filters of {layer} computed"));
    assert_eq!(h.state().last_error(), None);
}

// --- explain-methods ---

/// A pixel method chosen in the Heatmap tab: its map comes at the input's resolution (224x224,
/// not the head's 7x7) and is drawn over the whole photo; Integrated Gradients shows its
/// completeness error in the row's title.
#[test]
fn a_pixel_method_maps_at_the_input_resolution_and_ig_reports_completeness() {
    let mut h = harness(Tab::Heatmap);
    settle(&mut h, "the first heatmap", |a| a.cam_view().is_some());
    let first = h.state().cam_view().unwrap().clone();
    assert_eq!(first.map_size, (7, 7), "Grad-CAM at the head");
    h.get_by_label("saliency").click();
    h.step();
    settle(&mut h, "the saliency map", |a| {
        a.cam_view()
            .is_some_and(|v| v.options.method == CamMethod::Saliency)
    });
    let view = h.state().cam_view().unwrap().clone();
    assert_eq!(view.map_size, (224, 224));
    assert_eq!(
        view.images.heatmap.dimensions(),
        view.images.original.dimensions()
    );
    assert_ne!(view.images.heatmap, first.images.heatmap);
    h.get_by_label_contains("saliency on the pixels (224×224)");
    h.get_by_label("integrated-gradients").click();
    h.step();
    settle(&mut h, "the integrated gradients map", |a| {
        a.cam_view()
            .is_some_and(|v| v.options.method == CamMethod::IntegratedGradients)
    });
    let view = h.state().cam_view().unwrap();
    let c = view.completeness.expect("a completeness check");
    assert!(c.error.is_finite() && c.score_difference.is_finite());
    h.get_by_label_contains("completeness error");
    assert_eq!(h.state().last_error(), None);
}

// --- export ---

#[test]
fn a_trained_run_exports_to_onnx_and_shows_the_check() {
    let (mut h, out) = with_trained_model(Tab::Train);
    h.get_by_label("Export…").click();
    h.run_steps(2);
    h.get_by_label("PyTorch state dict (.safetensors + script)");
    h.get_by_label("Export").click();
    h.run_steps(2);
    // Beside the model folder by default.
    let onnx = out.path().join("model.onnx");
    step_until(&mut h, 120, "the export", |a| !a.busy() && onnx.is_file());
    h.run_steps(2);
    h.get_by_label_contains("Wrote ");
    h.get_by_label_contains(
        "Checked: logits of the 4 bundled photos (candle-onnx, batch 1 and 4) agree",
    );
    assert_eq!(h.state().last_error(), None);
    assert!(candle_onnx::read_file(&onnx).is_ok());
    // Again: the file is there now, so the export is refused and the form says why.
    h.get_by_label("Export").click();
    h.run_steps(2);
    step_until(&mut h, 60, "the refusal", |a| !a.busy());
    h.run_steps(2);
    // In the form and in the message log.
    assert!(h.get_all_by_label_contains("already exists").count() >= 2);
    assert!(
        h.state()
            .last_error()
            .is_some_and(|e| e.contains("already exists"))
    );
}

// --- data-examples ---

#[test]
fn a_clicked_filter_shows_its_top_nine_images_and_the_probe_plots_by_depth() {
    let mut h = harness(Tab::Model);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    h.step();
    h.get_by_label("blocks.4").click();
    h.step();
    h.get_by_label("Filters").click();
    h.run_steps(2);
    {
        let s = h.state_mut().settings_mut();
        (s.filters.count, s.filters.steps, s.filters.size) = (2, 2, 128);
    }
    h.get_by_label("Compute").click();
    h.run_steps(2);
    settle(&mut h, "the filters", |a| a.filter_progress() == (2, 2));
    // A click on a pattern finds its images in the data folder (on the worker, with progress).
    h.get_by_label("pattern of filter 1").click();
    h.run_steps(2);
    settle(&mut h, "the examples", |a| a.filter_examples().is_some());
    let view = h.state().filter_examples().unwrap();
    assert_eq!(
        (view.layer.as_str(), view.channel, view.scanned),
        ("blocks.4", 1, 400)
    );
    assert_eq!(view.hits.len(), 9);
    assert!(view.hits.windows(2).all(|w| w[0].0.max >= w[1].0.max));
    let first = view.hits[0].0.clone();
    h.get_by_label_contains("top 9 of 400 images");
    h.get_by_label("patches (receptive field at the maximum)");
    assert!(
        h.query_all_by_label(&first.image).count() >= 2,
        "patch and image of {}",
        first.image
    );
    assert!(
        h.query_all_by_label(first.class.as_deref().unwrap())
            .count()
            >= 2
    );
    assert_eq!(h.state().last_error(), None);

    // The probe on a few images of the same folder: one point per layer, all fractions.
    h.state_mut().settings_mut().tab = Tab::Data; // "Data" also names the left panel's section
    h.run_steps(2);
    h.state_mut().probe_panel_mut().max_images = 24;
    h.get_by_label("Probe").click();
    h.run_steps(2);
    settle(&mut h, "the probe", |_| true);
    let panel = h.state_mut().probe_panel_mut();
    let (_, report) = panel.shown().next().expect("a probe result");
    assert_eq!(report.train_images + report.held_out_images, 24);
    assert_eq!(report.taps.first().unwrap().layer, "stem");
    assert!(report.taps.iter().all(|t| {
        [t.class_accuracy, t.instance_top1, t.sparsity]
            .iter()
            .all(|v| (0.0..=1.0).contains(v))
            && t.reconstruction_r2.is_some_and(|r| r <= 1.0)
    }));
    h.get_by_label_contains(" held out"); // the summary line under the section title
    assert_eq!(h.state().last_error(), None);
}

// --- data-map ---

#[test]
fn the_map_tab_computes_a_map_and_cancels_t_sne() {
    use convlens::insight::map::Method;
    let mut h = harness_sized(Tab::Map, (1024.0, 700.0));
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    h.get_by_label("Compute map").click();
    h.run_steps(2);
    settle(&mut h, "the PCA map", |a| a.map_tab().map().is_some());
    let map = h.state().map_tab().map().unwrap();
    assert_eq!((map.method, map.points.len()), (Method::Pca, 400));
    assert_eq!(h.state().last_error(), None);
    h.get_by_label_contains("400 images, pca by");
    // t-SNE shows its progress and stops on Cancel; the PCA map stays. 10,000 iterations take
    // seconds, so the Cancel lands while it runs (1,000 take 0.7 s: a loaded machine could
    // finish them between the progress line and the click).
    h.state_mut().map_tab_mut().method = Method::Tsne;
    h.state_mut().map_tab_mut().tsne.epochs = 10_000;
    h.run_steps(2);
    h.get_by_label("Compute map").click();
    h.step();
    step_until(&mut h, 120, "t-SNE progress", |a| {
        a.status_line().is_some_and(|l| l.contains("tsne"))
    });
    h.get_by_label("Cancel map").click();
    h.step();
    idle(&mut h);
    assert_eq!(h.state().last_error(), None);
    assert_eq!(h.state().last_note(), Some("dataset map cancelled"));
    assert_eq!(h.state().map_tab().map().unwrap().method, Method::Pca);
    // Suspect labels: every image ranked; a click opens the first in Heatmap. The button lies
    // below the scatter, out of a 700-pixel window: it is scrolled to first (a click at a
    // point outside the window reaches nothing, which is why this step once timed out).
    click_in_view(&mut h, "Find suspect labels");
    settle(&mut h, "the suspect labels", |a| {
        a.map_tab().suspects().is_some()
    });
    let view = h.state().map_tab().suspects().unwrap();
    assert_eq!(view.report.suspects.len(), 400);
    assert!(!view.same_classes, "the base predicts ImageNet's classes");
    let first = view.report.suspects[0].path.clone();
    let path = view.dataset.join(&first);
    // The thumbnail and the link both carry the path: the link is the last.
    click_in_view(&mut h, &first.to_string_lossy());
    assert_eq!(h.state().settings().tab, Tab::Heatmap);
    assert_eq!(h.state().settings().image, path.to_string_lossy());
    assert_eq!(h.state().last_error(), None);
}

// --- explain-metrics ---

/// The numbers under a map: Faithfulness computes the metrics of the map on screen beside the
/// random map's, and the sanity check says whether the map follows the model (Grad-CAM does).
#[test]
fn faithfulness_numbers_and_the_sanity_check_appear_under_a_map() {
    let mut h = harness(Tab::Heatmap);
    settle(&mut h, "the heatmap", |a| a.cam_view().is_some());
    h.get_by_label("Faithfulness").click();
    h.run_steps(2);
    settle(&mut h, "the faithfulness numbers", |a| !a.busy());
    h.run_steps(2);
    h.get_by_label_contains("faithfulness of gradcam");
    h.get_by_label("Insertion AUC");
    h.get_by_label("random map");
    h.get_by_label("Sanity check").click();
    h.run_steps(2);
    settle(&mut h, "the sanity check", |a| !a.busy());
    h.run_steps(2);
    h.get_by_label_contains("sanity check passed: gradcam");
    assert_eq!(h.state().last_error(), None);
}

/// The evidence under a map is the evidence of that map: Integrated Gradients with 4 steps
/// (not the default 50) gets its faithfulness and sanity check made with 4 steps and its black
/// baseline in the model's input normalisation. The worker used to remake the map with default
/// parameters and without the normalisation, and failed with "the black baseline needs the
/// model's input normalisation" (as did "Compare methods", which scores every method).
#[test]
fn the_evidence_under_a_map_is_made_with_that_maps_parameters() {
    let mut h = harness(Tab::Heatmap);
    settle(&mut h, "the heatmap", |a| a.cam_view().is_some());
    h.state_mut().settings_mut().heatmap.attribution.steps = 4;
    h.get_by_label("integrated-gradients").click();
    h.step();
    step_until(&mut h, 120, "the Integrated Gradients map", |a| {
        a.cam_view()
            .is_some_and(|v| v.options.method == CamMethod::IntegratedGradients)
            && !a.busy()
    });
    assert_eq!(h.state().cam_view().unwrap().options.attribution.steps, 4);
    h.get_by_label("Faithfulness").click();
    h.run_steps(2);
    settle(&mut h, "the faithfulness numbers", |a| !a.busy());
    h.run_steps(2);
    assert_eq!(h.state().last_error(), None);
    h.get_by_label_contains("faithfulness of integrated-gradients");
    h.get_by_label("Sanity check").click();
    h.run_steps(2);
    settle(&mut h, "the sanity check", |a| !a.busy());
    h.run_steps(2);
    assert_eq!(h.state().last_error(), None);
    h.get_by_label_contains("integrated-gradients's map");
    let (faith, sanity) = h.state().cam_evidence(0);
    for map in [&faith.unwrap().key.map, &sanity.unwrap().key.map] {
        assert_eq!(map.method, CamMethod::IntegratedGradients);
        assert_eq!(map.attribution.steps, 4);
        assert!(map.attribution.normalization.is_some());
    }
}

// --- fullgrad ---

/// FullGrad from the Heatmap tab's method chooser: a map at the image's resolution with its
/// description, and its figure exported.
#[test]
fn fullgrad_from_the_method_chooser_maps_and_exports() {
    let mut h = harness(Tab::Heatmap);
    settle(&mut h, "the heatmap", |a| a.cam_view().is_some());
    h.get_by_label("fullgrad").click();
    h.step();
    step_until(&mut h, 120, "the FullGrad heatmap", |a| {
        a.cam_view()
            .is_some_and(|v| v.options.method == CamMethod::FullGrad)
    });
    h.run_steps(2);
    h.get_by_label_contains("|bias × gradient| of every layer");
    assert_eq!(h.state().last_error(), None);
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
        files.iter().any(|f| f.ends_with("fullgrad.png"))
            && files.iter().any(|f| f.ends_with("fullgrad.json")),
        "{files:?}"
    );
}

// --- user-pass ---

/// A map of `points` (plot coordinates) of the bundled dataset's first image, by class `a`.
fn map_of(points: &[(f32, f32)]) -> convlens::insight::map::DatasetMap {
    let labelled: Vec<(f32, f32, usize)> = points.iter().map(|&(x, y)| (x, y, 0)).collect();
    labelled_map(&labelled, &["a"])
}

/// A map of `points` (plot coordinates and an index into `classes`) of made-up images.
fn labelled_map(
    points: &[(f32, f32, usize)],
    classes: &[&str],
) -> convlens::insight::map::DatasetMap {
    use convlens::insight::map::{DatasetMap, MapPoint, Method};
    DatasetMap {
        convlens_version: String::new(),
        dataset: process::root(),
        model: "m".into(),
        weights_sha256: String::new(),
        method: Method::Pca,
        tsne: None,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        explained_variance_ratio: None,
        points: points
            .iter()
            .enumerate()
            .map(|(i, &(x, y, label))| MapPoint {
                path: format!("{i}.png").into(),
                label,
                class: classes[label].into(),
                prediction: None,
                probability: None,
                correct: None,
                x,
                y,
            })
            .collect(),
    }
}

#[test]
fn a_fast_box_drag_on_the_map_selects_from_where_the_button_went_down() {
    let size = (1024.0, 700.0);
    let mut h = harness_sized(Tab::Map, size);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    // Two corner points set the plot's bounds; five in the middle are to be boxed.
    let middle = [
        (45.0, 45.0),
        (55.0, 45.0),
        (50.0, 50.0),
        (45.0, 55.0),
        (55.0, 55.0),
    ];
    let mut points = vec![(0.0, 0.0), (100.0, 100.0)];
    points.extend(middle);
    let key = h.state().model_info().unwrap().key.clone();
    h.state_mut().map_tab_mut().set_map(key, map_of(&points));
    h.run_steps(2);
    h.get_by_label("Select box").click();
    h.run_steps(2);
    // The plot lies between the checkbox and the hint under it, right of the checkbox.
    let top = rect_of(&h, "Select box");
    let hint = h
        .get_all_by_label_contains("Drag a box on the map")
        .next()
        .unwrap()
        .rect();
    let frame = egui::Rect::from_min_max(
        egui::pos2(top.left(), top.bottom()),
        egui::pos2(size.0 - 20.0, hint.top()),
    );
    let at = |fx: f32, fy: f32| frame.lerp_inside(egui::vec2(fx, fy));
    let (from, to) = (at(0.3, 0.3), at(0.7, 0.7));
    drag_box(&mut h, from, to);
    let mut selected = h.state().map_tab().selection().to_vec();
    selected.sort_unstable();
    assert_eq!(selected, [2, 3, 4, 5, 6], "the box from {from:?} to {to:?}");
    h.get_by_label_contains("5 images in the box");
}

#[test]
fn the_probe_plots_key_is_above_the_plot_not_over_its_curves() {
    use convlens::viz::probe::{ProbeReport, TapProbe};
    let size = (1024.0, 700.0);
    let mut h = harness_sized(Tab::Data, size);
    step_until(&mut h, 60, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    idle(&mut h);
    // Curves that end at the top right, where a legend inside the plot would cover them.
    let taps = ["stem", "blocks.0", "head"]
        .iter()
        .enumerate()
        .map(|(i, l)| TapProbe {
            layer: (*l).into(),
            channels: 8,
            class_accuracy: 0.5 + 0.25 * i as f32,
            instance_top1: 0.4 * i as f32,
            reconstruction_r2: Some(0.9 - 0.3 * i as f32),
            reconstruction_choice: None,
            sparsity: 0.1,
        })
        .collect();
    let report = ProbeReport {
        taps,
        classes: vec!["a".into(), "b".into()],
        train_images: 12,
        held_out_images: 4,
        majority_baseline: 0.5,
        skipped: Vec::new(),
    };
    h.state_mut()
        .probe_panel_mut()
        .set("efficientnet_lite0".into(), report);
    h.run_steps(3);
    let below = rect_of(&h, "Gallery");
    for key in [
        "— class probe",
        "— instance top-1",
        "— input reconstruction R²",
        "— sparsity",
    ] {
        let r = rect_of(&h, key);
        // Above the plot: at least its height (240) above the section under the plot.
        assert!(
            r.bottom() + 240.0 <= below.top(),
            "`{key}` at {r:?}, Gallery at {below:?}"
        );
    }
    h.get_by_label_contains("solid: ");
}

// --- tsne-mem ---

/// Scrolls the last widget labelled `label` into view and clicks it (a click is a pointer
/// event at the widget's centre, so one outside the window reaches nothing: the suspect list's
/// button below the map was clicked so, and its test waited in vain).
fn click_in_view(h: &mut Harness<'_, ConvlensApp>, label: &str) {
    h.get_all_by_label(label)
        .last()
        .expect(label)
        .scroll_to_me();
    h.run_steps(3);
    let node = h.get_all_by_label(label).last().expect(label);
    let window = h.ctx.content_rect();
    assert!(
        window.contains_rect(node.rect()),
        "`{label}` at {:?} is not scrolled into {window:?}",
        node.rect()
    );
    node.click();
    h.run_steps(2);
}

/// Waits until the last widget labelled `label` is enabled (a button that needs something
/// read on the worker first, e.g. a chosen model's layers), then clicks it in view.
fn click_when_enabled(h: &mut Harness<'_, ConvlensApp>, label: &str) {
    let start = Instant::now();
    while h
        .get_all_by_label(label)
        .last()
        .expect(label)
        .accesskit_node()
        .is_disabled()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60 * LOADED_MACHINE),
            "`{label}` stayed disabled; last error: {:?}",
            h.state().last_error()
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    click_in_view(h, label);
}

/// Starts a job with `start`, waits for its progress in the status bar (a line starting with
/// `stage`), clicks the tab's own Cancel button (`cancel`: the topmost widget of that label,
/// the status bar's being at the bottom) and checks the job ended as cancelled: no job left,
/// no error, `what cancelled` said.
fn cancel_in_tab(
    h: &mut Harness<'_, ConvlensApp>,
    what: &str,
    stage: &str,
    cancel: &str,
    start: impl FnOnce(&mut Harness<'_, ConvlensApp>),
) {
    start(h);
    step_until(h, 120, &format!("{what}: {stage} progress"), |a| {
        a.status_line()
            .is_some_and(|l| l.starts_with(stage) && l.contains(" of "))
    });
    h.get_all_by_label(cancel)
        .min_by(|a, b| a.rect().min.y.total_cmp(&b.rect().min.y))
        .unwrap_or_else(|| panic!("a `{cancel}` button while {what} runs"))
        .click();
    h.run_steps(2);
    idle(h);
    h.run_steps(2);
    assert_eq!(h.state().last_error(), None, "{what}");
    assert_eq!(h.state().status_line(), None, "{what}");
    assert_eq!(
        h.state().last_note(),
        Some(format!("{what} cancelled").as_str())
    );
}

/// Issue #17's "each of the four works from the GUI with progress and Cancel, on a trained
/// model": the map, suspect labels, probe and channel examples of a model trained in this
/// session, each first cancelled while its progress shows, then run to the end.
#[test]
fn map_suspects_probe_and_examples_run_and_cancel_on_a_trained_model() {
    use convlens::insight::map::Method;
    use egui::accesskit::Role;
    // Fine-tuned, so that its features are its own and none is cached yet: a head on the
    // frozen base shares the base's cached features, and its jobs can end before a Cancel.
    let (mut h, _out) = with_model_trained_as(Tab::Map, Mode::Finetune);
    let trained = h.state().trained_model().unwrap().to_string();
    h.run_steps(2);

    // Suspects and map are cancelled while the trained model's features are extracted.
    cancel_in_tab(
        &mut h,
        "suspect labels",
        "features of the images",
        "Cancel suspects",
        |h| click_in_view(h, "Find suspect labels"),
    );
    assert!(h.state().map_tab().suspects().is_none());
    cancel_in_tab(
        &mut h,
        "dataset map",
        "features of the images",
        "Cancel map",
        |h| click_in_view(h, "Compute map"),
    );
    assert!(h.state().map_tab().map().is_none());

    // The map (the Map tab's model defaults to the trained one): every image, each with a
    // prediction in the folder's classes, so "correct" can colour it.
    click_in_view(&mut h, "Compute map");
    settle(&mut h, "the trained model's map", |a| {
        a.map_tab().map().is_some()
    });
    let map = h.state().map_tab().map().unwrap();
    assert_eq!((map.method, map.points.len()), (Method::Pca, 400));
    assert!(map.points.iter().all(|p| p.correct.is_some()));
    assert_eq!(h.state().last_error(), None);

    // Suspect labels of the trained model; a click opens the first in Heatmap.
    click_in_view(&mut h, "Find suspect labels");
    settle(&mut h, "the trained model's suspect labels", |a| {
        a.map_tab().suspects().is_some()
    });
    let view = h.state().map_tab().suspects().unwrap();
    assert_eq!(view.report.suspects.len(), 400);
    assert!(view.same_classes, "trained on the folder's classes");
    let first = view.dataset.join(&view.report.suspects[0].path);
    let link = view.report.suspects[0].path.to_string_lossy().into_owned();
    click_in_view(&mut h, &link);
    assert_eq!(h.state().settings().tab, Tab::Heatmap);
    assert_eq!(h.state().settings().image, first.to_string_lossy());
    idle(&mut h);
    assert_eq!(h.state().last_error(), None);

    // The probe of the trained model: cancelled on the folder's 400 images, then run on 24.
    h.state_mut().settings_mut().tab = Tab::Data;
    h.run_steps(2);
    let choosers = h.get_all_by_role_and_label(Role::ComboBox, "model").count();
    choose_model(&mut h, choosers - 1, "(this session)");
    cancel_in_tab(&mut h, "probe", "probe: images", "Cancel", |h| {
        h.state_mut().probe_panel_mut().max_images = 400;
        click_in_view(h, "Probe");
    });
    h.state_mut().probe_panel_mut().max_images = 24;
    click_in_view(&mut h, "Probe");
    settle(&mut h, "the trained model's probe", |_| true);
    let (key, report) = h
        .state_mut()
        .probe_panel_mut()
        .shown()
        .next()
        .expect("a probe result")
        .clone();
    assert_eq!(key, trained);
    assert_eq!(report.train_images + report.held_out_images, 24);
    assert!(report.taps.iter().all(|t| {
        [t.class_accuracy, t.instance_top1, t.sparsity]
            .iter()
            .all(|v| (0.0..=1.0).contains(v))
            && t.reconstruction_r2.is_some_and(|r| r <= 1.0)
    }));
    assert_eq!(h.state().last_error(), None);

    // Channel examples of the trained model (a filter clicked in Filters): cancelled, asked
    // again, then the top 9 of the folder's 400 images, best first, each with its class.
    h.state_mut().select_layer("blocks.4");
    h.state_mut().settings_mut().tab = Tab::Filters;
    h.run_steps(2);
    idle(&mut h);
    choose_model(&mut h, 0, "(this session)");
    {
        let s = h.state_mut().settings_mut();
        (s.filters.count, s.filters.steps, s.filters.size) = (2, 2, 128);
    }
    // The trained model's layers are read after it is chosen; Compute waits for them.
    click_when_enabled(&mut h, "Compute");
    settle(&mut h, "the filters", |a| a.filter_progress() == (2, 2));
    cancel_in_tab(
        &mut h,
        "channel examples",
        "examples: images",
        "Cancel",
        |h| click_in_view(h, "pattern of filter 1"),
    );
    assert!(h.state().filter_examples().is_none());
    click_in_view(&mut h, "Find again");
    settle(&mut h, "the trained model's examples", |a| {
        a.filter_examples().is_some()
    });
    let view = h.state().filter_examples().unwrap();
    assert_eq!(
        (view.model.as_str(), view.layer.as_str(), view.channel),
        (trained.as_str(), "blocks.4", 1)
    );
    assert_eq!((view.scanned, view.hits.len()), (400, 9));
    assert!(view.hits.windows(2).all(|w| w[0].0.max >= w[1].0.max));
    assert!(view.hits.iter().all(|(hit, _, _)| hit.class.is_some()));
    assert_eq!(h.state().last_error(), None);
}

// --- polish ---

/// The heatmap rows on screen: each one's model, class and role.
fn explained_rows(a: &ConvlensApp) -> Vec<(String, usize, Option<&'static str>)> {
    a.cam_rows()
        .into_iter()
        .filter_map(|(v, role)| v.map(|v| (v.model.clone(), v.class, role)))
        .collect()
}

#[test]
fn an_explained_images_rows_keep_their_classes_and_roles_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, run) = train_small_run(tmp.path());
    let base = h.state().model_info().unwrap().key.clone();
    drop(h);
    // The rows as a confusion-matrix click leaves them in the saved settings: the run's map
    // of the true class (0) and of the predicted class (1), the base model's top class.
    let key = run.path.to_string_lossy().into_owned();
    let row = |model: &str, index: Option<usize>, role: &str| {
        serde_json::json!({
            "model": model,
            "class": { "model": model, "index": index, "role": role },
        })
    };
    let file = tmp.path().join("settings.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    settings["tab"] = "Heatmap".into();
    settings["heatmap"]["rows"] = serde_json::json!([
        row(&key, Some(0), "Truth"),
        row(&key, Some(1), "Prediction"),
        row(&base, None, "Top"),
    ]);
    std::fs::write(&file, settings.to_string()).unwrap();
    let expected = |top: usize| {
        vec![
            (key.clone(), 0, Some("true class")),
            (key.clone(), 1, Some("predicted class")),
            (base.clone(), top, Some("top class")),
        ]
    };

    // A restart shows those maps: each row's model, class and what the class stands for.
    let mut h = harness_with(options_in(tmp.path()), SIZES[0]);
    step_until(&mut h, 120, "the restored rows", |a| {
        let rows = explained_rows(a);
        !a.busy() && rows.len() == 3 && rows == expected(rows[2].1)
    });
    let classes = h.state().dataset().unwrap().classes.clone();
    h.get_by_label_contains(&format!(" — true class: {} (p = ", classes[0]));
    h.get_by_label_contains(&format!(" — predicted class: {} (p = ", classes[1]));
    drop(h);
    // The settings it saved keep them for the next start.
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(again["heatmap"]["rows"][1]["class"]["role"], "Prediction");
}

#[test]
fn the_confusion_headers_are_centred_over_their_columns_at_1024() {
    let (mut h, _out) = with_trained_model(Tab::Train);
    let size = SIZES[0];
    resize(&mut h, size);
    let e = h.state().train_outcome().unwrap().evaluation.clone();
    let label = |t: usize, p: usize| {
        format!(
            "true {}, predicted {}: {}",
            e.classes[t], e.classes[p], e.confusion[t][p]
        )
    };
    assert_reachable(&mut h, &label(0, 0), size);
    let mut right_of_previous = f32::MIN;
    for (i, class) in e.classes.iter().enumerate() {
        let (column, row) = (rect_of(&h, &label(0, i)), rect_of(&h, &label(i, 0)));
        let names: Vec<egui::Rect> = h.query_all_by_label(class).map(|n| n.rect()).collect();
        // The header: above the first row; the row's name: left of its first cell.
        let header = names
            .iter()
            .find(|r| r.bottom() <= column.top() + 0.5 && r.center().x > column.left() - 1.0)
            .unwrap_or_else(|| panic!("no header `{class}` above {column:?}: {names:?}"));
        // Centred over its column, inside it, a clear gap from the name before it.
        assert!(
            header.left() >= column.left() - 0.5 && header.right() <= column.right() + 0.5,
            "header `{class}` at {header:?} overruns its column {column:?}"
        );
        assert!(
            (header.center().x - column.center().x).abs() <= 1.0,
            "header `{class}` at {header:?} is not centred over its column {column:?}"
        );
        assert!(
            header.left() >= right_of_previous + 4.0,
            "`{class}` runs into the header before it (which ends at {right_of_previous})"
        );
        right_of_previous = header.right();
        let name = names
            .iter()
            .find(|r| (r.center().y - row.center().y).abs() < row.height() / 2.0)
            .unwrap_or_else(|| panic!("no row name `{class}` beside {row:?}: {names:?}"));
        assert!(
            name.right() <= row.left() - 3.5,
            "row name `{class}` at {name:?} runs into its first cell {row:?}"
        );
    }
}

#[test]
fn the_map_key_is_above_the_plot_and_a_click_hides_a_class() {
    let size = SIZES[0];
    let mut h = harness_sized(Tab::Map, size);
    settle(&mut h, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    // Corner points set the bounds; points of both classes at the top right, where a legend
    // inside the plot would sit, and in the middle.
    let points = [
        (0.0, 0.0, 0),
        (100.0, 100.0, 0),
        (98.0, 98.0, 1),
        (45.0, 45.0, 0),
        (55.0, 55.0, 0),
        (50.0, 45.0, 1),
        (45.0, 55.0, 1),
    ];
    let key = h.state().model_info().unwrap().key.clone();
    let mut map = labelled_map(&points, &["boots", "sandals"]);
    map.dataset = h.state().dataset().unwrap().root.clone();
    h.state_mut().map_tab_mut().set_map(key, map);
    h.run_steps(2);
    let below = h
        .get_all_by_label_contains("Drag a box on the map")
        .next()
        .unwrap()
        .rect();
    for class in ["boots", "sandals"] {
        let r = rect_of(&h, class);
        // Above the plot: at least its height (460) above the hint under it.
        assert!(
            r.bottom() + 460.0 <= below.top(),
            "`{class}` at {r:?}, hint at {below:?}"
        );
    }
    // Hidden sandals are left out of a box around the middle.
    h.get_by_label("sandals").click();
    h.run_steps(2);
    h.get_by_label("Select box").click();
    h.run_steps(2);
    let top = rect_of(&h, "Select box");
    let frame = egui::Rect::from_min_max(
        egui::pos2(top.left(), top.bottom()),
        egui::pos2(size.0 - 20.0, below.top()),
    );
    let (from, to) = (
        frame.lerp_inside(egui::vec2(0.3, 0.3)),
        frame.lerp_inside(egui::vec2(0.7, 0.7)),
    );
    drag_box(&mut h, from, to);
    let mut selected = h.state().map_tab().selection().to_vec();
    selected.sort_unstable();
    assert_eq!(
        selected,
        [3, 4],
        "the boots in the box, not the hidden sandals"
    );
}

#[test]
fn a_map_of_another_model_or_folder_is_dimmed_and_says_so() {
    let mut h = harness_sized(Tab::Map, SIZES[0]);
    settle(&mut h, "the model and the data", |a| {
        a.model_info().is_some() && a.dataset().is_some()
    });
    let key = h.state().model_info().unwrap().key.clone();
    let root = h.state().dataset().unwrap().root.clone();
    let stale = "This map is out of date";
    let mut map = map_of(&[(0.0, 0.0), (1.0, 1.0)]);
    map.dataset = root.clone();
    h.state_mut()
        .map_tab_mut()
        .set_map(key.clone(), map.clone());
    h.run_steps(2);
    assert_eq!(
        h.query_all_by_label_contains(stale).count(),
        0,
        "a current map"
    );
    // Made with another model than the one chosen.
    h.state_mut()
        .map_tab_mut()
        .set_map("/elsewhere/other-run".into(), map.clone());
    h.run_steps(2);
    h.get_by_label_contains("it was made with /elsewhere/other-run, not the model chosen above");
    // Made from another folder.
    map.dataset = root.join("elsewhere");
    h.state_mut().map_tab_mut().set_map(key, map);
    h.run_steps(2);
    h.get_by_label_contains("not the data folder scanned now");
}

#[test]
fn a_method_that_maps_the_pixels_offers_no_layer_to_choose() {
    let layer_choosers = |h: &Harness<'_, ConvlensApp>| {
        h.query_all_by_role_and_label(Role::ComboBox, "layer")
            .count()
    };
    let mut h = harness_sized(Tab::Heatmap, SIZES[0]);
    settle(&mut h, "the heatmap", |a| a.cam_view().is_some());
    assert_eq!(layer_choosers(&h), 1, "Grad-CAM maps a layer");
    // A method row that wraps at 1024 continues under its methods, not under the group's
    // name (where FullGrad would read as a group of its own).
    let (first, wrapped) = (rect_of(&h, "saliency"), rect_of(&h, "fullgrad"));
    assert!(
        wrapped.left() >= first.left() - 0.5,
        "fullgrad at {wrapped:?} starts left of the pixel methods ({first:?})"
    );
    for (method, name, choosers) in [
        (CamMethod::FullGrad, "fullgrad", 0),
        (CamMethod::GuidedGradCam, "guided-gradcam", 1),
    ] {
        h.get_by_label(name).click();
        h.step();
        step_until(&mut h, 120, name, |a| {
            a.cam_view().is_some_and(|v| v.options.method == method)
        });
        h.run_steps(2);
        assert_eq!(layer_choosers(&h), choosers, "{name}");
        if choosers == 0 {
            h.get_by_label(&format!("layer: none, {name} maps the pixels"));
        }
    }
}

// --- export-d ---

/// The Export form at 1024 px: "Choose…" stays on the path's line; after an export, choosing
/// the other format dims its result under a line naming the earlier export, and choosing the
/// format back shows it as current again.
#[test]
fn the_export_forms_result_is_marked_earlier_after_switching_format() {
    let (mut h, out) = with_trained_model(Tab::Train);
    h.set_size(egui::vec2(1024.0, 700.0));
    h.get_by_label("Export…").click();
    h.run_steps(2);
    // The label and the text field it names.
    let path = h
        .query_all_by_label("Write to")
        .map(|n| n.rect())
        .fold(egui::Rect::NOTHING, |a, r| a.union(r));
    let choose = h.get_by_label("Choose…").rect();
    assert!(
        (choose.center().y - path.center().y).abs() < 4.0 && choose.left() > path.right(),
        "Choose… {choose:?} is not on the line of the path {path:?}"
    );
    h.get_by_label("Export").click();
    h.run_steps(2);
    let onnx = out.path().join("model.onnx");
    step_until(&mut h, 120, "the export", |a| !a.busy() && onnx.is_file());
    h.run_steps(2);
    h.get_by_label_contains("Checked: logits");
    assert!(h.query_by_label_contains("Earlier export").is_none());
    h.get_by_label("PyTorch state dict (.safetensors + script)")
        .click();
    h.run_steps(2);
    let pytorch = out.path().join("model.safetensors");
    h.get_by_label(&format!(
        "Earlier export (ONNX to {}), not of the choices above: press Export for those.",
        onnx.display()
    ));
    h.get_by_label("ONNX (.onnx)").click();
    h.run_steps(2);
    assert!(h.query_by_label_contains("Earlier export").is_none());
    h.get_by_label_contains("Checked: logits");
    assert!(!pytorch.exists());
}
