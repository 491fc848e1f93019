//! Seeing inside a network: algorithms that return plain pixel buffers or tensors, never GUI
//! types. Class-activation maps ([`cam`]), layer activations ([`activations`]), filter patterns
//! by gradient ascent ([`filters`], [`lucid`]), colormaps ([`colormap`]) and the resampling they need
//! ([`resize`]).

pub mod activations;
pub mod attribution;
pub mod cam;
pub mod colormap;
pub mod examples;
pub mod examples_cache;
pub mod faithfulness;
pub mod filters;
pub mod lucid;
pub mod overlay;
pub mod probe;
pub mod receptive;
pub mod reconstruct;
pub mod resize;
pub mod ridge;
pub mod sanity;

/// Errors unless option `name` (as the user wrote it, e.g. `--size`) has a `value` within
/// `range`; the message names the option, the value and the allowed range. NaN is never in range.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> crate::Result<()> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(crate::Error::Model(format!(
            "{name} {value} is out of range: allowed {} to {}",
            range.start(),
            range.end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_range_names_the_option_and_the_range() {
        assert!(check_range("--size", 128, 16..=512).is_ok());
        let err = check_range("--size", 100_000, 16..=512)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "--size 100000 is out of range: allowed 16 to 512");
        assert!(check_range("lr", f64::NAN, 0.0..=1.0).is_err());
    }
}
