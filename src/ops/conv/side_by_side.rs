//! Convolutions whose output planes are small (ResNet's 7x7 and 14x14 maps): one product per
//! image would have only `OH*OW` columns (49 at `layer4`), too thin for the microkernels, and
//! each such product packs the whole weight matrix again (`512 x 4608` for 49 columns). Here a
//! group of images is laid side by side, `images*OH*OW` columns in one product:
//!
//! - [`forward`] (where it [`pays`]): the group's unfolded inputs (im2col,
//!   `[Cin*kh*kw, images*OH*OW]`) side by side, multiplied by `w` on tasks over (column tile,
//!   row tile), each tile scattered back to its images' output planes with the epilogue
//!   applied there.
//! - [`grad_input`] of a strided convolution (`layer4.0.conv2`, 3x3 stride 2 from 14x14 to
//!   7x7): the output gradients side by side (`Cout x images*OH*OW`); tasks over (group, chunk
//!   of input channels) each multiply their rows of `wᵀ` by them and fold the result back onto
//!   their channels of the input gradient.

use rayon::prelude::*;

use super::{Geom, unfold};
use crate::ops::matmul::{Epilogue, MatRef, SyncPtr, gemm_into, row_tile, transpose};
use crate::ops::weight_grad::Rows;
use crate::ops::{Unfilled, zeroed};

/// Output planes below this many pixels take [`grad_input`] (and [`forward`], see [`pays`]).
pub(super) const SMALL_PLANE: usize = 256;

/// The most columns (images x output pixels) of one product.
const MAX_COLUMNS: usize = 4096;

/// Rows of `wᵀ` (input channels x taps) per task of [`grad_input`], at least: 16 channels of a
/// 3x3 kernel, 144 of a 1x1 (ResNet's stride-2 downsample).
const ROWS_PER_TASK: usize = 144;

/// Whether [`forward`] is used for a batch of geometry `g`: a strided one-tap kernel (ResNet's
/// 1x1 stride-2 downsample) to a small plane. Images alternated in one process (load ~6, 2
/// cores) gave it 1.2-1.4x the per-image products' GMAC/s there (1024 -> 2048 from 14x14 to
/// 7x7 at batch 16 and 32), but 0.8-0.95x on the 3x3 kernels (ResNet's 7x7 and 14x14, stride
/// 1 and 2), whose unfolded inputs (9x the values) cost more to copy than the packing saves.
pub(super) fn pays(g: &Geom) -> bool {
    g.out_plane() < SMALL_PLANE && g.y.k * g.x.k == 1 && !g.is_pointwise()
}

/// The most values of one group's unfolded inputs in [`forward`] (16 MiB).
const WIDE_FLOATS: usize = 4 << 20;

/// Columns per task tile of [`forward`]'s products.
const TILE_COLUMNS: usize = 256;

/// `epi(conv(x, w))` for `b` images of geometry `g` (`x` `[B,Cin,H,W]`, `w` `[Cout,Cin,kh,kw]`,
/// row-major): `[B,Cout,OH,OW]`, the products over groups of images side by side.
pub(super) fn forward(b: usize, g: &Geom, x: &[f32], w: &[f32], epi: Epilogue<'_>) -> Vec<f32> {
    forward_in_groups(b, g, x, w, epi, (group_images(g), TILE_COLUMNS))
}

/// Images per group of [`forward`]: as many as fit [`WIDE_FLOATS`] unfolded values.
pub(super) fn group_images(g: &Geom) -> usize {
    WIDE_FLOATS / (g.kdim() * g.out_plane()).max(1)
}

/// [`forward`] over groups of `group` images, in task tiles of `nt` columns.
pub(super) fn forward_in_groups(
    b: usize,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    epi: Epilogue<'_>,
    (group, nt): (usize, usize),
) -> Vec<f32> {
    let (m, kdim, n) = (g.cout, g.kdim(), g.out_plane());
    let total = b * m * n;
    if total == 0 {
        return Vec::new();
    }
    let image = g.cin * g.in_plane();
    let group = group.clamp(1, b);
    let ld = group * n;
    // Zero once: the padding reads the same positions of every image, which stay zero.
    let mut wide = zeroed(kdim * ld);
    let mut out = Unfilled::new(total);
    let (src, dst) = (SyncPtr(wide.as_mut_ptr()), SyncPtr(out.ptr()));
    let lhs = MatRef::row_major(w, 0, kdim);
    for first in (0..b).step_by(group) {
        let images = group.min(b - first);
        let cols = images * n;
        (0..images).into_par_iter().for_each(|i| {
            // SAFETY: `wide` holds `kdim x ld` values; image i owns columns i*n..(i+1)*n.
            let mut view = unsafe { Rows::columns(src, kdim, ld, i * n, n) };
            unfold(g, &x[(first + i) * image..][..image], 0, g.y.o, &mut view);
        });
        let nt = nt.clamp(1, cols);
        let col_tiles = cols.div_ceil(nt);
        let mt = row_tile(m, col_tiles);
        let row_tiles = m.div_ceil(mt);
        let wide = &wide;
        (0..col_tiles * row_tiles).into_par_iter().for_each_init(
            Vec::new,
            |tile: &mut Vec<f32>, task| {
                let (c0, r0) = (task / row_tiles * nt, task % row_tiles * mt);
                let (tc, rows) = (nt.min(cols - c0), mt.min(m - r0));
                tile.clear();
                tile.resize(rows * tc, 0.0);
                // SAFETY: tile is `rows x tc`; lhs rows r0.. of w (`m x kdim`); rhs columns
                // c0..c0 + tc of the group's `kdim x cols` unfolded inputs (row stride ld).
                unsafe {
                    gemm_into(
                        rows,
                        tc,
                        kdim,
                        tile.as_mut_ptr(),
                        tc,
                        false,
                        lhs.at(r0, 0),
                        MatRef::row_major(wide, c0, ld),
                    );
                }
                // Scatter the tile to its images' planes: the pieces of columns c0..c0 + tc
                // that fall in each image.
                let mut c = c0;
                while c < c0 + tc {
                    let (img, p0) = (first + c / n, c % n);
                    let len = (n - p0).min(c0 + tc - c);
                    for r in 0..rows {
                        // SAFETY: row r0 + r, pixels p0..p0 + len of image img lie in `out`,
                        // and only this task (the owner of rows r0.., columns c0..) writes them.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                tile[r * tc + c - c0..].as_ptr(),
                                dst.get().add((img * m + r0 + r) * n + p0),
                                len,
                            );
                        }
                    }
                    // SAFETY: as above; the piece is written.
                    unsafe { epi.apply(dst, img, m, n, r0, rows, p0, len) };
                    c += len;
                }
            },
        );
    }
    // SAFETY: every group's tiles cover all rows and columns of its images.
    unsafe { out.assume_filled() }
}

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
    let per_task = ROWS_PER_TASK.div_ceil(taps).min(g.cin.max(1));
    let chunks = g.cin.div_ceil(per_task);
    let wt = transpose(w, g.cout, kdim);
    let mut gx = zeroed(b * g.cin * g.in_plane());
    let dst = SyncPtr(gx.as_mut_ptr());
    (0..groups * chunks)
        .into_par_iter()
        .for_each_init(Vec::new, |colgrad: &mut Vec<f32>, task| {
            let (first, chunk) = (task / chunks * group, task % chunks);
            let images = group.min(b - first);
            let cols = images * n;
            let c0 = chunk * per_task;
            let c1 = (c0 + per_task).min(g.cin);
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
                    MatRef::row_major(&wt, c0 * taps * g.cout, g.cout),
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
