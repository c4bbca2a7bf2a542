//! `loadtest`: see `loadtest --help` and loadtest/README.md.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;

use classroom_signaling::token::TokenIssuer;
use loadtest::cli::{Cli, TargetKind};
use loadtest::janus::Janus;
use loadtest::report;
use loadtest::run::{self, RunConfig};
use loadtest::server::SpawnedServer;
use loadtest::signal::Classroom;

/// Raises the soft open-file limit to the hard one. Every pupil holds a TCP socket and one or
/// two UDP sockets here, and a spawned server inherits the limit and holds a TCP socket per
/// pupil: with the common soft limit of 1024, a join storm of a few hundred pupils would fail on
/// `EMFILE` in the generator or the server rather than measure anything.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                eprintln!("loadtest: could not raise the open-file limit; large runs may fail");
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    // Quiet unless RUST_LOG asks (str0m's own logs are how a lost packet is explained).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(lesson(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the lesson; `Ok(false)` when it ran but some participant failed or got no media.
async fn lesson(cli: Cli) -> Result<bool> {
    loadtest::clock::epoch();
    let spawned = match &cli.spawn_server {
        Some(bin) => Some(
            SpawnedServer::start(bin)
                .await
                .context("start the server")?,
        ),
        None => None,
    };
    let (url, secret, server_pid) = match &spawned {
        Some(s) => (s.ws_url(), s.secret.clone(), Some(s.pid())),
        None => {
            let secret = match (&cli.secret, &cli.secret_file) {
                (_, Some(path)) => std::fs::read_to_string(path)
                    .with_context(|| format!("read {}", path.display()))?
                    .trim()
                    .to_owned(),
                (Some(s), None) => s.clone(),
                // Janus mints no tokens.
                (None, None) if cli.target == TargetKind::Janus => String::new(),
                (None, None) => bail!(
                    "the server's token secret is needed: --secret-file, --secret or CLASSROOM_TOKEN_SECRET (or --spawn-server)"
                ),
            };
            (cli.url.clone(), secret, cli.server_pid)
        }
    };
    let cfg = RunConfig {
        pupils: cli.pupils,
        join_rate: cli.join_rate,
        duration: cli.duration,
        publishers: cli.publishers.min(cli.pupils),
        cap_kbps: cli.pupil_cap_kbps,
        client: cli.client,
        audio_only: cli.audio_only,
        max_layer: cli.max_layer,
        fps: cli.fps,
        keyframe_interval: cli.keyframe_interval,
        max_payload: cli.max_payload,
        bind_ip: cli.bind_ip,
        server_pid: match cli.target {
            TargetKind::Classroom => server_pid,
            TargetKind::Janus => cli.janus_pid.or(server_pid),
        },
        server_media_port: spawned.as_ref().map(|s| s.media.port()),
        metrics: match cli.target {
            TargetKind::Classroom => cli.metrics.or(spawned.as_ref().map(|s| s.metrics)),
            TargetKind::Janus => None,
        },
        settle: cli.settle,
        progress: !cli.quiet,
        churn_per_sec: if cli.churn_per_sec.is_finite() {
            cli.churn_per_sec.max(0.0)
        } else {
            0.0
        },
        churn_abrupt: cli.churn_abrupt,
    };
    let outcome = match cli.target {
        TargetKind::Classroom => {
            let target = Arc::new(Classroom {
                url,
                room: cli.room.clone(),
                issuer: TokenIssuer::new(secret.as_bytes()),
            });
            run::run(target, &cfg).await
        }
        TargetKind::Janus => {
            let target = Arc::new(Janus::new(&cli.janus_url, &cli.room, cli.pupils));
            run::run(target, &cfg).await
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Some(s) = &spawned {
                eprintln!("server log:\n{}", s.log_text());
            }
            return Err(e.into());
        }
    };
    let summary = report::summarise(&cfg, &outcome);
    print!("{}", report::table(&summary));
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&summary).context("encode the summary")?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(summary.ok())
}
