//! Diagnostics go to standard error, in either format: standard output is kept for what the
//! commands print (invite links), so scripts can read it.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set and not empty, replaces `log.level`:
/// it is what Rust developers reach for first.
pub fn init(log: &LogConfig) -> anyhow::Result<()> {
    let filter =
        match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
                .with_context(|| format!("RUST_LOG={directives:?}"))?,
            _ => EnvFilter::try_new(&log.level)
                .with_context(|| format!("log.level {:?}", log.level))?,
        };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
