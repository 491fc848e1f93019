//! Ctrl-C for the commands that read a whole folder (`embed`, `suspects`, `examples`,
//! `probe`): the press asks the job to stop at its next step, so what is finished stays (the
//! features or examples already cached) and no output is half written; the command then says
//! so and exits with 130, as a shell reports an interrupted program.

use std::process::ExitCode;

use super::output::errln;
use crate::cancel::CancelToken;
use crate::{Error, Result};

/// Exit code of an interrupted command (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// A token that Ctrl-C cancels (a warning on stderr when the handler cannot be installed).
pub fn cancel_on_ctrl_c() -> CancelToken {
    let cancel = CancelToken::new();
    let on_interrupt = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || on_interrupt.cancel()) {
        errln!("warning: Ctrl-C will not stop cleanly ({e})");
    }
    cancel
}

/// `result` with a cancellation turned into exit code [`INTERRUPTED`] after a line saying that
/// nothing was written and what was `kept`; other errors pass through.
pub fn or_interrupted(result: Result<ExitCode>, kept: Option<&str>) -> Result<ExitCode> {
    match result {
        Err(Error::Cancelled) => {
            match kept {
                Some(kept) => errln!("interrupted: nothing was written; {kept}"),
                None => errln!("interrupted: nothing was written"),
            }
            Ok(ExitCode::from(INTERRUPTED))
        }
        other => other,
    }
}
