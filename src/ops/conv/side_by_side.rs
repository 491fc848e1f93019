//! The input gradient of a strided convolution whose output planes are small (ResNet's
//! `layer4.0.conv2`, 3x3 stride 2 from 14x14 to 7x7): one product per image would have only
//! `OH*OW` columns (49), too thin for the microkernels, and a batch of 16 only 16 tasks. Here
//! the output gradients of a group of images are laid side by side (`Cout x images*OH*OW`),
//! and tasks over (group, chunk of input channels) each multiply their rows of `wᵀ` by them
//! and fold the result back onto their channels of the input gradient.

use rayon::prelude::*;

use super::Geom;
use crate::ops::matmul::{MatRef, SyncPtr, gemm_into};
use crate::ops::zeroed;

/// Output planes below this many pixels take [`grad_input`].
pub(super) const SMALL_PLANE: usize = 256;

/// The most columns (images x output pixels) of one product.
const MAX_COLUMNS: usize = 4096;

/// Input channels per task.
const CHANNELS_PER_TASK: usize = 16;

/// The gradient of the input `[B,Cin,H,W]` from `gp`, the gradient of the output
/// `[B,Cout,OH,OW]`, and the weight `w` `[Cout,Cin,kh,kw]`, for any stride, padding and
/// dilation.
pub(super) fn grad_input(b: usize, g: &Geom, gp: &[f32], w: &[f32]) -> Vec<f32> {
    let (kdim, n, taps) = (g.kdim(), g.out_plane(), g.y.k * g.x.k);
    let all = b * n;
    // The output gradients side by side: row `co` holds channel `co` of every image.
    let mut wide = Vec::with_capacity(g.cout * all);
    for co in 0..g.cout {
        for img in 0..b {
            wide.extend_from_slice(&gp[(img * g.cout + co) * n..][..n]);
        }
    }
    let group = (MAX_COLUMNS / n.max(1)).clamp(1, b.max(1));
    let groups = b.div_ceil(group);
    let chunks = g.cin.div_ceil(CHANNELS_PER_TASK);
    let mut gx = zeroed(b * g.cin * g.in_plane());
    let dst = SyncPtr(gx.as_mut_ptr());
    (0..groups * chunks)
        .into_par_iter()
        .for_each_init(Vec::new, |colgrad: &mut Vec<f32>, task| {
            let (first, chunk) = (task / chunks * group, task % chunks);
            let images = group.min(b - first);
            let cols = images * n;
            let c0 = chunk * CHANNELS_PER_TASK;
            let c1 = (c0 + CHANNELS_PER_TASK).min(g.cin);
            let rows = (c1 - c0) * taps;
            colgrad.clear();
            colgrad.resize(rows * cols, 0.0);
            // SAFETY: colgrad is `rows x cols`; lhs is rows c0*taps.. of wᵀ (`kdim x cout`),
            // rhs the group's `cout x cols` columns of `wide` (row stride `all`).
            unsafe {
                gemm_into(
                    rows,
                    cols,
                    g.cout,
                    colgrad.as_mut_ptr(),
                    cols,
                    false,
                    MatRef::transposed(w, c0 * taps, kdim),
                    MatRef::row_major(&wide, first * n, all),
                );
            }
            for (i, img) in (first..first + images).enumerate() {
                for c in c0..c1 {
                    // SAFETY: channel c of image img lies in gx, and only this task (the owner
                    // of channels c0..c1 of the group's images) writes it.
                    let plane = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.get().add((img * g.cin + c) * g.in_plane()),
                            g.in_plane(),
                        )
                    };
                    let taps_rows = &colgrad[(c - c0) * taps * cols..][..taps * cols];
                    fold(g, &taps_rows[i * n..], cols, plane);
                }
            }
        });
    gx
}

/// Adds one channel's unfolded gradient onto its input plane (col2im): `rows` holds tap
/// `(ky, kx)`'s `OH*OW` values at `rows[(ky*kw + kx) * stride..]`.
fn fold(g: &Geom, rows: &[f32], stride: usize, plane: &mut [f32]) {
    let (ya, xa) = (g.y, g.x);
    for ky in 0..ya.k {
        let (oy_lo, oy_hi) = ya.valid(ky);
        for kx in 0..xa.k {
            let (ox_lo, ox_hi) = xa.valid(kx);
            let src = &rows[(ky * xa.k + kx) * stride..][..g.out_plane()];
            for oy in oy_lo..oy_hi {
                let iy = oy * ya.s + ky * ya.d - ya.p;
                let row = &mut plane[iy * xa.n..][..xa.n];
                for ox in ox_lo..ox_hi {
                    row[ox * xa.s + kx * xa.d - xa.p] += src[oy * xa.o + ox];
                }
            }
        }
    }
}
