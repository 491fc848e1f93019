//! Training preprocessing: the whole image resized to the model's input size, then normalised.
//!
//! This is the default of Keras' `image_dataset_from_directory` (`crop_to_aspect_ratio=False`):
//! the image is resized to `size` x `size` without cropping, so the aspect ratio is not kept and
//! nothing is cut off. The resize is Pillow's antialiased bilinear
//! ([`resize_bilinear`](super::preprocess::resize_bilinear)), the normalisation is torchvision's
//! `(x / 255 - mean) / std` in f32 ([`normalize_to_tensor`]). A trained model stores its
//! [`TrainTransform`] (it is serde-serialisable) and uses it again when it predicts.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::preprocess::{EvalTransform, load_rgb, normalize_to_tensor, resize_bilinear};
use crate::Result;

/// How an image becomes a training (and trained-model prediction) input: resize the whole image
/// to `size` x `size`, scale to `[0, 1]`, normalise each channel with `(x - mean) / std`, giving a
/// `[1, 3, size, size]` f32 tensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainTransform {
    /// Side of the square network input, in pixels (e.g. 224).
    pub size: u32,
    /// Per-channel (R, G, B) mean subtracted from the `[0, 1]` pixel values.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation the centred values are divided by.
    pub std: [f32; 3],
}

impl TrainTransform {
    /// A transform to `size` x `size` with the given per-channel `mean` and `std`.
    pub fn new(size: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        TrainTransform { size, mean, std }
    }

    /// The training transform matching a model's evaluation transform: input size `crop`, the
    /// same mean and std.
    pub fn from_eval(eval: &EvalTransform) -> Self {
        TrainTransform {
            size: eval.crop,
            mean: eval.mean,
            std: eval.std,
        }
    }

    /// Resizes the whole of `img` (any size, no crop, aspect ratio not kept) to `size` x `size`
    /// with Pillow-exact antialiased bilinear resampling. An image already that size is copied.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        resize_bilinear(img, self.size, self.size)
    }

    /// Normalises `img` into a `[1, 3, size, size]` f32 tensor on `device`. An image that is
    /// not already `size` x `size` is resized first ([`TrainTransform::apply`]), so any image
    /// can be passed.
    pub fn to_tensor(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let img = self.sized(img);
        Ok(normalize_to_tensor(&img, self.mean, self.std, device)?.unsqueeze(0)?)
    }

    /// Decodes the image file at `path` ([`load_rgb`]: any format, EXIF orientation applied,
    /// errors name the file) and preprocesses it: `[1, 3, size, size]` f32.
    pub fn load(&self, path: &Path, device: &Device) -> Result<Tensor> {
        self.to_tensor(&load_rgb(path)?, device)
    }

    /// `img` itself if it is `size` x `size`, else its resized copy.
    fn sized<'a>(&self, img: &'a RgbImage) -> Cow<'a, RgbImage> {
        if img.dimensions() == (self.size, self.size) {
            Cow::Borrowed(img)
        } else {
            Cow::Owned(self.apply(img))
        }
    }

    /// Writes the normalised CHW values of `img` into `out` (`3 * size * size` f32), with the
    /// same f32 arithmetic as [`normalize_to_tensor`], so a batch can be filled in place.
    /// An image that is not `size` x `size` is resized first.
    pub(crate) fn normalize_into(&self, img: &RgbImage, out: &mut [f32]) {
        let img = self.sized(img);
        let plane = self.size as usize * self.size as usize;
        assert_eq!(out.len(), 3 * plane, "output buffer is not 3 x size x size");
        let (mean, std) = (self.mean, self.std);
        let lut: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - mean[c]) / std[c]));
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            r[i] = lut[0][px[0] as usize];
            g[i] = lut[1][px[1] as usize];
            b[i] = lut[2][px[2] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn t(size: u32) -> TrainTransform {
        TrainTransform::new(size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    }

    #[test]
    fn tensor_shape_and_normalisation() {
        let img = RgbImage::from_pixel(37, 23, Rgb([255, 0, 51]));
        let x = t(16).to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 3, 16, 16]);
        let v = x.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        let expect = [
            (1.0 - 0.485) / 0.229,
            (0.0 - 0.456) / 0.224,
            (51.0 / 255.0 - 0.406) / 0.225,
        ];
        for (c, plane) in v.iter().enumerate() {
            for row in plane {
                for &val in row {
                    assert!((val - expect[c]).abs() < 1e-6, "channel {c}: {val}");
                }
            }
        }
    }

    #[test]
    fn whole_image_is_resized_without_crop() {
        // 40x20: left half red, right half blue. Cropping a centred square would keep mostly
        // the middle; resizing the whole image keeps both halves side by side.
        let img = RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let out = t(10).apply(&img);
        assert_eq!(out.dimensions(), (10, 10));
        for y in 0..10 {
            assert_eq!(out.get_pixel(0, y), &Rgb([255, 0, 0]));
            assert_eq!(out.get_pixel(3, y), &Rgb([255, 0, 0]));
            assert_eq!(out.get_pixel(6, y), &Rgb([0, 0, 255]));
            assert_eq!(out.get_pixel(9, y), &Rgb([0, 0, 255]));
        }
        assert_eq!(out, resize_bilinear(&img, 10, 10));
    }

    #[test]
    fn normalize_into_matches_normalize_to_tensor_bitwise() {
        let img = RgbImage::from_fn(12, 12, |x, y| Rgb([(x * 21) as u8, (y * 19) as u8, 7]));
        let tr = t(12);
        let mut buf = vec![0f32; 3 * 12 * 12];
        tr.normalize_into(&img, &mut buf);
        let reference = normalize_to_tensor(&img, tr.mean, tr.std, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(buf, reference);
        let via_to_tensor = tr
            .to_tensor(&img, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(via_to_tensor, reference);
    }

    #[test]
    fn load_decodes_resizes_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.png");
        RgbImage::from_pixel(30, 50, Rgb([10, 20, 30]))
            .save(&path)
            .unwrap();
        let x = t(8).load(&path, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 3, 8, 8]);
        let missing = dir.path().join("missing.png");
        let err = t(8).load(&missing, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
    }

    #[test]
    fn serde_roundtrip_and_from_eval() {
        let tr = TrainTransform::from_eval(&EvalTransform::imagenet());
        assert_eq!(tr, t(224));
        let json = serde_json::to_string(&tr).unwrap();
        assert_eq!(serde_json::from_str::<TrainTransform>(&json).unwrap(), tr);
    }
}
