use clap::Parser;

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in `main`, before any thread is started.
    unsafe { convlens::ops::configure_cpu_threads() };
    convlens::cli::run(convlens::cli::Cli::parse())
}
