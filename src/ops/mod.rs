//! Fused, differentiable CPU kernels for the hot layers of EfficientNet-Lite (and the other
//! convnets of the zoo).
//!
//! candle's generic `conv2d(groups = C)` runs a depthwise convolution as `C` separate
//! single-channel convolutions, its dense `conv2d` unfolds the whole batch (im2col) before one
//! product, a 1x1 convolution as a `matmul` is followed by separate passes for the bias, the
//! activation and a residual add, and every one of those writes a fresh full-size tensor. The
//! ops here do each layer in one pass on the CPU:
//!
//! - [`pointwise_conv2d`]: 1x1 convolution + bias + activation (+ residual), `gemm` tiles on
//!   rayon with the epilogue applied in cache (small products, e.g. at batch 1: a register-tiled
//!   AVX-512 / AVX2 kernel that reads the activation in place, `pointwise_direct`);
//! - [`conv2d_fused`] ([`conv2d_bias_act`], [`conv2d`]): dense convolution + bias + activation,
//!   any kernel, stride, padding and dilation (per axis), im2col per band of output rows into a
//!   small buffer, then `gemm` (VGG, ResNet, stems, Inception's 1x7);
//! - [`expand_depthwise_conv2d`]: an MBConv block's 1x1 expansion and depthwise convolution
//!   (each with bias and activation) fused, without materialising the expanded tensor (on
//!   AVX2 + FMA with a channels-last depthwise kernel for planes up to 64x64, `channels_last`);
//! - [`depthwise_conv2d`]: depthwise convolution, bias and activation fused (`[B,C,H,W]`);
//! - [`bias_act()`]: `act(x + bias[c])` in one pass (`[B,C,...]`);
//! - [`max_pool2d`], [`adaptive_avg_pool2d`]: pooling with gradients;
//! - [`fold_batchnorm`]: eval-mode BatchNorm folded into a convolution's weight and bias;
//! - [`irfft2`] and [`affine_warp`]: the inverse real 2-D DFT and bilinear affine warps of
//!   feature visualisation, differentiable.
//!
//! The convolutions and [`bias_act()`] are candle custom ops with a backward pass, so they
//! train through `Var` and `Tensor::backward` like built-in ops (a gradient is only computed
//! for the arguments the graph tracks). On other devices (cuda, metal) they fall back to
//! candle's own ops, so GPU builds keep working, only without the fused kernels.
//!
//! Large outputs are allocated with `zeroed`, which asks Linux for transparent huge pages: at
//! batch 32 the page faults of fresh 4 KiB pages otherwise cost as much as the kernels.

/// Runs `$imp::<true>` compiled for AVX2 + FMA when the CPU has them, otherwise `$imp::<false>`
/// (`<true>` on aarch64, where FMA is baseline). The kernels are `#[inline(always)]` and the
/// closure has a single caller, so the whole kernel is inlined into `with_fma` and compiled with
/// its target features (`mul_add` becomes `vfmadd`, loops use 256-bit vectors).
macro_rules! dispatch_fma {
    ($imp:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn with_fma(f: impl FnOnce()) {
                f()
            }
            if super::has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                unsafe { with_fma(|| $imp::<true>($($arg),*)) };
            } else {
                $imp::<false>($($arg),*);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $imp::<{ cfg!(target_arch = "aarch64") }>($($arg),*);
        }
    }};
}

/// Keeps candle's element-wise ops on the calling thread: sets `CANDLE_NUM_THREADS=1` unless
/// the user set it. Call it first thing in `main`, before any other thread exists (it changes
/// the environment).
///
/// candle 0.11 runs element-wise ops on 64K+ elements on its own "barrier pool", whose workers
/// spin (25,000 iterations) after every op and whose caller spins until they are done. Those
/// ops are memory-bound, so a second thread gains little, while the spinning thread takes a
/// core from the rayon pool that runs the fused kernels and gemm, and on a machine whose cores
/// are shared with other processes a descheduled worker stalls every op for a time slice.
/// Measured alternately on the 2-core development machine (loaded): the head-training epoch
/// 7x faster, a fine-tuning step 1.8x, the batch-32 forward 1.6x. gemm's and our kernels'
/// parallelism (rayon, `RAYON_NUM_THREADS`) is unchanged.
///
/// With glibc it also keeps freed memory in the heap for reuse (`mallopt`: no `mmap` below
/// 1 GiB, trim above 1 GiB, grow by 64 MiB): every training or gradient step allocates and frees the same
/// large activations and gradients, and with the default thresholds each one came back as
/// fresh pages from the kernel, to be faulted in and zeroed again (10 % of a gradient-ascent
/// step in the profile; the step 1.6-1.8x faster without). Peak memory is unchanged in kind
/// (the same buffers), the process just keeps them. And it keeps one arena for all threads
/// (`M_ARENA_MAX` 1): with one per thread, a buffer freed in one arena is not reused by a
/// thread allocating from another, which takes fresh pages (faulted in and zeroed:
/// `clear_page_erms` was 7 % of Lite0's batch-32 forward, 4 % with one arena). Alternated on
/// the 2-core AVX2 EPYC (2026-12-01, quiet, 7 rounds of the binary with and without): peak RSS
/// of the ResNet-50 fine-tuning step 810 -> 559 MiB, of the lucid grid 261 -> 187 MiB, of
/// Lite0's batch-32 forward 204 -> 187 MiB; speed within the rounds' spread (Lite0 batch 32
/// 1.09x the img/s, median of per-round ratios 0.85-1.13; batch 1 1.03x the time). Small
/// allocations stay lock-free (glibc's per-thread cache). `MALLOC_*` environment variables set
/// by the user win.
///
/// # Safety
/// No other thread may exist yet (the environment is changed, which races with any thread
/// reading it).
pub unsafe fn configure_cpu_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread runs yet.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    // SAFETY: no other thread runs yet (the caller's contract).
    unsafe { keep_freed_memory() };
}

/// The allocator part of [`configure_cpu_threads`]: with glibc, freed memory stays in one
/// heap for reuse (no `mmap` below 1 GiB, trim above 1 GiB, grow by 64 MiB, one arena),
/// unless the user set the `MALLOC_*` variables; elsewhere nothing. The kernels' timing tests
/// call it too: without it each large output they allocate comes as fresh pages, faulted in
/// and zeroed on every call (ResNet-50's 64 -> 256 layer at batch 16: 105-119 GMAC/s against
/// 183-193 with it).
///
/// # Safety
/// `malloc` must not be in its first initialisation on another thread (glibc's `mallopt` is
/// `MT-Unsafe init`): call it before other threads start, or once the process has allocated.
pub(crate) unsafe fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
        && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
    {
        // SAFETY: mallopt only changes allocator parameters, under the arena's lock; malloc
        // is initialised or no other thread runs (the caller's contract).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

pub mod batchnorm;
pub mod bias_act;
#[cfg(target_arch = "x86_64")]
mod channels_last;
pub mod conv;
pub mod depthwise;
pub mod dropout;
pub mod expand_depthwise;
pub mod fourier;
pub mod framed_warp;
pub mod layer_norm;
mod matmul;
pub mod op_times;
mod phases;
pub mod pointwise;
mod pointwise_direct;
pub mod pool;
pub mod rect_conv;
pub mod smooth;
pub mod squeeze_excite;
pub mod warp;
mod weight_grad;

pub use batchnorm::{
    BatchNormParams, batchnorm_eval, batchnorm_train, fold_batchnorm, update_running,
};
pub use bias_act::bias_act;
pub use conv::{ConvSpec, KeptKernels, conv2d, conv2d_add_act, conv2d_bias_act, conv2d_fused};
pub use depthwise::depthwise_conv2d;
pub use dropout::{DropoutSeeds, seeded_dropout};
pub use expand_depthwise::expand_depthwise_conv2d;
pub use fourier::{Irfft2, irfft2};
pub use framed_warp::{Frame, framed_warp};
pub use layer_norm::{layer_norm_channels, layer_norm_last};
pub use pointwise::pointwise_conv2d;
pub use pool::{adaptive_avg_pool2d, max_pool2d};
pub use rect_conv::conv2d_rect;
pub use smooth::smooth_act;
pub use squeeze_excite::{SeWeights, squeeze_excite};
pub use warp::{Affine, WarpPadding, affine_warp};

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Activation fused into a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `y = x`.
    Identity,
    /// `y = max(x, 0)`; the gradient passes where `y > 0`.
    Relu,
    /// `y = min(max(x, 0), 6)`; the gradient passes where `0 < y < 6` (PyTorch's hardtanh).
    Relu6,
    /// `y = x * sigmoid(x)` (SiLU, swish; EfficientNet). Smooth: see [`Activation::is_smooth`].
    Silu,
    /// `y = x * relu6(x + 3) / 6` (MobileNetV3's hard-swish). Smooth.
    HardSwish,
    /// `y = relu6(x + 3) / 6` (MobileNetV3's squeeze-excitation gate). Smooth.
    HardSigmoid,
    /// `y = 1 / (1 + exp(-x))` (EfficientNet's squeeze-excitation gate). Smooth.
    Sigmoid,
    /// `y = x Φ(x) = x (1 + erf(x / √2)) / 2`, the exact GELU (PyTorch's `nn.GELU()` default;
    /// ConvNeXt). Smooth.
    Gelu,
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::Silu => v / (1.0 + (-v).exp()),
            Activation::HardSwish => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::HardSigmoid => (v + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Activation::Gelu => gelu(v),
        }
    }

    /// Whether the gradient depends on the input, not only on a mask of the output (SiLU,
    /// hard-swish, hard-sigmoid, sigmoid, GELU). The fused kernels then run with
    /// [`Activation::Identity`] and apply it with [`smooth::smooth_act`], whose backward
    /// reads the input.
    pub fn is_smooth(self) -> bool {
        matches!(
            self,
            Activation::Silu
                | Activation::HardSwish
                | Activation::HardSigmoid
                | Activation::Sigmoid
                | Activation::Gelu
        )
    }

    /// Whether the gradient passes through, judged from the activation's output `out` (for
    /// the piecewise-linear activations; a smooth one always "passes", its gradient is
    /// [`smooth::smooth_act`]'s).
    #[inline(always)]
    pub fn passes(self, out: f32) -> bool {
        match self {
            Activation::Identity => true,
            Activation::Relu => out > 0.0,
            Activation::Relu6 => out > 0.0 && out < 6.0,
            Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid
            | Activation::Sigmoid
            | Activation::Gelu => true,
        }
    }

    /// `dst = act(src)` element by element (the `match` is hoisted out of the loop so each
    /// arm vectorises).
    #[inline(always)]
    pub(crate) fn copy(self, dst: &mut [f32], src: &[f32]) {
        match self {
            Activation::Identity => dst.copy_from_slice(src),
            Activation::Relu => dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.max(0.0)),
            Activation::Relu6 => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, s)| *d = s.clamp(0.0, 6.0)),
            smooth => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, &s)| *d = smooth.apply(s)),
        }
    }

    /// The same activation with candle's own ops (the non-CPU fallback and test reference).
    pub(crate) fn apply_tensor(self, t: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(t.clone()),
            Activation::Relu => t.relu(),
            Activation::Relu6 => t.clamp(0f32, 6f32),
            smooth => smooth::smooth_act(t, smooth),
        }
    }
}

/// The exact GELU of one value, `x Φ(x)`, evaluated in f64 as candle's `gelu_erf` does.
#[inline]
fn gelu(v: f32) -> f32 {
    let x = f64::from(v);
    (0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2))) as f32
}

/// The f32 elements of `storage` under `layout`, in row-major order: borrowed when the layout
/// is contiguous, gathered into a new buffer otherwise (broadcasts, transposes, narrows).
pub(crate) fn f32_data<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<Cow<'a, [f32]>> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    };
    if let Some((start, end)) = layout.contiguous_offsets() {
        return Ok(Cow::Borrowed(&data[start..end]));
    }
    let dims = layout.dims();
    let stride = layout.stride();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(Cow::Owned(out));
    }
    let rank = dims.len();
    let (inner, inner_stride) = (dims[rank - 1], stride[rank - 1]);
    let mut index = vec![0usize; rank - 1];
    loop {
        let base =
            layout.start_offset() + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend((0..inner).map(|j| data[base + j * inner_stride]));
        // Odometer increment over the outer dimensions.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(Cow::Owned(out));
            }
            d -= 1;
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// A zeroed f32 buffer for a kernel's output. Large buffers are backed by transparent huge
/// pages where the OS offers them (Linux, `madvise` mode): a fresh 150 MB activation otherwise
/// costs ~37k page faults on first touch, as much time as the kernel that fills it.
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    let v = vec![0f32; n];
    advise_huge_pages(v.as_ptr(), n);
    v
}

/// An output buffer of `n` f32 for a kernel that writes every value through raw pointers
/// before anything reads it: no zeroing pass (3% of a batch-1 forward, as the allocator hands
/// back recycled memory), huge pages as for [`zeroed`].
pub(crate) struct Unfilled {
    buf: Vec<f32>,
    n: usize,
}

impl Unfilled {
    /// Room for `n` values, none of them initialised.
    pub fn new(n: usize) -> Self {
        let buf = Vec::with_capacity(n);
        advise_huge_pages(buf.as_ptr(), n);
        Self { buf, n }
    }

    /// Where the kernel writes value `i` (`ptr().add(i)`, `i < n`).
    pub fn ptr(&mut self) -> *mut f32 {
        self.buf.as_mut_ptr()
    }

    /// The `n` values as uninitialised slots, for safe kernels that write each one
    /// (`MaybeUninit::write`) before [`Unfilled::assume_filled`].
    pub fn slots(&mut self) -> &mut [std::mem::MaybeUninit<f32>] {
        &mut self.buf.spare_capacity_mut()[..self.n]
    }

    /// The filled buffer.
    ///
    /// # Safety
    /// Every one of the `n` values must have been written.
    pub unsafe fn assume_filled(mut self) -> Vec<f32> {
        // SAFETY: the capacity is n, and the caller promises all n values are initialised.
        unsafe { self.buf.set_len(self.n) };
        self.buf
    }
}

/// Asks Linux to back the 2 MiB pages inside `n` f32 at `ptr` with transparent huge pages
/// (when the buffer spans at least two of them).
fn advise_huge_pages(ptr: *const f32, n: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 1 << 21;
        let bytes = n * std::mem::size_of::<f32>();
        if bytes >= 2 * HUGE {
            let p = ptr as usize;
            let (start, end) = (p.next_multiple_of(HUGE), (p + bytes) & !(HUGE - 1));
            if end > start {
                // SAFETY: `[start, end)` lies inside the buffer, which the caller owns;
                // MADV_HUGEPAGE only changes how the pages are backed, never their contents. A
                // failure (e.g. THP unsupported) leaves ordinary pages.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, n);
}

/// The minimum number of `plane`-sized items per rayon task, so that tiny planes (7x7, or the
/// single values of a `[B,C]` tensor) are not scheduled one by one.
pub(crate) fn min_planes_per_task(plane: usize) -> usize {
    (16_384 / plane.max(1)).max(1)
}

/// Checks that a tensor has rank >= 2, and returns `(channels, plane)` where `plane` is the
/// product of the dimensions after the channel dimension 1.
pub(crate) fn channels_and_plane(dims: &[usize], op: &str) -> Result<(usize, usize)> {
    if dims.len() < 2 {
        bail!("{op}: expected a tensor of rank >= 2 with channels in dim 1, got {dims:?}");
    }
    Ok((dims[1], dims[2..].iter().product()))
}

/// The instruction set the CPU kernels run with on this machine, which decides their rounding:
/// `x86_64 avx512f` (gemm's AVX-512 products, AVX2 + FMA elsewhere), `x86_64 avx2+fma`,
/// `x86_64 fma` (gemm only), `x86_64`, `aarch64 neon` or the bare architecture. Results made
/// with different ones can differ in the last bits, so a figure's sidecar records it.
pub fn cpu_kernels() -> String {
    let arch = std::env::consts::ARCH;
    #[cfg(target_arch = "x86_64")]
    {
        let set = if std::arch::is_x86_feature_detected!("avx512f") && has_avx2_fma() {
            Some("avx512f")
        } else if has_avx2_fma() {
            Some("avx2+fma")
        } else if std::arch::is_x86_feature_detected!("fma") {
            Some("fma")
        } else {
            None
        };
        if let Some(set) = set {
            return format!("{arch} {set}");
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return format!("{arch} neon");
    }
    arch.to_string()
}

/// Whether the kernels can use the AVX2 + FMA code path (checked once, then cached by std).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `sum(a)` with 16 independent accumulators so that it vectorises.
#[inline]
pub(crate) fn lane_sum(a: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

thread_local! {
    static GUIDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether [`GuidedBackprop`] is on for this thread.
fn guided() -> bool {
    GUIDED.with(std::cell::Cell::get)
}

/// Guided backpropagation (Springenberg et al. 2015) on this thread while the guard lives:
/// the backward of every ReLU and ReLU6 of the fused ops passes only the positive gradients
/// (of units whose input was positive), pytorch-grad-cam's `GuidedBackpropReLU`. The mode is
/// read once per backward op (no cost for the normal path); it is thread-local, so other
/// threads' gradients are unaffected. CPU only (other devices' fallbacks use candle's ReLU).
#[must_use = "guided backpropagation ends when the guard is dropped"]
pub struct GuidedBackprop {
    previous: bool,
}

impl GuidedBackprop {
    /// Starts guided backpropagation on this thread.
    pub fn enable() -> Self {
        GuidedBackprop {
            previous: GUIDED.with(|g| g.replace(true)),
        }
    }
}

impl Drop for GuidedBackprop {
    fn drop(&mut self) {
        GUIDED.with(|g| g.set(self.previous));
    }
}

/// Backward of an activation: `grad * act'(out)`, with the mask taken from the output; with
/// `guided`, negative gradients are dropped too.
struct ActGrad {
    act: Activation,
    guided: bool,
}

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "convlens-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!(
                "{}: gradient {:?} and output {:?} differ in shape",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        let grad = f32_data(s1, l1, self.name())?;
        let out = f32_data(s2, l2, self.name())?;
        // Every value is written below: no zeroing pass over the (often L2-sized) buffer.
        let mut res = Unfilled::new(grad.len());
        const BLOCK: usize = 16_384;
        let (act, guided) = (self.act, self.guided);
        res.slots()
            .par_chunks_mut(BLOCK)
            .zip(grad.par_chunks(BLOCK))
            .zip(out.par_chunks(BLOCK))
            .for_each(|((r, g), o)| {
                // One loop per activation, with non-short-circuit conditions, so that each
                // vectorises to a compare and a blend (the same values as `act.passes`).
                let rows = r.iter_mut().zip(g).zip(o);
                match (act, guided) {
                    (Activation::Identity, _) => rows.for_each(|((r, &g), _)| {
                        r.write(g);
                    }),
                    (Activation::Relu, false) => rows.for_each(|((r, &g), &o)| {
                        r.write(if o > 0.0 { g } else { 0.0 });
                    }),
                    (Activation::Relu6, false) => rows.for_each(|((r, &g), &o)| {
                        r.write(if (o > 0.0) & (o < 6.0) { g } else { 0.0 });
                    }),
                    (Activation::Relu, true) => rows.for_each(|((r, &g), &o)| {
                        r.write(if (o > 0.0) & (g > 0.0) { g } else { 0.0 });
                    }),
                    (Activation::Relu6, true) => rows.for_each(|((r, &g), &o)| {
                        r.write(if (o > 0.0) & (o < 6.0) & (g > 0.0) {
                            g
                        } else {
                            0.0
                        });
                    }),
                    // Never built: `act_grad` refuses smooth activations.
                    _ => rows.for_each(|((r, _), _)| {
                        r.write(f32::NAN);
                    }),
                }
            });
        // SAFETY: the chunks cover all `grad.len()` slots and every arm writes each one.
        let res = unsafe { res.assume_filled() };
        Ok((CpuStorage::F32(res), l1.shape().clone()))
    }
}

/// `grad * act'(out)` (`grad`, `out`: same shape); under [`GuidedBackprop`] (CPU) only its
/// positive values. No backward of its own.
pub(crate) fn act_grad(grad: &Tensor, out: &Tensor, act: Activation) -> Result<Tensor> {
    if act.is_smooth() {
        bail!("act_grad: the gradient of {act:?} needs its input, not its output (smooth_act)");
    }
    match act {
        Activation::Identity => Ok(grad.clone()),
        _ if !grad.device().is_cpu() => {
            let mask = match act {
                Activation::Relu => out.gt(0f64)?,
                _ => out.gt(0f64)?.mul(&out.lt(6f64)?)?,
            };
            grad.mul(&mask.to_dtype(grad.dtype())?)
        }
        _ => grad.apply_op2_no_bwd(
            out,
            &ActGrad {
                act,
                guided: GUIDED.with(std::cell::Cell::get),
            },
        ),
    }
}

/// Sum over every dimension but 1: `[B,C,...]` -> `[C]`.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "convlens-channel-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, plane) = channels_and_plane(layout.dims(), self.name())?;
        let data = f32_data(storage, layout, self.name())?;
        let batch = layout.dims()[0];
        let res: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..batch)
                    .map(|b| lane_sum(&data[(b * c + ch) * plane..][..plane]) as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        Ok((CpuStorage::F32(res), Shape::from(c)))
    }
}

/// Sum over every dimension but the channel dimension 1: `[B,C,...]` -> `[C]` (the bias
/// gradient). No backward of its own.
pub(crate) fn channel_sum(t: &Tensor) -> Result<Tensor> {
    if t.device().is_cpu() {
        t.apply_op1_no_bwd(&ChannelSum)
    } else {
        let (c, _) = channels_and_plane(t.dims(), "channel_sum")?;
        t.transpose(0, 1)?.reshape((c, ()))?.sum(1)
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Deterministic data and gradient helpers for the kernel tests (candle's CPU `randn` is
    //! not seeded).

    use candle_core::{Device, Result, Tensor, Var};

    use super::Activation;

    /// The app's allocator setup ([`super::keep_freed_memory`]) for the kernels' timing tests:
    /// without it each large output they allocate comes as fresh pages, faulted in and zeroed
    /// on every call.
    pub fn keep_freed_memory() {
        // SAFETY: a test runs after the harness has allocated, so malloc is initialised.
        unsafe { super::keep_freed_memory() };
    }

    /// Every fused activation, for tests that loop over them.
    pub const ACTS: [Activation; 3] = [Activation::Identity, Activation::Relu, Activation::Relu6];

    /// The activation of one f64 value (the f64 references of the kernel tests).
    pub fn act_f64(act: Activation, v: f64) -> f64 {
        match act {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::Silu => v / (1.0 + (-v).exp()),
            Activation::HardSwish => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::HardSigmoid => (v + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Activation::Gelu => 0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v / 2f64.sqrt())),
        }
    }

    /// Central differences of `f` with respect to every element of `params[which]`:
    /// `(f(p + eps e_j) - f(p - eps e_j)) / (2 eps)`, perturbing `params` in place (restored
    /// afterwards).
    pub fn central_differences<P: AsMut<[Vec<f64>]>>(
        params: &mut P,
        which: usize,
        eps: f64,
        f: impl Fn(&P) -> f64,
    ) -> Vec<f64> {
        (0..params.as_mut()[which].len())
            .map(|j| {
                let orig = params.as_mut()[which][j];
                params.as_mut()[which][j] = orig + eps;
                let plus = f(params);
                params.as_mut()[which][j] = orig - eps;
                let minus = f(params);
                params.as_mut()[which][j] = orig;
                (plus - minus) / (2.0 * eps)
            })
            .collect()
    }

    /// The gradients of `sum(f(args) * r)` with respect to each argument, `None` for an
    /// argument that no gradient reaches.
    pub fn grads_or_none(
        f: impl Fn(&[&Tensor]) -> Result<Tensor>,
        args: &[&Tensor],
        r: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let vars = args
            .iter()
            .map(|t| Var::from_tensor(t))
            .collect::<Result<Vec<_>>>()?;
        let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let g = f(&t)?.mul(r)?.sum_all()?.backward()?;
        Ok(vars.iter().map(|v| g.get(v.as_tensor()).cloned()).collect())
    }

    /// As [`grads_or_none`], every argument must get a gradient.
    pub fn grads_all(
        f: impl Fn(&[&Tensor]) -> Result<Tensor>,
        args: &[&Tensor],
        r: &Tensor,
    ) -> Result<Vec<Tensor>> {
        Ok(grads_or_none(f, args, r)?
            .into_iter()
            .map(|g| g.expect("a gradient"))
            .collect())
    }

    /// [`grads_all`] of a convolution `f(x, w, bias)`: `[dx, dw, dbias]`.
    pub fn conv_grads(
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        r: &Tensor,
    ) -> Result<[Tensor; 3]> {
        let g = grads_all(|t| f(t[0], t[1], t[2]), &[x, w, bias], r)?;
        Ok(g.try_into().expect("three gradients"))
    }

    /// `n` values in `[-scale, scale)` from a 64-bit LCG seeded with `seed`.
    pub fn lcg(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * scale
            })
            .collect()
    }

    /// A CPU f32 tensor of deterministic values in `[-scale, scale)`.
    pub fn tensor(dims: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
        let n = dims.iter().product();
        Tensor::from_vec(lcg(n, seed, scale), dims, &Device::Cpu)
    }

    /// `max |a - b|` over all elements.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        assert_eq!(a.dims(), b.dims());
        a.sub(b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// `max |a - b| / max(max |b|, 1e-6)`.
    pub fn rel_to_max(a: &Tensor, b: &Tensor) -> Result<f32> {
        let scale = b
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?
            .max(1e-6);
        Ok(max_abs_diff(a, b)? / scale)
    }

    /// The f64 values of a tensor, row-major.
    pub fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
        t.flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::tensor;
    use super::*;

    #[test]
    fn gather_non_contiguous_matches_contiguous() -> Result<()> {
        let t = tensor(&[2, 3, 4, 5], 1, 1.0)?;
        for view in [
            t.transpose(1, 3)?,
            t.narrow(2, 1, 2)?,
            t.narrow(3, 1, 3)?.transpose(0, 2)?,
            // A stride-0 view: one channel broadcast over 4.
            t.narrow(1, 0, 1)?.broadcast_as((2, 4, 4, 5))?,
        ] {
            let (storage, layout) = view.storage_and_layout();
            let got = match &*storage {
                candle_core::Storage::Cpu(s) => f32_data(s, layout, "test")?.into_owned(),
                _ => unreachable!(),
            };
            let want = view.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(got, want);
        }
        Ok(())
    }

    #[test]
    fn act_grad_and_channel_sum() -> Result<()> {
        let grad = tensor(&[2, 3, 4], 2, 1.0)?;
        let out = tensor(&[2, 3, 4], 3, 8.0)?;
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            let got = act_grad(&grad, &out, act)?;
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            let o = out.flatten_all()?.to_vec1::<f32>()?;
            let want: Vec<f32> = g
                .iter()
                .zip(&o)
                .map(|(&g, &o)| if act.passes(o) { g } else { 0.0 })
                .collect();
            assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want);
        }
        // Guided: only the positive gradients of the units that pass; undone with the guard.
        let guard = GuidedBackprop::enable();
        for act in [Activation::Relu, Activation::Relu6] {
            let got = act_grad(&grad, &out, act)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            let o = out.flatten_all()?.to_vec1::<f32>()?;
            for ((&r, &g), &o) in got.iter().zip(&g).zip(&o) {
                assert_eq!(r, if act.passes(o) && g > 0.0 { g } else { 0.0 });
            }
        }
        drop(guard);
        let plain = act_grad(&grad, &out, Activation::Relu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(
            plain.iter().any(|&v| v < 0.0),
            "negative gradients pass again"
        );
        let sum = channel_sum(&grad)?;
        let want = grad.sum(2)?.sum(0)?;
        assert!(test_util::max_abs_diff(&sum, &want)? < 1e-5);
        Ok(())
    }
}
