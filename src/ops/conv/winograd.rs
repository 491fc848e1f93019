//! Winograd F(2x2, 3x3): the 3x3 stride-1 dilation-1 convolutions (VGG, ResNet's basic and
//! bottleneck blocks, and the input gradient of each, which is itself such a convolution,
//! [`Geom::transposed`]) with 16 multiply-adds per 2x2 output tile and channel pair instead of
//! 36 (4 per output pixel instead of 9).
//!
//! The output is cut into 2x2 tiles, each reading a 4x4 patch of the input (rows
//! `2*ty - p ..`, columns `2*tx - p ..`, zero outside). With the transforms of Lavin & Gray
//! (2016), `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per tile and channel pair, summed over the input
//! channels: the sum is 16 independent products `M[ξ] = U[ξ] · V[ξ]`, `U[ξ]` `[Cout,Cin]` (the
//! transformed kernel, made once per call, or once per scope for a frozen weight: `kept`) and
//! `V[ξ]` `[Cin,T]` (the transformed input tiles), which run through `gemm` like the im2col
//! path's single product.
//!
//! Rayon tasks over bands of tile rows, the tile rows of all images numbered one after the
//! other (a band of small images spans several of them, so that the products are not thin):
//! each task transforms its band's input into its thread's scratch (`16*Cin*T` values, `T` the
//! band's tiles: about 512 KiB, 2 MiB at 512 channels), runs the 16 products into a second scratch (`16*Cout*T`),
//! transforms them back into the output rows it owns and applies the bias, activation and
//! residual ([`Epilogue`]) to each row pair while it is in cache. No buffer grows with the
//! batch beyond the output.
//!
//! The transforms' additions round too: the result differs from the im2col path's by a few
//! float32 ulps of the products' magnitude (measured against f64 in the tests).
//! [`pays`] says where it is used: measured per layer shape (see the `timings` test).
//!
//! F(4x4, 3x3) ([`Tile::F4`], transforms in `f4`): 4x4 output tiles from 6x6 patches, 36
//! products instead of 16, 36 multiply-adds per 16 outputs (2.25 per output pixel instead of
//! 4); its transforms' larger coefficients (points 0, ±1, ±2, ∞) round a few times more
//! (measured against f64 in the tests). [`choose`] picks F(2x2) or F(4x4) per layer shape.

use std::borrow::Cow;

use rayon::prelude::*;

use super::Geom;
use crate::ops::Unfilled;
use crate::ops::matmul::{Epilogue, MatRef, SyncPtr, gemm_into};
use crate::ops::phases::split_phases;

mod f4;
pub(super) mod kept;

/// The 16 positions of a 4x4 transformed tile (F(2x2)).
const XI: usize = 16;

/// The output tile: F(2x2, 3x3) (4x4 patches, 16 products) or F(4x4, 3x3) (6x6 patches, 36).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Tile {
    /// 2x2 output tiles.
    F2,
    /// 4x4 output tiles.
    F4,
}

impl Tile {
    /// Output rows (and columns) per tile.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Positions of a transformed tile: the number of products.
    fn xi(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }

    /// Tiles along an axis of `o` outputs.
    fn tiles(self, o: usize) -> usize {
        o.div_ceil(self.m())
    }
}

/// The tile size for geometry `g` (which [`pays`]): F(4x4) for outputs of at least 48x48,
/// F(2x2) below. Measured on VGG-16's layers at 128 px, batch 8 (`timings`, load ~2, ratios of
/// F(4x4)'s time to F(2x2)'s): 64 px 0.75-0.85 (both directions, 64 and 128 channels), 128 px
/// 0.86-0.89, 32 px 0.9-1.6, 16 px 1.4-2.5, 8 px 3.4-3.9 (there the 36 transformed kernels,
/// `36*Cout*Cin` values, cost more than the few tiles save).
pub(super) fn choose(g: &Geom) -> Tile {
    if g.y.o >= 48 && g.x.o >= 48 {
        Tile::F4
    } else {
        Tile::F2
    }
}

/// Grows `v` to at least `n` values (never shrinks nor clears: every use overwrites what it
/// reads) and returns its first `n`.
fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Whether `g` is a convolution this module computes: a 3x3 kernel at stride 1, no dilation.
pub(super) fn applies(g: &Geom) -> bool {
    let ok = |a: &super::Axis| a.k == 3 && a.s == 1 && a.d == 1;
    ok(&g.y) && ok(&g.x)
}

/// Whether Winograd is faster than the im2col path for `b` images of geometry `g` (measured
/// on VGG-16's and ResNet's layers, see the `timings` test): at least 32 input and output
/// channels (VGG's first layer, 3 input channels, is 2-4x slower on Winograd) and at least
/// 196 output pixels in the batch (14x14 at batch 1; 7x7 images at batch 1 measured even).
pub(super) fn pays(b: usize, g: &Geom) -> bool {
    applies(g) && g.cin >= 32 && g.cout >= 32 && b * g.y.o * g.x.o >= 196
}

/// Tile rows per band (task) for `b` images of geometry `g`, counted over all images' tile
/// rows: the band's transformed input (`16*Cin*T`) and products (`16*Cout*T`) stay within
/// ~512 KiB each (both in a core's L2; 8x that measured slower at batch 4), but a band
/// has at least 64 tiles, so that the products are not too thin (small images: several
/// images a band); then the bands are cut finer, down to 64 tiles, until there are enough
/// tasks for the threads. A function of the shapes only, never of the thread count, so that
/// every sum runs in the same order on every machine.
///
/// F(4x4): at least 16 tiles (of 16 outputs each) a band, `36*Cin*T` within ~1 MiB (VGG-16's
/// 64- and 128-px layers at batch 8 measured 0.7-0.8x the time at 512 KiB, 1.1-1.4x at 4 MiB).
fn band_tile_rows(tile: Tile, b: usize, g: &Geom) -> usize {
    const WANTED_TASKS: usize = 16;
    let min_tiles = 256 / (tile.m() * tile.m());
    let budget = match tile {
        Tile::F2 => 131_072,
        Tile::F4 => 262_144,
    };
    let (tw, all) = (tile.tiles(g.x.o), b * tile.tiles(g.y.o));
    let max_tiles = (budget / (tile.xi() * g.cin.max(g.cout).max(1))).max(min_tiles);
    let mut rows = (max_tiles / tw).clamp(1, all);
    while all.div_ceil(rows) < WANTED_TASKS && rows > 1 && (rows / 2) * tw >= min_tiles {
        rows /= 2;
    }
    rows
}

/// 2x2 output tiles along an axis of `o` outputs.
fn tiles(o: usize) -> usize {
    Tile::F2.tiles(o)
}

/// The transformed kernel `U[ξ][o][c] = (G w[o][c] Gᵀ)[ξ]` (`[ξ, Cout, Cin]`, ξ over the
/// tile's [`Tile::xi`] positions) of `w` `[Cout, Cin, 3, 3]`: F(2x2) with
/// `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]` ([`f2_g`]), F(4x4) with `f4`'s.
///
/// The output channels in parallel; each task takes its channel's kernels [`LANES`] input
/// channels at a time, laid out tap by tap, transforms them together ([`transform_lanes`]:
/// each step is one vector of lanes) into its thread's scratch, and copies each ξ's run into
/// `U`. Nothing is zeroed first and nothing is allocated per channel. The same arithmetic as
/// transforming kernel by kernel, in 0.72-0.87x its time (Zen 5, medians of 30: 512x512 F(2x2)
/// 2.29 -> 1.98 ms, 128x128 F(4x4) 0.35 -> 0.25 ms); writing `U` bounds it from there.
fn kernel_transform(tile: Tile, g: &Geom, w: &[f32]) -> Vec<f32> {
    let (cin, cout) = (g.cin, g.cout);
    let (xis, plane) = (tile.xi(), cout * cin);
    let mut u = Unfilled::new(xis * plane);
    let dst = SyncPtr(u.ptr());
    (0..cout)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, o| {
            let out = grown(scratch, xis * LANES);
            vectorised(|| {
                for c0 in (0..cin).step_by(LANES) {
                    let n = LANES.min(cin - c0);
                    let mut taps = [[0f32; LANES]; 9];
                    for (l, k) in w[(o * cin + c0) * 9..][..n * 9].chunks_exact(9).enumerate() {
                        for (tap, &v) in taps.iter_mut().zip(k) {
                            tap[l] = v;
                        }
                    }
                    match tile {
                        Tile::F2 => transform_lanes(&taps, f2_g, out),
                        Tile::F4 => transform_lanes(&taps, f4::gk, out),
                    }
                    for xi in 0..xis {
                        // SAFETY: run (ξ, o, c0..c0 + n) of `U` lies inside it and is written
                        // by this task alone (one task per output channel).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                out[xi * LANES..].as_ptr(),
                                dst.get().add(xi * plane + o * cin + c0),
                                n,
                            );
                        }
                    }
                }
            })
        });
    // SAFETY: every (ξ, o) run of `cin` values was copied in above.
    unsafe { u.assume_filled() }
}

/// Input channels whose kernels [`kernel_transform`] transforms together.
const LANES: usize = 16;

/// `G k Gᵀ` of [`LANES`] 3x3 kernels, `taps[j][l]` = tap `j` (row-major) of kernel `l`, into
/// `out` (`[ξ, LANES]`, ξ = `M * row + col`): `g1` is `G` times three values (a column of a
/// kernel, then a row of `G k`). Every step is a loop over the lanes, which vectorises.
#[inline(always)]
fn transform_lanes<const M: usize>(
    taps: &[[f32; LANES]; 9],
    g1: impl Fn(f32, f32, f32) -> [f32; M] + Copy,
    out: &mut [f32],
) {
    let apply = |a: &[f32; LANES], b: &[f32; LANES], c: &[f32; LANES]| {
        let mut r = [[0f32; LANES]; M];
        for l in 0..LANES {
            for (ri, v) in r.iter_mut().zip(g1(a[l], b[l], c[l])) {
                ri[l] = v;
            }
        }
        r
    };
    // t = G k (M x 3), one column of the kernels at a time; then each row of t times Gᵀ.
    let cols = [0, 1, 2].map(|j| apply(&taps[j], &taps[3 + j], &taps[6 + j]));
    for i in 0..M {
        let row = apply(&cols[0][i], &cols[1][i], &cols[2][i]);
        for (j, r) in row.iter().enumerate() {
            out[(M * i + j) * LANES..][..LANES].copy_from_slice(r);
        }
    }
}

/// F(2x2)'s `G` times three values (a column or a row of a kernel).
#[inline(always)]
fn f2_g(a: f32, b: f32, d: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
}

/// Runs `f` with AVX2 and FMA enabled when the CPU has them (the transforms are loops of adds
/// over a row of tiles, which the compiler then vectorises 8 wide). AVX-512 here measured
/// nothing on an Intel Xeon (the VGG-16 ascent step, see `benches/reference/log.md`): the
/// transforms wait on memory.
#[inline(always)]
fn vectorised(f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2(f: impl FnOnce()) {
            f()
        }
        if crate::ops::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
            unsafe { with_avx2(f) };
            return;
        }
    }
    f()
}

/// A task's scratch, reused by its thread: the transformed input `[16, Cin, T]`, the products
/// `[16, Cout, T]` and the rows of one tile row.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    rows: Vec<f32>,
}

thread_local! {
    /// Each thread's [`Scratch`], kept between calls: grown (and zeroed) once to the largest
    /// band, not on every call (`for_each_init` made one per rayon split, each grown anew:
    /// 2.5 % of the VGG-16 ascent step).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Runs `f` on this thread's [`Scratch`] (a fresh one should a task ever nest in another on
/// the same thread).
fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Which padded input row of which image each of the `N` slots of an input transform's ring
/// of split rows holds (padded row `iy'` goes to slot `iy' % N`), so that a row that the next
/// tile row reads again is split into its phases once.
struct RowRing<const N: usize> {
    img: usize,
    rows: [usize; N],
}

impl<const N: usize> RowRing<N> {
    /// An empty ring (a new channel).
    fn new() -> Self {
        RowRing {
            img: usize::MAX,
            rows: [usize::MAX; N],
        }
    }

    /// The slot of padded row `row` of image `img`, and whether it must be split into it
    /// (`false`: the slot holds it already).
    fn slot(&mut self, img: usize, row: usize) -> (usize, bool) {
        if img != self.img {
            *self = RowRing::new();
            self.img = img;
        }
        let slot = row % N;
        let fresh = self.rows[slot] != row;
        self.rows[slot] = row;
        (slot, fresh)
    }
}

/// Transforms tile rows `ty0..ty0 + nty` (counted over all images, `tiles(OH)` per image) of
/// `x` (`[B, Cin, H, W]`) into `v` (`[16, Cin, T]`, `T = nty * tw`, tile `(ty0 + r, tx)` at
/// column `r * tw + tx`): `V = Bᵀ d B` with `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`.
///
/// Tile row `ty` reads input rows `2ty - py .. 2ty - py + 4`: the next tile row of the same
/// image starts at this one's third, so each input row is split into its column phases once,
/// into a ring of four rows, not once per tile row that reads it.
#[inline(always)]
fn input_transform(g: &Geom, x: &[f32], ty0: usize, nty: usize, s: &mut Scratch) {
    let (h, wd, py, px) = (g.y.n, g.x.n, g.y.p, g.x.p);
    let tw = tiles(g.x.o);
    let t = nty * tw;
    // Each input row, padded, as its even and odd columns: `e[k] = row[2k - px]`,
    // `o[k] = row[2k + 1 - px]`, k in 0..=tw (zero outside the image); in ring slot
    // `iy' % 4` for padded row `iy' = iy + py`.
    let tw1 = tw + 1;
    let (eo, dd) = grown(&mut s.rows, 16 * tw1).split_at_mut(8 * tw1);
    let v = grown(&mut s.v, XI * g.cin * t).as_mut_ptr();
    let th = tiles(g.y.o);
    for c in 0..g.cin {
        let mut ring = RowRing::<4>::new();
        for r in 0..nty {
            let (img, ty) = ((ty0 + r) / th, (ty0 + r) % th);
            let plane = &x[(img * g.cin + c) * h * wd..][..h * wd];
            for row in 2 * ty..2 * ty + 4 {
                let (slot, fresh) = ring.slot(img, row);
                if !fresh {
                    continue;
                }
                let (e, o) = eo[2 * slot * tw1..][..2 * tw1].split_at_mut(tw1);
                match row.checked_sub(py).filter(|&iy| iy < h) {
                    None => {
                        e.fill(0.0);
                        o.fill(0.0);
                    }
                    Some(iy) => split_phases(&plane[iy * wd..][..wd], px, 0.0, [e, o]),
                }
            }
            // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 (even and odd columns alike).
            let src = |i: usize| &eo[(2 * ty + i) % 4 * 2 * tw1..][..2 * tw1];
            let (s0, s1, s2, s3) = (src(0), src(1), src(2), src(3));
            let (q01, q23) = dd.split_at_mut(4 * tw1);
            let (q0, q1) = q01.split_at_mut(2 * tw1);
            let (q2, q3) = q23.split_at_mut(2 * tw1);
            for j in 0..2 * tw1 {
                q0[j] = s0[j] - s2[j];
                q1[j] = s1[j] + s2[j];
                q2[j] = s2[j] - s1[j];
                q3[j] = s1[j] - s3[j];
            }
            // (Bᵀ d) B on the columns 2tx..2tx + 4: e[tx], o[tx], e[tx+1], o[tx+1].
            for (i, d) in dd.chunks_exact(2 * tw1).enumerate() {
                let (e, o) = d.split_at(tw1);
                // SAFETY: the four destinations are disjoint runs of `tw` values inside `v`
                // (ξ = 4i..4i + 4, channel c, tile row r).
                let [d0, d1, d2, d3] = std::array::from_fn(|j| unsafe {
                    std::slice::from_raw_parts_mut(
                        v.add((4 * i + j) * g.cin * t + c * t + r * tw),
                        tw,
                    )
                });
                for tx in 0..tw {
                    d0[tx] = e[tx] - e[tx + 1];
                    d1[tx] = o[tx] + e[tx + 1];
                    d2[tx] = e[tx + 1] - o[tx];
                    d3[tx] = o[tx] - o[tx + 1];
                }
            }
        }
    }
}

/// Transforms the products `m` (`[16, Cout, T]`) of tile rows `ty0..ty0 + nty` (counted as
/// in [`input_transform`]) back into their output rows of `out` (`[B, Cout, OH, OW]`),
/// `Y = Aᵀ M A` with `Aᵀ = [1 1 1 0; 0 1 -1 -1]`, and applies the epilogue to each row pair.
///
/// # Safety
/// `out` must hold the whole output, and no other task may touch these tile rows' outputs.
#[inline(always)]
unsafe fn output_transform(
    g: &Geom,
    ty0: usize,
    nty: usize,
    s: &mut Scratch,
    out: SyncPtr,
    epi: &Epilogue<'_>,
) {
    let (oh, ow, cout) = (g.y.o, g.x.o, g.cout);
    let tw = tiles(ow);
    let t = nty * tw;
    let th = tiles(oh);
    grown(&mut s.rows, 8 * tw);
    let n = oh * ow;
    for k in 0..cout {
        for r in 0..nty {
            let m = |xi: usize| &s.m[xi * cout * t + k * t + r * tw..][..tw];
            // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3, for each of the 4 columns.
            let (a, b) = s.rows.split_at_mut(4 * tw);
            for j in 0..4 {
                let (m0, m1, m2, m3) = (m(j), m(4 + j), m(8 + j), m(12 + j));
                let (aj, bj) = (&mut a[j * tw..][..tw], &mut b[j * tw..][..tw]);
                for tx in 0..tw {
                    aj[tx] = m0[tx] + m1[tx] + m2[tx];
                    bj[tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
            // (Aᵀ M) A: columns c0 + c1 + c2 and c1 - c2 - c3, into the output's two rows.
            let (img, oy) = ((ty0 + r) / th, 2 * ((ty0 + r) % th));
            for (half, src) in [&*a, &*b].into_iter().enumerate() {
                if oy + half >= oh {
                    break;
                }
                // SAFETY: row `oy + half` of channel k of image img lies in `out` and belongs
                // to this task (the caller's contract).
                let row = unsafe {
                    std::slice::from_raw_parts_mut(
                        out.get().add((img * cout + k) * n + (oy + half) * ow),
                        ow,
                    )
                };
                let c = |j: usize| &src[j * tw..][..tw];
                let (c0, c1, c2, c3) = (c(0), c(1), c(2), c(3));
                let (pairs, last) = row.split_at_mut(ow / 2 * 2);
                for (tx, p) in pairs.chunks_exact_mut(2).enumerate() {
                    p[0] = c0[tx] + c1[tx] + c2[tx];
                    p[1] = c1[tx] - c2[tx] - c3[tx];
                }
                if let Some(v) = last.first_mut() {
                    let tx = tw - 1;
                    *v = c0[tx] + c1[tx] + c2[tx];
                }
            }
            let oy1 = (oy + 2).min(oh);
            // SAFETY: rows oy..oy1 of channel k of image img are this task's (see above).
            unsafe { epi.apply(out, img, cout, n, k, 1, oy * ow, (oy1 - oy) * ow) };
        }
    }
}

/// `epi(conv(x, w))` for `b` images of geometry `g` (which [`applies`]) with the tile
/// [`choose`] picks: `x` `[B,Cin,H,W]`, `w()` `[Cout,Cin,3,3]`, row-major; returns
/// `[B,Cout,OH,OW]`. `w` is called only when the transformed kernel is not kept (`key`, see
/// [`kept`]).
pub(super) fn forward<'w>(
    b: usize,
    g: &Geom,
    x: &[f32],
    w: impl FnOnce() -> Cow<'w, [f32]>,
    key: Option<kept::Stamped>,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let tile = choose(g);
    let u = kept::transformed(key, tile, || kernel_transform(tile, g, &w()));
    forward_transformed(tile, b, g, x, &u, epi)
}

/// [`forward`] with the tile `tile`, transforming `w` (`[Cout,Cin,3,3]`) on this call.
#[cfg(test)]
fn forward_with(
    tile: Tile,
    b: usize,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    epi: Epilogue<'_>,
) -> Vec<f32> {
    forward_transformed(tile, b, g, x, &kernel_transform(tile, g, w), epi)
}

/// [`forward`] with the tile `tile` and the kernel transformed for it, `u`
/// ([`kernel_transform`]'s `[ξ, Cout, Cin]`).
fn forward_transformed(
    tile: Tile,
    b: usize,
    g: &Geom,
    x: &[f32],
    u: &[f32],
    epi: Epilogue<'_>,
) -> Vec<f32> {
    debug_assert!(applies(g));
    let (cin, cout) = (g.cin, g.cout);
    let n = g.out_plane();
    if b * cout * n == 0 {
        return Vec::new();
    }
    let xis = tile.xi();
    debug_assert_eq!(u.len(), xis * cout * cin);
    let all = b * tile.tiles(g.y.o);
    let rows = band_tile_rows(tile, b, g);
    let mut out = Unfilled::new(b * cout * n);
    let dst = SyncPtr(out.ptr());
    (0..all.div_ceil(rows)).into_par_iter().for_each(|band| {
        let ty0 = band * rows;
        let nty = rows.min(all - ty0);
        with_scratch(|s| band_product(tile, g, x, u, (ty0, nty), s, dst, &epi));
    });
    // SAFETY: the bands cover every tile row of every image, and each output transform writes
    // every value of its rows (every column: 2 or 4 per tile, the last tile clipped).
    unsafe { out.assume_filled() }
}

/// One band of [`forward_transformed`]: tile rows `ty0..ty0 + nty` transformed, multiplied
/// (`u`: the transformed kernel) and transformed back into their rows of the output `dst`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn band_product(
    tile: Tile,
    g: &Geom,
    x: &[f32],
    u: &[f32],
    (ty0, nty): (usize, usize),
    s: &mut Scratch,
    dst: SyncPtr,
    epi: &Epilogue<'_>,
) {
    let (cin, cout, xis) = (g.cin, g.cout, tile.xi());
    let t = nty * tile.tiles(g.x.o);
    match tile {
        Tile::F2 => vectorised(|| input_transform(g, x, ty0, nty, s)),
        Tile::F4 => vectorised(|| f4::input_transform(g, x, ty0, nty, s)),
    }
    grown(&mut s.m, xis * cout * t);
    for xi in 0..xis {
        // SAFETY: m holds 16 `cout x t` matrices and the product writes the ξ-th;
        // U[ξ] is `cout x cin` and V[ξ] `cin x t`, both inside their buffers.
        unsafe {
            gemm_into(
                cout,
                t,
                cin,
                s.m.as_mut_ptr().add(xi * cout * t),
                t,
                false,
                MatRef::row_major(u, xi * cout * cin, cin),
                MatRef::row_major(&s.v, xi * cin * t, t),
            );
        }
    }
    // SAFETY: this task alone owns tile rows ty0..ty0 + nty, i.e. their output rows
    // (2 or 4 per tile row, clipped to OH) of each channel (the caller's contract).
    vectorised(|| unsafe {
        match tile {
            Tile::F2 => output_transform(g, ty0, nty, s, dst, epi),
            Tile::F4 => f4::output_transform(g, ty0, nty, s, dst, epi),
        }
    });
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "the timing test prints what it measured"
)]
mod tests;
