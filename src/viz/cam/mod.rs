//! Explanations of one image's class: class-activation maps at a layer and pixel attributions.
//!
//! [`CamMethod`] is the one list of methods, of two kinds ([`MethodKind`]):
//! - **layer CAMs** (Grad-CAM, Grad-CAM++, Layer-CAM, Score-CAM, Eigen-CAM, HiResCAM, XGradCAM,
//!   AblationCAM), exactly as pytorch-grad-cam 1.5.7 computes them (see
//!   `tests/fixtures/README.md`): a low-resolution map at the chosen layer, ReLU, min-max
//!   normalisation, half-pixel bilinear upsampling to the input, min-max again; optionally
//!   smoothed ([`Smooth`]: test-time augmentation or the first principal component);
//! - **pixel attributions** (saliency, SmoothGrad, Integrated Gradients, occlusion, Guided
//!   Grad-CAM) as Captum 0.9 computes them, guided backpropagation and FullGrad as
//!   pytorch-grad-cam does, at the input's resolution ([`crate::viz::attribution`]).

mod formulas;
mod perturb;
mod smooth;

use std::fmt;
use std::str::FromStr;

use candle_core::{D, Device, IndexOp, Tensor, Var};

pub use self::formulas::{
    channel_sum, eigen_cam, elementwise, grad_cam_pp_weights, grad_cam_weights, min_max, weighted,
    xgrad_cam_weights,
};
pub use self::smooth::Smooth;
use super::resize::{Corners, bilinear};
use crate::graph::Network;
use crate::viz::attribution::{self, AttributionOptions, Completeness};
use crate::zoo::Model;
use crate::{Error, Result};

/// An explanation method: a layer CAM or a pixel attribution ([`CamMethod::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CamMethod {
    /// Channel weights = spatial mean of the gradient (Selvaraju et al. 2017).
    GradCam,
    /// Channel weights from second and third powers of the gradient (Chattopadhay et al. 2018).
    GradCamPlusPlus,
    /// Element-wise positive gradient times activation (Jiang et al. 2021).
    LayerCam,
    /// Channel weights = softmax of the class score with the input masked by each channel
    /// (Wang et al. 2020); no gradients, one forward per channel (batched).
    ScoreCam,
    /// First principal component of the activations (Muhammad & Yeasin 2020); class-agnostic.
    EigenCam,
    /// Element-wise gradient times activation, summed over channels (Draelos & Carin 2020).
    HiResCam,
    /// Channel weights = activation-weighted gradient sums (Fu et al. 2020).
    XGradCam,
    /// Channel weights = relative drop of the score with the channel zeroed (Desai &
    /// Ramaswamy 2020); no gradients, one forward of the rest of the network per channel.
    AblationCam,
    /// Absolute gradient of the class score with respect to the pixels (Simonyan et al. 2014).
    Saliency,
    /// Saliency averaged over noisy copies of the input (Smilkov et al. 2017).
    SmoothGrad,
    /// Gradients integrated along the path from a baseline image (Sundararajan et al. 2017).
    IntegratedGradients,
    /// Score drop when a sliding window of the image is replaced by the mean (Zeiler & Fergus
    /// 2014).
    Occlusion,
    /// The input gradient with only positive gradients passed back through each ReLU
    /// (Springenberg et al. 2015).
    GuidedBackprop,
    /// Guided backpropagation times the layer's Grad-CAM upsampled by nearest neighbour
    /// (Selvaraju et al. 2017); the one pixel method that uses the layer.
    GuidedGradCam,
    /// The input gradient times the input plus every layer's bias times the gradient at its
    /// output, each scaled and summed (Srinivas & Fleuret 2019); uses every layer.
    FullGrad,
}

/// Whether a method explains through a layer's activations or attributes to pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// A map at a layer's resolution, upsampled to the input.
    Layer,
    /// A map at the input's resolution (only Guided Grad-CAM uses the layer).
    Pixel,
}

impl CamMethod {
    /// Every method, in the order the GUI lists them: the layer CAMs, then the pixel methods.
    pub const ALL: [CamMethod; 15] = [
        CamMethod::GradCam,
        CamMethod::GradCamPlusPlus,
        CamMethod::LayerCam,
        CamMethod::ScoreCam,
        CamMethod::EigenCam,
        CamMethod::HiResCam,
        CamMethod::XGradCam,
        CamMethod::AblationCam,
        CamMethod::Saliency,
        CamMethod::SmoothGrad,
        CamMethod::IntegratedGradients,
        CamMethod::Occlusion,
        CamMethod::GuidedBackprop,
        CamMethod::GuidedGradCam,
        CamMethod::FullGrad,
    ];

    /// The method's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::GradCamPlusPlus => "gradcam++",
            CamMethod::LayerCam => "layercam",
            CamMethod::ScoreCam => "scorecam",
            CamMethod::EigenCam => "eigencam",
            CamMethod::HiResCam => "hirescam",
            CamMethod::XGradCam => "xgradcam",
            CamMethod::AblationCam => "ablationcam",
            CamMethod::Saliency => "saliency",
            CamMethod::SmoothGrad => "smoothgrad",
            CamMethod::IntegratedGradients => "integrated-gradients",
            CamMethod::Occlusion => "occlusion",
            CamMethod::GuidedBackprop => "guided-backprop",
            CamMethod::GuidedGradCam => "guided-gradcam",
            CamMethod::FullGrad => "fullgrad",
        }
    }

    /// The method's display name ("Grad-CAM", "Integrated Gradients").
    pub fn title(self) -> &'static str {
        match self {
            CamMethod::GradCam => "Grad-CAM",
            CamMethod::GradCamPlusPlus => "Grad-CAM++",
            CamMethod::LayerCam => "Layer-CAM",
            CamMethod::ScoreCam => "Score-CAM",
            CamMethod::EigenCam => "Eigen-CAM",
            CamMethod::HiResCam => "HiResCAM",
            CamMethod::XGradCam => "XGradCAM",
            CamMethod::AblationCam => "AblationCAM",
            CamMethod::Saliency => "Saliency",
            CamMethod::SmoothGrad => "SmoothGrad",
            CamMethod::IntegratedGradients => "Integrated Gradients",
            CamMethod::Occlusion => "Occlusion",
            CamMethod::GuidedBackprop => "Guided Backprop",
            CamMethod::GuidedGradCam => "Guided Grad-CAM",
            CamMethod::FullGrad => "FullGrad",
        }
    }

    /// A layer CAM or a pixel attribution.
    pub fn kind(self) -> MethodKind {
        match self {
            CamMethod::Saliency
            | CamMethod::SmoothGrad
            | CamMethod::IntegratedGradients
            | CamMethod::Occlusion
            | CamMethod::GuidedBackprop
            | CamMethod::GuidedGradCam
            | CamMethod::FullGrad => MethodKind::Pixel,
            _ => MethodKind::Layer,
        }
    }

    /// Whether the method looks at [`CamOptions::layer`] (every layer CAM, and Guided
    /// Grad-CAM).
    pub fn uses_layer(self) -> bool {
        self.kind() == MethodKind::Layer || self == CamMethod::GuidedGradCam
    }

    /// Whether the map's sign means something (evidence for and against the class): its
    /// [`Cam::map`] is in `[-1, 1]` and drawn with a diverging colormap.
    pub fn signed(self) -> bool {
        matches!(
            self,
            CamMethod::IntegratedGradients
                | CamMethod::Occlusion
                | CamMethod::GuidedBackprop
                | CamMethod::GuidedGradCam
        )
    }

    /// Whether the method runs batches of forwards that report progress (and can be
    /// cancelled between them).
    pub fn is_batched(self) -> bool {
        matches!(
            self,
            CamMethod::ScoreCam
                | CamMethod::AblationCam
                | CamMethod::SmoothGrad
                | CamMethod::IntegratedGradients
                | CamMethod::Occlusion
        )
    }

    /// Why the method cannot explain `net` on `device`, or `None` when it can: FullGrad needs
    /// every stage to expose the gradients at its layers' outputs
    /// ([`Network::bias_probe_refusal`]); the guided methods need the CPU's ReLU kernels.
    pub fn refusal(self, net: &Network, device: &Device) -> Option<String> {
        match self {
            CamMethod::GuidedBackprop | CamMethod::GuidedGradCam if !device.is_cpu() => {
                Some(format!("{self} runs on the CPU only (choose --device cpu)"))
            }
            CamMethod::FullGrad => net.bias_probe_refusal().map(|why| {
                format!(
                    "FullGrad cannot explain this model: {why}; it runs on every architecture \
                     of the zoo, whose stages probe their biased layers"
                )
            }),
            _ => None,
        }
    }

    /// `methods` without those that cannot explain `net` on `device` ([`CamMethod::refusal`]):
    /// what a comparison of every method runs.
    pub fn applicable(methods: &[CamMethod], net: &Network, device: &Device) -> Vec<CamMethod> {
        methods
            .iter()
            .copied()
            .filter(|m| m.refusal(net, device).is_none())
            .collect()
    }

    fn needs_gradient(self) -> bool {
        matches!(
            self,
            CamMethod::GradCam
                | CamMethod::GradCamPlusPlus
                | CamMethod::LayerCam
                | CamMethod::HiResCam
                | CamMethod::XGradCam
        )
    }
}

impl fmt::Display for CamMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CamMethod {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let key = |n: &str| n.to_ascii_lowercase().replace(['-', '_', ' '], "");
        let wanted = key(s);
        CamMethod::ALL
            .into_iter()
            .find(|m| {
                key(m.name()) == wanted
                    || (wanted == "gradcampp" && *m == CamMethod::GradCamPlusPlus)
                    || (wanted == "ig" && *m == CamMethod::IntegratedGradients)
            })
            .ok_or_else(|| {
                format!(
                    "unknown method `{s}`; use one of {}",
                    CamMethod::ALL.map(|m| m.name()).join(", ")
                )
            })
    }
}

/// What the class score is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CamScore {
    /// The raw logit (pytorch-grad-cam's `ClassifierOutputTarget`, Captum's `target`).
    #[default]
    Logit,
    /// The softmax probability.
    Probability,
}

/// What to compute.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CamOptions {
    pub method: CamMethod,
    /// The layer to look at (a stage with a spatial output, e.g. `head`); not used by the
    /// pixel methods.
    pub layer: String,
    /// The class; `None` takes the top-1 prediction.
    pub class: Option<usize>,
    pub score: CamScore,
    /// Score-CAM: masked images per forward.
    pub scorecam_batch: usize,
    /// Smoothing of a layer CAM.
    #[serde(default)]
    pub smooth: Smooth,
    /// The parameters of AblationCAM's batches and of the pixel methods.
    #[serde(default)]
    pub attribution: AttributionOptions,
}

impl CamOptions {
    /// `method` at `layer` for the top-1 class, scored by the logit, default parameters.
    pub fn new(method: CamMethod, layer: &str) -> Self {
        CamOptions {
            method,
            layer: layer.to_string(),
            class: None,
            score: CamScore::Logit,
            scorecam_batch: 16,
            smooth: Smooth::None,
            attribution: AttributionOptions::default(),
        }
    }

    /// These options for `model`: its input normalisation, in which the black and uniform
    /// baselines of Integrated Gradients are made. Every caller that has the model goes
    /// through here (the CLI, the worker's maps and evidence, `reproduce`).
    pub fn for_model(mut self, model: &Model) -> Self {
        self.attribution.normalization = Some(model.spec.preprocess.normalization());
        self
    }

    /// Errors, naming the option, unless a layer is named, `scorecam_batch` is 1 to 256, the
    /// attribution parameters are in range ([`AttributionOptions::validate`]) and a smoothing
    /// is asked only of a layer CAM (the CLI, the desktop app and `reproduce` all call it).
    pub fn validate(&self) -> Result<()> {
        if self.layer.trim().is_empty() {
            return Err(Error::Model("--layer must name a layer".into()));
        }
        if self.smooth != Smooth::None && self.method.kind() == MethodKind::Pixel {
            return Err(Error::Model(format!(
                "--smooth {} applies to the layer CAMs, not to the pixel method `{}`",
                self.smooth, self.method
            )));
        }
        super::check_range("scorecam_batch", self.scorecam_batch, 1..=256)?;
        self.attribution.validate()
    }
}

/// A computed map.
#[derive(Clone, Debug)]
pub struct Cam {
    pub method: CamMethod,
    /// The layer of a layer CAM; `input` for a pixel method.
    pub layer: String,
    /// The class the map is for.
    pub class: usize,
    /// The softmax probability of that class for the unmasked image.
    pub prob: f32,
    /// Layer CAMs: the layer-resolution map after ReLU, before normalisation (with
    /// `--smooth aug`: the un-augmented image's). Pixel methods: the map at the input's
    /// resolution before normalisation (saliency, SmoothGrad: the largest absolute gradient
    /// over the colour channels; Integrated Gradients, guided backpropagation, Guided
    /// Grad-CAM: the attributions summed over the channels; occlusion: the score drop;
    /// FullGrad: the sum of the scaled terms). `[h, w]` row-major.
    pub lowres: Vec<f32>,
    /// `(h, w)` of [`Cam::lowres`].
    pub lowres_size: (usize, usize),
    /// The map at input resolution, row-major: in `[0, 1]`, or in `[-1, 1]` (divided by its
    /// largest magnitude) when [`Cam::signed`].
    pub map: Vec<f32>,
    /// `(height, width)` of [`Cam::map`] (the network input's).
    pub size: (usize, usize),
    /// Whether [`Cam::map`]'s sign means something ([`CamMethod::signed`]).
    pub signed: bool,
    /// Pixel methods: the attribution per colour channel, `[3, height, width]` row-major, as
    /// Captum returns it (FullGrad: none, its terms are summed over channels and layers).
    pub attribution: Option<Vec<f32>>,
    /// Integrated Gradients: how far the attributions' sum is from the score difference.
    pub completeness: Option<Completeness>,
}

impl Cam {
    /// [`Cam::map`] in `[0, 1]` for a colormap: a signed map's 0 at 0.5.
    pub fn display_map(&self) -> Vec<f32> {
        if self.signed {
            self.map.iter().map(|v| 0.5 + 0.5 * v).collect()
        } else {
            self.map.clone()
        }
    }
}

/// Computes a map for one preprocessed image `[1, 3, H, W]`.
pub fn compute(net: &Network, input: &Tensor, opts: &CamOptions) -> Result<Cam> {
    compute_with_progress(net, input, opts, &mut |_, _| true)
}

/// As [`compute`]; `progress(done, total)` is called as the batches of the batched methods
/// ([`CamMethod::is_batched`]) finish and cancels the job ([`Error::Cancelled`]) when it
/// returns `false`.
pub fn compute_with_progress(
    net: &Network,
    input: &Tensor,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Cam> {
    let (batch, _, _, _) = input.dims4()?;
    if batch != 1 {
        return Err(Error::Model(format!(
            "an explanation is computed for one image at a time, got a batch of {batch}"
        )));
    }
    opts.validate()?;
    match (opts.method.kind(), opts.smooth) {
        (MethodKind::Pixel, _) => attribution::compute(net, input, opts, progress),
        (MethodKind::Layer, Smooth::Aug) => smooth::augmented(net, input, opts, progress),
        (MethodKind::Layer, _) => layer_cam(net, input, opts, opts.class, progress),
    }
}

/// The class asked for (or the top-1 of `logits`, `[1, classes]`) and its probability.
pub(crate) fn resolve_class(logits: &Tensor, class: Option<usize>) -> Result<(usize, f32)> {
    // `ops::softmax`, not `softmax_last_dim`: candle-nn 0.11's fused kernel has no backward.
    let probs = candle_nn::ops::softmax(logits, D::Minus1)?;
    let num_classes = logits.dim(1)?;
    let class = match class {
        Some(c) if c >= num_classes => {
            return Err(Error::Model(format!(
                "class {c} is out of range: the model has {num_classes} classes (0..{})",
                num_classes - 1
            )));
        }
        Some(c) => c,
        None => probs.i(0)?.argmax(0)?.to_scalar::<u32>()? as usize,
    };
    let prob = probs.i((0, class))?.to_scalar::<f32>()?;
    if !prob.is_finite() {
        return Err(Error::NonFinite {
            what: format!("the probability of class {class}"),
            value: prob,
        });
    }
    Ok((class, prob))
}

/// The class score of each image of a batch of `logits` `[batch, classes]` (forward only).
pub(crate) fn class_scores(logits: &Tensor, class: usize, score: CamScore) -> Result<Vec<f32>> {
    let s = match score {
        CamScore::Logit => logits.clone(),
        #[allow(clippy::disallowed_methods, reason = "scores without a gradient")]
        CamScore::Probability => candle_nn::ops::softmax_last_dim(logits)?,
    };
    Ok(s.i((.., class))?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

/// The summed class score of a batch of `logits`, differentiable.
pub(crate) fn score_target(logits: &Tensor, class: usize, score: CamScore) -> Result<Tensor> {
    let s = match score {
        CamScore::Logit => logits.i((.., class))?,
        CamScore::Probability => candle_nn::ops::softmax(logits, D::Minus1)?.i((.., class))?,
    };
    Ok(s.sum_all()?)
}

/// One layer CAM of `input` for `class` (`None`: the top-1), smoothed by eigen when asked.
pub(crate) fn layer_cam(
    net: &Network,
    input: &Tensor,
    opts: &CamOptions,
    class: Option<usize>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Cam> {
    let (_, _, in_h, in_w) = input.dims4()?;
    let layer = opts.layer.as_str();
    let output = net.output_layer();
    if net.index_of(layer)? >= net.index_of(output)? {
        return Err(Error::Model(format!(
            "layer `{layer}` is the network's output: a class-activation map needs a layer \
             before it (e.g. the model's default CAM layer)"
        )));
    }
    let act = net.forward_range(None, layer, input, false)?;
    let (_, _, h, w) = act.dims4().map_err(|_| {
        Error::Model(format!(
            "layer `{layer}` has no spatial output (shape {:?}): pick a convolutional layer",
            act.dims()
        ))
    })?;

    let act_var = Var::from_tensor(&act)?;
    let logits = net.forward_range(Some(layer), output, act_var.as_tensor(), false)?;
    let (class, prob) = resolve_class(&logits, class)?;

    let a = rows(&act)?;
    let method = opts.method;
    let contributions = if method.needs_gradient() {
        let grads = score_target(&logits, class, opts.score)?.backward()?;
        let g = grads
            .get(act_var.as_tensor())
            .ok_or_else(|| Error::Model(format!("no gradient reached layer `{layer}`")))?;
        let g = rows(g)?;
        match method {
            CamMethod::GradCam => weighted(&a, &grad_cam_weights(&g)),
            CamMethod::GradCamPlusPlus => weighted(&a, &grad_cam_pp_weights(&a, &g)),
            CamMethod::XGradCam => weighted(&a, &xgrad_cam_weights(&a, &g)),
            CamMethod::HiResCam => elementwise(&a, &g, false),
            _ => elementwise(&a, &g, true),
        }
    } else {
        match method {
            CamMethod::EigenCam => a,
            CamMethod::AblationCam => {
                let w = perturb::ablation_cam_weights(net, layer, &act, class, opts, progress)?;
                weighted(&a, &w)
            }
            _ => {
                let w = perturb::score_cam_weights(net, input, &act, class, opts, progress)?;
                weighted(&a, &w)
            }
        }
    };
    let raw = if method == CamMethod::EigenCam || opts.smooth == Smooth::Eigen {
        eigen_cam(&contributions, h * w)
    } else {
        channel_sum(&contributions)
    };
    debug_assert_eq!(raw.len(), h * w);
    let lowres: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
    let up = bilinear(&min_max(&lowres), (h, w), (in_h, in_w), Corners::HalfPixel);
    Ok(Cam {
        method,
        layer: layer.to_string(),
        class,
        prob,
        lowres,
        lowres_size: (h, w),
        map: min_max(&up),
        size: (in_h, in_w),
        signed: false,
        attribution: None,
        completeness: None,
    })
}

/// `[1, C, h, w]` -> one row of `h * w` values per channel.
pub(crate) fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_device(&Device::Cpu)?
        .squeeze(0)?
        .flatten_from(1)?
        .to_vec2::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for m in CamMethod::ALL {
            assert_eq!(m.name().parse::<CamMethod>(), Ok(m));
        }
        assert_eq!(
            "Grad-CAM++".parse::<CamMethod>(),
            Ok(CamMethod::GradCamPlusPlus)
        );
        assert_eq!(
            "integrated_gradients".parse::<CamMethod>(),
            Ok(CamMethod::IntegratedGradients)
        );
        assert!(
            "cam-o-matic"
                .parse::<CamMethod>()
                .unwrap_err()
                .contains("cam-o-matic")
        );
    }

    #[test]
    fn kinds_split_the_list_into_layer_cams_then_pixel_methods() {
        let kinds: Vec<MethodKind> = CamMethod::ALL.iter().map(|m| m.kind()).collect();
        let first_pixel = kinds.iter().position(|k| *k == MethodKind::Pixel).unwrap();
        assert_eq!(first_pixel, 8);
        assert!(kinds[first_pixel..].iter().all(|k| *k == MethodKind::Pixel));
        assert!(CamMethod::Occlusion.signed() && !CamMethod::Saliency.signed());
    }

    #[test]
    fn smoothing_a_pixel_method_is_refused() {
        let mut opts = CamOptions::new(CamMethod::Saliency, "head");
        opts.smooth = Smooth::Eigen;
        let err = opts.validate().unwrap_err().to_string();
        assert!(
            err.contains("--smooth eigen") && err.contains("saliency"),
            "{err}"
        );
    }
}
