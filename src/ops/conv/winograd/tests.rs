use std::time::Instant;

use candle_core::{Device, Result, Tensor};

use super::super::tests::{Case, direct_f64, inputs, out_hw, sq};
use super::super::{
    Activation, KeptKernels, conv2d_add_act, conv2d_fused, flipped, unfolded, with_candle,
};
use super::*;
use crate::ops::test_util::{
    ACTS, act_f64, central_differences, conv_grads, grads_all, lcg, rel_to_max, tensor, to_f64,
};

/// 3x3 stride-1 cases: 1x1 and 2x2 images, odd and even sizes, padding 0, 1 and 2 (the input
/// gradient of a padding-0 convolution), batch 1 and 3, channel counts off the microkernels'
/// widths, a batch-1 image cut into several bands, bands spanning images.
const CASES: &[Case] = &[
    sq(1, 3, 4, (1, 1), 3, 1, 1),
    sq(3, 2, 5, (2, 2), 3, 1, 1),
    sq(1, 5, 3, (2, 2), 3, 1, 2),
    sq(3, 4, 6, (7, 9), 3, 1, 0),
    sq(1, 8, 8, (3, 3), 3, 1, 0),
    sq(1, 6, 4, (8, 6), 3, 1, 1),
    sq(3, 33, 17, (13, 10), 3, 1, 1),
    sq(1, 40, 36, (30, 31), 3, 1, 1),
    sq(3, 40, 36, (30, 31), 3, 1, 1),
];

fn geom(c: Case) -> Geom {
    let (_, g) = Geom::new(
        &[c.b, c.cin, c.hw.0, c.hw.1],
        &[c.cout, c.cin, 3, 3],
        c.spec,
    )
    .expect("a valid case");
    g
}

fn data(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("f32 data")
}

fn out_tensor(c: Case, v: Vec<f32>) -> Result<Tensor> {
    let (oh, ow) = out_hw(c);
    Tensor::from_vec(v, (c.b, c.cout, oh, ow), &Device::Cpu)
}

#[test]
fn the_cases_cut_bands_within_and_across_images() {
    let g = geom(CASES[7]);
    assert!(
        band_tile_rows(Tile::F2, 1, &g) < tiles(g.y.o),
        "a batch-1 image in several bands"
    );
    let (g, th) = (geom(CASES[8]), tiles(geom(CASES[8]).y.o));
    let rows = band_tile_rows(Tile::F2, 3, &g);
    assert!(
        rows < 3 * th && th % rows != 0,
        "a band spans two images: {rows}"
    );
}

/// The largest difference from the f64 definition, relative to the output's largest value,
/// each tile size may have: F(2x2) a few float32 ulps (measured up to 2.5e-6 on these cases);
/// F(4x4)'s coefficients (up to 8 in `Aᵀ`, 5 in `Bᵀ`, 1/24 in `G`) round more (up to 3.5e-5
/// at 33-40 channels, 3e-6 at 2-8).
fn tolerance(tile: Tile) -> f32 {
    match tile {
        Tile::F2 => 1e-5,
        Tile::F4 => 1e-4,
    }
}

const TILES: [Tile; 2] = [Tile::F2, Tile::F4];

/// Winograd (both tile sizes) against the definition in f64, the im2col path and candle's
/// `conv2d`, with the bias, each activation and a residual before it.
#[test]
fn forward_matches_the_definition_im2col_and_candle() -> Result<()> {
    for (tile, (i, &case)) in TILES
        .into_iter()
        .flat_map(|t| CASES.iter().enumerate().map(move |c| (t, c)))
    {
        let tol = tolerance(tile);
        let mut worst = 0f32;
        let g = geom(case);
        assert!(applies(&g));
        let (x, w, bias) = inputs(case, 700 + 10 * i as u64)?;
        let (xs, ws, bs) = (data(&x), data(&w), data(&bias));
        let pre = direct_f64(case, &to_f64(&x)?, &to_f64(&w)?, &to_f64(&bias)?);
        let residual = lcg(pre.len(), 701 + 10 * i as u64, 2.0);
        for act in ACTS {
            for with_res in [false, true] {
                let epi = Epilogue {
                    bias: Some(&bs),
                    act,
                    pre_residual: with_res.then_some(&residual[..]),
                    ..Epilogue::NONE
                };
                let got = out_tensor(case, forward_with(tile, case.b, &g, &xs, &ws, epi))?;
                let want: Vec<f32> = pre
                    .iter()
                    .zip(&residual)
                    .map(|(&v, &r)| act_f64(act, v + if with_res { r as f64 } else { 0.0 }) as f32)
                    .collect();
                let e = rel_to_max(&got, &out_tensor(case, want)?)?;
                worst = worst.max(e);
                assert!(
                    e <= tol,
                    "{tile:?} {case:?} {act:?} residual {with_res} vs f64: {e}"
                );
                let im2col = out_tensor(case, unfolded(case.b, &g, &xs, &ws, epi))?;
                let e = rel_to_max(&got, &im2col)?;
                assert!(
                    e <= tol,
                    "{tile:?} {case:?} {act:?} residual {with_res} vs im2col: {e}"
                );
                if !with_res {
                    let e = rel_to_max(&got, &with_candle(&x, &w, &bias, case.spec, act)?)?;
                    assert!(e <= tol, "{tile:?} {case:?} {act:?} vs candle: {e}");
                }
            }
        }
        eprintln!("{tile:?} {case:?}: worst difference from f64 {worst:.2e}");
    }
    Ok(())
}

/// The kernel transforms against `G g Gᵀ` written out in f64, for every kernel of layers
/// whose input channels fall below, on and past a multiple of [`LANES`].
#[test]
fn kernel_transform_is_g_k_gt() {
    let f2: &[[f64; 3]] = &[
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let f4: &[[f64; 3]] = &[
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    for (cout, cin) in [(3, 5), (2, 16), (4, 33), (1, 48)] {
        let g = geom(sq(1, cin, cout, (8, 8), 3, 1, 1));
        let w = lcg(cout * cin * 9, (cout * cin) as u64, 1.0);
        for (tile, gm) in [(Tile::F2, f2), (Tile::F4, f4)] {
            let u = kernel_transform(tile, &g, &w);
            let m = gm.len();
            assert_eq!(u.len(), m * m * cout * cin);
            for (o, c) in (0..cout).flat_map(|o| (0..cin).map(move |c| (o, c))) {
                let k = &w[(o * cin + c) * 9..][..9];
                for (i, j) in (0..m).flat_map(|i| (0..m).map(move |j| (i, j))) {
                    let want: f64 = (0..3)
                        .flat_map(|a| (0..3).map(move |b| (a, b)))
                        .map(|(a, b)| gm[i][a] * k[3 * a + b] as f64 * gm[j][b])
                        .sum();
                    let got = u[(m * i + j) * cout * cin + o * cin + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-6,
                        "{tile:?} {cout}x{cin} kernel ({o},{c}) U[{i}][{j}] = {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// The input gradient as the backward computes it at stride 1 (Winograd, both tile sizes, on
/// the transposed geometry with the flipped kernel) against central differences of the f64
/// definition.
#[test]
fn input_gradient_matches_finite_differences() -> Result<()> {
    for (tile, (i, &case)) in TILES
        .into_iter()
        .flat_map(|t| CASES[..6].iter().enumerate().map(move |c| (t, c)))
    {
        let g = geom(case);
        let gt = g.transposed().expect("stride 1, padding <= 2");
        assert!(applies(&gt));
        let (x, w, bias) = inputs(case, 800 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let r = tensor(&[case.b, case.cout, oh, ow], 801 + i as u64, 1.0)?;
        let ws = data(&w);
        let gx = forward_with(
            tile,
            case.b,
            &gt,
            &data(&r),
            &flipped(&g, &ws),
            Epilogue::NONE,
        );
        let gx = Tensor::from_vec(gx, x.dims(), &Device::Cpu)?;
        let rf = to_f64(&r)?;
        let mut params = [to_f64(&x)?, to_f64(&w)?, to_f64(&bias)?];
        let loss = |p: &[Vec<f64>; 3]| {
            direct_f64(case, &p[0], &p[1], &p[2])
                .iter()
                .zip(&rf)
                .map(|(v, r)| v * r)
                .sum()
        };
        let fd: Vec<f32> = central_differences(&mut params, 0, 1e-6, loss)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let e = rel_to_max(&gx, &Tensor::from_vec(fd, x.dims(), &Device::Cpu)?)?;
        assert!(e < 1e-4, "{tile:?} {case:?}: rel error {e}");
    }
    Ok(())
}

/// Through the public ops, on shapes where [`pays`] routes the forward and the input gradient
/// to Winograd (F(2x2) and, 50x49, F(4x4)): forward and gradients against candle's
/// convolution, with and without a residual.
#[test]
fn dispatched_convolutions_match_candle() -> Result<()> {
    let cases = [
        sq(1, 32, 40, (14, 14), 3, 1, 1),
        sq(3, 36, 32, (10, 11), 3, 1, 0),
        sq(1, 32, 33, (50, 49), 3, 1, 1),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let g = geom(case);
        let gt = g.transposed().expect("stride 1");
        assert!(
            pays(case.b, &g) && pays(case.b, &gt),
            "{case:?} runs on Winograd"
        );
        assert_eq!(choose(&g), choose(&gt));
        let tol = tolerance(choose(&g));
        let (x, w, bias) = inputs(case, 900 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let r = tensor(&[case.b, case.cout, oh, ow], 901 + i as u64, 1.0)?;
        let res = tensor(&[case.b, case.cout, oh, ow], 902 + i as u64, 2.0)?;
        let spec = case.spec;
        for act in ACTS {
            let ours = conv_grads(
                |x, w, b| conv2d_fused(x, w, b, spec, act),
                &x,
                &w,
                &bias,
                &r,
            )?;
            let theirs = conv_grads(|x, w, b| with_candle(x, w, b, spec, act), &x, &w, &bias, &r)?;
            for which in 0..3 {
                let e = rel_to_max(&ours[which], &theirs[which])?;
                assert!(e < tol, "{case:?} {act:?} grad {which}: rel error {e}");
            }
            let ours = |t: &[&Tensor]| conv2d_add_act(t[0], t[1], &bias, t[2], spec, act);
            let theirs = |t: &[&Tensor]| {
                act.apply_tensor(
                    &(with_candle(t[0], t[1], &bias, spec, Activation::Identity)? + t[2])?,
                )
            };
            let args = [&x, &w, &res];
            let e = rel_to_max(&ours(&args)?, &theirs(&args)?)?;
            assert!(e <= tol, "{case:?} {act:?} residual forward: {e}");
            let (ga, gb) = (grads_all(ours, &args, &r)?, grads_all(theirs, &args, &r)?);
            for which in 0..3 {
                let e = rel_to_max(&ga[which], &gb[which])?;
                assert!(
                    e < tol,
                    "{case:?} {act:?} residual grad {which}: rel error {e}"
                );
            }
        }
    }
    Ok(())
}

/// Where Winograd pays and which tile: the 3x3 stride-1 layers of VGG-16 and ResNet
/// (`cin, cout, size`) at batch 1 and 4 (and VGG-16's at 128 px, batch 8, as the filters'
/// ascent runs them), each timed on im2col, F(2x2) and F(4x4) (best of 3) and printed with
/// the ratios and what [`pays`] and [`choose`] chose. `CONVLENS_TIMINGS=ascent` times only
/// the batch-8 ones. `cargo test --release --lib winograd::tests::timings -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement, minutes of CPU"]
fn timings() {
    crate::ops::test_util::keep_freed_memory();
    let layers = [
        (64, 64, 224),
        (64, 128, 112),
        (128, 128, 112),
        (128, 256, 56),
        (256, 256, 56),
        (256, 512, 28),
        (512, 512, 28),
        (512, 512, 14),
        (64, 64, 56),
        (128, 128, 28),
        (256, 256, 14),
        (512, 512, 7),
        (3, 64, 224),
        (64, 64, 128),
        (512, 512, 8),
    ];
    let ascent = [
        (64, 64, 128),
        (64, 128, 64),
        (128, 64, 64),
        (128, 128, 64),
        (128, 256, 32),
        (256, 128, 32),
        (256, 256, 32),
        (256, 512, 16),
        (512, 256, 16),
        (512, 512, 16),
        (512, 512, 8),
    ];
    let only_ascent = std::env::var("CONVLENS_TIMINGS").is_ok_and(|v| v == "ascent");
    let runs = [(1, &layers[..]), (4, &layers[..]), (8, &ascent[..])];
    for (b, layers) in runs {
        if only_ascent && b != 8 {
            continue;
        }
        for &(cin, cout, hw) in layers {
            let case = sq(b, cin, cout, (hw, hw), 3, 1, 1);
            let g = geom(case);
            let x = lcg(b * cin * hw * hw, 1, 1.0);
            let w = lcg(cout * cin * 9, 2, 0.1);
            let bias = vec![0.1; cout];
            let epi = Epilogue {
                bias: Some(&bias),
                act: Activation::Relu,
                ..Epilogue::NONE
            };
            let best = |f: &dyn Fn() -> Vec<f32>| {
                (0..3)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(f());
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let direct = best(&|| unfolded(b, &g, &x, &w, epi));
            let f2 = best(&|| forward_with(Tile::F2, b, &g, &x, &w, epi));
            let f4 = best(&|| forward_with(Tile::F4, b, &g, &x, &w, epi));
            let (u2, u4) = (
                kernel_transform(Tile::F2, &g, &w),
                kernel_transform(Tile::F4, &g, &w),
            );
            let k2 = best(&|| forward_transformed(Tile::F2, b, &g, &x, &u2, epi));
            let k4 = best(&|| forward_transformed(Tile::F4, b, &g, &x, &u4, epi));
            eprintln!(
                "b{b} {cin:>3}->{cout:>3} {hw:>3}px: im2col {:7.2} ms, F2 {:7.2} ms ({:.2}), \
                 F4 {:7.2} ms ({:.2}); kept: F2 {:7.2} ms, F4 {:7.2} ms ({:.2}) \
                 (pays: {}, {:?})",
                direct * 1e3,
                f2 * 1e3,
                f2 / direct,
                f4 * 1e3,
                f4 / direct,
                k2 * 1e3,
                k4 * 1e3,
                k4 / k2,
                pays(b, &g),
                choose(&g)
            );
        }
    }
}

/// Inside a [`KeptKernels`] scope a frozen weight's transforms (forward and input gradient,
/// F(2x2) and F(4x4)) are kept from the second call on, and every call gives the same bits as
/// the calls outside a scope.
#[test]
fn kept_kernels_give_the_same_bits() -> Result<()> {
    use candle_core::Var;
    use kept::{Direction, is_kept};
    let cases = [
        sq(1, 32, 40, (14, 14), 3, 1, 1),
        sq(1, 32, 33, (50, 49), 3, 1, 1),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let g = geom(case);
        let tile = choose(&g);
        let (x, w, bias) = inputs(case, 900 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let r = tensor(&[case.b, case.cout, oh, ow], 901 + i as u64, 1.0)?;
        let run = || -> Result<(Vec<f32>, Vec<f32>)> {
            let xv = Var::from_tensor(&x)?;
            let y = conv2d_fused(xv.as_tensor(), &w, &bias, case.spec, Activation::Relu)?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let gx = grads.get(xv.as_tensor()).expect("x is tracked");
            Ok((data(&y), data(gx)))
        };
        let want = run()?;
        let _scope = KeptKernels::scope();
        for call in 0..3 {
            assert_eq!(run()?, want, "{case:?}, call {call}");
            // (Not asserted after the first call: another test's scope may have been alive
            // during `want`'s, which then counts as the first use.)
            let kept = [Direction::Forward, Direction::InputGradient].map(|d| is_kept(&w, d, tile));
            assert!(
                call == 0 || kept == [true; 2],
                "{case:?}, call {call}: kept {kept:?}"
            );
        }
    }
    Ok(())
}

/// A weight detached from a variable shares its storage, which `Var::set` rewrites in place
/// (as the optimiser does): inside a scope the kept transform is then made anew, and the
/// convolution and its input gradient follow the new values.
#[test]
fn kept_kernels_follow_a_weight_rewritten_in_place() -> Result<()> {
    use candle_core::Var;
    let case = sq(1, 32, 40, (14, 14), 3, 1, 1);
    let (x, w, bias) = inputs(case, 950)?;
    let (_, w2, _) = inputs(case, 951)?;
    let (oh, ow) = out_hw(case);
    let r = tensor(&[case.b, case.cout, oh, ow], 952, 1.0)?;
    let run = |w: &Tensor| -> Result<(Vec<f32>, Vec<f32>)> {
        let xv = Var::from_tensor(&x)?;
        let y = conv2d_fused(xv.as_tensor(), w, &bias, case.spec, Activation::Relu)?;
        let grads = (&y * &r)?.sum_all()?.backward()?;
        let gx = grads.get(xv.as_tensor()).expect("x is tracked");
        Ok((data(&y), data(gx)))
    };
    let want2 = run(&w2)?;
    let var = Var::from_tensor(&w)?;
    let view = var.as_tensor().detach();
    let _scope = KeptKernels::scope();
    let first = run(&view)?;
    assert_eq!(run(&view)?, first, "the second use keeps the transforms");
    var.set(&w2)?;
    assert_eq!(
        data(&view),
        data(&w2),
        "the view shares the variable's storage"
    );
    assert_eq!(run(&view)?, want2, "after the in-place update");
    Ok(())
}
