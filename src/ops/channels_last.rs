//! The depthwise half of the fused MBConv op ([`super::expand_depthwise`]) on a channels-last
//! tile, with AVX2 + FMA (x86_64).
//!
//! The plane-major kernel of [`super::depthwise`] works one `H x W` plane at a time: for the
//! 14x14 and 7x7 planes of late layers its per-plane work (the padded copy, row loops, tails,
//! junk columns) costs several times the arithmetic. Here a task's group of `G` hidden channels
//! (`G` a multiple of 8) is laid out channels-last, `[pixel][G]`, in a zero-padded buffer, and
//! the depthwise convolution is vectorised over 8 channels: each tap is one FMA per 8 outputs
//! with its weights `[tap][G]` loaded once for 8 output pixels (8 independent accumulators),
//! whatever the plane size. An 8x8 transpose turns each `8 pixels x 8 channels` block back into
//! rows of the NCHW output planes.
//!
//! The direct 1x1 kernel ([`super::pointwise_direct`]) stores the expansion product into the
//! padded buffer itself, bias and activation applied, transposing 8 channels x 8 pixels in its
//! epilogue. The sums are the plane-major kernel's, in the same order (bias, then the taps row
//! by row, one FMA each), so the two kernels agree bit for bit (tested in `expand_depthwise`).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

use super::Activation;

/// The geometry of one op's tiles: input `h x w` (zero-padded by `p` on each side to
/// `hp x wp`), kernel `k x k`, stride `s`, `ohw` output pixels, `g8` channels per pixel.
pub(super) struct Tile {
    h: usize,
    w: usize,
    p: usize,
    /// Output pixels per plane.
    ohw: usize,
    /// Channels per pixel in the buffers (a multiple of 8).
    g8: usize,
    /// Offset in the padded buffer of tap `ky * k + kx` for output `(0, 0)`.
    tap_offsets: Vec<usize>,
    /// Offset in the padded buffer of each output pixel's window, in chunks of 8 (the last
    /// chunk padded with the last pixel's: computed, never stored).
    window_offsets: Vec<usize>,
    /// Offset in the padded buffer of each input pixel (`y * w + x` -> interior pixel
    /// `(y + p, x + p)`): where a product stored channels-last puts its channels.
    pixel_offsets: Vec<usize>,
    /// Floats of the padded buffer.
    padded_len: usize,
}

/// A task's buffer for [`Tile`]: the padded channels-last input of the depthwise convolution
/// (its border stays zero: only the interior is ever written). Each thread keeps one between
/// tasks and calls ([`Tile::with_buffers`]).
pub(super) struct TileBuffers {
    /// The geometry the buffer was made for (see [`Tile::layout`]): while it is the same,
    /// the border is still zero and nothing needs zeroing again.
    layout: (usize, usize, usize, usize),
    padded: Aligned,
}

/// One op's depthwise parameters laid out for the kernel, per group of `group` channels
/// (`g8` lanes, zeros past the op's channels): weights `[tap][g8]` and biases `[g8]`. Each
/// group's are made by the first task that needs them, on its thread: made up front, before
/// the tasks, they were one thread's serial work while the other waited (~2 % of Lite0's
/// batch-1 forward).
pub(super) struct TileParams<'a> {
    /// Depthwise weights: channel `j`'s at `wd.0[j * wd.1..][..kk]`.
    wd: (&'a [f32], usize),
    bd: &'a [f32],
    group: usize,
    /// The tile the parameters are laid out for (its taps and `g8`).
    tile: &'a Tile,
    groups: Vec<OnceLock<GroupParams>>,
}

/// One group's [`TileParams`].
struct GroupParams {
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl TileParams<'_> {
    /// Group `gi`'s parameters, made on first use.
    fn group(&self, gi: usize) -> &GroupParams {
        self.groups[gi].get_or_init(|| {
            let (kk, g8) = (self.tile.tap_offsets.len(), self.tile.g8);
            let mut p = GroupParams {
                weights: vec![0.0; kk * g8],
                bias: vec![0.0; g8],
            };
            let j0 = gi * self.group;
            for lane in 0..self.group.min(self.bd.len() - j0) {
                let j = j0 + lane;
                for (t, &v) in self.wd.0[j * self.wd.1..][..kk].iter().enumerate() {
                    p.weights[t * g8 + lane] = v;
                }
                p.bias[lane] = self.bd[j];
            }
            p
        })
    }
}

impl Tile {
    /// The tile of a `k x k` depthwise convolution with stride `s` and padding `p` over
    /// `h x w` planes, `g8` channels at a time (rounded up to a multiple of 8).
    pub fn new(h: usize, w: usize, k: usize, s: usize, p: usize, g8: usize) -> Self {
        let g8 = g8.next_multiple_of(8).max(8);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (oh, ow) = ((hp - k) / s + 1, (wp - k) / s + 1);
        let tap_offsets = (0..k * k).map(|t| (t / k * wp + t % k) * g8).collect();
        let ohw = oh * ow;
        let window_offsets = (0..ohw.next_multiple_of(8))
            .map(|q| q.min(ohw - 1))
            .map(|q| ((q / ow) * s * wp + (q % ow) * s) * g8)
            .collect();
        let pixel_offsets = (0..h * w)
            .map(|q| ((q / w + p) * wp + q % w + p) * g8)
            .collect();
        Self {
            h,
            w,
            p,
            ohw,
            g8,
            tap_offsets,
            window_offsets,
            pixel_offsets,
            padded_len: hp * wp * g8,
        }
    }

    /// What the buffer's size and its zero border depend on.
    fn layout(&self) -> (usize, usize, usize, usize) {
        (self.h, self.w, self.p, self.g8)
    }

    /// A fresh buffer for one task (zeroed: its border must be).
    fn buffers(&self) -> TileBuffers {
        TileBuffers {
            layout: self.layout(),
            padded: Aligned::zeroed(self.padded_len),
        }
    }

    /// Runs `f` on this thread's buffer for this tile: the one kept from the thread's last
    /// task when it was made for the same geometry (its border is still zero, and every task
    /// writes the interior it reads), a fresh one otherwise (`for_each_init` made and zeroed
    /// buffers per rayon split: ~3 % of Lite0's batch-1 forward in `memset`).
    pub fn with_buffers(&self, f: impl FnOnce(&mut TileBuffers)) {
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut kept) => {
                if kept.as_ref().is_none_or(|b| b.layout != self.layout()) {
                    *kept = Some(self.buffers());
                }
                if let Some(bufs) = kept.as_mut() {
                    f(bufs);
                }
            }
            // A task nested in another on this thread.
            Err(_) => f(&mut self.buffers()),
        })
    }

    /// The op's parameters in groups of `group <= g8` channels: channel `j` (group
    /// `j / group`, lane `j % group`) has depthwise weights `wd.0[j * wd.1..][..k*k]` (rows of
    /// `wd.1` floats) and bias `bd[j]`. Laid out lazily, per group ([`TileParams`]).
    pub fn params<'a>(
        &'a self,
        wd: (&'a [f32], usize),
        bd: &'a [f32],
        group: usize,
    ) -> TileParams<'a> {
        assert!(group >= 1 && group <= self.g8);
        TileParams {
            wd,
            bd,
            group,
            tile: self,
            groups: (0..bd.len().div_ceil(group))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Where the expansion product writes the depthwise convolution's input (bias and
    /// activation applied), stored channels-last: the padded buffer of `bufs` and each input
    /// pixel's offset in it (`[h*w]`, with room for `g8` channels).
    pub fn channels_last_target(&self, bufs: &mut TileBuffers) -> (*mut f32, &[usize]) {
        (bufs.padded.as_mut_ptr(), &self.pixel_offsets)
    }

    /// The depthwise convolution of the padded buffer, with bias and activation, written as
    /// planes: channel `j < rows` to `out[j * ohw..][..ohw]`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `bufs` must come from [`Tile::buffers`] of this tile,
    /// `rows <= g8`, and `out` must be valid for writes of `rows * ohw` values that no one else
    /// accesses meanwhile.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn depthwise_to_planes(
        &self,
        bufs: &TileBuffers,
        (params, gi): (&TileParams, usize),
        rows: usize,
        act: Activation,
        out: *mut f32,
    ) {
        let (g8, ohw) = (self.g8, self.ohw);
        assert!(rows <= g8 && bufs.padded.len() == self.padded_len);
        assert!(
            std::ptr::eq(params.tile, self),
            "parameters of another tile"
        );
        let group = params.group(gi);
        let (padded, weights, bias) = (
            bufs.padded.as_ptr(),
            group.weights.as_ptr(),
            group.bias.as_ptr(),
        );
        // Channels outer, pixels inner: one pass over the padded plane per 8 channels keeps
        // the windows of neighbouring pixels in L1 (pixels outer re-read every channel of
        // every window, 35 KB for a 7x7 plane of 144 channels, from L2).
        for c in (0..rows).step_by(8) {
            for (chunk, base) in self.window_offsets.chunks_exact(8).enumerate() {
                let q0 = 8 * chunk;
                let n = 8.min(ohw - q0);
                // SAFETY: every window lies inside `padded` (the geometry of `Tile::new`),
                // c + 8 <= g8, and the weights and biases hold `taps * g8` and `g8` values.
                let acc = unsafe {
                    let mut acc = [_mm256_loadu_ps(bias.add(c)); 8];
                    for (t, &off) in self.tap_offsets.iter().enumerate() {
                        let wv = _mm256_loadu_ps(weights.add(t * g8 + c));
                        let at = padded.add(off + c);
                        for i in 0..8 {
                            acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(at.add(base[i])), wv, acc[i]);
                        }
                    }
                    for v in &mut acc {
                        *v = activate(act, *v);
                    }
                    transpose8(acc)
                };
                let mask = lane_mask(n);
                for (l, v) in acc.iter().enumerate().take(rows - c) {
                    // SAFETY: plane c + l < rows, pixels q0..q0 + n of it: inside `out`'s
                    // `rows * ohw` values (the mask stores only the first n lanes).
                    unsafe {
                        let dst = out.add((c + l) * ohw + q0);
                        if n == 8 {
                            _mm256_storeu_ps(dst, *v);
                        } else {
                            _mm256_maskstore_ps(dst, mask, *v);
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's [`TileBuffers`], kept between tasks and calls ([`Tile::with_buffers`]).
    static BUFFERS: RefCell<Option<TileBuffers>> = const { RefCell::new(None) };
}

/// A zeroed f32 buffer whose first value sits on a 64-byte cache line (a `Vec<f32>` is only
/// 16-byte aligned: half the 32-byte loads of the depthwise loop would straddle two lines).
struct Aligned {
    buf: Vec<f32>,
    at: usize,
}

impl Aligned {
    fn zeroed(len: usize) -> Self {
        let buf = vec![0.0; len + 16];
        let at = (buf.as_ptr() as usize).next_multiple_of(64) - buf.as_ptr() as usize;
        Self { buf, at: at / 4 }
    }

    fn len(&self) -> usize {
        self.buf.len() - 16
    }

    fn as_ptr(&self) -> *const f32 {
        self.buf[self.at..].as_ptr()
    }

    fn as_mut_ptr(&mut self) -> *mut f32 {
        self.buf[self.at..].as_mut_ptr()
    }
}

/// The activation of 8 lanes, as [`Activation::apply`] does it (NaN and -0 included:
/// `max_ps(a, b)` returns `b` when either is NaN, so `max(v, 0)` maps NaN to 0 like `f32::max`
/// and `min(6, max(0, v))` keeps it like `f32::clamp`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn activate(act: Activation, v: __m256) -> __m256 {
    match act {
        Activation::Identity => v,
        Activation::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
        Activation::Relu6 => {
            _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(_mm256_setzero_ps(), v))
        }
        // Lane by lane (the public ops route smooth activations around the fused kernels).
        smooth => {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 f32, as many as one __m256.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            let lanes = lanes.map(|l| smooth.apply(l));
            // SAFETY: as above.
            unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
        }
    }
}

/// A mask enabling the first `n` (1..=8) of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_mask(n: usize) -> __m256i {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
}

/// Transposes 8 rows of 8 lanes: lane `l` of row `i` becomes lane `i` of row `l`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose8_swaps_rows_and_lanes() {
        if !super::super::has_avx2_fma() {
            return;
        }
        let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let mut got = [0f32; 64];
        // SAFETY: AVX2 + FMA checked above; every access is inside `m` and `got`.
        unsafe {
            let rows: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(m[8 * i..].as_ptr()));
            for (i, v) in transpose8(rows).iter().enumerate() {
                _mm256_storeu_ps(got[8 * i..].as_mut_ptr(), *v);
            }
        }
        for i in 0..8 {
            for l in 0..8 {
                assert_eq!(got[8 * l + i], m[8 * i + l], "row {i} lane {l}");
            }
        }
    }
}
