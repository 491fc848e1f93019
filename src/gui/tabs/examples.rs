//! The channel-examples panel shared by Activations and Filters: for the channel clicked, its
//! pattern beside the data folder's nine images that excite it most and the patches (the
//! receptive field at the maximum), each with its class. Computed on the worker (cached per
//! model, layer and folder), with progress and Cancel in the status bar.

use image::RgbImage;

use super::Textures;
use crate::gui::context::{AppContext, Command};
use crate::gui::widgets;
use crate::jobs::{ChannelExamplesView, JobKind, Request};
use crate::viz::examples::Rank;

/// Side of a patch or image on screen, points.
const SHOWN: f32 = 64.0;

/// What a panel shows or waits for: (model key, layer, channel).
type Key = (String, String, usize);

/// One tab's channel-examples panel.
#[derive(Default)]
pub struct ExamplesPanel {
    /// The channel last asked for (so a click asks once).
    asked: Option<(Key, Rank)>,
    view: Option<ChannelExamplesView>,
    rank: Rank,
    textures: Textures,
}

impl ExamplesPanel {
    /// Whether `view` answers this panel's question.
    pub fn wants(&self, view: &ChannelExamplesView) -> bool {
        self.asked.as_ref().is_some_and(|((m, l, c), r)| {
            *m == view.model && *l == view.layer && *c == view.channel && *r == view.rank
        })
    }

    /// The answer on show, if any.
    pub fn view(&self) -> Option<&ChannelExamplesView> {
        self.view.as_ref()
    }

    /// Takes the worker's answer.
    pub fn set(&mut self, view: ChannelExamplesView) {
        self.textures = Textures::default();
        self.view = Some(view);
    }

    /// Draws the panel for `channel` of `layer` of model `key`; `pattern` is the channel's
    /// pattern when the tab already has it (else the worker computes one). Asks the worker the
    /// first time a channel is shown.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        key: &str,
        layer: &str,
        channel: usize,
        pattern: Option<&RgbImage>,
    ) -> Option<Command> {
        widgets::section(
            ui,
            &format!("Channel {channel}: the images that excite it most"),
        );
        let Some(data) = ctx.data else {
            ui.label("Load a data folder (left panel) to see its images that excite this channel.");
            return None;
        };
        let mut out = None;
        ui.horizontal(|ui| {
            let label = ui.label("rank by");
            for r in [Rank::Max, Rank::Mean] {
                if ui
                    .selectable_value(&mut self.rank, r, r.name())
                    .labelled_by(label.id)
                    .changed()
                {
                    self.asked = None;
                }
            }
            if ctx.running(JobKind::Examples) {
                ui.spinner();
                if ui.button("Cancel").clicked() {
                    out = Some(Command::Cancel(JobKind::Examples));
                }
            }
        });
        let want: Key = (key.to_string(), layer.to_string(), channel);
        if self
            .asked
            .as_ref()
            .is_none_or(|(k, r)| *k != want || *r != self.rank)
        {
            self.asked = Some((want.clone(), self.rank));
            return Some(Command::Submit(Request::ChannelExamples {
                model: key.to_string(),
                dir: data.root.clone(),
                layer: layer.to_string(),
                channel,
                rank: self.rank,
                pattern: pattern.is_none(),
            }));
        }
        let Some(view) = self.view.as_ref().filter(|v| {
            (v.model.as_str(), v.layer.as_str(), v.channel) == (key, layer, channel)
                && v.rank == self.rank
        }) else {
            if !ctx.running(JobKind::Examples) {
                ui.horizontal(|ui| {
                    ui.label("(no result: see Messages)");
                    // After a Cancel or an error, the same channel can be asked again.
                    if ui.button("Find again").clicked() {
                        self.asked = None;
                    }
                });
            }
            return out;
        };
        ui.label(format!(
            "top {} of {} images of {} by {} activation{}",
            view.hits.len(),
            view.scanned,
            data.root.display(),
            view.rank.name(),
            if view.cached { " (cached)" } else { "" }
        ));
        let textures = &mut self.textures;
        if let Some(p) = pattern.or(view.pattern.as_ref()) {
            ui.label("pattern (gradient ascent)");
            let t = textures.get(ui.ctx(), "examples-pattern", p, true);
            widgets::fitted_image(ui, &t, egui::vec2(3.0 * SHOWN, 3.0 * SHOWN));
        }
        for (title, which) in [
            ("patches (receptive field at the maximum)", 1),
            ("images", 2),
        ] {
            ui.label(title);
            egui::Grid::new(format!("examples-{which}")).show(ui, |ui| {
                for (k, (hit, patch, image)) in view.hits.iter().enumerate() {
                    let img = if which == 1 { patch } else { image };
                    let t = textures.get(ui.ctx(), &format!("examples-{which}-{k}"), img, true);
                    let class = hit.class.clone().unwrap_or_default();
                    ui.vertical(|ui| {
                        widgets::named_image(ui, &t, egui::vec2(SHOWN, SHOWN), &hit.image)
                            .on_hover_text(format!(
                                "{}\nmax {:.3} at {:?}, mean {:.3}",
                                hit.image, hit.max, hit.at, hit.mean
                            ));
                        ui.small(class);
                    });
                    if k % 3 == 2 {
                        ui.end_row();
                    }
                }
            });
        }
        out
    }
}
