//! The desktop app, driven headless with egui_kittest (no display needed).
#![cfg(feature = "gui")]

use std::time::{Duration, Instant};

use convlens::gui::ConvlensApp;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

/// Runs frames until `label` is on screen (the model loads on a worker thread).
fn run_until_label(harness: &mut Harness<'_, ConvlensApp>, label: &str) {
    let start = Instant::now();
    while harness.query_by_label(label).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "`{label}` never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
        harness.step(); // a spinner repaints forever while loading: step, don't settle
    }
}

#[test]
fn layer_table_shows_and_a_click_selects_a_layer() {
    let app = ConvlensApp::new(convlens::zoo::DEFAULT_MODEL, || {});
    let mut harness = Harness::new_ui_state(|ui, app: &mut ConvlensApp| app.draw(ui), app);
    run_until_label(&mut harness, "blocks.15");
    harness.get_by_label("1280x7x7");
    harness.get_by_label("4,652,008");
    harness.get_by_label("blocks.4").click();
    harness.run();
    assert_eq!(harness.state().selected_layer(), Some("blocks.4"));
}

#[test]
fn a_model_that_cannot_load_is_shown_not_panicked() {
    let app = ConvlensApp::new("no_such_model", || {});
    let mut harness = Harness::new_ui_state(|ui, app: &mut ConvlensApp| app.draw(ui), app);
    let start = Instant::now();
    while harness
        .query_by_label_contains("no model `no_such_model`")
        .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no error shown");
        std::thread::sleep(Duration::from_millis(20));
        harness.step(); // a spinner repaints forever while loading: step, don't settle
    }
}
