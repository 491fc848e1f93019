//! The dataset through the model: channel examples (`convlens examples`) checked against a
//! brute-force pass, the receptive field against the arithmetic of Lite0's stages, and the
//! information-distillation probe (`convlens probe`).

use candle_core::{Device, IndexOp};
use convlens::data::listing::Listing;
use convlens::viz::receptive::receptive_field;

use crate::common::{convlens, lite0, repo, text};

/// Every image's maximum of each channel of `layer`, one image per forward pass (no batching,
/// no heap): `[image][channel]`.
fn brute_force_max(listing: &Listing, layer: &str) -> Vec<Vec<f32>> {
    let model = lite0();
    listing
        .images
        .iter()
        .map(|(path, _)| {
            let x = model.spec.preprocess.load(path, &Device::Cpu).unwrap();
            let out = model
                .network
                .forward_with_taps(&x, &[layer])
                .unwrap()
                .remove(0);
            out.i(0)
                .unwrap()
                .max(2)
                .unwrap()
                .max(1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn examples_gives_each_channels_true_top_nine_and_reopens_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fig.png");
    let folder = repo("assets/datasets/fashion-mini");
    let args = [
        "examples",
        folder.to_str().unwrap(),
        "--layer",
        "blocks.4",
        "--channels",
        "0..16",
        "--top",
        "9",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = convlens(&args);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(out.exists() && out.with_extension("json").exists());
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["kind"], "examples");
    assert_eq!(sidecar["result"], json);

    let listing = Listing::of(&folder).unwrap();
    assert_eq!(json["scanned"], listing.images.len());
    let maxima = brute_force_max(&listing, "blocks.4");
    let channels = json["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 16);
    for entry in channels {
        let c = entry["channel"].as_u64().unwrap() as usize;
        let mut order: Vec<usize> = (0..maxima.len()).collect();
        order.sort_by(|&a, &b| maxima[b][c].total_cmp(&maxima[a][c]).then(a.cmp(&b)));
        let hits = entry["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 9, "channel {c}");
        for (k, hit) in hits.iter().enumerate() {
            let i = (0..listing.images.len())
                .find(|&i| listing.relative(i).to_str() == hit["image"].as_str())
                .unwrap();
            let (mine, truth) = (maxima[i][c], maxima[order[k]][c]);
            let reported = hit["max"].as_f64().unwrap() as f32;
            assert!(
                (reported - mine).abs() <= 1e-4 * mine.abs().max(1.0),
                "ch {c} #{k}: {reported} vs {mine}"
            );
            // The same image as the brute force, or one tied with it to rounding.
            assert!(
                i == order[k] || (mine - truth).abs() <= 1e-4 * truth.abs().max(1.0),
                "channel {c} rank {k}: {} (max {mine}) where the brute force has {} (max {truth})",
                listing.relative(i).display(),
                listing.relative(order[k]).display()
            );
            assert_eq!(hit["class"].as_str(), listing.class_of(i));
            let patch: Vec<u64> = serde_json::from_value(hit["patch"].clone()).unwrap();
            assert!(
                patch[0] < patch[2] && patch[1] < patch[3] && patch[2] <= 224 && patch[3] <= 224
            );
        }
    }

    // Reopening reads the cache and never writes over the first figure.
    let again = convlens(&args);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("from the cache"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(),
        json
    );
    assert!(dir.path().join("fig_2.png").exists());
}

#[test]
fn the_receptive_field_of_lite0_blocks_4_is_its_stages_arithmetic() {
    // stem 3x3/2 -> 3 px; blocks.0 dw 3x3 -> 7; blocks.1 dw 3x3/2 -> 11; blocks.2 dw 3x3 -> 19
    // (jump 4); blocks.3 dw 5x5/2 -> 35; blocks.4 dw 5x5 -> 67 px (jump 8), symmetric padding:
    // unit i is centred on input pixel 8 i.
    let field = receptive_field(&lite0().network, "blocks.4", 224, &Device::Cpu).unwrap();
    assert_eq!(field.stride, 8.0);
    assert_eq!(field.radius, 33);
    assert_eq!(field.offset, 0.0);
    assert_eq!(field.patch(14, 14, 224), [79, 79, 146, 146]);
}

#[test]
fn probe_values_are_fractions_and_the_head_knows_the_class_better_than_the_stem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("probe.png");
    let run = convlens(&[
        "probe",
        "--max-images",
        "160",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(out.exists() && out.with_extension("json").exists());
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let taps = json["models"][0]["probe"]["taps"].as_array().unwrap();
    assert_eq!(taps.first().unwrap()["layer"], "stem");
    assert_eq!(taps.last().unwrap()["layer"], "head");
    for t in taps {
        for key in ["class_accuracy", "instance_top1", "sparsity"] {
            let v = t[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{}: {key} {v}", t["layer"]);
        }
    }
    let acc = |t: &serde_json::Value| t["class_accuracy"].as_f64().unwrap();
    assert!(acc(taps.last().unwrap()) > acc(&taps[0]), "{taps:?}");
    // Input reconstruction: an R^2 for every Lite0 layer (its coarsest map is 7 x 7), at most
    // 1; the stem, a 3 x 3 convolution at twice the target's resolution, gives back nearly
    // all of the image.
    let r2 = |t: &serde_json::Value| t["reconstruction_r2"].as_f64().unwrap();
    assert!(taps.iter().all(|t| r2(t) <= 1.0), "{taps:?}");
    assert!(r2(&taps[0]) > 0.9, "{taps:?}");
}
