//! Tests of the direct 1x1 product: every kernel against gemm and bit for bit against each
//! other.
#![allow(
    clippy::disallowed_macros,
    reason = "the timing test prints what it measured"
)]

use super::super::test_util::{ACTS, lcg};
use super::*;

/// `(batch, m, k, n)`: tails in every dimension, one row, one pixel, Lite0's shapes; from
/// `k = 256` with more than 6 rows the pixel blocks are copied first (`packs`).
const CASES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (2, 7, 5, 3),
    (1, 13, 9, 17),
    (3, 6, 4, 64),
    (1, 25, 31, 65),
    (2, 5, 3, 200),
    (1, 40, 192, 49),
    (1, 30, 17, 1030),
    (1, 192, 1152, 49),
    (2, 112, 672, 196),
    (1, 7, 256, 17),
    (2, 13, 300, 256),
];

/// The direct kernel's and `gemm`'s outputs for a case, with every epilogue part.
fn outputs(
    kernel: Kernel,
    (batch, m, k, n): (usize, usize, usize, usize),
    act: Activation,
    with_bias: bool,
    with_residual: bool,
) -> (Vec<f32>, Vec<f32>) {
    let w = lcg(m * k, 1, 1.0);
    let x = lcg(batch * k * n, 2, 2.0);
    let bias = lcg(m, 3, 1.0);
    let res = lcg(batch * m * n, 4, 1.0);
    let epi = Epilogue {
        bias: with_bias.then_some(&bias[..]),
        act,
        residual: with_residual.then_some(&res[..]),
        ..Epilogue::NONE
    };
    let lhs = MatRef::row_major(&w, 0, k);
    (
        batched_with(kernel, lhs, m, k, &x, batch, n, epi),
        super::super::matmul::batched_matmul(lhs, m, k, &x, batch, n, epi),
    )
}

#[test]
fn every_kernel_matches_gemm_and_the_others_bit_for_bit() {
    for &case in CASES {
        for act in ACTS {
            for (bias, res) in [(true, false), (false, true), (true, true)] {
                let mut first: Option<Vec<f32>> = None;
                for kernel in Kernel::available() {
                    let (got, want) = outputs(kernel, case, act, bias, res);
                    let scale = want.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
                    let err = got
                        .iter()
                        .zip(&want)
                        .fold(0f32, |e, (a, b)| e.max((a - b).abs()))
                        / scale;
                    assert!(err <= 1e-5, "{kernel:?} {case:?} {act:?}: {err}");
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert!(
                            f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{kernel:?} {case:?} {act:?}: differs from the portable kernel"
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn transposed_weights_and_nan_follow_the_activation() {
    // lhs as the transpose of a row-major k x m matrix (row stride 1, column stride m).
    let (m, k, n) = (5, 3, 20);
    let wt = lcg(k * m, 5, 1.0);
    let mut x = lcg(k * n, 6, 1.0);
    x[3] = f32::NAN;
    let lhs = MatRef::transposed(&wt, 0, m);
    for kernel in Kernel::available() {
        for act in ACTS {
            let epi = Epilogue {
                act,
                ..Epilogue::NONE
            };
            let got = batched_with(kernel, lhs, m, k, &x, 1, n, epi);
            for i in 0..m {
                for p in 0..n {
                    let mut v = 0f32;
                    for c in 0..k {
                        v = wt[c * m + i].mul_add(x[c * n + p], v);
                    }
                    let want = act.apply(v + 0.0);
                    let g = got[i * n + p];
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "{kernel:?} {act:?} ({i}, {p}): {g} vs {want}"
                    );
                }
            }
        }
    }
}

/// Throwaway timing of Lite0's pointwise shapes, direct kernel against `gemm` (best of
/// several runs): `cargo test --release --lib ops::pointwise_direct -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn timing() {
    crate::ops::test_util::keep_freed_memory();
    let Some(kernel) = Kernel::detect() else {
        return;
    };
    let best = |runs: usize, f: &dyn Fn() -> Vec<f32>| {
        f();
        (0..runs)
            .map(|_| {
                let t = std::time::Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    };
    // (m, k, hw): projections, the head, blocks.0's projection, and expansions.
    for (m, k, hw) in [
        (16, 32, 12544),
        (24, 144, 3136),
        (40, 144, 784),
        (40, 240, 784),
        (80, 240, 196),
        (112, 672, 196),
        (192, 672, 49),
        (192, 1152, 49),
        (1280, 320, 49),
        (144, 24, 3136),
        (240, 40, 784),
        (672, 112, 196),
        (1152, 192, 49),
    ] {
        for batch in [1, 32] {
            let w = lcg(m * k, 1, 1.0);
            let x = lcg(batch * k * hw, 2, 1.0);
            let bias = lcg(m, 3, 1.0);
            let epi = Epilogue {
                bias: Some(&bias),
                act: Activation::Relu6,
                ..Epilogue::NONE
            };
            let lhs = MatRef::row_major(&w, 0, k);
            let runs = if batch == 1 { 200 } else { 10 };
            let direct = best(runs, &|| {
                batched_with(kernel, lhs, m, k, &x, batch, hw, epi)
            });
            let gemm = best(runs, &|| {
                super::super::matmul::batched_matmul(lhs, m, k, &x, batch, hw, epi)
            });
            println!(
                "B={batch} {k}->{m} @{hw}: direct {direct:.3} ms, gemm {gemm:.3} ms ({:.2}x)",
                gemm / direct
            );
        }
    }
}

/// A product stored channels-last (`Product::pixels`) puts every value where the offsets say,
/// with the bits of the same product stored as rows, and writes nothing outside each pixel's
/// run of `m` rounded up to 8 channels.
#[test]
fn stored_channels_last_equals_rows() {
    for &(_, m, k, n) in CASES {
        let (w, x, bias) = (lcg(m * k, 7, 1.0), lcg(k * n, 8, 2.0), lcg(m, 9, 1.0));
        let m8 = m.next_multiple_of(8);
        // Runs of m8 channels 4 floats apart, from 7 on (unaligned on purpose).
        let pixels: Vec<usize> = (0..n).map(|p| 7 + p * (m8 + 4)).collect();
        for kernel in Kernel::available() {
            for act in ACTS {
                let mut rows = vec![0f32; m * n];
                let mut cl = vec![f32::NAN; 7 + n * (m8 + 4)];
                for (dst, d_rs, pixels) in [
                    (rows.as_mut_ptr(), n, None),
                    (cl.as_mut_ptr(), 0, Some(pixels.as_ptr())),
                ] {
                    let product = Product {
                        m,
                        n,
                        k,
                        lhs: MatRef::row_major(&w, 0, k),
                        x: x.as_ptr(),
                        x_rs: n,
                        dst,
                        d_rs,
                        bias: Some(bias.as_ptr()),
                        act,
                        residual: None,
                        pixels,
                    };
                    // SAFETY: w is m x k, x k x n, bias m; `rows` holds m x n, `cl` every
                    // pixel's run of m8 at its offset; the kernel is one this CPU runs.
                    unsafe { product.run(kernel) };
                }
                for (p, &at) in pixels.iter().enumerate() {
                    for i in 0..m {
                        let (got, want) = (cl[at + i], rows[i * n + p]);
                        assert_eq!(got.to_bits(), want.to_bits(), "{kernel:?} {act:?} {i},{p}");
                    }
                }
                let outside = (0..cl.len())
                    .filter(|&q| q < 7 || (q - 7) % (m8 + 4) >= m8)
                    .find(|&q| !cl[q].is_nan());
                assert_eq!(
                    outside, None,
                    "{kernel:?} {act:?} {m}x{n}: wrote outside the runs"
                );
            }
        }
    }
}
