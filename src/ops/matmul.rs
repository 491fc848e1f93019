//! Matrix products on rayon tasks, with the bias, activation and residual of a convolution
//! applied to each output tile while it is still in cache.
//!
//! The products call the `gemm` crate (the one candle's own `matmul` uses) directly, single
//! threaded inside each rayon task, writing straight into the output buffer. That avoids
//! candle's extra passes (bias, activation, residual add are separate ops there, each reading
//! and writing the whole activation) and its broadcast copies.

use gemm::Parallelism;
use rayon::prelude::*;

use super::pointwise_direct::{Kernel, Product, fuses};
use super::{Activation, Unfilled};

/// A raw pointer that rayon tasks share; each task writes a disjoint part of the buffer.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);

impl SyncPtr {
    /// The pointer. (A closure calling this captures the whole `SyncPtr`, which is `Sync`,
    /// rather than its raw-pointer field, which is not.)
    #[inline(always)]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the pointer is only used to write disjoint regions from different tasks while the
// owning buffer outlives the parallel loop (see each use).
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

/// A strided view of an f32 matrix: element `(i, j)` is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a read-only view; the buffer it points into outlives every parallel loop it is
// used in.
unsafe impl Send for MatRef {}
// SAFETY: as above.
unsafe impl Sync for MatRef {}

impl MatRef {
    /// A row-major matrix with `cols` columns starting at `data[offset]`.
    pub fn row_major(data: &[f32], offset: usize, cols: usize) -> Self {
        Self {
            ptr: data[offset..].as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns starting at `data[offset]`.
    pub fn transposed(data: &[f32], offset: usize, cols: usize) -> Self {
        Self {
            ptr: data[offset..].as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }

    /// The view shifted by `rows` rows and `cols` columns.
    ///
    /// # Safety
    /// The shifted view must stay inside the matrix's buffer.
    pub unsafe fn at(self, rows: usize, cols: usize) -> Self {
        Self {
            // SAFETY: the caller keeps the view inside the buffer.
            ptr: unsafe {
                self.ptr
                    .offset(rows as isize * self.rs + cols as isize * self.cs)
            },
            ..self
        }
    }
}

/// `dst (m x n, row stride dst_rs, column stride 1) (+)= lhs (m x k) * rhs (k x n)`, single
/// threaded. With `accumulate` the product is added to `dst`, otherwise `dst` is overwritten
/// (and never read).
///
/// # Safety
/// `dst`, `lhs` and `rhs` must be valid for the `m x n`, `m x k` and `k x n` matrices their
/// strides describe, and `dst` must not overlap the others or be written concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_strided(m, n, k, dst, (dst_rs, 1), accumulate, lhs, rhs) }
}

/// [`gemm_into`] with any output strides: `dst` element `(i, j)` at `i * rs + j * cs`
/// (`(1, m)` writes the product transposed, e.g. channels-last).
///
/// # Safety
/// As [`gemm_into`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: element (i, j) of dst (caller's contract).
                    unsafe { dst.add(i * dst_rs + j * dst_cs).write(0.0) };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded from the caller. gemm computes `dst = alpha * dst + beta * lhs * rhs`,
    // reading dst only when `read_dst` is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `src` (`rows x cols`, row-major) transposed: `[cols, rows]`, row-major, in 32 x 32 blocks
/// on rayon tasks. For a left-hand side that `gemm` would otherwise read down its columns:
/// a transposed view (`MatRef::transposed`) of a weight `[Cout, Cin]` reaches the microkernel
/// unpacked, one value per cache line a step along `k`, whenever the other operand has at
/// most 128 columns (`gemm` packs it only above that).
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 32;
    debug_assert_eq!(src.len(), rows * cols);
    let mut out = Unfilled::new(rows * cols);
    if rows > 0 && cols > 0 {
        out.slots()
            .par_chunks_mut(BLOCK * rows)
            .enumerate()
            .for_each(|(cb, dst)| {
                let c0 = cb * BLOCK;
                let width = dst.len() / rows;
                for r0 in (0..rows).step_by(BLOCK) {
                    for c in 0..width {
                        let row = &mut dst[c * rows..][r0..(r0 + BLOCK).min(rows)];
                        for (r, d) in row.iter_mut().enumerate() {
                            d.write(src[(r0 + r) * cols + c0 + c]);
                        }
                    }
                }
            });
    }
    // SAFETY: the chunks cover all `rows * cols` slots, and each slot (row `c`, column `r`)
    // of every chunk was written above.
    unsafe { out.assume_filled() }
}

/// What happens to each output tile after its product:
/// `act(v + bias[row] + pre_residual) + residual`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// `[m]`, per output row (channel).
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// Shaped like the output; added after the activation.
    pub residual: Option<&'a [f32]>,
    /// Shaped like the output; added before the activation (ResNet's block end).
    pub pre_residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// Nothing after the product.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        act: Activation::Identity,
        residual: None,
        pre_residual: None,
    };

    /// Whether the epilogue does nothing.
    fn is_noop(&self) -> bool {
        self.bias.is_none()
            && self.act == Activation::Identity
            && self.residual.is_none()
            && self.pre_residual.is_none()
    }

    /// Applies the epilogue to one row segment: `row[j] = act(row[j] + bias) + res[j]`.
    #[inline(always)]
    fn row<const FMA: bool>(act: Activation, bias: f32, row: &mut [f32], res: Option<&[f32]>) {
        match res {
            None => match act {
                Activation::Identity => row.iter_mut().for_each(|v| *v += bias),
                Activation::Relu => row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
                Activation::Relu6 => row
                    .iter_mut()
                    .for_each(|v| *v = (*v + bias).clamp(0.0, 6.0)),
                smooth => row.iter_mut().for_each(|v| *v = smooth.apply(*v + bias)),
            },
            Some(res) => match act {
                Activation::Identity => row.iter_mut().zip(res).for_each(|(v, r)| *v += bias + r),
                Activation::Relu => row
                    .iter_mut()
                    .zip(res)
                    .for_each(|(v, r)| *v = (*v + bias).max(0.0) + r),
                Activation::Relu6 => row
                    .iter_mut()
                    .zip(res)
                    .for_each(|(v, r)| *v = (*v + bias).clamp(0.0, 6.0) + r),
                smooth => row
                    .iter_mut()
                    .zip(res)
                    .for_each(|(v, r)| *v = smooth.apply(*v + bias) + r),
            },
        }
    }

    /// Applies the epilogue to rows `r0..r0 + rows`, columns `c0..c0 + cols` of output image
    /// `img` (`m x n` per image, row-major) in `out`.
    ///
    /// # Safety
    /// `out` must hold `batch * m * n` values, and the tile must not be accessed concurrently.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const FMA: bool>(
        &self,
        out: SyncPtr,
        img: usize,
        m: usize,
        n: usize,
        r0: usize,
        rows: usize,
        c0: usize,
        cols: usize,
    ) {
        for r in r0..r0 + rows {
            let at = (img * m + r) * n + c0;
            // SAFETY: the row segment lies inside `out` and belongs to this tile.
            let row = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), cols) };
            if let Some(pre) = self.pre_residual {
                row.iter_mut()
                    .zip(&pre[at..at + cols])
                    .for_each(|(v, p)| *v += p);
            }
            let bias = self.bias.map_or(0.0, |b| b[r]);
            let res = self.residual.map(|res| &res[at..at + cols]);
            Self::row::<FMA>(self.act, bias, row, res);
        }
    }
}

impl Epilogue<'_> {
    /// Applies the epilogue (if it does anything) to rows `r0..r0 + rows`, columns
    /// `c0..c0 + cols` of output image `img` (`m x n` per image, row-major) in `out`: for
    /// kernels that write their tiles themselves (Winograd).
    ///
    /// # Safety
    /// As [`Epilogue::tile`]: `out` holds `batch * m * n` values and nothing else accesses
    /// the tile meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn apply(
        &self,
        out: SyncPtr,
        img: usize,
        m: usize,
        n: usize,
        r0: usize,
        rows: usize,
        c0: usize,
        cols: usize,
    ) {
        if !self.is_noop() {
            dispatch_fma!(epilogue_tile(self, out, img, m, n, r0, rows, c0, cols));
        }
    }
}

/// `buf[r][j] = act(buf[r][j] + bias[r])` over the rows of `n` values of `buf`.
pub(crate) fn bias_act_rows(buf: &mut [f32], n: usize, bias: &[f32], act: Activation) {
    dispatch_fma!(bias_act_rows_imp(buf, n, bias, act));
}

#[inline(always)]
fn bias_act_rows_imp<const FMA: bool>(buf: &mut [f32], n: usize, bias: &[f32], act: Activation) {
    for (row, &b) in buf.chunks_exact_mut(n.max(1)).zip(bias) {
        Epilogue::row::<FMA>(act, b, row, None);
    }
}

/// How many rayon tasks a product at batch 1 is cut into: enough to keep 8 threads busy
/// (4 tasks each). A constant, not a multiple of the thread count, so that the tiles, and with
/// them the order of every float sum, are the same on every machine: the same input gives the
/// same bits with 1 thread or 16 (figures reproduce byte for byte, see `export::reproduce`).
pub(crate) const WANTED_TASKS: usize = 32;

/// Rows per row tile of an `m`-row output when there are only `tasks` column tiles in all: the
/// rows are split too when that is too few tasks for the threads (batch 1).
pub(crate) fn row_tile(m: usize, tasks: usize) -> usize {
    let want = WANTED_TASKS;
    if tasks >= want || m <= 32 {
        m.max(1)
    } else {
        m.div_ceil(want.div_ceil(tasks))
            .next_multiple_of(16)
            .clamp(1, m)
    }
}

/// Products at most this deep (`k`), of 256 or more rows, over planes of 56x56 or more get
/// column tiles of about 512 instead of 128. ResNet-50's 64 -> 256 downsample at 56 px (a
/// 256 x 128 x 64 product a tile) took 13.2-14.3 ms at batch 32 against 26.0-27.9 (an Intel
/// Xeon, `--ops`, 4 runs each); the whole forward 34.6-34.9 img/s against 33.4-34.2 (3
/// alternated rounds). Its 64 -> 64 layer measured the same either way, and Lite0's short
/// products (at most 240 rows) made the `lucid` step ~3 % slower in 3 of 3 rounds: they keep
/// the narrow tiles.
const SHORT_K: usize = 64;

/// How an `m x n` output per image is cut into rayon tasks: `(column tile, row tile)` sizes.
fn task_tiles(batch: usize, m: usize, n: usize, k: usize) -> (usize, usize) {
    // Columns per tile: the tile's output and its slice of the right-hand side stay within
    // ~128 KiB each, so the epilogue finds the output in L2; more for a short product over a
    // large plane ([`SHORT_K`]).
    let fewest = if k <= SHORT_K && m >= 256 && n >= 3136 {
        512
    } else {
        128
    };
    let target = (32_768 / m.max(k).max(1)).max(fewest);
    let col_tiles = n.div_ceil(target).max(1);
    let nt = n.div_ceil(col_tiles).next_multiple_of(16).min(n).max(1);
    (nt, row_tile(m, batch * n.div_ceil(nt)))
}

/// `out[b] = epilogue(lhs (m x k) * rhs[b] (k x n))` for every image `b`: a 1x1 convolution,
/// `rhs` being `[batch, k, n]` row-major and the output `[batch, m, n]`.
pub(crate) fn batched_matmul(
    lhs: MatRef,
    m: usize,
    k: usize,
    rhs: &[f32],
    batch: usize,
    n: usize,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    debug_assert_eq!(rhs.len(), batch * k * n);
    let (nt, mt) = task_tiles(batch, m, n, k);
    tiled_matmul(lhs, m, k, batch, n, (nt, mt), epi, None, |img, c0, _, _| {
        MatRef::row_major(rhs, img * k * n + c0, n)
    })
}

/// `out[b] = epilogue(lhs (m x k) * rhs_b (k x n))` for every image `b`, on rayon tasks of
/// `(image, column tile of nt, row tile of mt)`. `rhs(img, c0, cols, scratch)` gives columns
/// `c0..c0 + cols` of `rhs_b`: a view of the input, or a matrix it builds in `scratch` (the
/// task's own buffer, e.g. an im2col tile). Each tile's product is `gemm`'s, or the direct
/// kernel's when `direct` names one (the CPU's, [`Kernel::detect`]), it fuses the epilogue and
/// the tile's columns are contiguous.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tiled_matmul(
    lhs: MatRef,
    m: usize,
    k: usize,
    batch: usize,
    n: usize,
    (nt, mt): (usize, usize),
    epi: Epilogue<'_>,
    direct: Option<Kernel>,
    rhs: impl Fn(usize, usize, usize, &mut Vec<f32>) -> MatRef + Sync,
) -> Vec<f32> {
    let direct = direct.filter(|_| fuses(&epi));
    if batch * m * n == 0 {
        return Vec::new();
    }
    let mut out = Unfilled::new(batch * m * n);
    let (nt, mt) = (nt.clamp(1, n), mt.clamp(1, m));
    let (col_tiles, row_tiles) = (n.div_ceil(nt), m.div_ceil(mt));
    let dst = SyncPtr(out.ptr());
    let noop = epi.is_noop();
    (0..batch * col_tiles * row_tiles)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch, task| {
            let (img, rest) = (
                task / (col_tiles * row_tiles),
                task % (col_tiles * row_tiles),
            );
            let (ct, rt) = (rest / row_tiles, rest % row_tiles);
            let (c0, r0) = (ct * nt, rt * mt);
            let (cols, rows) = (nt.min(n - c0), mt.min(m - r0));
            let rhs = rhs(img, c0, cols, scratch);
            if let Some(kernel) = direct.filter(|_| rhs.cs == 1 && rhs.rs >= 0) {
                let tile = (img, (r0, rows), (c0, cols));
                // SAFETY: as for gemm below; the kernel is the CPU's, the epilogue fused
                // (`fuses`).
                unsafe { Product::tile(lhs, (m, k, n), rhs, tile, dst, &epi).run(kernel) };
                return;
            }
            // SAFETY: the task's tile (rows r0.., columns c0.. of image img) lies inside
            // `out` and no other task writes it; lhs and rhs are read only, inside their
            // buffers (`rhs` promises a k x cols matrix).
            unsafe {
                gemm_into(
                    rows,
                    cols,
                    k,
                    dst.get().add((img * m + r0) * n + c0),
                    n,
                    false,
                    lhs.at(r0, 0),
                    rhs,
                );
            }
            if !noop {
                dispatch_fma!(epilogue_tile(&epi, dst, img, m, n, r0, rows, c0, cols));
            }
        });
    // SAFETY: the tasks' tiles cover every row and column of every image, and `gemm_into`
    // (not accumulating) writes each value of its tile.
    unsafe { out.assume_filled() }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn epilogue_tile<const FMA: bool>(
    epi: &Epilogue<'_>,
    out: SyncPtr,
    img: usize,
    m: usize,
    n: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
) {
    // SAFETY: called by `tiled_matmul` on its own task's tile of `out`.
    unsafe { epi.tile::<FMA>(out, img, m, n, r0, rows, c0, cols) };
}

#[cfg(test)]
mod tests {
    use super::transpose;

    /// Every value lands at its transposed place, across partial 32 x 32 blocks on both axes,
    /// and empty matrices stay empty.
    #[test]
    fn transpose_moves_every_value() {
        for (rows, cols) in [(37, 70), (1, 33), (64, 1), (32, 32), (0, 5), (5, 0)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&src, rows, cols);
            assert_eq!(t.len(), rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        src[r * cols + c],
                        "({r}, {c}) of {rows}x{cols}"
                    );
                }
            }
        }
    }
}
