//! Weight gradients as one product summed over the batch: `out (m x n) = Σ_s a_s · b_sᵀ`, where
//! segment `s` (a band of one image's output pixels) gives `a_s` (`m x len_s`, e.g. the output's
//! gradient) and `b_s` (`n x len_s`, e.g. the unfolded input).
//!
//! The segments are copied side by side into two chunk buffers (`[m, T]` and `[n, T]`, up to
//! [`CHUNK_FLOATS`] values together), in parallel, and each chunk is one product of depth `T`
//! run in parallel over tiles of the output, accumulated chunk after chunk. At ResNet's 7x7
//! maps that is one product of depth `B*49` instead of one per image (depth 49, each into its
//! own zeroed `m x n` buffer, then summed): the output is written once, not once per image.
//! The chunks, and with them the order of every float sum, depend on the shapes only, not on
//! the thread count.

use std::marker::PhantomData;

use rayon::prelude::*;

use super::Unfilled;
use super::matmul::{MatRef, SyncPtr, gemm_into};

/// Values of both chunk buffers together (16 MiB).
const CHUNK_FLOATS: usize = 4 << 20;

/// The most columns of one chunk for an `m x n` output (at least 1): what a segment should
/// hold (a longer one makes a chunk of its own).
pub(crate) fn max_cols(m: usize, n: usize) -> usize {
    (CHUNK_FLOATS / (m + n).max(1)).max(1)
}

/// One segment's columns in a chunk buffer: `rows` rows of `len` values, row `r` starting
/// `r * ld` values after `ptr`. Segments of one chunk own disjoint column ranges.
pub(crate) struct Rows<'a> {
    ptr: SyncPtr,
    ld: usize,
    rows: usize,
    len: usize,
    _buf: PhantomData<&'a mut [f32]>,
}

impl<'a> Rows<'a> {
    /// A row-major buffer of `rows` rows of `ld` values, all of each row.
    pub fn of(buf: &'a mut [f32], rows: usize, ld: usize) -> Self {
        assert!(
            buf.len() >= rows * ld,
            "{} values for {rows} x {ld}",
            buf.len()
        );
        Rows {
            ptr: SyncPtr(buf.as_mut_ptr()),
            ld,
            rows,
            len: ld,
            _buf: PhantomData,
        }
    }

    /// Columns `off..off + len` of a row-major buffer at `ptr` of `rows` rows of `ld`
    /// values: one task's share of a buffer whose other columns other tasks write.
    ///
    /// # Safety
    /// `ptr` must be valid for `rows * ld` values while the view lives, `off + len <= ld`,
    /// and no other live view or reference may touch these columns.
    pub unsafe fn columns(ptr: SyncPtr, rows: usize, ld: usize, off: usize, len: usize) -> Self {
        assert!(off + len <= ld, "columns {off}..{} of {ld}", off + len);
        Rows {
            // SAFETY: `off < ld` or `len == 0`: inside (or one past) the buffer's first row.
            ptr: SyncPtr(unsafe { ptr.get().add(off) }),
            ld,
            rows,
            len,
            _buf: PhantomData,
        }
    }

    /// Row `r` (`len` values).
    pub fn row(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        // SAFETY: the chunk buffer holds `rows` rows of `ld >= offset + len` values from the
        // buffer's start; this view's columns belong to its segment alone (see
        // `sum_over_segments`), and the `&mut self` borrow keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.get().add(r * self.ld), self.len) }
    }

    /// Sets every value to zero.
    pub fn zero(&mut self) {
        for r in 0..self.rows {
            self.row(r).fill(0.0);
        }
    }
}

/// `Σ_s a_s · b_sᵀ` (`[m, n]`, row-major) over segments of `lens[s]` columns each (each best at
/// most [`max_cols`]`(m, n)`). `fill(s, a, b)` writes segment `s`'s `a_s` (`m` rows) and `b_s` (`n`
/// rows) into its views of the chunk buffers; it is called once per segment, on rayon tasks.
pub(crate) fn sum_over_segments(
    m: usize,
    n: usize,
    lens: &[usize],
    fill: impl Fn(usize, &mut Rows<'_>, &mut Rows<'_>) + Sync,
) -> Vec<f32> {
    let max = max_cols(m, n);
    if m * n == 0 {
        return Vec::new();
    }
    // Consecutive segments per chunk: (first segment, end, columns).
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    for (s, &len) in lens.iter().enumerate() {
        match chunks.last_mut() {
            Some((_, end, cols)) if *cols + len <= max => {
                *end = s + 1;
                *cols += len;
            }
            _ => chunks.push((s, s + 1, len)),
        }
    }
    if chunks.iter().all(|c| c.2 == 0) {
        return vec![0.0; m * n];
    }
    let widest = chunks.iter().map(|c| c.2).max().unwrap_or(0);
    let (mut a, mut b) = (vec![0f32; m * widest], vec![0f32; n * widest]);
    let tiles = tiles(m, n);
    let mut out = Unfilled::new(m * n);
    let dst = SyncPtr(out.ptr());
    let mut written = false;
    for &(first, end, t) in &chunks {
        if t == 0 {
            continue;
        }
        let (pa, pb) = (SyncPtr(a.as_mut_ptr()), SyncPtr(b.as_mut_ptr()));
        let offsets: Vec<usize> = lens[first..end]
            .iter()
            .scan(0, |at, &len| {
                let o = *at;
                *at += len;
                Some(o)
            })
            .collect();
        (first..end).into_par_iter().for_each(|s| {
            let (off, len) = (offsets[s - first], lens[s]);
            // SAFETY: `a` and `b` hold `m x t` and `n x t` values; `off + len <= t`, and the
            // chunk's segments own disjoint columns.
            let view = |p: SyncPtr, rows| unsafe { Rows::columns(p, rows, t, off, len) };
            fill(s, &mut view(pa, m), &mut view(pb, n));
        });
        let accumulate = written;
        tiles.par_iter().for_each(|&(r0, rows, c0, cols)| {
            // SAFETY: the tile (rows r0.., columns c0..) lies inside `out` and belongs to this
            // task; a is `m x t` and b `n x t` row-major, filled above; b's rows c0.. read
            // transposed are the `t x cols` right-hand side.
            unsafe {
                gemm_into(
                    rows,
                    cols,
                    t,
                    dst.get().add(r0 * n + c0),
                    n,
                    accumulate,
                    MatRef::row_major(&a, r0 * t, t),
                    MatRef::transposed(&b, c0 * t, t),
                );
            }
        });
        written = true;
    }
    // SAFETY: at least one chunk had columns (checked above), and its tiles cover the output.
    unsafe { out.assume_filled() }
}

/// The output's tiles `(r0, rows, c0, cols)`: about 16 of them, at least 256 columns wide
/// (or the whole width) while that leaves 8 or more, cut down to 32 columns where it does not;
/// rows a multiple of 64 (or all of them), of 16 for an output too small to make 4 tiles so.
/// `gemm`'s AVX-512 kernel computes 64 rows at a time: tiles of 16 rows (the earlier rule, for
/// the few output channels of a 1x1 layer) ran its narrow kernels. On the Zen 5 EPYC
/// (`conv::timings`, batch 16, two alternated runs) the weight gradient of ResNet-50's
/// 512 -> 128 layer at 28x28 went from 64-79 to 127-137 GMAC/s, of its 256 -> 64 and 64 -> 256
/// at 56x56 from 49-56 and 19-62 to 109-115 and 112-119, of Lite0's 40 -> 240 at 28x28 from
/// 54-60 to 79-82; `layer3`'s and `layer4`'s tiles are the same as before. Measured with
/// AVX-512 only.
fn tiles(m: usize, n: usize) -> Vec<(usize, usize, usize, usize)> {
    const TASKS: usize = 16;
    let rows_for = |col_tiles: usize, multiple: usize| {
        m.div_ceil(TASKS.div_ceil(col_tiles))
            .next_multiple_of(multiple)
            .min(m)
    };
    let count = |nt: usize| n.div_ceil(nt) * m.div_ceil(rows_for(n.div_ceil(nt), 64));
    let mut nt = n.div_ceil(8).max(256).next_multiple_of(16).min(n);
    while nt > 32 && count(nt) < TASKS / 2 {
        nt = (nt / 2).next_multiple_of(16).max(32);
    }
    let multiple = if count(nt) < 4 { 16 } else { 64 };
    let mt = rows_for(n.div_ceil(nt), multiple);
    let mut out = Vec::new();
    for r0 in (0..m).step_by(mt) {
        for c0 in (0..n).step_by(nt) {
            out.push((r0, mt.min(m - r0), c0, nt.min(n - c0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ_s a_s · b_sᵀ` by the definition, in f64, with `a_s[i][j] = f(s, i, j)`.
    fn reference(
        m: usize,
        n: usize,
        lens: &[usize],
        a: impl Fn(usize, usize, usize) -> f32,
        b: impl Fn(usize, usize, usize) -> f32,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for (s, &len) in lens.iter().enumerate() {
            for i in 0..m {
                for j in 0..n {
                    for c in 0..len {
                        out[i * n + j] += f64::from(a(s, i, c)) * f64::from(b(s, j, c));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn sums_segments_across_chunks_and_tiles() {
        let a = |s: usize, i: usize, c: usize| ((s * 31 + i * 7 + c * 3) % 17) as f32 - 8.0;
        let b = |s: usize, j: usize, c: usize| ((s * 13 + j * 5 + c * 11) % 19) as f32 * 0.5 - 4.0;
        // One chunk; several chunks; empty segments; tiles that do not divide the output.
        let cases: &[(usize, usize, Vec<usize>)] = &[
            (3, 5, vec![4, 1, 7]),
            (37, 300, vec![49; 5]),
            // 1023 columns per chunk at most: four chunks, the last segment longer (a chunk alone).
            (10, 4090, vec![1000, 900, 0, 1, 700, 1500]),
            (2, 1, vec![0, 0, 3]),
        ];
        for (m, n, lens) in cases {
            let (m, n) = (*m, *n);
            let got = sum_over_segments(m, n, lens, |s, ra, rb| {
                for i in 0..m {
                    for (c, v) in ra.row(i).iter_mut().enumerate() {
                        *v = a(s, i, c);
                    }
                }
                for j in 0..n {
                    for (c, v) in rb.row(j).iter_mut().enumerate() {
                        *v = b(s, j, c);
                    }
                }
            });
            let want = reference(m, n, lens, a, b);
            // Small integers and halves: every partial sum is exact in f32.
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(f64::from(*g), *w, "{m}x{n} {lens:?} at {k}");
            }
        }
        assert!(sum_over_segments(2, 3, &[0, 0], |_, _, _| {}) == vec![0.0; 6]);
        assert!(sum_over_segments(0, 3, &[5], |_, _, _| {}).is_empty());
    }

    #[test]
    fn tiles_cover_the_output_once() {
        for (m, n) in [(1, 1), (512, 4608), (2048, 512), (64, 147), (17, 1000)] {
            let mut seen = vec![0u8; m * n];
            for (r0, rows, c0, cols) in tiles(m, n) {
                for r in r0..r0 + rows {
                    for c in c0..c0 + cols {
                        seen[r * n + c] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&v| v == 1), "{m}x{n}");
        }
    }
}
