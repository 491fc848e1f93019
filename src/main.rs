use clap::Parser;

fn main() -> std::process::ExitCode {
    convlens::cli::run(convlens::cli::Cli::parse())
}
