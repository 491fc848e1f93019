//! The worker's side of the Heatmap tab's evidence: the faithfulness metrics of one or every
//! method's map ([`faithfulness`]) and the model-randomisation sanity check ([`sanity`]).

use std::path::{Path, PathBuf};

use super::{Engine, JobContext};
use candle_core::Tensor;

use crate::Result;
use crate::viz::cam::{self, CamMethod, CamOptions, MethodKind, Smooth};
use crate::viz::faithfulness::{self, FaithOptions, Scores};
use crate::viz::sanity::{self, Sanity};
use crate::zoo::Model;

/// What a map's evidence is about: the model, the image and the options the map was made with
/// (method, layer, class, score, smoothing, the pixel methods' parameters), its class resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceKey {
    pub model: String,
    pub image: PathBuf,
    pub map: CamOptions,
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

/// `map` with its class resolved: `map.class`, or the top class when it is `None`.
fn resolved(model: &Model, input: &Tensor, map: &CamOptions) -> Result<CamOptions> {
    let class = match map.class {
        Some(c) => c,
        None => {
            let opts = CamOptions::new(CamMethod::EigenCam, &map.layer).for_model(model);
            cam::compute(&model.network, input, &opts)?.class
        }
    };
    Ok(CamOptions {
        class: Some(class),
        ..map.clone()
    })
}

/// `method`'s map with the parameters of `map` (a smoothing only where `method` is a layer
/// CAM), for `model`.
fn options_of(method: CamMethod, map: &CamOptions, model: &Model) -> CamOptions {
    let smooth = match method.kind() {
        MethodKind::Pixel => Smooth::None,
        _ => map.smooth,
    };
    CamOptions {
        method,
        smooth,
        ..map.clone()
    }
    .for_model(model)
}

/// The metrics of each of `methods`' maps, made with the parameters of the map `map` (the
/// row's; its class `None`: the top class), and the baseline, with progress in scored images
/// and Cancel between batches.
#[allow(clippy::too_many_arguments)]
pub fn faithfulness(
    engine: &mut Engine,
    ctx: &JobContext,
    model_key: &str,
    image: &Path,
    map: &CamOptions,
    methods: &[CamMethod],
    opts: &FaithOptions,
    row: usize,
    compare: bool,
) -> Result<FaithView> {
    opts.validate()?;
    map.validate()?;
    let model = engine.model(model_key)?;
    model.network.index_of(&map.layer)?;
    // The comparison leaves out a method that cannot explain this model (FullGrad on ConvNeXt).
    let methods = &if compare {
        CamMethod::applicable(methods, &model.network, &model.device)
    } else {
        methods.to_vec()
    };
    let input = model.spec.preprocess.load(image, &model.device)?;
    let map = resolved(&model, &input, map)?;
    let class = map.class.unwrap_or_default();
    let mut maps = Vec::with_capacity(methods.len());
    for (i, &method) in methods.iter().enumerate() {
        // Each map its own stage, named, with its batches as progress: one map (Score-CAM on
        // a wide layer) can take minutes.
        let stage = format!("map {} of {}, {method}", i + 1, methods.len());
        ctx.progress(&stage, 0, 1);
        ctx.cancel.check()?;
        let cam_opts = options_of(method, &map, &model);
        let computed =
            cam::compute_with_progress(&model.network, &input, &cam_opts, &mut |d, t| {
                ctx.progress(&stage, d, t);
                !ctx.cancel.is_cancelled()
            })?;
        maps.push(computed.map);
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
            map,
        },
        row,
        compare,
        score,
        methods: out,
        random,
    })
}

/// The sanity check of the map `map` (its class `None`: the top class) on a fresh copy of the
/// model (the engine's stays intact), with progress in maps and Cancel between stages.
pub fn sanity(
    engine: &mut Engine,
    ctx: &JobContext,
    model_key: &str,
    image: &Path,
    map: &CamOptions,
    seed: u64,
    row: usize,
) -> Result<SanityView> {
    map.validate()?;
    // The engine's copy answers a bad layer before a second copy is loaded.
    engine.model(model_key)?.network.index_of(&map.layer)?;
    let mut copy = crate::zoo::resolve(model_key)?.load(&engine.device)?;
    let input = copy.spec.preprocess.load(image, &copy.device)?;
    let (_, _, h, w) = input.dims4()?;
    let map = resolved(&copy, &input, map)?;
    let opts = options_of(map.method, &map, &copy);
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
            map: map.clone(),
        },
        row,
        method: map.method,
        sanity: result,
    })
}
