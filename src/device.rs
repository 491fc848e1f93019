//! Which compute device to run on, chosen by the user and probed at run time.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// A device the user asked for: `cpu`, `cuda[:N]`, `metal[:N]` or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceChoice {
    /// The best compiled-in accelerator that is present, else the CPU.
    Auto,
    /// The CPU (the default: convlens is made for laptops).
    #[default]
    Cpu,
    /// CUDA device N (needs the `cuda` cargo feature).
    Cuda(usize),
    /// Metal device N (needs the `metal` cargo feature).
    Metal(usize),
}

impl DeviceChoice {
    /// Opens the device. A backend that is not compiled in is a plain error saying how to get it.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(Error::Device(
                        "this convlens was built without CUDA support; rebuild with \
                         `cargo build --release --features cuda`"
                            .into(),
                    ));
                }
                open_cuda(n).map_err(|e| Error::Device(format!("cannot open CUDA device {n}: {e}")))
            }
            DeviceChoice::Metal(n) => {
                if !cfg!(feature = "metal") {
                    return Err(Error::Device(
                        "this convlens was built without Metal support; rebuild with \
                         `cargo build --release --features metal`"
                            .into(),
                    ));
                }
                Device::new_metal(n)
                    .map_err(|e| Error::Device(format!("cannot open Metal device {n}: {e}")))
            }
            DeviceChoice::Auto => {
                if cfg!(feature = "cuda")
                    && let Ok(d) = open_cuda(0)
                {
                    return Ok(d);
                }
                if cfg!(feature = "metal")
                    && let Ok(d) = Device::new_metal(0)
                {
                    return Ok(d);
                }
                Ok(Device::Cpu)
            }
        }
    }
}

/// CUDA device `n` with one stream of its own, shared by every thread. candle's `new_cuda` gives
/// each OS thread its own stream (CUDA's per-thread default stream), while convlens runs a
/// network's forward on rayon's threads and the loss, the optimiser and the copies back on the
/// caller's: work on one tensor would then race between streams (a buffer freed on one while a
/// kernel on the other still reads it: `CUDA_ERROR_ILLEGAL_ADDRESS` in training).
fn open_cuda(n: usize) -> candle_core::Result<Device> {
    Device::new_cuda_with_stream(n)
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((k, n)) => {
                let n = n
                    .parse::<usize>()
                    .map_err(|_| format!("bad device index in `{s}`"))?;
                (k.to_string(), n)
            }
            None => (s.clone(), 0),
        };
        match kind.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(index)),
            "metal" => Ok(DeviceChoice::Metal(index)),
            _ => Err(format!(
                "unknown device `{s}`; use cpu, cuda[:N], metal[:N] or auto"
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("CUDA:1".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(1)));
        assert_eq!("metal".parse::<DeviceChoice>(), Ok(DeviceChoice::Metal(0)));
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("tpu"));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn missing_backend_is_a_plain_error() {
        if !cfg!(feature = "cuda") {
            let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("without CUDA"), "{err}");
        }
        if !cfg!(feature = "metal") {
            let err = DeviceChoice::Metal(0).open().unwrap_err().to_string();
            assert!(err.contains("without Metal"), "{err}");
        }
    }
}
