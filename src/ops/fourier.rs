//! The inverse real 2-D discrete Fourier transform, differentiable: `numpy.fft.irfft2` /
//! `torch.fft.irfft2` with `norm="ortho"` over the last two axes, for the Fourier image
//! parameterisation of feature visualisation (lucid's `fft_image`).
//!
//! A half spectrum `X [.., H, K, 2]` (real and imaginary parts last, `K = W/2 + 1` columns of
//! frequencies `0..=W/2`) becomes the real image
//!
//! `x[h, w] = 1/sqrt(HW) * sum_k c_k Re( e^{2 pi i k w / W} * sum_m X[m, k] e^{2 pi i m h / H} )`
//!
//! with `c_k = 1` for the DC column and (even `W`) the Nyquist column, `2` for the others: the
//! missing columns are the Hermitian mirror of the given ones. As in numpy and PyTorch the
//! imaginary parts of the DC and Nyquist columns after the transform along `H` do not count.
//!
//! On the CPU in f32 it is computed with real FFTs (`rustfft` / `realfft`): per plane a complex
//! inverse FFT of each of the `K` columns along `H`, then a complex-to-real inverse FFT of each
//! row, `O(HW log(HW))` (a 128 px grid step of 16 images: a few MFLOP, where the matrix form
//! took ~1.2 GFLOP). The backward is the exact adjoint, again two FFTs: a real-to-complex
//! forward FFT of each row of the gradient scaled by `c_k / sqrt(HW)` (the imaginary parts of
//! the DC and Nyquist columns set to zero, as the forward ignores them), then a complex forward
//! FFT of each column. On other devices and dtypes it falls back to two matrix products with
//! precomputed cosine/sine matrices (candle's `matmul`, `O(H^2 K + H K W)` per plane).

use std::f64::consts::PI;
use std::fmt;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use super::f32_data;

/// The FFT plans of an `H x W` transform, shared by the op and its adjoint.
struct Plans {
    h: usize,
    w: usize,
    /// Length `H`, `e^{+2 pi i ..}` (unnormalised): the forward's pass along `H`.
    col_inverse: Arc<dyn Fft<f32>>,
    /// Length `H`, `e^{-2 pi i ..}`: the adjoint's pass along `H`.
    col_forward: Arc<dyn Fft<f32>>,
    /// Length `W`, half spectrum -> real row (unnormalised).
    row_c2r: Arc<dyn ComplexToReal<f32>>,
    /// Length `W`, real row -> half spectrum (unnormalised).
    row_r2c: Arc<dyn RealToComplex<f32>>,
    /// `[H, K]`: a factor on each spectrum cell (real and imaginary part) before the forward
    /// transform, and so on the adjoint's result ([`Irfft2::with_scale`]).
    scale: Option<Vec<f32>>,
}

impl fmt::Debug for Plans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plans({}x{})", self.h, self.w)
    }
}

/// Per-thread work buffers of [`Plans::synthesize`] / [`Plans::analyse`].
struct Scratch {
    /// `[K, H]`: the columns of one plane, contiguous.
    cols: Vec<Complex<f32>>,
    /// `[K]`: one row's half spectrum.
    row: Vec<Complex<f32>>,
    /// `[W]`: one real row (the real-to-complex FFT overwrites its input).
    real: Vec<f32>,
    /// The FFTs' own scratch (the largest any plan needs).
    fft: Vec<Complex<f32>>,
}

impl Plans {
    fn new(h: usize, w: usize) -> Self {
        let mut complex = FftPlanner::<f32>::new();
        let mut real = RealFftPlanner::<f32>::new();
        Plans {
            h,
            w,
            col_inverse: complex.plan_fft_inverse(h),
            col_forward: complex.plan_fft_forward(h),
            row_c2r: real.plan_fft_inverse(w),
            row_r2c: real.plan_fft_forward(w),
            scale: None,
        }
    }

    fn k(&self) -> usize {
        half_width(self.w)
    }

    /// `c_k / sqrt(HW)` for column `k`: 1 for DC and (even `W`) Nyquist, 2 for the others.
    fn weight(&self, k: usize) -> f32 {
        let c = if self.real_column(k) { 1.0 } else { 2.0 };
        (c / ((self.h * self.w) as f64).sqrt()) as f32
    }

    /// Whether column `k` is real along `W` ([`real_column`]).
    fn real_column(&self, k: usize) -> bool {
        real_column(k, self.w)
    }

    fn scratch(&self) -> Scratch {
        let fft = [
            self.col_inverse.get_inplace_scratch_len(),
            self.col_forward.get_inplace_scratch_len(),
            self.row_c2r.get_scratch_len(),
            self.row_r2c.get_scratch_len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let zero = Complex::new(0.0, 0.0);
        Scratch {
            cols: vec![zero; self.k() * self.h],
            row: vec![zero; self.k()],
            real: vec![0.0; self.w],
            fft: vec![zero; fft],
        }
    }

    /// One plane forward: half spectrum `spec [H, K, 2]` -> image `out [H, W]`.
    fn synthesize(&self, spec: &[f32], out: &mut [f32], s: &mut Scratch) -> Result<()> {
        let (h, w, k) = (self.h, self.w, self.k());
        for m in 0..h {
            for j in 0..k {
                let i = (m * k + j) * 2;
                s.cols[j * h + m] = match &self.scale {
                    None => Complex::new(spec[i], spec[i + 1]),
                    Some(c) => Complex::new(spec[i] * c[m * k + j], spec[i + 1] * c[m * k + j]),
                };
            }
        }
        self.col_inverse
            .process_with_scratch(&mut s.cols, &mut s.fft);
        let norm = self.weight(0);
        for (y, row_out) in out.chunks_exact_mut(w).enumerate() {
            for (j, v) in s.row.iter_mut().enumerate() {
                *v = s.cols[j * h + y];
                if self.real_column(j) {
                    v.im = 0.0;
                }
            }
            if let Err(e) = self
                .row_c2r
                .process_with_scratch(&mut s.row, row_out, &mut s.fft)
            {
                bail!("irfft2: {e}");
            }
            row_out.iter_mut().for_each(|v| *v *= norm);
        }
        Ok(())
    }

    /// One plane of the adjoint: gradient `grad [H, W]` -> half-spectrum gradient
    /// `out [H, K, 2]`.
    fn analyse(&self, grad: &[f32], out: &mut [f32], s: &mut Scratch) -> Result<()> {
        let (h, w, k) = (self.h, self.w, self.k());
        for (y, row_in) in grad.chunks_exact(w).enumerate() {
            s.real.copy_from_slice(row_in);
            if let Err(e) = self
                .row_r2c
                .process_with_scratch(&mut s.real, &mut s.row, &mut s.fft)
            {
                bail!("irfft2 backward: {e}");
            }
            for (j, v) in s.row.iter().enumerate() {
                let c = self.weight(j);
                let im = if self.real_column(j) { 0.0 } else { v.im * c };
                s.cols[j * h + y] = Complex::new(v.re * c, im);
            }
        }
        self.col_forward
            .process_with_scratch(&mut s.cols, &mut s.fft);
        for m in 0..h {
            for j in 0..k {
                let v = s.cols[j * h + m];
                let i = (m * k + j) * 2;
                let c = self.scale.as_ref().map_or(1.0, |c| c[m * k + j]);
                out[i] = v.re * c;
                out[i + 1] = v.im * c;
            }
        }
        Ok(())
    }

    /// `plane` applied to each of the `n` planes of `input` (`in_len` values each) into
    /// `n` planes of `out_len` values, on rayon.
    fn map_planes(
        &self,
        input: &[f32],
        in_len: usize,
        out_len: usize,
        plane: fn(&Plans, &[f32], &mut [f32], &mut Scratch) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let n = input.len() / in_len;
        let mut out = vec![0f32; n * out_len];
        out.par_chunks_mut(out_len)
            .zip(input.par_chunks(in_len))
            .try_for_each_init(|| self.scratch(), |s, (o, i)| plane(self, i, o, s))?;
        Ok(out)
    }
}

/// The forward FFT op: `[.., H, K, 2]` -> `[.., H, W]`, backward [`Irfft2Adjoint`].
#[derive(Clone, Debug)]
struct Irfft2Fft {
    plans: Arc<Plans>,
}

/// The adjoint (the forward's backward): `[.., H, W]` -> `[.., H, K, 2]`, backward
/// [`Irfft2Fft`].
#[derive(Clone, Debug)]
struct Irfft2Adjoint {
    plans: Arc<Plans>,
}

impl CustomOp1 for Irfft2Fft {
    fn name(&self) -> &'static str {
        "convlens-irfft2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = &self.plans;
        let x = f32_data(storage, layout, self.name())?;
        let out = p.map_planes(&x, p.h * p.k() * 2, p.h * p.w, Plans::synthesize)?;
        let dims = layout.dims();
        let mut shape = dims[..dims.len() - 2].to_vec();
        shape.push(p.w);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let adjoint = Irfft2Adjoint {
            plans: self.plans.clone(),
        };
        Ok(Some(grad_res.apply_op1(adjoint)?))
    }
}

impl CustomOp1 for Irfft2Adjoint {
    fn name(&self) -> &'static str {
        "convlens-irfft2-adjoint"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = &self.plans;
        let g = f32_data(storage, layout, self.name())?;
        let out = p.map_planes(&g, p.h * p.w, p.h * p.k() * 2, Plans::analyse)?;
        let dims = layout.dims();
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.extend([p.k(), 2]);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let forward = Irfft2Fft {
            plans: self.plans.clone(),
        };
        Ok(Some(grad_res.apply_op1(forward)?))
    }
}

/// The matrix form for devices and dtypes without the FFT path.
#[derive(Clone, Debug)]
struct DftMatrices {
    /// `[2H, 2H]`: `[Yr; Yi] = A [Xr; Xi]` along `H` (`A = [[C, -S], [S, C]]`), transposed.
    along_h_t: Tensor,
    /// `[2K, W]`: `x = [Yr, Yi] B`, rows `c_k cos / sqrt(HW)` then `-c_k sin / sqrt(HW)`.
    along_w: Tensor,
}

impl DftMatrices {
    fn new(h: usize, w: usize, dtype: DType, device: &Device) -> Result<Self> {
        let k = half_width(w);
        let norm = 1.0 / ((h * w) as f64).sqrt();
        // Angles reduced modulo the period first so that large products stay exact.
        let angle = |a: usize, b: usize, n: usize| 2.0 * PI * ((a * b) % n) as f64 / n as f64;
        let n2 = 2 * h;
        let mut a_t = vec![0f64; n2 * n2];
        for out in 0..h {
            for m in 0..h {
                let (s, c) = angle(out, m, h).sin_cos();
                // a_t[input row, output column]; inputs are [Xr (0..H), Xi (H..2H)], outputs
                // [Yr (0..H), Yi (H..2H)].
                a_t[m * n2 + out] = c;
                a_t[(h + m) * n2 + out] = -s;
                a_t[m * n2 + h + out] = s;
                a_t[(h + m) * n2 + h + out] = c;
            }
        }
        let mut b = vec![0f64; 2 * k * w];
        for f in 0..k {
            let weight = if real_column(f, w) { 1.0 } else { 2.0 } * norm;
            for x in 0..w {
                let (s, c) = angle(f, x, w).sin_cos();
                b[f * w + x] = weight * c;
                b[(k + f) * w + x] = -weight * s;
            }
        }
        Ok(DftMatrices {
            along_h_t: Tensor::from_vec(a_t, (n2, n2), device)?.to_dtype(dtype)?,
            along_w: Tensor::from_vec(b, (2 * k, w), device)?.to_dtype(dtype)?,
        })
    }

    /// `spectrum [N, H, K, 2]` -> `[N, H, W]` with two matrix products.
    fn apply(&self, spectrum: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (n, _, k, _) = spectrum.dims4()?;
        // [N, H, K, 2] -> [N, K, 2, H] -> [N*K, 2H]: one row of [Xr, Xi] per column k.
        let x = spectrum
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((n * k, 2 * h))?;
        let y = x.matmul(&self.along_h_t)?; // [N*K, 2H] = [Yr, Yi]
        // [N, K, 2, H] -> [N, H, 2, K] -> [N*H, 2K].
        let y = y
            .reshape((n, k, 2, h))?
            .permute((0, 3, 2, 1))?
            .contiguous()?
            .reshape((n * h, 2 * k))?;
        y.matmul(&self.along_w)?.reshape((n, h, w))
    }
}

/// A planned inverse real 2-D DFT for `H x W` images (see the module doc).
#[derive(Clone, Debug)]
pub struct Irfft2 {
    h: usize,
    w: usize,
    plans: Arc<Plans>,
    /// The matrix form, built when the transform is made for another device or dtype than
    /// CPU f32.
    matrices: Option<DftMatrices>,
    /// [`Irfft2::with_scale`]'s factors as a `[H, K, 1]` tensor, for the matrix form.
    scale: Option<Tensor>,
}

/// Whether half-spectrum column `k` of a `width`-pixel-wide image is real along the width (DC,
/// and Nyquist for an even width): it counts once (`c_k = 1`, the others twice), and the
/// imaginary part of its transform along the height is dropped, as numpy and PyTorch do.
fn real_column(k: usize, width: usize) -> bool {
    k == 0 || 2 * k == width
}

/// The number of half-spectrum columns of a `width`-pixel-wide image: `width / 2 + 1`.
pub fn half_width(width: usize) -> usize {
    width / 2 + 1
}

/// Whether a tensor of `dtype` on `device` takes the FFT path (CPU, f32).
fn fft_path(dtype: DType, device: &Device) -> bool {
    device.is_cpu() && dtype == DType::F32
}

impl Irfft2 {
    /// The transform for `h x w` images of `dtype` on `device` (FFT plans on CPU f32, the
    /// DFT matrices otherwise).
    pub fn new(h: usize, w: usize, dtype: DType, device: &Device) -> Result<Self> {
        if h == 0 || w == 0 {
            bail!("irfft2: cannot transform a {h}x{w} image");
        }
        let matrices = if fft_path(dtype, device) {
            None
        } else {
            Some(DftMatrices::new(h, w, dtype, device)?)
        };
        Ok(Irfft2 {
            h,
            w,
            plans: Arc::new(Plans::new(h, w)),
            matrices,
            scale: None,
        })
    }

    /// The transform of the spectrum scaled cell by cell first: `apply(X)` gives
    /// `irfft2(X * scale)` for `scale [H, W/2+1]` (row-major, the same factor on the real and
    /// imaginary part), the product taken inside the op (on the CPU in f32: the same values as
    /// `broadcast_mul` before the transform, without its tensor and backward node).
    pub fn with_scale(self, scale: Vec<f32>, device: &Device) -> Result<Self> {
        let (h, k) = (self.h, half_width(self.w));
        if scale.len() != h * k {
            bail!(
                "irfft2: {} spectrum scales for a {h}x{} image ({h}x{k} cells)",
                scale.len(),
                self.w
            );
        }
        let mut plans = Plans::new(h, self.w);
        let tensor = Tensor::from_vec(scale.clone(), (h, k, 1), device)?;
        plans.scale = Some(scale);
        Ok(Irfft2 {
            plans: Arc::new(plans),
            scale: Some(tensor),
            ..self
        })
    }

    /// `spectrum [.., H, W/2+1, 2]` (real, imaginary) -> the image `[.., H, W]`; any number of
    /// leading dimensions (at least one). Differentiable w.r.t. `spectrum`.
    pub fn apply(&self, spectrum: &Tensor) -> Result<Tensor> {
        let dims = spectrum.dims();
        let (h, k) = (self.h, half_width(self.w));
        let r = dims.len();
        if r < 4 || dims[r - 3] != h || dims[r - 2] != k || dims[r - 1] != 2 {
            bail!(
                "irfft2: the spectrum of a {h}x{} image must be [.., {h}, {k}, 2], got {dims:?}",
                self.w
            );
        }
        if fft_path(spectrum.dtype(), spectrum.device()) {
            return spectrum.apply_op1(Irfft2Fft {
                plans: self.plans.clone(),
            });
        }
        let lead = &dims[..r - 3];
        let n: usize = lead.iter().product();
        let spectrum = match &self.scale {
            Some(scale) => &spectrum.broadcast_mul(&scale.to_dtype(spectrum.dtype())?)?,
            None => spectrum,
        };
        let spectrum4 = spectrum.reshape((n, h, k, 2))?;
        let img = match &self.matrices {
            Some(m)
                if m.along_w.dtype() == spectrum.dtype()
                    && m.along_w.device().same_device(spectrum.device()) =>
            {
                m.apply(&spectrum4, h, self.w)?
            }
            _ => DftMatrices::new(h, self.w, spectrum.dtype(), spectrum.device())?
                .apply(&spectrum4, h, self.w)?,
        };
        let mut out: Vec<usize> = lead.to_vec();
        out.extend([h, self.w]);
        img.reshape(out)
    }
}

/// `numpy.fft.irfft2(X, s=(H, W), norm="ortho")` of `spectrum [.., H, W/2+1, 2]` as a
/// differentiable tensor `[.., H, W]` (plans the transform each call).
pub fn irfft2(spectrum: &Tensor, width: usize) -> Result<Tensor> {
    let dims = spectrum.dims();
    if dims.len() < 4 {
        bail!("irfft2: the spectrum must be [.., H, W/2+1, 2], got {dims:?}");
    }
    let h = dims[dims.len() - 3];
    Irfft2::new(h, width, spectrum.dtype(), spectrum.device())?.apply(spectrum)
}

/// The frequency magnitude `sqrt(fy^2 + fx^2)` (cycles per pixel) of each half-spectrum cell of
/// an `h x w` image, `[h, w/2+1]` row-major, with numpy's `fftfreq` convention (rows
/// `0, 1/h, .., -1/h`). Lucid's `rfft2d_freqs`.
pub fn rfft2_frequencies(h: usize, w: usize) -> Vec<f64> {
    let freq = |i: usize, n: usize| {
        let i = if i < n.div_ceil(2) {
            i as f64
        } else {
            i as f64 - n as f64
        };
        i / n as f64
    };
    let k = half_width(w);
    let mut out = Vec::with_capacity(h * k);
    for y in 0..h {
        let fy = freq(y, h);
        for x in 0..k {
            let fx = x as f64 / w as f64;
            out.push((fy * fy + fx * fx).sqrt());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::super::test_util::{central_differences, lcg, tensor, to_f64};
    use super::*;

    /// The direct definition in f64: the Hermitian-completed full spectrum, inverse DFT over
    /// both axes, real part (O(H^2 W^2)).
    fn direct(spec: &[f64], h: usize, w: usize) -> Vec<f64> {
        let k = half_width(w);
        // Full spectrum F[m, j]: given for j < k; mirrored conj(X[-m, W - j]) for j >= k.
        let at = |m: usize, j: usize| -> (f64, f64) {
            if j < k {
                (spec[(m * k + j) * 2], spec[(m * k + j) * 2 + 1])
            } else {
                let (mm, jj) = ((h - m) % h, w - j);
                (spec[(mm * k + jj) * 2], -spec[(mm * k + jj) * 2 + 1])
            }
        };
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                let mut re = 0.0;
                for m in 0..h {
                    for j in 0..w {
                        // numpy takes the DC and Nyquist columns as real along the last axis:
                        // only Re of the H-transformed column counts, which the real part of
                        // the full sum already gives when the mirror of column j is itself.
                        let (a, b) = at(m, j);
                        let t = 2.0 * PI * ((m * y) as f64 / h as f64 + (j * x) as f64 / w as f64);
                        re += a * t.cos() - b * t.sin();
                    }
                }
                out[y * w + x] = re / ((h * w) as f64).sqrt();
            }
        }
        out
    }

    #[test]
    fn a_scale_inside_is_a_product_before() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w) in &[(6, 6), (5, 7)] {
            let k = half_width(w);
            let spec = tensor(&[2, 3, h, k, 2], 7, 1.0)?;
            let scale = tensor(&[h, k], 8, 2.0)?.flatten_all()?.to_vec1::<f32>()?;
            let r = tensor(&[2, 3, h, w], 9, 1.0)?;
            let plain = Irfft2::new(h, w, DType::F32, &dev)?;
            let scaled = plain.clone().with_scale(scale.clone(), &dev)?;
            let var = Var::from_tensor(&spec)?;
            let before = var.as_tensor().broadcast_mul(&Tensor::from_vec(
                scale.clone(),
                (h, k, 1),
                &dev,
            )?)?;
            let want = plain.apply(&before)?;
            let got = scaled.apply(var.as_tensor())?;
            let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            assert_eq!(values(&got)?, values(&want)?, "{h}x{w}");
            let grad = |t: &Tensor| -> Result<Vec<f32>> {
                let g = (t * &r)?.sum_all()?.backward()?;
                values(g.get(var.as_tensor()).expect("a gradient"))
            };
            assert_eq!(grad(&got)?, grad(&want)?, "{h}x{w}");
            // The matrix form (another dtype) scales too.
            let f64_spec = spec.to_dtype(DType::F64)?;
            let m = Irfft2::new(h, w, DType::F64, &dev)?.with_scale(scale.clone(), &dev)?;
            let diff = m
                .apply(&f64_spec)?
                .to_dtype(DType::F32)?
                .sub(&want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{h}x{w}: {diff}");
        }
        assert!(
            Irfft2::new(4, 4, DType::F32, &dev)?
                .with_scale(vec![1.0; 5], &dev)
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn matches_the_direct_transform() -> Result<()> {
        for &(h, w) in &[
            (4, 4),
            (5, 6),
            (6, 5),
            (3, 7),
            (8, 8),
            (1, 4),
            (4, 1),
            (7, 2),
        ] {
            let k = half_width(w);
            let spec = tensor(&[2, 3, h, k, 2], (h * 31 + w) as u64, 1.0)?;
            let got = to_f64(&irfft2(&spec, w)?)?;
            let s = to_f64(&spec)?;
            for plane in 0..6 {
                let one = &s[plane * h * k * 2..][..h * k * 2];
                // The direct sum mirrors column j into W - j: for the DC column (and even W's
                // Nyquist) that is itself, where numpy drops the imaginary part of the
                // column's H-transform. Build that input explicitly: make the DC / Nyquist
                // columns Hermitian along H, which is what "dropping Im" amounts to.
                let mut herm = one.to_vec();
                for j in [0, w / 2] {
                    if j >= k || (j != 0 && 2 * j != w) {
                        continue;
                    }
                    for m in 0..h {
                        let mm = (h - m) % h;
                        let (a, b) = (one[(m * k + j) * 2], one[(m * k + j) * 2 + 1]);
                        let (c, d) = (one[(mm * k + j) * 2], one[(mm * k + j) * 2 + 1]);
                        herm[(m * k + j) * 2] = 0.5 * (a + c);
                        herm[(m * k + j) * 2 + 1] = 0.5 * (b - d);
                    }
                }
                let want = direct(&herm, h, w);
                let got = &got[plane * h * w..][..h * w];
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-5, "{h}x{w} plane {plane}: {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn matches_numpy_on_hand_computed_spectra() -> Result<()> {
        // numpy.fft.irfft2(X, s=(2, W), norm="ortho") for single-coefficient spectra X, worked
        // out by hand from numpy's definition (inverse DFT along H, then the real inverse along
        // W counting columns 1..W/2 twice and Im of the DC/Nyquist columns not at all).
        let dev = Device::Cpu;
        let one = |m: usize, j: usize, re: f32, im: f32, h: usize, w: usize| -> Result<Tensor> {
            let k = half_width(w);
            let mut v = vec![0f32; h * k * 2];
            v[(m * k + j) * 2] = re;
            v[(m * k + j) * 2 + 1] = im;
            Tensor::from_vec(v, (1, h, k, 2), &dev)
        };
        let r8 = 1.0 / 8f32.sqrt();
        let cases: Vec<(Tensor, usize, Vec<f32>)> = vec![
            // DC 1: constant 1/sqrt(8).
            (one(0, 0, 1.0, 0.0, 2, 4)?, 4, vec![r8; 8]),
            // Nyquist column, row 1: (-1)^h (-1)^w / sqrt(8).
            (
                one(1, 2, 1.0, 0.0, 2, 4)?,
                4,
                vec![r8, -r8, r8, -r8, -r8, r8, -r8, r8],
            ),
            // X[1, 1] = i: 2 Re(i (-1)^h e^{i pi w / 2}) / sqrt(8) = -2 (-1)^h sin(pi w / 2).
            (
                one(1, 1, 0.0, 1.0, 2, 4)?,
                4,
                vec![0.0, -2.0 * r8, 0.0, 2.0 * r8, 0.0, 2.0 * r8, 0.0, -2.0 * r8],
            ),
            // An imaginary DC coefficient is dropped: zeros (numpy gives 0 too).
            (one(0, 0, 0.0, 1.0, 2, 4)?, 4, vec![0.0; 8]),
            // Odd width 3 (K = 2), X[0, 1] = 1: 2 cos(2 pi w / 3) / sqrt(6) = [2, -1, -1] / sqrt(6).
            (
                one(0, 1, 1.0, 0.0, 2, 3)?,
                3,
                [2.0, -1.0, -1.0, 2.0, -1.0, -1.0]
                    .iter()
                    .map(|v| v / 6f32.sqrt())
                    .collect(),
            ),
        ];
        for (i, (spec, w, want)) in cases.iter().enumerate() {
            let got = irfft2(spec, *w)?.flatten_all()?.to_vec1::<f32>()?;
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "case {i}: {got:?} vs {want:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn is_orthonormal_on_real_images() -> Result<()> {
        // The ortho inverse undoes the ortho forward transform: a random real image's half
        // spectrum (direct DFT in f64, `numpy.fft.rfft2(x, norm="ortho")`) comes back as the
        // image.
        let (h, w) = (6, 5);
        let k = half_width(w);
        let img = lcg(h * w, 9, 1.0);
        let mut spec = vec![0f32; h * k * 2];
        for m in 0..h {
            for j in 0..k {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for y in 0..h {
                    for x in 0..w {
                        let t = -2.0 * PI * ((m * y) as f64 / h as f64 + (j * x) as f64 / w as f64);
                        re += f64::from(img[y * w + x]) * t.cos();
                        im += f64::from(img[y * w + x]) * t.sin();
                    }
                }
                let n = ((h * w) as f64).sqrt();
                spec[(m * k + j) * 2] = (re / n) as f32;
                spec[(m * k + j) * 2 + 1] = (im / n) as f32;
            }
        }
        let spec = Tensor::from_vec(spec, (1, h, k, 2), &Device::Cpu)?;
        let back = irfft2(&spec, w)?.flatten_all()?.to_vec1::<f32>()?;
        for (a, b) in back.iter().zip(&img) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        // Every parity of H and W: the Nyquist column (even W) and the Nyquist row (even H).
        for &(h, w) in &[(4, 6), (5, 5), (4, 5), (5, 4)] {
            let k = half_width(w);
            let spec = tensor(&[1, 2, h, k, 2], 3, 1.0)?;
            let r = tensor(&[1, 2, h, w], 4, 1.0)?;
            let var = Var::from_tensor(&spec)?;
            let loss = (irfft2(var.as_tensor(), w)? * &r)?.sum_all()?;
            let grads = loss.backward()?;
            let got = to_f64(grads.get(var.as_tensor()).expect("gradient"))?;
            let (sv, rv) = (to_f64(&spec)?, to_f64(&r)?);
            let f = |s: &[f64]| -> f64 {
                (0..2)
                    .map(|p| {
                        let x = direct_numpy(&s[p * h * k * 2..][..h * k * 2], h, w);
                        x.iter()
                            .zip(&rv[p * h * w..][..h * w])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                    })
                    .sum()
            };
            let eps = 1e-4;
            let fds = central_differences(&mut [sv], 0, eps, |p| f(&p[0]));
            for (i, fd) in fds.into_iter().enumerate() {
                assert!(
                    (got[i] - fd).abs() < 1e-4,
                    "{h}x{w} element {i}: autograd {} vs finite differences {fd}",
                    got[i]
                );
            }
        }
        Ok(())
    }

    /// numpy's irfft2 in f64 straight from the two-stage definition (complex inverse DFT along
    /// H, then the real inverse along W with weights c_k and Im of DC/Nyquist dropped).
    fn direct_numpy(spec: &[f64], h: usize, w: usize) -> Vec<f64> {
        let k = half_width(w);
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for j in 0..k {
                let (mut yr, mut yi) = (0.0, 0.0);
                for m in 0..h {
                    let t = 2.0 * PI * (m * y) as f64 / h as f64;
                    let (a, b) = (spec[(m * k + j) * 2], spec[(m * k + j) * 2 + 1]);
                    yr += a * t.cos() - b * t.sin();
                    yi += a * t.sin() + b * t.cos();
                }
                let nyquist_or_dc = j == 0 || 2 * j == w;
                let c = if nyquist_or_dc { 1.0 } else { 2.0 };
                for x in 0..w {
                    let t = 2.0 * PI * (j * x) as f64 / w as f64;
                    let im = if nyquist_or_dc { 0.0 } else { yi };
                    out[y * w + x] += c * (yr * t.cos() - im * t.sin());
                }
            }
        }
        let n = ((h * w) as f64).sqrt();
        out.iter().map(|v| v / n).collect()
    }

    #[test]
    fn two_stage_reference_agrees_with_the_op() -> Result<()> {
        for &(h, w) in &[(3, 4), (4, 3), (6, 9)] {
            let k = half_width(w);
            let spec = tensor(&[1, h, k, 2], 11, 1.0)?;
            let got = to_f64(&irfft2(&spec, w)?)?;
            let want = direct_numpy(&to_f64(&spec)?, h, w);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{h}x{w}: {a} vs {b}");
            }
        }
        assert!(irfft2(&tensor(&[1, 4, 4, 2], 1, 1.0)?, 4).is_err());
        assert!(irfft2(&tensor(&[4, 3, 2], 1, 1.0)?, 4).is_err());
        Ok(())
    }

    #[test]
    fn backward_is_the_adjoint() -> Result<()> {
        // <A x, y> = <x, A^T y> for random x, y: the backward op is the transpose of the
        // forward (which matches_the_direct_transform checks against the definition).
        for &(h, w) in &[
            (4, 6),
            (5, 5),
            (4, 5),
            (5, 4),
            (1, 4),
            (4, 1),
            (8, 8),
            (7, 2),
            (16, 9),
        ] {
            let k = half_width(w);
            let plans = Arc::new(Plans::new(h, w));
            for seed in 0..3 {
                let x = tensor(&[2, 3, h, k, 2], 100 + seed, 1.0)?;
                let y = tensor(&[2, 3, h, w], 200 + seed, 1.0)?;
                let ax = x.apply_op1(Irfft2Fft {
                    plans: plans.clone(),
                })?;
                let aty = y.apply_op1(Irfft2Adjoint {
                    plans: plans.clone(),
                })?;
                assert_eq!(aty.dims(), x.dims());
                let dot = |a: &Tensor, b: &Tensor| -> Result<f64> {
                    Ok(to_f64(a)?.iter().zip(to_f64(b)?).map(|(u, v)| u * v).sum())
                };
                let (lhs, rhs) = (dot(&ax, &y)?, dot(&x, &aty)?);
                assert!(
                    (lhs - rhs).abs() < 1e-5 * lhs.abs().max(1.0),
                    "{h}x{w} seed {seed}: <Ax, y> = {lhs}, <x, A^T y> = {rhs}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn matrix_fallback_agrees_with_the_fft() -> Result<()> {
        // f64 takes the DFT-matrix path (as other devices do): same image, same gradient.
        for &(h, w) in &[(6, 8), (5, 7)] {
            let k = half_width(w);
            let spec = tensor(&[2, 3, h, k, 2], 21, 1.0)?;
            let r = tensor(&[2, 3, h, w], 22, 1.0)?;
            let grad = |s: &Tensor| -> Result<(Vec<f64>, Vec<f64>)> {
                let var = Var::from_tensor(s)?;
                let img = irfft2(var.as_tensor(), w)?;
                let loss = (&img * r.to_dtype(s.dtype())?)?.sum_all()?;
                let grads = loss.backward()?;
                let g = grads.get(var.as_tensor()).expect("gradient");
                Ok((to_f64(&img)?, to_f64(g)?))
            };
            let (img32, g32) = grad(&spec)?;
            let (img64, g64) = grad(&spec.to_dtype(DType::F64)?)?;
            for (a, b) in img32.iter().zip(&img64).chain(g32.iter().zip(&g64)) {
                assert!((a - b).abs() < 1e-5, "{h}x{w}: FFT {a} vs matrices {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn frequencies_follow_fftfreq() {
        // fftfreq(4) = [0, .25, -.5, -.25]; fftfreq(5) = [0, .2, .4, -.4, -.2]; columns w/2+1.
        let f = rfft2_frequencies(4, 5);
        assert_eq!(f.len(), 4 * 3);
        let want_row2 = [0.5, (0.25f64 + 0.04).sqrt(), (0.25f64 + 0.16).sqrt()];
        for (a, b) in f[6..9].iter().zip(want_row2) {
            assert!((a - b).abs() < 1e-12);
        }
        let g = rfft2_frequencies(5, 4);
        assert!((g[3 * 3] - 0.4).abs() < 1e-12, "row 3 is -0.4: {}", g[9]);
        assert!((g[2] - 0.5).abs() < 1e-12);
    }
}
