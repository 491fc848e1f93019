//! The desktop app driven headless with egui_kittest (no display needed), on the real engine
//! and the bundled model, photos and dataset.
#![cfg(feature = "gui")]

use std::time::{Duration, Instant};

use convlens::gui::{AppOptions, ConvlensApp, Tab};
use convlens::viz::cam::CamMethod;
use convlens::viz::filters::FilterMethod;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn harness(tab: Tab) -> Harness<'static, ConvlensApp> {
    let app = ConvlensApp::new(
        AppOptions {
            tab: Some(tab),
            ..AppOptions::default()
        },
        || {},
    );
    Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut ConvlensApp| app.draw(ui), app)
}

/// Steps frames (the UI keeps animating while jobs run) until `done` or the time runs out.
fn step_until(
    h: &mut Harness<'_, ConvlensApp>,
    secs: u64,
    what: &str,
    done: impl Fn(&ConvlensApp) -> bool,
) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
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
    h.state_mut().settings_mut().export_dir = out.path().to_string_lossy().into_owned();
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
    let out = tempfile::tempdir().unwrap();
    let mut h = harness(Tab::Train);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.train.epochs = 3;
        s.train.out_dir = out.path().join("model").to_string_lossy().into_owned();
    }
    h.get_by_label("Start training").click();
    h.step();
    // The window keeps painting while the worker trains: every step returns and draws a
    // frame while the job is still running.
    let mut frames_while_training = 0;
    let start = Instant::now();
    while h.state().train_outcome().is_none() && h.state().last_error().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "training timed out"
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
        if h.state().busy() {
            frames_while_training += 1;
        }
    }
    assert!(
        frames_while_training >= 10,
        "{frames_while_training} frames while training"
    );
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
}

#[test]
fn the_window_paints_while_a_job_runs() {
    let mut h = harness(Tab::Filters);
    step_until(&mut h, 60, "the model", |a| a.model_info().is_some());
    idle(&mut h);
    {
        let s = h.state_mut().settings_mut();
        s.filter_count = 10; // two batches of the ascent (8 + 2): tiles come in twice
        s.filter_steps = 30;
    }
    h.get_by_label("Compute").click();
    h.step();
    // Tiles appear one by one while the window keeps painting.
    let mut frames_while_computing = 0;
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
            start.elapsed() < Duration::from_secs(120),
            "filters timed out"
        );
        h.step();
        frames_while_computing += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        frames_while_computing >= 3,
        "only {frames_while_computing} frames"
    );
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
        s.filter_method = FilterMethod::Lucid;
        s.filter_count = 2;
        s.filter_steps = 4;
        s.filter_size = 64;
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
    let app = ConvlensApp::new(
        AppOptions {
            model: Some("no_such_model".into()),
            ..AppOptions::default()
        },
        || {},
    );
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut ConvlensApp| app.draw(ui), app);
    step_until(&mut h, 30, "the error", |a| a.last_error().is_some());
    h.step();
    h.get_by_label_contains("no model `no_such_model`");
}

#[test]
fn a_resnet_weights_file_opens_with_its_own_layers() {
    // A bare ResNet-18 file (architecture detected): the Lite0 layer in the default settings
    // is replaced by one of its own, and the heatmap uses its CAM layer.
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resnet18_random_fp16.safetensors"
    );
    let app = ConvlensApp::new(
        AppOptions {
            model: Some(model.to_string()),
            tab: Some(Tab::Heatmap),
            ..AppOptions::default()
        },
        || {},
    );
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut ConvlensApp| app.draw(ui), app);
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
