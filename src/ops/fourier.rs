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
//! It is computed as two matrix products with precomputed cosine/sine matrices (first the
//! complex inverse DFT along `H`, then the real one along `W`), `O(H^2 K + H K W)` per plane:
//! fine for the 128-512 px images it is for. Each product is a small custom op whose backward
//! is the product with the transposed matrix: candle's own `matmul` backward would also compute
//! the (unused) gradient of the constant matrix, as much work again.

use std::f64::consts::PI;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};

use super::f32_data;

/// `x [R, n]` -> `x · m` `[R, p]` for a constant `m [n, p]`, differentiable w.r.t. `x` only.
#[derive(Clone, Debug)]
struct ConstMatmul {
    m: Tensor,
}

impl CustomOp1 for ConstMatmul {
    fn name(&self) -> &'static str {
        "convlens-const-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, layout, self.name())?;
        let x = Tensor::from_slice(&x, layout.dims(), &Device::Cpu)?;
        let y = x.matmul(&self.m)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.m.t()?)?))
    }
}

/// `x · m` for a constant `m`: [`ConstMatmul`] on CPU f32, candle's `matmul` elsewhere.
fn const_matmul(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && m.dtype() == DType::F32 {
        x.apply_op1(ConstMatmul { m: m.clone() })
    } else {
        x.matmul(m)
    }
}

/// A precomputed inverse real 2-D DFT for `H x W` images (see the module doc).
#[derive(Clone, Debug)]
pub struct Irfft2 {
    h: usize,
    w: usize,
    /// `[2H, 2H]`: `[Yr; Yi] = A [Xr; Xi]` along `H` (`A = [[C, -S], [S, C]]`), transposed.
    along_h_t: Tensor,
    /// `[2K, W]`: `x = [Yr, Yi] B`, rows `c_k cos / sqrt(HW)` then `-c_k sin / sqrt(HW)`.
    along_w: Tensor,
}

/// The number of half-spectrum columns of a `width`-pixel-wide image: `width / 2 + 1`.
pub fn half_width(width: usize) -> usize {
    width / 2 + 1
}

impl Irfft2 {
    /// The transform for `h x w` images with `dtype` matrices on `device`.
    pub fn new(h: usize, w: usize, dtype: DType, device: &Device) -> Result<Self> {
        if h == 0 || w == 0 {
            bail!("irfft2: cannot transform a {h}x{w} image");
        }
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
            let weight = if f == 0 || 2 * f == w { 1.0 } else { 2.0 } * norm;
            for x in 0..w {
                let (s, c) = angle(f, x, w).sin_cos();
                b[f * w + x] = weight * c;
                b[(k + f) * w + x] = -weight * s;
            }
        }
        Ok(Irfft2 {
            h,
            w,
            along_h_t: Tensor::from_vec(a_t, (n2, n2), device)?.to_dtype(dtype)?,
            along_w: Tensor::from_vec(b, (2 * k, w), device)?.to_dtype(dtype)?,
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
        let lead = &dims[..r - 3];
        let n: usize = lead.iter().product();
        // [N, H, K, 2] -> [N, K, 2, H] -> [N*K, 2H]: one row of [Xr, Xi] per column k.
        let x = spectrum
            .reshape((n, h, k, 2))?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((n * k, 2 * h))?;
        let y = const_matmul(&x, &self.along_h_t)?; // [N*K, 2H] = [Yr, Yi]
        // [N, K, 2, H] -> [N, H, 2, K] -> [N*H, 2K].
        let y = y
            .reshape((n, k, 2, h))?
            .permute((0, 3, 2, 1))?
            .contiguous()?
            .reshape((n * h, 2 * k))?;
        let img = const_matmul(&y, &self.along_w)?; // [N*H, W]
        let mut out: Vec<usize> = lead.to_vec();
        out.extend([h, self.w]);
        img.reshape(out)
    }
}

/// `numpy.fft.irfft2(X, s=(H, W), norm="ortho")` of `spectrum [.., H, W/2+1, 2]` as a
/// differentiable tensor `[.., H, W]` (builds the matrices of [`Irfft2`] each call).
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
        for &(h, w) in &[(4, 6), (5, 5)] {
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
