//! `intake`: parse the command line, load settings, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use intake::cli::{self, Cli};
use intake::config::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (settings, source) = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("intake: {e}");
            return ExitCode::from(2);
        }
    };
    intake::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("intake: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(cli, settings, source))
}
