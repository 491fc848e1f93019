//! The product of a 1x1 convolution with its own summation order:
//! `dst[i][p] = act(Σ_c w[i][c] · x[c][p] + bias[i]) + residual[i][p]`.
//!
//! `gemm` copies (packs) its right-hand side, the activation, on every call; at batch 1 and in
//! the fused MBConv op, whose products are small and many (one per task, each re-packing the
//! image it reads), that copy cost a quarter of the products' time. Here the rows of `x` are
//! read where they lie, or, when they are many, from a copy of one block of pixels at a time
//! (`packs`): a register tile of `R` output rows x `V` vectors of pixels keeps its
//! accumulators in registers while `c` runs over the inputs (per input: `V` loads of `x`, `R`
//! broadcast weights, `R * V` FMAs), and gets its bias, activation and residual before the one
//! store. The pixel tail is a masked vector.
//!
//! Every output is one FMA chain over `c = 0, 1, ..` starting from zero, then `+ bias`, so
//! the AVX-512, AVX2 + FMA and portable kernels give the same bits, whatever the tiling and the
//! thread count (tested); they differ from `gemm`'s order of summation in the last bits.

use rayon::prelude::*;

use super::Activation;
use super::matmul::{Epilogue, MatRef, SyncPtr, WANTED_TASKS};

/// The kernels, by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// 16 lanes, 6 rows x 4 vectors per register tile.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 8 lanes, 6 rows x 2 vectors per register tile.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// Plain Rust with `mul_add` (aarch64, where FMA is baseline; and the tests' reference).
    #[cfg_attr(
        not(any(test, target_arch = "aarch64")),
        allow(dead_code, reason = "run on aarch64 and in the tests")
    )]
    Portable,
}

impl Kernel {
    /// The kernel for this CPU, if it has one that beats `gemm`: AVX-512F, then AVX2 + FMA,
    /// the portable one on aarch64; `None` on other x86 CPUs (no FMA: `mul_add` would be a
    /// library call).
    pub(crate) fn detect() -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Kernel::Avx512);
            }
            if super::has_avx2_fma() {
                return Some(Kernel::Avx2Fma);
            }
            None
        }
        #[cfg(target_arch = "aarch64")]
        {
            Some(Kernel::Portable)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            None
        }
    }

    /// Every kernel this CPU can run (the tests compare them).
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
            if super::has_avx2_fma() {
                all.push(Kernel::Avx2Fma);
            }
        }
        all
    }
}

/// One product `dst (m x n) = post(lhs (m x k) · x (k x n))`: `x` row `c` at `x + c * x_rs`
/// (contiguous along the row), `dst` row `i` at `dst + i * d_rs`, and the residual (when
/// given) laid out like `dst`.
#[derive(Clone, Copy)]
pub(crate) struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs: MatRef,
    pub x: *const f32,
    pub x_rs: usize,
    pub dst: *mut f32,
    pub d_rs: usize,
    /// `[m]`, per output row, added to the product before the activation.
    pub bias: Option<*const f32>,
    /// Identity, ReLU or ReLU6 (the smooth ones are not fused here).
    pub act: Activation,
    /// Added after the activation; element `(i, p)` at `residual + i * d_rs + p`.
    pub residual: Option<*const f32>,
    /// Where each pixel's outputs go when the product is stored channels-last (`d_rs` and
    /// the residual unused): element `(i, p)` at `dst + pixels[p] + i`, `[n]` offsets. The
    /// x86 kernels store the rows in runs of 8 from row 0 (zeros past `m` in the last run),
    /// so each pixel's run must have room for `m` rounded up to 8.
    pub pixels: Option<*const usize>,
}

impl Product {
    /// One task's tile of `out[img] = epi(lhs (m x k) · x_img (k x n))` stored as rows of `n`
    /// (image after image): rows `r0..r0 + rows`, columns `c0..c0 + cols`, reading the tile's
    /// columns from `x` (`k` rows, contiguous along each), with `epi`'s bias, activation and
    /// residual (shaped like `out`).
    ///
    /// # Safety
    /// The tile must lie inside `lhs`, `out` and the epilogue's buffers; `x` must view `k x
    /// cols` values with unit column stride.
    pub(crate) unsafe fn tile(
        lhs: MatRef,
        (m, k, n): (usize, usize, usize),
        x: MatRef,
        (img, (r0, rows), (c0, cols)): (usize, (usize, usize), (usize, usize)),
        out: SyncPtr,
        epi: &Epilogue<'_>,
    ) -> Product {
        debug_assert!(x.cs == 1 && x.rs >= 0);
        let at = (img * m + r0) * n + c0;
        Product {
            m: rows,
            n: cols,
            k,
            // SAFETY: row r0 < m of lhs (the caller's contract).
            lhs: unsafe { lhs.at(r0, 0) },
            x: x.ptr,
            x_rs: x.rs.unsigned_abs(),
            // SAFETY: `at` is inside the output (image img, row r0, column c0).
            dst: unsafe { out.get().add(at) },
            d_rs: n,
            bias: epi.bias.map(|b| b[r0..].as_ptr()),
            act: epi.act,
            residual: epi.residual.map(|r| r[at..].as_ptr()),
            pixels: None,
        }
    }

    /// Runs the product with `kernel`, single threaded.
    ///
    /// # Safety
    /// The pointers must be valid for the matrices described (`lhs` for `m x k`, `x` for
    /// `k` rows of `n`, `dst` and `residual` for `m` rows of `n`, `bias` for `m` values),
    /// `dst` must not overlap the others nor be accessed concurrently, the activation must not
    /// be smooth, and `kernel` must be supported by the CPU ([`Kernel::detect`]).
    pub(crate) unsafe fn run(&self, kernel: Kernel) {
        debug_assert!(!self.act.is_smooth());
        if self.m == 0 || self.n == 0 {
            return;
        }
        // SAFETY: forwarded from the caller (who checked the CPU's features).
        unsafe {
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => avx512::run(self),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2Fma => avx2::run(self),
                Kernel::Portable => portable(self),
            }
        }
    }
}

/// The reference semantics, in plain Rust: per output an FMA chain over the inputs from zero,
/// then `act(v + bias) + residual`.
///
/// # Safety
/// As [`Product::run`].
unsafe fn portable(p: &Product) {
    let mut acc = vec![0f32; p.n];
    for i in 0..p.m {
        acc.fill(0.0);
        for c in 0..p.k {
            // SAFETY: element (i, c) of lhs and row c of x (the caller's contract).
            let (w, row) = unsafe {
                (
                    *p.lhs
                        .ptr
                        .offset(i as isize * p.lhs.rs + c as isize * p.lhs.cs),
                    std::slice::from_raw_parts(p.x.add(c * p.x_rs), p.n),
                )
            };
            acc.iter_mut()
                .zip(row)
                .for_each(|(a, &x)| *a = w.mul_add(x, *a));
        }
        // SAFETY: row i of dst (or its elements at the pixels' offsets) and of the residual,
        // element i of the bias.
        unsafe {
            let bias = p.bias.map_or(0.0, |b| *b.add(i));
            if let Some(pixels) = p.pixels {
                for (j, a) in acc.iter().enumerate() {
                    *p.dst.add(*pixels.add(j) + i) = p.act.apply(a + bias);
                }
                continue;
            }
            let out = std::slice::from_raw_parts_mut(p.dst.add(i * p.d_rs), p.n);
            for (j, (o, a)) in out.iter_mut().zip(&acc).enumerate() {
                let res = p.residual.map_or(0.0, |r| *r.add(i * p.d_rs + j));
                *o = p.act.apply(a + bias) + res;
            }
        }
    }
}

/// Where a register tile reads its pixels: row `c` of the block at `x + c * rs` (the
/// activation in place, or a copy of the block).
#[derive(Clone, Copy)]
struct Panel {
    x: *const f32,
    rs: usize,
}

/// Whether a product reads its pixel blocks from a contiguous copy rather than in place: when
/// the block's `k` rows are many (at least [`PACK_MIN_K`]) and the copy serves more than one
/// row tile (of `tile_rows`, the kernel's `RMAX`). In place, each row is a separate piece of
/// memory `x_rs` floats from the last: at 1,152 inputs they outgrow the L1 cache, and a
/// power-of-two stride (16x16 planes: 1 KiB) maps them onto a few cache sets; the copy is one
/// run of `k` vectors. On the AVX2-only EPYC (2026-12-01, one thread) the copy ran 1152->192 at
/// 16x16 pixels 1.8x faster (33 -> 61 GFLOP/s), at 7x7 1.2-1.5x, and was 0.9x at 240 inputs and
/// fewer (the copy's cost, with the rows still in cache). The order of the sums is the same
/// either way.
fn packs(p: &Product, tile_rows: usize) -> bool {
    p.k >= PACK_MIN_K && p.m > tile_rows
}

/// The fewest input rows for which [`packs`] copies the pixel block.
const PACK_MIN_K: usize = 256;

thread_local! {
    /// The calling thread's copy of a pixel block ([`packs`]), grown as needed.
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The calling thread's panel buffer with room for `len` floats. The pointer stays valid until
/// the next call on this thread (the kernels do not nest).
fn panel_buffer(len: usize) -> *mut f32 {
    PANEL.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        buf.as_mut_ptr()
    })
}

/// The register-tiled kernel for one instruction set: `block::<R, V, MASKED>` computes `R`
/// rows x `V` vectors of pixels (the last vector masked to `tail` when `MASKED`), `rows::<V>`
/// runs one block column of pixels down all the rows (from a [`Panel`]), `run` walks the pixel
/// blocks. Expects in scope: the vector type `Vf`, the mask type `Mask`, `LANES`, `RMAX`,
/// `VMAX`, `VMAX_CL`, `transpose8`, and `#[inline]` target-feature functions `zero`, `splat`,
/// `load`, `load_masked`, `store`, `store_masked`, `fmadd`, `add`, `max`, `min`, `mask`.
#[cfg(target_arch = "x86_64")]
macro_rules! register_tiled {
    ($features:literal) => {
        /// One `R x V` register tile at rows `i0..`, pixels `p0..`; when `MASKED`, the last
        /// vector holds only the lanes of `tail` (a block without a tail keeps the mask out
        /// of the registers: AVX2's is a vector, and one more live vector made the 4 x 3
        /// tile spill its accumulators on every step).
        #[target_feature(enable = $features)]
        unsafe fn block<const R: usize, const V: usize, const MASKED: bool>(
            p: &Product,
            i0: usize,
            p0: usize,
            tail: Mask,
            panel: Panel,
        ) {
            let mut acc = [[zero(); V]; R];
            // SAFETY: every access stays inside the matrices of `p` and the panel (the
            // caller's contract): rows i0..i0 + R < m, pixels p0.. of which the last vector
            // is masked to n.
            unsafe {
                let w: [*const f32; R] =
                    std::array::from_fn(|r| p.lhs.ptr.offset((i0 + r) as isize * p.lhs.rs));
                let cs = p.lhs.cs;
                let mut xp = panel.x;
                for c in 0..p.k {
                    let mut xv = [zero(); V];
                    for (v, slot) in xv.iter_mut().enumerate() {
                        *slot = load_part(xp.add(v * LANES), MASKED && v + 1 == V, tail);
                    }
                    for (row, wr) in acc.iter_mut().zip(&w) {
                        let wv = splat(*wr.offset(c as isize * cs));
                        for (a, &xq) in row.iter_mut().zip(&xv) {
                            *a = fmadd(wv, xq, *a);
                        }
                    }
                    xp = xp.add(panel.rs);
                }
                // The accumulators leave the registers once, here: indexing `acc` in the
                // epilogue's loops (not unrolled) would keep it in memory, stored on every
                // step of the loop above.
                let mut sums = [[[0f32; LANES]; V]; R];
                for (sum_row, acc_row) in sums.iter_mut().zip(&acc) {
                    for (sum, &a) in sum_row.iter_mut().zip(acc_row) {
                        store(sum.as_mut_ptr(), a);
                    }
                }
                if let Some(pixels) = p.pixels {
                    store_channels_last(p, i0, p0, &mut sums, pixels);
                    return;
                }
                for (r, row) in sums.iter().enumerate() {
                    let i = i0 + r;
                    let bias = splat(p.bias.map_or(0.0, |b| *b.add(i)));
                    let at = i * p.d_rs + p0;
                    for (v, a) in row.iter().enumerate() {
                        let mut y = activate(p.act, add(load(a.as_ptr()), bias));
                        let last = MASKED && v + 1 == V;
                        if let Some(res) = p.residual {
                            let r = res.add(at + v * LANES);
                            y = add(y, load_part(r, last, tail));
                        }
                        let d = p.dst.add(at + v * LANES);
                        if last {
                            store_masked(d, y, tail);
                        } else {
                            store(d, y);
                        }
                    }
                }
            }
        }

        /// The epilogue of a tile stored channels-last ([`Product::pixels`]): each row's
        /// `act(sum + bias)`, then each run of 8 pixels x 8 rows transposed into 8 runs of
        /// 8 channels, at `dst + pixels[q] + i0` (rows past `R` are zeros).
        ///
        /// # Safety
        /// As [`block`], with `i0` a multiple of 8 and room for 8 values at each pixel's run.
        #[target_feature(enable = $features)]
        unsafe fn store_channels_last<const R: usize, const V: usize>(
            p: &Product,
            i0: usize,
            p0: usize,
            sums: &mut [[[f32; LANES]; V]; R],
            pixels: *const usize,
        ) {
            let n = (V * LANES).min(p.n - p0);
            // SAFETY: the tile's rows i0..i0 + R of the bias; pixels p0..p0 + n of the
            // offsets, each with room for the run of 8 rows from i0 (the caller's contract).
            unsafe {
                for (r, row) in sums.iter_mut().enumerate() {
                    let bias = splat(p.bias.map_or(0.0, |b| *b.add(i0 + r)));
                    for v in row.iter_mut() {
                        store(v.as_mut_ptr(), activate(p.act, add(load(v.as_ptr()), bias)));
                    }
                }
                for q0 in (0..n).step_by(8) {
                    let (v, lane) = (q0 / LANES, q0 % LANES);
                    let rows: [__m256; 8] = std::array::from_fn(|r| match r < R {
                        true => _mm256_loadu_ps(sums[r][v][lane..].as_ptr()),
                        false => _mm256_setzero_ps(),
                    });
                    let runs = transpose8(rows);
                    for (q, run) in runs.iter().enumerate().take(n - q0) {
                        _mm256_storeu_ps(p.dst.add(*pixels.add(p0 + q0 + q) + i0), *run);
                    }
                }
            }
        }

        /// One vector at `p`: only the lanes of `tail` when `partial`, else all of them.
        ///
        /// # Safety
        /// The lanes read (all, or those of `tail`) must be readable.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_part(p: *const f32, partial: bool, tail: Mask) -> Vf {
            // SAFETY: forwarded from the caller.
            unsafe {
                if partial {
                    load_masked(p, tail)
                } else {
                    load(p)
                }
            }
        }

        /// `act(v)` as [`Activation::apply`] does it for the piecewise-linear activations
        /// (`max(v, 0)` maps NaN to 0 like `f32::max`; `min(6, max(0, v))` keeps it like
        /// `f32::clamp`: the instructions return their second operand when one is NaN).
        #[inline]
        #[target_feature(enable = $features)]
        fn activate(act: Activation, v: Vf) -> Vf {
            match act {
                Activation::Relu => max(v, zero()),
                Activation::Relu6 => min(splat(6.0), max(zero(), v)),
                _ => v,
            }
        }

        /// The pixel block `p0..p0 + np` (`V` vectors) down all the rows, read in place or
        /// from a copy (see [`packs`](super::packs)).
        #[target_feature(enable = $features)]
        unsafe fn rows<const V: usize>(p: &Product, p0: usize, np: usize) {
            let masked = np != V * LANES;
            let tail = mask(if masked { np - (V - 1) * LANES } else { LANES });
            // SAFETY: the caller's pixels p0..p0 + np are inside the product; the copy is
            // `k` rows of `V` vectors, filled before it is read.
            unsafe {
                let panel = if super::packs(p, RMAX) {
                    let rs = V * LANES;
                    let to = super::panel_buffer(p.k * rs);
                    for c in 0..p.k {
                        let (from, to) = (p.x.add(c * p.x_rs + p0), to.add(c * rs));
                        for v in 0..V {
                            let at = v * LANES;
                            let x = load_part(from.add(at), masked && v + 1 == V, tail);
                            store(to.add(at), x);
                        }
                    }
                    Panel { x: to, rs }
                } else {
                    Panel {
                        x: p.x.add(p0),
                        rs: p.x_rs,
                    }
                };
                if masked {
                    rows_of::<V, true>(p, p0, tail, panel)
                } else {
                    rows_of::<V, false>(p, p0, tail, panel)
                }
            }
        }

        /// [`rows`] for a block with or without a tail, reading `panel`.
        #[target_feature(enable = $features)]
        unsafe fn rows_of<const V: usize, const MASKED: bool>(
            p: &Product,
            p0: usize,
            tail: Mask,
            panel: Panel,
        ) {
            if p.pixels.is_some() {
                // SAFETY: forwarded.
                return unsafe { rows_of_channels_last::<V, MASKED>(p, p0, tail, panel) };
            }
            let mut i0 = 0;
            while i0 < p.m {
                let nr = RMAX.min(p.m - i0);
                // SAFETY: rows i0..i0 + nr and the block's pixels are inside the product.
                unsafe {
                    match nr {
                        1 => block::<1, V, MASKED>(p, i0, p0, tail, panel),
                        2 => block::<2, V, MASKED>(p, i0, p0, tail, panel),
                        3 => block::<3, V, MASKED>(p, i0, p0, tail, panel),
                        4 if RMAX > 4 => block::<4, V, MASKED>(p, i0, p0, tail, panel),
                        5 if RMAX > 5 => block::<5, V, MASKED>(p, i0, p0, tail, panel),
                        _ => block::<RMAX, V, MASKED>(p, i0, p0, tail, panel),
                    }
                }
                i0 += nr;
            }
        }

        /// [`rows_of`] for a product stored channels-last: tiles of 8 rows (one run of
        /// channels each).
        #[target_feature(enable = $features)]
        unsafe fn rows_of_channels_last<const V: usize, const MASKED: bool>(
            p: &Product,
            p0: usize,
            tail: Mask,
            panel: Panel,
        ) {
            let mut i0 = 0;
            while i0 < p.m {
                let nr = 8.min(p.m - i0);
                // SAFETY: rows i0..i0 + nr and the block's pixels are inside the product.
                unsafe {
                    match nr {
                        1 => block::<1, V, MASKED>(p, i0, p0, tail, panel),
                        2 => block::<2, V, MASKED>(p, i0, p0, tail, panel),
                        3 => block::<3, V, MASKED>(p, i0, p0, tail, panel),
                        4 => block::<4, V, MASKED>(p, i0, p0, tail, panel),
                        5 => block::<5, V, MASKED>(p, i0, p0, tail, panel),
                        6 => block::<6, V, MASKED>(p, i0, p0, tail, panel),
                        7 => block::<7, V, MASKED>(p, i0, p0, tail, panel),
                        _ => block::<8, V, MASKED>(p, i0, p0, tail, panel),
                    }
                }
                i0 += nr;
            }
        }

        /// The whole product, `VMAX` vectors of pixels at a time (`VMAX_CL` when it is
        /// stored channels-last: its tiles have 8 rows).
        ///
        /// # Safety
        /// As [`Product::run`], and the CPU has the features.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn run(p: &Product) {
            let step = if p.pixels.is_some() { VMAX_CL } else { VMAX } * LANES;
            let mut p0 = 0;
            while p0 < p.n {
                let np = step.min(p.n - p0);
                // SAFETY: pixels p0..p0 + np are inside the product.
                unsafe {
                    match np.div_ceil(LANES) {
                        1 => rows::<1>(p, p0, np),
                        2 if VMAX > 2 => rows::<2>(p, p0, np),
                        3 if VMAX > 3 => rows::<3>(p, p0, np),
                        _ => rows::<VMAX>(p, p0, np),
                    }
                }
                p0 += np;
            }
        }
    };
}

/// AVX-512F: 16 lanes, tiles of 6 rows x 4 vectors (24 accumulators of 32 registers).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::channels_last::transpose8;
    use super::{Activation, Panel, Product};

    type Vf = __m512;
    type Mask = __mmask16;
    const LANES: usize = 16;
    const RMAX: usize = 6;
    const VMAX: usize = 4;
    /// 8 rows x 3 vectors stored channels-last (24 accumulators).
    const VMAX_CL: usize = 3;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn zero() -> Vf {
        _mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn splat(v: f32) -> Vf {
        _mm512_set1_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32) -> Vf {
        // SAFETY: the caller's pointer holds 16 values.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_masked(p: *const f32, m: Mask) -> Vf {
        // SAFETY: the lanes enabled by `m` are readable (masked lanes are not touched).
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, v: Vf) {
        // SAFETY: the caller's pointer has room for 16 values.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_masked(p: *mut f32, v: Vf, m: Mask) {
        // SAFETY: the lanes enabled by `m` are writable.
        unsafe { _mm512_mask_storeu_ps(p, m, v) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fmadd(a: Vf, b: Vf, c: Vf) -> Vf {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn add(a: Vf, b: Vf) -> Vf {
        _mm512_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn max(a: Vf, b: Vf) -> Vf {
        _mm512_max_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn min(a: Vf, b: Vf) -> Vf {
        _mm512_min_ps(a, b)
    }
    /// The first `n` (1..=16) lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mask(n: usize) -> Mask {
        ((1u32 << n) - 1) as Mask
    }

    register_tiled!("avx512f");
}

/// AVX2 + FMA: 8 lanes, tiles of 6 rows x 2 vectors (12 accumulators, 2 pixel vectors and a
/// broadcast weight: 15 of 16 registers). On an AVX2-only EPYC (2026-12-01, one thread) it ran
/// Lite0's pointwise shapes at 48-78 GFLOP/s where 4 x 3 (16 of 16 registers, spilling) ran
/// at 34-44 and `gemm` at 40-75.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::channels_last::transpose8;
    use super::{Activation, Panel, Product};

    type Vf = __m256;
    type Mask = __m256i;
    const LANES: usize = 8;
    const RMAX: usize = 6;
    const VMAX: usize = 2;
    /// 8 rows x 1 vector stored channels-last (8 accumulators).
    const VMAX_CL: usize = 1;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn zero() -> Vf {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn splat(v: f32) -> Vf {
        _mm256_set1_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32) -> Vf {
        // SAFETY: the caller's pointer holds 8 values.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_masked(p: *const f32, m: Mask) -> Vf {
        // SAFETY: the lanes enabled by `m` are readable (masked lanes are not touched).
        unsafe { _mm256_maskload_ps(p, m) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(p: *mut f32, v: Vf) {
        // SAFETY: the caller's pointer has room for 8 values.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_masked(p: *mut f32, v: Vf, m: Mask) {
        // SAFETY: the lanes enabled by `m` are writable.
        unsafe { _mm256_maskstore_ps(p, m, v) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fmadd(a: Vf, b: Vf, c: Vf) -> Vf {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn add(a: Vf, b: Vf) -> Vf {
        _mm256_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn max(a: Vf, b: Vf) -> Vf {
        _mm256_max_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn min(a: Vf, b: Vf) -> Vf {
        _mm256_min_ps(a, b)
    }
    /// The first `n` (1..=8) lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn mask(n: usize) -> Mask {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
    }

    register_tiled!("avx2,fma");
}

/// The most pixels (over the whole batch) for which the direct kernel is used: on the AVX-512
/// development machine (Zen 5) it beat `gemm` on every pointwise shape of Lite0 at batch 1
/// (1.03-1.9x, 112x112 included) and on the 14x14 and 7x7 ones at batch 32 (1.0-1.65x), but
/// not on the 28x28 and 56x56 ones at batch 32 (0.7-1.0x), where `gemm`'s packing is a small
/// share of its work.
const MAX_BATCH_PIXELS: usize = 16_384;

/// The kernel to run the products of a 1x1 convolution over `batch` images of `n` pixels
/// with, when it pays (see [`MAX_BATCH_PIXELS`]); `None`: use `gemm`.
///
/// The same rule on every instruction set, on purpose: the AVX2 and AVX-512 direct kernels sum
/// each output over the channels in the same order, which is why the committed figures come
/// out within a few levels on either; `gemm` sums in another, and a gradient-ascent figure
/// made with it differed in 13 % of its pixels (`cli_reproduce`). On the AVX2-only EPYC
/// (2026-12-01) the 4 x 3 AVX2 tile had made `gemm` 1.7-2.4x faster on batched products; with
/// the 6 x 2 tile and the copied panels ([`packs`]) the two are within 0.7-1.2x of each other
/// on Lite0's shapes (`timing`), and Lite0's batch-32 forward went from 53 to 71 img/s (quiet,
/// alternated; see `benches/reference/log.md`).
pub(crate) fn direct_kernel(batch: usize, n: usize) -> Option<Kernel> {
    Kernel::detect().filter(|_| batch * n <= MAX_BATCH_PIXELS)
}

/// Pixels per task when an image's pixels are split (a multiple of every kernel's block).
const TASK_PIXELS: usize = 1024;

/// `out[b] = epi(lhs (m x k) · rhs[b] (k x n))` for every image `b` (`rhs` `[batch, k, n]`,
/// output `[batch, m, n]`): a 1x1 convolution's forward. The direct kernel when the CPU has
/// one, it pays ([`direct_kernel`]) and the epilogue is one it fuses; otherwise
/// [`super::matmul::batched_matmul`] (`gemm`).
pub(crate) fn forward_matmul(
    lhs: MatRef,
    m: usize,
    k: usize,
    rhs: &[f32],
    batch: usize,
    n: usize,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    match direct_kernel(batch, n) {
        Some(kernel) if fuses(&epi) => batched_with(kernel, lhs, m, k, rhs, batch, n, epi),
        _ => super::matmul::batched_matmul(lhs, m, k, rhs, batch, n, epi),
    }
}

/// Whether the direct kernel applies `epi` itself (no pre-activation residual, a
/// piecewise-linear activation).
pub(crate) fn fuses(epi: &Epilogue<'_>) -> bool {
    epi.pre_residual.is_none() && !epi.act.is_smooth()
}

/// [`forward_matmul`] with the direct `kernel`, on rayon tasks of `(image, pixel tile, row
/// tile)`. The tiling does not change any result (see the module's doc).
#[allow(clippy::too_many_arguments)]
fn batched_with(
    kernel: Kernel,
    lhs: MatRef,
    m: usize,
    k: usize,
    rhs: &[f32],
    batch: usize,
    n: usize,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    assert!(rhs.len() >= batch * k * n && fuses(&epi));
    assert!(epi.bias.is_none_or(|b| b.len() >= m));
    assert!(epi.residual.is_none_or(|r| r.len() >= batch * m * n));
    if batch * m * n == 0 {
        return Vec::new();
    }
    let mut out = super::Unfilled::new(batch * m * n);
    let (nt, col_tiles) = (TASK_PIXELS.min(n), n.div_ceil(TASK_PIXELS.min(n)));
    // Rows per task: all of them, unless that leaves too few tasks for the threads (batch 1),
    // in multiples of 24 (every kernel's row block divides it).
    let per_image = batch * col_tiles;
    let mt = if per_image >= WANTED_TASKS / 2 {
        m
    } else {
        m.div_ceil((WANTED_TASKS / 2).div_ceil(per_image))
            .next_multiple_of(24)
            .min(m)
    };
    let row_tiles = m.div_ceil(mt);
    let dst = SyncPtr(out.ptr());
    (0..batch * col_tiles * row_tiles)
        .into_par_iter()
        .for_each(|task| {
            let (img, rest) = (
                task / (col_tiles * row_tiles),
                task % (col_tiles * row_tiles),
            );
            let (c0, r0) = ((rest / row_tiles) * nt, (rest % row_tiles) * mt);
            let x = MatRef::row_major(rhs, img * k * n + c0, n);
            let tile = (img, (r0, mt.min(m - r0)), (c0, nt.min(n - c0)));
            // SAFETY: the task's tile lies inside `out` (and the residual, shaped like it);
            // no other task writes it; lhs, rhs and the bias are read inside their buffers;
            // the kernel is the detected one or the portable one; the activation is fused
            // (`fuses`).
            unsafe { Product::tile(lhs, (m, k, n), x, tile, dst, &epi).run(kernel) };
        });
    // SAFETY: the tasks' tiles cover every row and pixel of every image, and the kernel
    // writes each value of its tile.
    unsafe { out.assume_filled() }
}

#[cfg(test)]
mod tests;
