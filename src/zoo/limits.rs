//! What a model may claim before anything is allocated for it: input sizes, class counts and
//! normalisation. Manifests, weights headers and training options are checked against these
//! bounds when they are read, so a crafted value is an error naming the field and the allowed
//! range instead of an abort deep inside a kernel.

use std::ops::RangeInclusive;
use std::path::Path;

use crate::{Error, Result};

/// Side of a square network input, in pixels. The zoo uses 224 to 300; a trained scratch
/// convnet needs at least 78.
pub const INPUT_SIZE: RangeInclusive<u32> = 32..=1024;

/// The shorter side an evaluation transform resizes to before its centre crop, in pixels (at
/// least the crop, at most this).
pub const MAX_RESIZE_SHORTER: u32 = 2048;

/// Classes a classifier may have (ImageNet-21k has 21,843). A classifier matrix this wide is
/// the largest tensor a checkpoint may hold, so this bounds what a crafted file can make
/// convlens allocate.
pub const MAX_CLASSES: usize = 50_000;

/// A normalisation mean (images are scaled to `[0, 1]` first).
pub const MEAN: RangeInclusive<f32> = 0.0..=1.0;

/// A normalisation standard deviation: a zero divides every pixel by zero.
pub const STD: RangeInclusive<f32> = 0.001..=10.0;

/// `value` of `field` (in `path`) within `INPUT_SIZE`.
pub fn check_input_size(path: &Path, field: &str, value: u32) -> Result<()> {
    if INPUT_SIZE.contains(&value) {
        return Ok(());
    }
    Err(Error::Model(format!(
        "{}: `{field}` is {value}; allowed {}..={} pixels",
        path.display(),
        INPUT_SIZE.start(),
        INPUT_SIZE.end()
    )))
}

/// An evaluation resize (`resize_shorter`) for a crop of `crop` pixels.
pub fn check_resize_shorter(path: &Path, value: u32, crop: u32) -> Result<()> {
    if (crop..=MAX_RESIZE_SHORTER).contains(&value) {
        return Ok(());
    }
    Err(Error::Model(format!(
        "{}: `resize_shorter` is {value}; allowed {crop}..={MAX_RESIZE_SHORTER} pixels (at least \
         `input_size`)",
        path.display()
    )))
}

/// Per-channel `mean` and `std` of a normalisation, finite and within [`MEAN`] / [`STD`].
pub fn check_normalisation(path: &Path, mean: &[f32; 3], std: &[f32; 3]) -> Result<()> {
    for (field, values, range) in [("mean", mean, &MEAN), ("std", std, &STD)] {
        if let Some(v) = values.iter().find(|v| !range.contains(v)) {
            return Err(Error::Model(format!(
                "{}: `{field}` holds {v}; each channel's {field} must be a number in {}..={}",
                path.display(),
                range.start(),
                range.end()
            )));
        }
    }
    Ok(())
}

/// A class count of at most [`MAX_CLASSES`] (0: a feature-only checkpoint; `what` says where
/// the count came from).
pub fn check_class_count(path: &Path, what: &str, classes: usize) -> Result<()> {
    if classes <= MAX_CLASSES {
        return Ok(());
    }
    Err(Error::Model(format!(
        "{}: {what} {classes} classes; a model may have at most {MAX_CLASSES}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_the_field_and_the_range() {
        let p = Path::new("m.json");
        assert!(check_input_size(p, "input_size", 224).is_ok());
        for bad in [0, 31, 1025, 100_000] {
            let err = check_input_size(p, "input_size", bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("m.json") && err.contains("`input_size`"),
                "{err}"
            );
            assert!(
                err.contains(&bad.to_string()) && err.contains("32..=1024"),
                "{err}"
            );
        }
        assert!(check_resize_shorter(p, 256, 224).is_ok());
        assert!(check_resize_shorter(p, 200, 224).is_err());
        assert!(check_resize_shorter(p, 100_000, 224).is_err());
    }

    #[test]
    fn zero_negative_and_non_finite_normalisation_is_refused() {
        let p = Path::new("m.json");
        assert!(check_normalisation(p, &[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225]).is_ok());
        for std in [0.0, -0.2, f32::NAN, f32::INFINITY] {
            let err = check_normalisation(p, &[0.5; 3], &[0.2, std, 0.2])
                .unwrap_err()
                .to_string();
            assert!(err.contains("`std`") && err.contains("0.001..=10"), "{err}");
        }
        for mean in [-0.1, f32::NAN, 2.0] {
            let err = check_normalisation(p, &[mean, 0.5, 0.5], &[0.2; 3])
                .unwrap_err()
                .to_string();
            assert!(err.contains("`mean`"), "{err}");
        }
    }

    #[test]
    fn class_counts_are_bounded() {
        let p = Path::new("w.safetensors");
        assert!(check_class_count(p, "the classifier has", 1000).is_ok());
        assert!(check_class_count(p, "the classifier has", 0).is_ok());
        let err = check_class_count(p, "the classifier has", 1_200_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1200000") && err.contains("50000"), "{err}");
    }
}
