//! Visualisation: filter patterns against the gradient-ascent fixture, CAM figures, exports.
use crate::common;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;
use common::{fixture, lite0, load_lite0, rel_to_max, repo};
use convlens::graph::layers::BatchNormMode;
use convlens::viz::filters::{self, AscentOptions, TapFn};

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(1e-12)
}

struct Case {
    tap: &'static str,
    filter: usize,
    fx: HashMap<String, Tensor>,
}

impl Case {
    fn get(&self, k: &str) -> Tensor {
        self.fx[&format!("{}.f{}.{k}", self.tap, self.filter)].clone()
    }
}

fn cases() -> Vec<Case> {
    let fx = fixture("filters_lite0");
    [("blocks.4", 0), ("blocks.10", 3)]
        .into_iter()
        .map(|(tap, filter)| Case {
            tap,
            filter,
            fx: fx.clone(),
        })
        .collect()
}

/// Errors of one implementation on one case: (grad_step0 rel-to-max, image_step2 max abs,
/// relative errors of loss_per_step[0..4], final loss, the 30 losses).
fn run_case(tap_fn: &TapFn, case: &Case, steps: usize) -> (f32, f32, Vec<f32>, f32, Vec<f32>) {
    let init = case.get("init");
    let (_, g0) =
        filters::loss_and_gradient_with(tap_fn, case.tap, &[case.filter], &init, 2).unwrap();
    let g_err = rel_to_max(&g0, &case.get("grad_step0"));
    let two = AscentOptions {
        steps: 2,
        ..AscentOptions::default()
    };
    let a2 =
        filters::ascend_with(tap_fn, case.tap, &[case.filter], &init, &two, &mut |_| true).unwrap();
    let img_err = max_abs(&a2.images, &case.get("image_step2"));
    let full = filters::ascend_with(
        tap_fn,
        case.tap,
        &[case.filter],
        &init,
        &AscentOptions {
            steps,
            ..AscentOptions::default()
        },
        &mut |_| true,
    )
    .unwrap();
    let reference = case.get("loss_per_step").to_vec1::<f32>().unwrap();
    let loss_errs = (0..4)
        .map(|s| rel(full.losses[0][s], reference[s]))
        .collect();
    (
        g_err,
        img_err,
        loss_errs,
        full.final_losses[0],
        full.losses[0].clone(),
    )
}

fn check_curve(case: &Case, final_loss: f32, losses: &[f32]) {
    let final_ref = case
        .get("loss_final")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let ef = rel(final_loss, final_ref);
    assert_eq!(losses.len(), 30);
    assert!(
        ef <= 0.15,
        "{} f{}: final loss {final_loss} vs {final_ref}",
        case.tap,
        case.filter
    );
    assert!(
        final_loss > losses[0] && losses[29] > losses[0],
        "the loss rises: {losses:?}"
    );
}

/// The ascent (loss, normalised gradient, update) at the fixture README's tolerances, through the
/// network with BatchNorm unfolded (`BatchNormMode::Exact`: PyTorch's rounding, kinks included);
/// the first 4 steps only (the full run is checked through the folded network below).
#[test]
fn gradient_ascent_matches_the_fixture() {
    let mut model = load_lite0();
    model
        .network
        .set_batchnorm_mode(None, BatchNormMode::Exact)
        .unwrap();
    for case in cases() {
        let tap_fn = filters::layer_tap(&model.network, case.tap);
        let (g_err, img_err, loss_errs, final_loss, _) = run_case(&tap_fn, &case, 4);
        println!(
            "exact {} f{}: grad_step0 {g_err:.1e}, image_step2 {img_err:.1e}, losses {:.1e}, final {final_loss:.2}",
            case.tap,
            case.filter,
            loss_errs.iter().fold(0f32, |a, &b| a.max(b))
        );
        assert!(g_err <= 1e-4, "grad_step0 off by {g_err:e}");
        assert!(img_err <= 1e-4, "image_step2 off by {img_err:e}");
        for (s, e) in loss_errs[..3].iter().enumerate() {
            assert!(*e <= 1e-4, "loss[{s}] off by {e:e}");
        }
        assert!(loss_errs[3] <= 1e-2, "loss[3] off by {:e}", loss_errs[3]);
    }
}

/// The shipped network (BatchNorm folded, fused kernels): the 30-step loss curve rises to within
/// 15% of the reference.
#[test]
fn gradient_ascent_through_the_fused_network() {
    let model = lite0();
    for case in cases() {
        let tap_fn = filters::layer_tap(&model.network, case.tap);
        let t0 = Instant::now();
        let (g_err, img_err, loss_errs, final_loss, losses) = run_case(&tap_fn, &case, 30);
        println!(
            "fused {} f{}: grad_step0 {g_err:.1e}, image_step2 {img_err:.1e}, losses {:.1e}, final {final_loss:.2} ({:.2?} for 32 steps)",
            case.tap,
            case.filter,
            loss_errs.iter().fold(0f32, |a, &b| a.max(b)),
            t0.elapsed()
        );
        assert!(loss_errs[0] <= 1e-4, "loss[0] off by {:e}", loss_errs[0]);
        // One ReLU6 unit of blocks.1 lies 1.2e-6 from its kink at the fixture's start and
        // BatchNorm folding moves it across: the first gradient differs locally.
        assert!(g_err <= 1e-2, "grad_step0 off by {g_err:e}");
        check_curve(&case, final_loss, &losses);
    }
}

// ---------------------------------------------------------------------------------------------
// Filter grids, CAMs, figures and sidecars.

use convlens::Error;
use convlens::export::{self, ActivationsRequest, CamRequest, FigureRequest, FiltersRequest};
use convlens::viz::activations::{self, GridOptions};
use convlens::viz::cam::{self as camlib, CamMethod, CamOptions, CamScore};
use convlens::viz::colormap::Colormap;
use convlens::viz::filters::{FilterMethod, FilterOptions, FilterProgress};

fn model_source() -> String {
    repo("models/efficientnet_lite0.json").display().to_string()
}

/// The filter picture against Chollet's deprocessing done independently in numpy, float64
/// (`tests/fixtures/make/filter_levels.py`, on the fixture's final images): every level equal,
/// except a few one off where convlens's f32 standardisation lands on the other side of a
/// level boundary. A wrong standardisation (sample std, no centring, x32 instead of x64, no
/// clipping, rounding instead of truncation, a crop off by one) moves most levels.
#[test]
fn filter_pictures_have_the_levels_of_the_reference_deprocessing() {
    let images = fixture("filters_lite0");
    let levels = fixture("filter_levels");
    for case in ["blocks.4.f0.", "blocks.10.f3."] {
        let last = images[&format!("{case}final")].squeeze(0).unwrap();
        for (crop, key) in [(0, "levels"), (16, "levels_crop16")] {
            let ours = filters::deprocess(&last, [0.498; 3], [0.502; 3], crop).unwrap();
            let reference = &levels[&format!("{case}{key}")];
            let (h, w, _) = reference.dims3().unwrap();
            assert_eq!(ours.dimensions(), (w as u32, h as u32), "{case}{key}");
            let reference = reference.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            let off: Vec<u8> = ours
                .as_raw()
                .iter()
                .zip(&reference)
                .map(|(a, b)| a.abs_diff(*b))
                .filter(|d| *d > 0)
                .collect();
            println!(
                "{case}{key}: {} of {} levels differ",
                off.len(),
                reference.len()
            );
            assert!(off.iter().all(|d| *d == 1), "{case}{key}: {off:?}");
            assert!(
                off.len() * 1000 <= reference.len(),
                "{case}{key}: {}",
                off.len()
            );
        }
    }
}

fn small_filter_options() -> FilterOptions {
    let mut o = FilterOptions::with_size(64);
    o.ascent.steps = 4;
    o.batch = 2;
    o.seed = 7;
    o
}

#[test]
fn filter_grids_are_seeded_and_cancellable() {
    let model = lite0();
    let opts = small_filter_options();
    let mut seen = Vec::new();
    let a = filters::filter_patterns(&model, "blocks.2", &[0, 1, 5], &opts, &mut |i, img| {
        seen.push((i, img.dimensions()));
        true
    })
    .unwrap();
    assert_eq!(seen, vec![(0, (48, 48)), (1, (48, 48)), (2, (48, 48))]);
    assert_eq!(a[2].filter, 5);
    let b =
        filters::filter_patterns(&model, "blocks.2", &[0, 1, 5], &opts, &mut |_, _| true).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.image, y.image, "same seed, same picture");
    }
    // A filter's picture does not depend on which others are computed with it.
    let alone = filters::filter_patterns(
        &model,
        "blocks.2",
        &[5],
        &FilterOptions {
            batch: 1,
            ..opts.clone()
        },
        &mut |_, _| true,
    )
    .unwrap();
    assert_eq!(alone[0].image, a[2].image, "batched and alone agree");
    assert_eq!(alone[0].losses, a[2].losses);
    let other_seed = filters::filter_patterns(
        &model,
        "blocks.2",
        &[0],
        &FilterOptions {
            seed: 8,
            ..opts.clone()
        },
        &mut |_, _| true,
    )
    .unwrap();
    assert_ne!(other_seed[0].image, a[0].image);
    let mut calls = 0;
    let err = filters::filter_patterns(&model, "blocks.2", &[0, 1, 2, 3], &opts, &mut |_, _| {
        calls += 1;
        false
    })
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(calls, 1);
    let err =
        filters::filter_patterns(&model, "blocks.2", &[24], &opts, &mut |_, _| true).unwrap_err();
    assert!(err.to_string().contains("24 filters"), "{err}");
    let err =
        filters::filter_patterns(&model, "pooled", &[0], &opts, &mut |_, _| true).unwrap_err();
    assert!(
        err.to_string().contains("blocks.4"),
        "lists the spatial layers: {err}"
    );
}

fn small_lucid_options() -> FilterOptions {
    let mut o = FilterOptions::lucid(64);
    o.ascent.steps = 8;
    o.batch = 3;
    o.seed = 11;
    o
}

/// The lucid preset over a grid: each filter's picture is the same whichever batch it is
/// computed in and whoever shares it, the seed decides the picture, the ascent raises each
/// filter's activation, and Cancel stops it between two steps.
#[test]
fn lucid_grids_are_seeded_per_filter_and_cancellable() {
    let model = lite0();
    let opts = small_lucid_options();
    let run = |filters: &[usize], o: &FilterOptions| {
        filters::filter_patterns(&model, "blocks.4", filters, o, &mut |_, _| true).unwrap()
    };
    // 0..5 in batches of 3 (0 1 2 | 3 4) against 4 alone and 4 among others, batch 2.
    let grid = run(&[0, 1, 2, 3, 4], &opts);
    assert_eq!(grid[0].image.dimensions(), (64, 64), "lucid does not crop");
    let alone = run(
        &[4],
        &FilterOptions {
            batch: 1,
            ..opts.clone()
        },
    );
    let mixed = run(
        &[7, 4],
        &FilterOptions {
            batch: 2,
            ..opts.clone()
        },
    );
    assert_eq!(
        alone[0].image, grid[4].image,
        "filter 4 alone = in the grid"
    );
    assert_eq!(
        mixed[1].image, grid[4].image,
        "filter 4 beside 7 = in the grid"
    );
    assert_eq!(alone[0].losses, grid[4].losses);
    let again = run(&[0, 1, 2, 3, 4], &opts);
    for (a, b) in grid.iter().zip(&again) {
        assert_eq!(a.image, b.image, "same seed, same picture");
    }
    let other = run(
        &[4],
        &FilterOptions {
            seed: 12,
            ..opts.clone()
        },
    );
    assert_ne!(other[0].image, grid[4].image);
    for p in &grid {
        assert_eq!(p.losses.len(), 8);
        assert!(
            p.final_loss > p.losses[0],
            "filter {}: the activation rises: {:?} -> {}",
            p.filter,
            p.losses,
            p.final_loss
        );
    }
    // Cancel before step 3 of the first batch: no tile, Cancelled.
    let (mut steps, mut tiles) = (0, 0);
    let err = filters::filter_patterns_with(&model, "blocks.4", &[0, 1], &opts, &mut |p| match p {
        FilterProgress::Step { step, .. } => {
            steps += 1;
            step < 3
        }
        FilterProgress::Tile { .. } => {
            tiles += 1;
            true
        }
    })
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!((steps, tiles), (4, 0));
}

#[test]
fn activations_grid_and_sparsity_profile() {
    let model = lite0();
    let input = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let acts = activations::layer_activations(&model.network, &input, "blocks.4").unwrap();
    assert_eq!((acts.channels, acts.height, acts.width), (40, 28, 28));
    let grid = acts.grid(&GridOptions::default());
    assert_eq!(grid.dimensions(), (16 * 28 + 15, 3 * 28 + 2));
    let profile = activations::sparsity_profile(&model.network, &input).unwrap();
    let ids: Vec<&str> = profile.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(ids.first(), Some(&"stem"));
    assert_eq!(ids.last(), Some(&"head"));
    assert_eq!(ids.len(), 18);
    let head = profile.last().unwrap();
    assert!(
        head.blank_fraction > profile[0].blank_fraction,
        "{profile:?}"
    );
    let err = activations::layer_activations(&model.network, &input, "logits").unwrap_err();
    assert!(err.to_string().contains("head"), "{err}");
}

#[test]
fn cams_for_two_classes_differ() {
    let model = lite0();
    let input = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let mut opts = CamOptions::new(CamMethod::GradCam, "head");
    opts.class = Some(285); // Egyptian cat
    let cat = camlib::compute(&model.network, &input, &opts).unwrap();
    opts.class = Some(967); // espresso
    let coffee = camlib::compute(&model.network, &input, &opts).unwrap();
    let diff = cat
        .map
        .iter()
        .zip(&coffee.map)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff > 0.3, "the maps differ: max {diff}");
    assert!(cat.prob > coffee.prob);
}

fn cam_request(image: &str, class: Option<usize>) -> FigureRequest {
    FigureRequest::Cam(CamRequest {
        image: repo(image),
        layer: "head".into(),
        method: CamMethod::GradCam,
        class,
        score: CamScore::Logit,
        colormap: Colormap::Jet,
        alpha: 0.4,
        smooth: Default::default(),
        attribution: Default::default(),
    })
}

#[test]
fn exported_figures_follow_the_scale() {
    let model = lite0();
    let dir = tempfile::tempdir().unwrap();
    let requests = [
        cam_request("assets/images/rocket.jpg", None),
        FigureRequest::Activations(ActivationsRequest {
            image: repo("assets/images/coffee.png"),
            layer: "blocks.10".into(),
            grid: GridOptions::default(),
        }),
        FigureRequest::Filters(FiltersRequest {
            layer: "blocks.2".into(),
            filters: vec![0, 1, 2],
            cols: 2,
            options: small_filter_options(),
        }),
    ];
    for (k, request) in requests.iter().enumerate() {
        let mut sizes = Vec::new();
        for scale in [1u32, 2, 3] {
            let out = dir.path().join(format!("fig{k}-x{scale}.png"));
            let e = export::export(
                &model,
                &model_source(),
                request,
                scale,
                &out,
                &mut |_, _| true,
            )
            .unwrap();
            let img = image::open(&e.png).unwrap();
            sizes.push((img.width(), img.height()));
            assert!(e.sidecar.is_file());
        }
        assert_eq!(sizes[1], (sizes[0].0 * 2, sizes[0].1 * 2), "{k}: {sizes:?}");
        assert_eq!(sizes[2], (sizes[0].0 * 3, sizes[0].1 * 3), "{k}: {sizes:?}");
    }
    let err = export::export(
        &model,
        &model_source(),
        &requests[0],
        5,
        &dir.path().join("x.png"),
        &mut |_, _| true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("scale 5"), "{err}");
}

#[test]
fn a_sidecar_reproduces_the_same_bytes() {
    let model = lite0();
    let dir = tempfile::tempdir().unwrap();
    let requests = [
        cam_request("assets/images/chelsea.png", Some(281)),
        FigureRequest::Filters(FiltersRequest {
            layer: "blocks.2".into(),
            filters: vec![3, 4],
            cols: 2,
            options: small_filter_options(),
        }),
        FigureRequest::Filters(FiltersRequest {
            layer: "blocks.4".into(),
            filters: vec![0, 1, 2, 3],
            cols: 2,
            options: small_lucid_options(),
        }),
    ];
    for (k, request) in requests.iter().enumerate() {
        let out = dir.path().join(format!("fig{k}.png"));
        let e =
            export::export(&model, &model_source(), request, 2, &out, &mut |_, _| true).unwrap();
        let sidecar = export::read_sidecar(&e.sidecar).unwrap();
        assert_eq!(sidecar.scale, 2);
        assert_eq!(sidecar.model.weights_sha256, model.weights_hash);
        assert_eq!(sidecar.convlens_version, env!("CARGO_PKG_VERSION"));
        let r = export::reproduce(&e.sidecar, None, None, &mut |_, _| true).unwrap();
        assert!(r.identical);
        assert_eq!(
            std::fs::read(&r.png).unwrap(),
            std::fs::read(&e.png).unwrap()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fig0.json")).unwrap()).unwrap();
    for key in [
        "kind",
        "model",
        "image",
        "image_sha256",
        "layer",
        "method",
        "colormap",
        "scale",
        "alpha",
        "convlens_version",
        "png_sha256",
    ] {
        assert!(v.get(key).is_some(), "sidecar lacks {key}: {v}");
    }
    assert_eq!(v["result"]["class_name"], "tabby");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fig1.json")).unwrap()).unwrap();
    assert_eq!(v["seed"], 7);
    assert_eq!(v["kind"], "filters");
    assert!(
        v.get("lucid").is_none(),
        "chollet sidecars have no lucid block"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fig2.json")).unwrap()).unwrap();
    assert_eq!(v["method"], "lucid");
    assert_eq!(v["steps"], 8);
    assert_eq!(v["lucid"]["learning_rate"], 0.05);
    assert_eq!(v["lucid"]["angles"].as_array().unwrap().len(), 26);
    let back: FiltersRequest = serde_json::from_value(v).unwrap();
    assert_eq!(back.options.method, FilterMethod::Lucid);
    assert_eq!(back.options, small_lucid_options());
}
