//! The worker's side of the Heatmap tab's evidence: the faithfulness metrics of one or every
//! method's map ([`faithfulness`]) and the model-randomisation sanity check ([`sanity`]).

use std::path::{Path, PathBuf};

use super::{Engine, JobContext};
use crate::Result;
use crate::viz::cam::{self, CamMethod, CamOptions};
use crate::viz::faithfulness::{self, FaithOptions, Scores};
use crate::viz::sanity::{self, Sanity};

/// What a map's evidence is about: the same model, image, layer and class as a row's map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceKey {
    pub model: String,
    pub image: PathBuf,
    pub layer: String,
    pub class: usize,
}

/// Faithfulness of one or more methods' maps for one image and class.
#[derive(Clone, Debug)]
pub struct FaithView {
    pub key: EvidenceKey,
    /// The Heatmap tab's row it is for.
    pub row: usize,
    /// Every method of `CamMethod::ALL` (the "compare methods" view), not only the row's.
    pub compare: bool,
    /// The class score of the unperturbed image.
    pub score: f32,
    pub methods: Vec<(CamMethod, Scores)>,
    /// The random-map baseline.
    pub random: Scores,
}

/// The sanity check of one method's map.
#[derive(Clone, Debug)]
pub struct SanityView {
    pub key: EvidenceKey,
    pub row: usize,
    pub method: CamMethod,
    pub sanity: Sanity,
}

/// The layer a request means: `layer`, or the model's default CAM layer when `None`.
fn layer_of(engine: &mut Engine, model: &str, layer: Option<&str>) -> Result<String> {
    Ok(match layer {
        Some(l) => l.to_string(),
        None => engine.model(model)?.spec.manifest.default_cam_layer.clone(),
    })
}

/// The metrics of each of `methods`' maps of `class` (`None`: the top class) and the baseline,
/// with progress in scored images and Cancel between batches.
#[allow(clippy::too_many_arguments)]
pub fn faithfulness(
    engine: &mut Engine,
    ctx: &JobContext,
    model_key: &str,
    image: &Path,
    layer: Option<&str>,
    methods: &[CamMethod],
    class: Option<usize>,
    opts: &FaithOptions,
    row: usize,
    compare: bool,
) -> Result<FaithView> {
    opts.validate()?;
    let layer = layer_of(engine, model_key, layer)?;
    let model = engine.model(model_key)?;
    // The comparison leaves out a method that cannot explain this model (FullGrad on ConvNeXt).
    let methods = &if compare {
        CamMethod::applicable(methods, &model.network)
    } else {
        methods.to_vec()
    };
    let input = model.spec.preprocess.load(image, &model.device)?;
    let class = match class {
        Some(c) => c,
        None => {
            cam::compute(
                &model.network,
                &input,
                &CamOptions::new(CamMethod::EigenCam, &layer),
            )?
            .class
        }
    };
    let mut maps = Vec::with_capacity(methods.len());
    for (i, &method) in methods.iter().enumerate() {
        // Each map its own stage, named, with its batches as progress: one map (Score-CAM on
        // a wide layer) can take minutes.
        let stage = format!("map {} of {}, {method}", i + 1, methods.len());
        ctx.progress(&stage, 0, 1);
        ctx.cancel.check()?;
        let cam_opts = CamOptions {
            class: Some(class),
            ..CamOptions::new(method, &layer)
        };
        let map = cam::compute_with_progress(&model.network, &input, &cam_opts, &mut |d, t| {
            ctx.progress(&stage, d, t);
            !ctx.cancel.is_cancelled()
        })?;
        maps.push(map.map);
    }
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let (score, scores, random) = faithfulness::evaluate_methods(
        &model.network,
        &input,
        &refs,
        class,
        opts,
        &ctx.cancel,
        &mut |d, total| ctx.progress("perturbed images", d, total),
    )?;
    let out = methods.iter().copied().zip(scores).collect();
    Ok(FaithView {
        key: EvidenceKey {
            model: model_key.to_string(),
            image: image.to_path_buf(),
            layer,
            class,
        },
        row,
        compare,
        score,
        methods: out,
        random,
    })
}

/// The sanity check of `method`'s map of `class` on a fresh copy of the model (the engine's
/// stays intact), with progress in maps and Cancel between stages.
#[allow(clippy::too_many_arguments)]
pub fn sanity(
    engine: &mut Engine,
    ctx: &JobContext,
    model_key: &str,
    image: &Path,
    layer: Option<&str>,
    method: CamMethod,
    class: Option<usize>,
    seed: u64,
    row: usize,
) -> Result<SanityView> {
    let layer = layer_of(engine, model_key, layer)?;
    let mut copy = crate::zoo::resolve(model_key)?.load(&engine.device)?;
    let input = copy.spec.preprocess.load(image, &copy.device)?;
    let (_, _, h, w) = input.dims4()?;
    let class = match class {
        Some(c) => c,
        None => cam::compute(&copy.network, &input, &CamOptions::new(method, &layer))?.class,
    };
    let opts = CamOptions {
        class: Some(class),
        ..CamOptions::new(method, &layer)
    };
    let result = sanity::cascade(
        &mut copy.network,
        (h, w),
        seed,
        &mut |net| Ok(cam::compute(net, &input, &opts)?.map),
        &mut |d, t| {
            ctx.progress("randomised stages", d, t);
            !ctx.cancel.is_cancelled()
        },
    )?;
    Ok(SanityView {
        key: EvidenceKey {
            model: model_key.to_string(),
            image: image.to_path_buf(),
            layer,
            class,
        },
        row,
        method,
        sanity: result,
    })
}
