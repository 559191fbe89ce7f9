//! The `jamf-sync` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = jamf_sync::cli::Cli::parse();
    let result = jamf_sync::cli::run(cli).await;
    // `jamf-sync bench` measures a separate sync process's memory this way.
    if std::env::var_os("JAMF_SYNC_REPORT_PEAK_RSS").is_some() {
        if let Some(kb) = jamf_sync::bench::peak_rss_kb() {
            eprintln!("peak_rss_kb={kb}");
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
