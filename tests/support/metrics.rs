//! Reading the server's `/metrics` (Prometheus text) in tests.

use super::TestServer;
use anyhow::{Context, Result};

/// The server's `/metrics` text.
pub async fn scrape(server: &TestServer) -> Result<String> {
    Ok(
        reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
            .await?
            .text()
            .await?,
    )
}

/// The value of one series (`name{labels}`, exactly as rendered) in a `/metrics` text.
pub fn series(metrics: &str, series: &str) -> Result<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .with_context(|| format!("/metrics has no {series}"))?
        .trim()
        .parse()
        .with_context(|| format!("{series} is not a count"))
}

/// One media shard's value of `name` (`name{shard="i"}`).
pub fn shard_series(metrics: &str, name: &str, shard: usize) -> Result<u64> {
    series(metrics, &format!("{name}{{shard=\"{shard}\"}}"))
}
