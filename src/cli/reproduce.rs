//! `convlens reproduce SIDECAR.json [--out F.png] [--device D]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Progress;
use super::output::{errln, outln};
use crate::Result;
use crate::device::DeviceChoice;
use crate::export;

/// Arguments of `convlens reproduce`.
#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// The JSON sidecar written beside a figure.
    pub sidecar: PathBuf,
    /// Where to write the figure, .png or .jpg (default: `<sidecar stem>.reproduced.png` beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the recorded device (cpu, cuda[:N], metal[:N], auto).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
}

/// Renders the figure again; exit code 1 if its bytes differ from the recorded PNG's.
pub fn run(args: &ReproduceArgs) -> Result<ExitCode> {
    if let Some(out) = &args.out {
        export::check_figure_path(out)?;
        crate::fsutil::ensure_writable_file(out)?;
        crate::fsutil::check_not_input(out, &[&args.sidecar])?;
    }
    let device = args.device.map(|d| d.open()).transpose()?;
    let mut bar = Progress::new(0, "reproduce");
    let r = export::reproduce(
        &args.sidecar,
        args.out.as_deref(),
        device,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            true
        },
    )?;
    bar.finish();
    if let Some(version) = &r.made_by_other_version {
        errln!(
            "note: the figure was made by convlens {version}, this is {}",
            export::VERSION
        );
    }
    outln!("figure: {}", r.png.display());
    if r.identical {
        outln!("identical to the recorded PNG (same SHA-256)");
        Ok(ExitCode::SUCCESS)
    } else {
        match r.difference {
            Some(d) if d.pixels == 0 => errln!(
                "the new PNG has the recorded one's pixels but other bytes (another PNG encoder?)"
            ),
            Some(d) => errln!(
                "the new PNG differs from the recorded one in {} of {} pixels, by at most {}/255",
                d.pixels,
                d.of,
                d.max
            ),
            None => errln!("the new PNG differs from the recorded one"),
        }
        match &r.made_with_other_cpu_kernels {
            Some(theirs) => errln!(
                "the figure was computed with {theirs} CPU kernels, this machine's are {}: \
                 their rounding differs",
                crate::ops::cpu_kernels()
            ),
            None => errln!("(another device, build or input?)"),
        }
        Ok(ExitCode::FAILURE)
    }
}
