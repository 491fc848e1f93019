use clap::Parser;

fn main() -> std::process::ExitCode {
    convlens::ops::configure_cpu_threads();
    convlens::cli::run(convlens::cli::Cli::parse())
}
