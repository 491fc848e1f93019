//! Standard output, written in one place: a reader that goes away (`convlens predict --json |
//! head`) ends the program quietly with exit code 0, as the output is no longer wanted; any
//! other write error (a full disk, `> /dev/full`) is reported on stderr with exit code 1. No
//! write to stdout panics. Diagnostics go to stderr through [`errln!`], which ignores a reader
//! that went away (`convlens embed DIR 2>&1 | head -c1`): the work goes on and its files are
//! still written.

use std::io::Write;

/// Writes formatted text to stdout (see the module doc for what a failed write does).
pub fn write_fmt(args: std::fmt::Arguments) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        stdout_failed(&e);
    }
}

/// Writes formatted text to stderr; a failed write is ignored (see the module doc).
pub fn write_err(args: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Writes `value` to stdout as pretty JSON and a newline.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        stdout_failed(&e);
    }
}

/// Ends the process after a failed write to stdout.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    write_err(format_args!(
        "error: cannot write to standard output: {e}\n"
    ));
    std::process::exit(1);
}

/// `println!` through [`write_fmt`]: never panics on a closed pipe or a full disk.
macro_rules! outln {
    () => {
        $crate::cli::output::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write_fmt`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_fmt(format_args!($($arg)*))
    };
}

/// `eprintln!` through [`write_err`]: never panics when stderr is a closed pipe.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};
