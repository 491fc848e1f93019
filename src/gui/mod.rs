//! The desktop app (feature `gui`): panels that read state and return commands; the app
//! applies them and queues jobs on the worker thread (`crate::jobs`), never freezing the window.

mod app;
mod board;
mod context;
mod handling;
mod log;
mod panels;
mod pick;
pub mod settings;
mod tabs;
mod thumbs;
mod widgets;

use std::path::PathBuf;

pub use app::{AppOptions, ConvlensApp};
pub use settings::Tab;

use crate::{Error, Result};

/// The main window: title and size (`None`: 1280 x 800).
fn window_options(size: Option<[f32; 2]>) -> eframe::NativeOptions {
    eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("convlens")
            .with_inner_size(size.unwrap_or([1280.0, 800.0])),
        ..Default::default()
    }
}

/// Opens the desktop window.
pub fn run(options: AppOptions) -> Result<()> {
    let native = window_options(options.window);
    eframe::run_native(
        "convlens",
        native,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            Ok(Box::new(ConvlensApp::new(options, move || {
                ctx.request_repaint()
            })))
        }),
    )
    .map_err(|e| Error::Model(format!("cannot open the window: {e}")))
}

/// Renders the window once everything has loaded (and, with `options.run`, the tab's job has
/// finished), writes a PNG of it to `out` and exits.
pub fn screenshot(options: AppOptions, out: PathBuf) -> Result<()> {
    let native = window_options(options.window);
    let result: std::sync::Arc<std::sync::Mutex<Option<Result<()>>>> = Default::default();
    let outcome = result.clone();
    eframe::run_native(
        "convlens",
        native,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let app = ConvlensApp::new(options, move || ctx.request_repaint());
            Ok(Box::new(Screenshotter {
                app,
                out,
                idle_frames: 0,
                requested: false,
                result: outcome,
            }))
        }),
    )
    .map_err(|e| Error::Model(format!("cannot open the window: {e}")))?;
    let r = result
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    r.unwrap_or_else(|| {
        Err(Error::Model(
            "the window closed before the screenshot".into(),
        ))
    })
}

/// Wraps the app: waits until the worker is idle for a while, then captures the window.
struct Screenshotter {
    app: ConvlensApp,
    out: PathBuf,
    idle_frames: u32,
    requested: bool,
    result: std::sync::Arc<std::sync::Mutex<Option<Result<()>>>>,
}

impl eframe::App for Screenshotter {
    /// A screenshot shows no hover state: the pointer (wherever the display put it) is ignored.
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        raw_input.events.retain(|e| {
            !matches!(
                e,
                egui::Event::PointerMoved(_)
                    | egui::Event::MouseMoved(_)
                    | egui::Event::PointerButton { .. }
            )
        });
        raw_input.events.push(egui::Event::PointerGone);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.draw(ui);
        let ctx = ui.ctx().clone();
        if self.app.busy() || self.app.run_pending() {
            self.idle_frames = 0;
        } else {
            self.idle_frames += 1;
        }
        if self.idle_frames > 20 && !self.requested {
            self.requested = true;
            let out = self.out.clone();
            let result = self.result.clone();
            let close = ctx.clone();
            ctx.request_screenshot(move |image| {
                let [w, h] = image.size;
                let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                let saved = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
                    .ok_or_else(|| Error::Model("bad screenshot buffer".into()))
                    .and_then(|img| img.save(&out).map_err(|e| Error::image(&out, e)));
                *result
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(saved);
                close.send_viewport_cmd(egui::ViewportCommand::Close);
            });
        }
        ctx.request_repaint_after(std::time::Duration::from_millis(50));
    }
}
