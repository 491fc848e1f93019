//! "Export PNG" and "Export all" of the Heatmap tab: every row on screen, named by what it
//! shows (image, model, class, method; [`crate::export::naming`]).

use std::path::Path;

use super::{HeatmapSettings, HeatmapTab};
use crate::export::naming::figure_stem;
use crate::export::{CamRequest, FigureRequest};
use crate::gui::context::Commands;
use crate::gui::settings::ExportSettings;
use crate::jobs::views::CamView;
use crate::viz::cam::{CamMethod, MethodKind, Smooth};

/// The file stem of a row's figure: the image's stem, the model (the last part of its key:
/// the model's name or its folder), the class and the method, made file-name safe.
pub(super) fn stem(view: &CamView, model: &str, method: CamMethod) -> String {
    let file = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let model = Path::new(model)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.to_string());
    figure_stem(&[
        &file(&view.image),
        &model,
        &view.class_name,
        // `gradcam++` would lose its `++` and take Grad-CAM's name.
        &method.name().replace('+', "p"),
    ])
}

impl HeatmapTab {
    /// The exports of every row on screen (`models`: each row's model key): the figure as
    /// shown, or one per method (`all`). One request per model, since the worker renders a
    /// request's figures with one model.
    pub(super) fn export(
        &self,
        models: &[Option<String>],
        s: &HeatmapSettings,
        export: &ExportSettings,
        all: bool,
    ) -> Commands {
        let mut out = Commands::default();
        for (row, model) in models.iter().enumerate() {
            let (Some(model), Some(view)) =
                (model, self.rows.get(row).and_then(|r| r.view.as_ref()))
            else {
                continue;
            };
            let methods = if all {
                CamMethod::ALL.to_vec()
            } else {
                vec![view.options.method]
            };
            let figures = methods
                .into_iter()
                .map(|method| {
                    let request = FigureRequest::Cam(CamRequest {
                        image: view.image.clone(),
                        layer: view.options.layer.clone(),
                        method,
                        class: Some(view.class),
                        score: view.options.score,
                        colormap: s.colormap,
                        alpha: s.alpha,
                        smooth: match method.kind() {
                            MethodKind::Layer => view.options.smooth,
                            MethodKind::Pixel => Smooth::None,
                        },
                        attribution: view.options.attribution.clone(),
                    });
                    (request, stem(view, model, method))
                })
                .collect();
            out.push(super::super::export_command(model, export, figures));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::cam::CamOptions;
    use crate::viz::overlay::CamImages;

    #[test]
    fn a_figure_is_named_by_image_model_class_and_method() {
        let blank = image::RgbImage::new(1, 1);
        let view = CamView {
            model: "/runs/2026-11-30 extract/".into(),
            image: "/photos/my cat.v2.png".into(),
            images: CamImages {
                original: blank.clone(),
                heatmap: blank.clone(),
                overlay: blank,
                outside: false,
            },
            class: 3,
            class_name: "T-shirt/top".into(),
            prob: 0.5,
            top5: Vec::new(),
            options: CamOptions::new(CamMethod::ScoreCam, "blocks.6"),
            map_size: (7, 7),
            completeness: None,
        };
        assert_eq!(
            stem(&view, "/runs/2026-11-30 extract/", CamMethod::ScoreCam),
            "my_cat_v2_2026-11-30_extract_T-shirt_top_scorecam"
        );
        assert_eq!(
            stem(&view, "efficientnet_lite0", CamMethod::GradCam),
            "my_cat_v2_efficientnet_lite0_T-shirt_top_gradcam"
        );
        assert_eq!(
            stem(&view, "m", CamMethod::GradCamPlusPlus),
            "my_cat_v2_m_T-shirt_top_gradcampp"
        );
    }
}
