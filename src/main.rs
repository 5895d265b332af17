//! The `anomalyd` binary: parses the command line, sets up logging and runs the job.

use anomalyd::daemon::failure::{Fatal, FatalKind};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = anomalyd::cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "anomalyd: --log {:?} is not a valid filter ({e}); using \"info\"",
            cli.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match anomalyd::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("anomalyd: error: {}", anomalyd::cli::error_line(&error));
            if error.is::<anomalyd::cli::run::BadConfig>() {
                // EX_USAGE: the configuration is wrong, restarting will not help.
                std::process::ExitCode::from(FatalKind::Config.exit_code())
            } else if let Some(fatal) = error.downcast_ref::<Fatal>().or_else(|| {
                error
                    .downcast_ref::<anomalyd::daemon::DaemonError>()
                    .and_then(|e| e.fatal())
            }) {
                // docs/reliability.md, "Exit codes".
                std::process::ExitCode::from(fatal.kind.exit_code())
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
