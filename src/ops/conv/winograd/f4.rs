//! The transforms of Winograd F(4x4, 3x3) (Lavin & Gray 2016, points 0, 1, -1, 2, -2, ∞):
//! 4x4 output tiles, each from a 6x6 input patch (rows `4*ty - p ..`, columns `4*tx - p ..`),
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` with
//!
//! ```text
//! Bᵀ = [4  0 -5  0 1 0;   G = [ 1/4     0    0  ;   Aᵀ = [1 1  1 1  1 0;
//!       0 -4 -4  1 1 0;        -1/6  -1/6  -1/6 ;         0 1 -1 2 -2 0;
//!       0  4 -4 -1 1 0;        -1/6   1/6  -1/6 ;         0 1  1 4  4 0;
//!       0 -2 -1  2 1 0;         1/24  1/12  1/6 ;         0 1 -1 8 -8 1]
//!       0  2 -1 -2 1 0;         1/24 -1/12  1/6 ;
//!       0  4  0 -5 0 1]         0     0     1   ]
//! ```
//!
//! Layouts as F(2x2)'s (`super`): `V` `[36, Cin, T]`, `M` `[36, Cout, T]`, ξ = `6 * row + col`.
//! The rows of a patch are read as four phases (`row[4k + p - px]`, p = 0..4), so that every
//! transform is a loop over a row of tiles, which vectorises.

use super::{Epilogue, Geom, RowRing, Scratch, SyncPtr, Tile, grown};
use crate::ops::phases::split_phases;

/// `Bᵀ s` of six values (a column or a row of a patch).
#[inline(always)]
fn bt(s: [f32; 6]) -> [f32; 6] {
    [
        4.0 * s[0] - 5.0 * s[2] + s[4],
        -4.0 * (s[1] + s[2]) + s[3] + s[4],
        4.0 * (s[1] - s[2]) - s[3] + s[4],
        2.0 * (s[3] - s[1]) - s[2] + s[4],
        2.0 * (s[1] - s[3]) - s[2] + s[4],
        4.0 * s[1] - 5.0 * s[3] + s[5],
    ]
}

/// `Aᵀ m` of six values.
#[inline(always)]
fn at(m: [f32; 6]) -> [f32; 4] {
    let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
    let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m[5],
    ]
}

/// `G k` of three values (a column or a row of a kernel).
#[inline(always)]
pub(super) fn gk(a: f32, b: f32, c: f32) -> [f32; 6] {
    const SIXTH: f32 = 1.0 / 6.0;
    [
        0.25 * a,
        -SIXTH * (a + b + c),
        -SIXTH * (a - b + c),
        (a / 24.0 + c / 6.0) + b / 12.0,
        (a / 24.0 + c / 6.0) - b / 12.0,
        c,
    ]
}

/// Transforms tile rows `ty0..ty0 + nty` (counted over all images, `tiles(OH)` per image) of
/// `x` (`[B, Cin, H, W]`) into `s.v` (`[36, Cin, T]`, `T = nty * tw`, tile `(ty0 + r, tx)` at
/// column `r * tw + tx`): `V = Bᵀ d B`. As F(2x2)'s, each input row is split into its phases
/// once, into a ring of six rows (padded row `iy'` in slot `iy' % 6`): the next tile row of the
/// same image reads this one's last two.
#[inline(always)]
pub(super) fn input_transform(g: &Geom, x: &[f32], ty0: usize, nty: usize, s: &mut Scratch) {
    let tile = Tile::F4;
    let (h, wd, py, px) = (g.y.n, g.x.n, g.y.p, g.x.p);
    let tw = tile.tiles(g.x.o);
    let t = nty * tw;
    // Each padded input row as four phases of tw + 1 values: `ph[p][k] = row[4k + p - px]`.
    let tw1 = tw + 1;
    let padded = 4 * tw1;
    let (phases, cols) = grown(&mut s.rows, 12 * padded).split_at_mut(6 * padded);
    let v = grown(&mut s.v, 36 * g.cin * t).as_mut_ptr();
    let th = tile.tiles(g.y.o);
    for c in 0..g.cin {
        let mut ring = RowRing::<6>::new();
        for r in 0..nty {
            let (img, ty) = ((ty0 + r) / th, (ty0 + r) % th);
            let plane = &x[(img * g.cin + c) * h * wd..][..h * wd];
            for row in 4 * ty..4 * ty + 6 {
                let (slot, fresh) = ring.slot(img, row);
                if !fresh {
                    continue;
                }
                let ph = &mut phases[slot * padded..][..padded];
                match row.checked_sub(py).filter(|&iy| iy < h) {
                    None => ph.fill(0.0),
                    Some(iy) => {
                        let (p0, rest) = ph.split_at_mut(tw1);
                        let (p1, rest) = rest.split_at_mut(tw1);
                        let (p2, p3) = rest.split_at_mut(tw1);
                        split_phases(&plane[iy * wd..][..wd], px, 0.0, [p0, p1, p2, p3]);
                    }
                }
            }
            // Bᵀ d: the six rows' combinations, phase by phase alike.
            {
                let src = |i: usize| &phases[(4 * ty + i) % 6 * padded..][..padded];
                let (s0, s1, s2, s3, s4, s5) = (src(0), src(1), src(2), src(3), src(4), src(5));
                let (q0, rest) = cols.split_at_mut(padded);
                let (q1, rest) = rest.split_at_mut(padded);
                let (q2, rest) = rest.split_at_mut(padded);
                let (q3, rest) = rest.split_at_mut(padded);
                let (q4, q5) = rest.split_at_mut(padded);
                let (q0, q1, q2) = (&mut q0[..padded], &mut q1[..padded], &mut q2[..padded]);
                let (q3, q4, q5) = (&mut q3[..padded], &mut q4[..padded], &mut q5[..padded]);
                for j in 0..padded {
                    let q = bt([s0[j], s1[j], s2[j], s3[j], s4[j], s5[j]]);
                    q0[j] = q[0];
                    q1[j] = q[1];
                    q2[j] = q[2];
                    q3[j] = q[3];
                    q4[j] = q[4];
                    q5[j] = q[5];
                }
            }
            // (Bᵀ d) B on the columns 4tx..4tx + 6: phases 0..4 at tx, phases 0 and 1 at tx + 1.
            for (i, q) in cols.chunks_exact(padded).enumerate() {
                let p = |k: usize| &q[k * tw1..][..tw1];
                let (p0, p1, p2, p3) = (p(0), p(1), p(2), p(3));
                // SAFETY: the six destinations are disjoint runs of `tw` values inside `v`
                // (ξ = 6i..6i + 6, channel c, tile row r).
                let [d0, d1, d2, d3, d4, d5] = std::array::from_fn(|j| unsafe {
                    std::slice::from_raw_parts_mut(
                        v.add((6 * i + j) * g.cin * t + c * t + r * tw),
                        tw,
                    )
                });
                for tx in 0..tw {
                    let o = bt([p0[tx], p1[tx], p2[tx], p3[tx], p0[tx + 1], p1[tx + 1]]);
                    d0[tx] = o[0];
                    d1[tx] = o[1];
                    d2[tx] = o[2];
                    d3[tx] = o[3];
                    d4[tx] = o[4];
                    d5[tx] = o[5];
                }
            }
        }
    }
}

/// Transforms the products `s.m` (`[36, Cout, T]`) of tile rows `ty0..ty0 + nty` (counted as
/// in [`input_transform`]) back into their output rows of `out` (`[B, Cout, OH, OW]`),
/// `Y = Aᵀ M A`, and applies the epilogue to each tile row's 4 output rows.
///
/// # Safety
/// `out` must hold the whole output, and no other task may touch these tile rows' outputs.
#[inline(always)]
pub(super) unsafe fn output_transform(
    g: &Geom,
    ty0: usize,
    nty: usize,
    s: &mut Scratch,
    out: SyncPtr,
    epi: &Epilogue<'_>,
) {
    let tile = Tile::F4;
    let (oh, ow, cout) = (g.y.o, g.x.o, g.cout);
    let tw = tile.tiles(ow);
    let t = nty * tw;
    let th = tile.tiles(oh);
    let n = oh * ow;
    let full = ow / 4;
    for k in 0..cout {
        for r in 0..nty {
            let m = |xi: usize| &s.m[xi * cout * t + k * t + r * tw..][..tw];
            // Aᵀ M: a[i][j] (row i of 4, column j of 6) at (6i + j) * tw.
            let a = grown(&mut s.rows, 24 * tw);
            for j in 0..6 {
                let (m0, m1, m2) = (m(j), m(6 + j), m(12 + j));
                let (m3, m4, m5) = (m(18 + j), m(24 + j), m(30 + j));
                let (a0, rest) = a[j * tw..].split_at_mut(6 * tw);
                let (a1, rest) = rest.split_at_mut(6 * tw);
                let (a2, rest) = rest.split_at_mut(6 * tw);
                let a3 = &mut rest[..tw];
                for tx in 0..tw {
                    let y = at([m0[tx], m1[tx], m2[tx], m3[tx], m4[tx], m5[tx]]);
                    a0[tx] = y[0];
                    a1[tx] = y[1];
                    a2[tx] = y[2];
                    a3[tx] = y[3];
                }
            }
            // (Aᵀ M) A: each of the 4 rows' six columns into the output row's 4 per tile.
            let (img, oy) = ((ty0 + r) / th, 4 * ((ty0 + r) % th));
            for i in 0..4.min(oh - oy) {
                // SAFETY: row `oy + i` of channel k of image img lies in `out` and belongs to
                // this task (the caller's contract).
                let row = unsafe {
                    std::slice::from_raw_parts_mut(
                        out.get().add((img * cout + k) * n + (oy + i) * ow),
                        ow,
                    )
                };
                let c = |j: usize| &a[(6 * i + j) * tw..][..tw];
                let (c0, c1, c2, c3, c4, c5) = (c(0), c(1), c(2), c(3), c(4), c(5));
                let y = |tx: usize| at([c0[tx], c1[tx], c2[tx], c3[tx], c4[tx], c5[tx]]);
                let (quads, last) = row.split_at_mut(4 * full);
                for (tx, q) in quads.chunks_exact_mut(4).enumerate() {
                    q.copy_from_slice(&y(tx));
                }
                if !last.is_empty() {
                    let v = y(full);
                    last.copy_from_slice(&v[..last.len()]);
                }
            }
            let oy1 = (oy + 4).min(oh);
            // SAFETY: rows oy..oy1 of channel k of image img are this task's (see above).
            unsafe { epi.apply(out, img, cout, n, k, 1, oy * ow, (oy1 - oy) * ow) };
        }
    }
}
