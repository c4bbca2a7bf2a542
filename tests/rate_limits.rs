//! Sign-in rate limits behind a reverse proxy, and the audit log's bounds: over real HTTP
//! against an in-process server with the sample roster.
//!
//! * Behind a configured proxy, clients are counted apart by the forwarded address, so one
//!   client's failed attempts do not lock out another behind the same proxy.
//! * A forwarded header from a peer that is not a trusted proxy is ignored.
//! * Attempts the limit refuses write no audit rows (one per address per window).
//! * Audit rows past the retention are deleted by the purge and counted in `/metrics`.
//!
//! Each runs on SQLite and, with `CLASSROOM_TEST_POSTGRES_URL` set, on PostgreSQL.

use crate::portal_support as portal;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom_domain::{Action, AuditEntry, AuditFilter, AuditRecord, Db};
use portal::{Backend, Options, PortalServer, bounded, client, location, now, set_cookie};
use reqwest::StatusCode;
use serde_json::json;

/// Sign-in attempts one address may make in the limit's window (`signin_limits::PER_ADDRESS`).
const PER_ADDRESS: usize = 300;
const LIMIT: Duration = Duration::from_secs(120);
const PROXY: &str = "127.0.0.1/32";

on_both_databases!(
    clients_behind_a_trusted_proxy_are_limited_apart,
    forwarded_header_from_an_untrusted_peer_is_ignored,
    refused_attempts_add_no_audit_rows,
    audit_rows_past_the_retention_are_purged,
);

/// A sign-in link POST as the link page makes it, optionally through a proxy that says the
/// client was `forwarded_for`. Returns the status and the redirect target.
async fn post_link(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    forwarded_for: Option<&str>,
) -> Result<(StatusCode, String, Option<String>)> {
    let mut req = http.post(format!("{base}/auth/link/{token}"));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let r = req.send().await?;
    Ok((
        r.status(),
        location(r.headers()),
        set_cookie(r.headers(), "classroom_session"),
    ))
}

/// A link token of the right shape that no link has.
fn unknown_token() -> Result<String> {
    classroom_auth::token::new_token().map_err(|e| anyhow::anyhow!("{e:?}"))
}

async fn failed_sign_ins(db: &Db) -> Result<Vec<AuditRecord>> {
    Ok(classroom_domain::audit_log(
        db,
        &AuditFilter {
            action: Some(Action::SignInFailed),
            limit: 100_000,
            ..AuditFilter::default()
        },
    )
    .await?)
}

/// Attempts that the limit lets through beyond [`PER_ADDRESS`] while a test runs: the bucket
/// earns one back every 2 s (300 per 10 minutes), and a slow machine takes seconds for 300.
const REFILL_SLACK: usize = 50;

/// Sign-in attempts with unknown links from `forwarded_for(i)` until the limit refuses one;
/// returns how many it let through (each refused as an invalid link). Fails if the limit never
/// trips.
async fn attempts_until_limited(
    server: &PortalServer,
    forwarded_for: impl Fn(usize) -> Option<String>,
) -> Result<usize> {
    let http = client();
    for i in 0..PER_ADDRESS + REFILL_SLACK {
        let (status, to, _) = post_link(
            &http,
            &server.url(),
            &unknown_token()?,
            forwarded_for(i).as_deref(),
        )
        .await?;
        match status {
            StatusCode::TOO_MANY_REQUESTS => return Ok(i),
            StatusCode::SEE_OTHER if to == "/signin.html?error=link_invalid" => {}
            other => anyhow::bail!("bad attempt {i}: {other} to {to:?}"),
        }
    }
    anyhow::bail!("{} bad attempts and no 429", PER_ADDRESS + REFILL_SLACK)
}

async fn clients_behind_a_trusted_proxy_are_limited_apart(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options {
            trusted_proxies: vec![PROXY.to_owned()],
            ..Options::on(&backend)
        })
        .await?;
        let base = server.url();
        let http = client();
        // Both clients reach the server from the proxy's address (127.0.0.1).
        let attacker = "203.0.113.66";
        let let_through = attempts_until_limited(&server, |_| Some(attacker.to_owned())).await?;
        assert!(let_through >= PER_ADDRESS, "limited after {let_through}");

        // A pupil's guardian behind the same proxy still signs in.
        let link = server.link("g-001").await?;
        let token = link.rsplit('/').next().context("link token")?;
        let (status, to, cookie) = post_link(&http, &base, token, Some("198.51.100.7")).await?;
        assert_eq!(status, StatusCode::SEE_OTHER, "redirected to {to}");
        assert!(cookie.is_some(), "signed in, redirected to {to}");

        // The audit log names the clients, not the proxy.
        let failed = failed_sign_ins(server.handle.db()).await?;
        assert!(!failed.is_empty());
        assert!(
            failed
                .iter()
                .all(|e| e.remote_addr.as_deref() == Some(attacker)),
            "failed attempts recorded from {:?}",
            failed.iter().map(|e| &e.remote_addr).collect::<Vec<_>>()
        );
        let sign_ins = classroom_domain::audit_log(
            server.handle.db(),
            &AuditFilter {
                action: Some(Action::SignIn),
                ..AuditFilter::default()
            },
        )
        .await?;
        assert_eq!(sign_ins.len(), 1);
        assert_eq!(sign_ins[0].remote_addr.as_deref(), Some("198.51.100.7"));
        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn forwarded_header_from_an_untrusted_peer_is_ignored(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        // A proxy is configured, but the test client (127.0.0.1) is not it.
        let server = PortalServer::start(Options {
            trusted_proxies: vec!["10.0.0.0/8".to_owned()],
            ..Options::on(&backend)
        })
        .await?;
        // A new made-up address on every attempt does not buy new attempts.
        let let_through =
            attempts_until_limited(&server, |i| Some(format!("203.0.113.{}", i % 250))).await?;
        assert!(let_through >= PER_ADDRESS, "limited after {let_through}");
        let failed = failed_sign_ins(server.handle.db()).await?;
        assert!(
            failed
                .iter()
                .all(|e| e.remote_addr.as_deref() == Some("127.0.0.1")),
            "recorded from {:?}",
            failed.iter().map(|e| &e.remote_addr).collect::<Vec<_>>()
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn refused_attempts_add_no_audit_rows(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options::on(&backend)).await?;
        let http = client();
        let mut limited = 0;
        for i in 0..1_000 {
            let (status, to, _) = post_link(&http, &server.url(), "not-a-token", None).await?;
            match status {
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                StatusCode::SEE_OTHER if to == "/signin.html?error=link_invalid" => {}
                other => anyhow::bail!("attempt {i}: {other} to {to:?}"),
            }
        }
        let let_through = 1_000 - limited;
        assert!(
            (PER_ADDRESS..PER_ADDRESS + REFILL_SLACK).contains(&let_through),
            "the limit let {let_through} of 1000 through"
        );
        let failed = failed_sign_ins(server.handle.db()).await?;
        let reason = |e: &AuditRecord| e.detail["reason"].as_str().unwrap_or("").to_owned();
        let malformed = failed.iter().filter(|e| reason(e) == "malformed").count();
        let tripped: Vec<_> = failed
            .iter()
            .filter(|e| reason(e) == "rate_limited")
            .collect();
        // The attempts the limit let through, and one row for the limit, not one per refusal.
        assert_eq!(malformed, let_through);
        assert_eq!(tripped.len(), 1, "one row when the limit trips");
        assert_eq!(failed.len(), let_through + 1);
        assert_eq!(
            tripped[0].detail,
            json!({ "method": "link", "reason": "rate_limited", "limit": "address" })
        );
        assert_eq!(tripped[0].remote_addr.as_deref(), Some("127.0.0.1"));
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// `classroom_purged_total{kind="audit_entry"}` from /metrics, if present.
async fn purged_audit_entries(base: &str) -> Result<Option<u64>> {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let prefix = "classroom_purged_total{kind=\"audit_entry\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().parse().context("classroom_purged_total"))
        .transpose()
}

async fn audit_rows_past_the_retention_are_purged(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let server = PortalServer::start(Options {
            purge_interval: Some("1s".to_owned()),
            ..Options::on(&backend)
        })
        .await?;
        let db = server.handle.db();
        let day = 86_400;
        // The default retention is 400 days: three rows past it, two within it.
        for (age_days, subject) in [
            (800, "old-1"),
            (401, "old-2"),
            (401, "old-3"),
            (399, "kept-1"),
            (0, "kept-2"),
        ] {
            classroom_domain::audit(
                db,
                &AuditEntry {
                    at: now() - age_days * day,
                    actor: Some("a-001"),
                    action: Action::Exported,
                    subject: Some(subject),
                    detail: json!({}),
                    remote_addr: Some("192.0.2.1"),
                },
            )
            .await?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let purged = purged_audit_entries(&server.metrics_url()).await?;
            if purged == Some(3) {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no audit purge within 20 s: /metrics says {purged:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = classroom_domain::audit_log(
            db,
            &AuditFilter {
                action: Some(Action::Exported),
                ..AuditFilter::default()
            },
        )
        .await?;
        let mut subjects: Vec<_> = left.iter().filter_map(|e| e.subject.clone()).collect();
        subjects.sort();
        assert_eq!(subjects, ["kept-1", "kept-2"]);
        server.shutdown().await;
        Ok(())
    })
    .await
}
