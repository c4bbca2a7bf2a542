//! Sign-in at the identity provider over real HTTP, end to end: a real test issuer, the server's
//! `/auth/oidc/start` and `/auth/oidc/callback`, the roster in a real database. Who may sign in
//! as whom (verified e-mail, accounts bound by `iss` + `sub`, the tenant allow-list), and where
//! the browser is sent afterwards (`next`).
//!
//! Each test runs on a temporary SQLite file and, when `CLASSROOM_TEST_POSTGRES_URL` is set, on
//! a fresh PostgreSQL database. Roster: t-001 is t.yamada@mizuho-es.example.jp (a teacher, home
//! `/lobby.html`), g-001 g.nakagawa@home.example.jp (a guardian).

use crate::portal_support as portal;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use classroom::config::{OidcSettings, Secret};
use classroom_auth::test_issuer::{TestIssuer, TestIssuerConfig, TestUser};
use classroom_domain::{Action, AuditFilter, Table, audit_log};
use portal::{Backend, Options, PortalServer, Session, bounded, client, location, set_cookie};
use reqwest::StatusCode;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

on_both_databases!(
    unverified_email_is_refused_and_audited,
    bound_account_keeps_its_person_and_its_address_cannot_be_taken,
    tenant_allow_list_admits_only_listed_tenants,
);

const TEACHER_EMAIL: &str = "t.yamada@mizuho-es.example.jp";

fn user(subject: &str, email: &str, verified: bool) -> TestUser {
    TestUser {
        subject: subject.into(),
        email: Some(email.into()),
        email_verified: verified,
        name: None,
        hosted_domain: None,
        tenant_id: None,
    }
}

/// A test issuer and a server that signs in with it.
async fn start(backend: &Backend, allowed_tenants: &[&str]) -> Result<(TestIssuer, PortalServer)> {
    let issuer = TestIssuer::start(TestIssuerConfig::default()).await?;
    let server = PortalServer::start(Options {
        oidc: Some(OidcSettings {
            issuer: issuer.issuer().to_owned(),
            client_id: issuer.client_id().to_owned(),
            client_secret: Some(Secret::new("test-secret")),
            allowed_tenants: allowed_tenants.iter().map(|t| t.to_string()).collect(),
            ..OidcSettings::default()
        }),
        ..Options::on(backend)
    })
    .await?;
    Ok((issuer, server))
}

/// What a browser does from `/auth/oidc/start?next=…` (`next_query`: already URL-encoded) to
/// the callback's answer; the test issuer approves at once.
async fn login(base: &str, next_query: Option<&str>) -> Result<reqwest::Response> {
    let http = client();
    let start_url = match next_query {
        Some(n) => format!("{base}/auth/oidc/start?next={n}"),
        None => format!("{base}/auth/oidc/start"),
    };
    let start = http.get(start_url).send().await?;
    ensure!(start.status().is_redirection(), "start: {}", start.status());
    let cookies: Vec<String> = start
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
        .collect();
    let authorize = http.get(location(start.headers())).send().await?;
    ensure!(
        authorize.status().is_redirection(),
        "authorize: {}",
        authorize.status()
    );
    let callback = location(authorize.headers());
    ensure!(
        callback.starts_with(&format!("{base}/auth/oidc/callback")),
        "{callback}"
    );
    Ok(http
        .get(callback)
        .header("cookie", cookies.join("; "))
        .send()
        .await?)
}

/// Signs in and returns whom the session belongs to, or the sign-in page's error code.
async fn signed_in_as(base: &str) -> Result<std::result::Result<String, String>> {
    let answer = login(base, None).await?;
    ensure!(
        answer.status() == StatusCode::SEE_OTHER,
        "callback: {}",
        answer.status()
    );
    let to = location(answer.headers());
    match set_cookie(answer.headers(), "classroom_session") {
        Some(cookie) => {
            let session = Session::with_cookie(base, &cookie).await?;
            Ok(Ok(session.person_id().to_owned()))
        }
        None => {
            let code = to
                .strip_prefix("/signin.html?error=")
                .with_context(|| format!("refused without an error code: {to}"))?;
            Ok(Err(code.to_owned()))
        }
    }
}

async fn failed_sign_ins(server: &PortalServer) -> Result<Vec<Value>> {
    let rows = audit_log(
        server.handle.db(),
        &AuditFilter {
            action: Some(Action::SignInFailed),
            ..AuditFilter::default()
        },
    )
    .await?;
    Ok(rows.into_iter().map(|r| r.detail).collect())
}

/// An identity provider where people set their own address: someone claims a teacher's.
async fn unverified_email_is_refused_and_audited(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let (issuer, server) = start(&backend, &[]).await?;
        let base = server.url();
        issuer.set_user(user("self-service-7", TEACHER_EMAIL, false));
        assert_eq!(
            signed_in_as(&base).await?,
            Err("email_unverified".to_owned())
        );
        let failures = failed_sign_ins(&server).await?;
        let row = failures
            .iter()
            .find(|d| d["reason"] == "email_unverified")
            .with_context(|| format!("no audit row for the refusal: {failures:?}"))?;
        assert_eq!(row["sub"], "self-service-7");
        assert_eq!(row["email"], TEACHER_EMAIL);
        assert_eq!(row["email_verified"], false);
        assert_eq!(
            server.handle.db().count(Table::ExternalIdentities).await?,
            0
        );
        // Nor does the address case or a missing claim change that.
        issuer.set_user(TestUser {
            email: None,
            ..user("self-service-7", TEACHER_EMAIL, true)
        });
        assert_eq!(signed_in_as(&base).await?, Err("no_account".to_owned()));

        // The same address, verified: the teacher.
        issuer.set_user(user("entra-oid-1", TEACHER_EMAIL, true));
        assert_eq!(signed_in_as(&base).await?, Ok("t-001".to_owned()));
        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn bound_account_keeps_its_person_and_its_address_cannot_be_taken(
    backend: Backend,
) -> Result<()> {
    bounded(LIMIT, async {
        let (issuer, server) = start(&backend, &[]).await?;
        let base = server.url();
        issuer.set_user(user("teacher-sub", TEACHER_EMAIL, true));
        assert_eq!(signed_in_as(&base).await?, Ok("t-001".to_owned()));

        // The teacher's address changes at the provider (and is not even verified any more):
        // the account is still the teacher.
        issuer.set_user(user(
            "teacher-sub",
            "yamada.hanako@new-domain.example.jp",
            false,
        ));
        assert_eq!(signed_in_as(&base).await?, Ok("t-001".to_owned()));
        // Even if the new address is someone else's in the roster.
        issuer.set_user(user("teacher-sub", "g.nakagawa@home.example.jp", true));
        assert_eq!(signed_in_as(&base).await?, Ok("t-001".to_owned()));

        // Someone else's account later claims the teacher's old address, verified: refused.
        issuer.set_user(user("someone-else", TEACHER_EMAIL, true));
        assert_eq!(signed_in_as(&base).await?, Err("account_bound".to_owned()));
        let failures = failed_sign_ins(&server).await?;
        assert!(
            failures
                .iter()
                .any(|d| d["reason"] == "bound_to_another_account" && d["sub"] == "someone-else"),
            "{failures:?}"
        );
        assert_eq!(
            server.handle.db().count(Table::ExternalIdentities).await?,
            1
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

async fn tenant_allow_list_admits_only_listed_tenants(backend: Backend) -> Result<()> {
    bounded(LIMIT, async {
        let (issuer, server) = start(&backend, &["tenant-a", "mizuho-es.example.jp"]).await?;
        let base = server.url();

        // Another tenant's account, with the teacher's address verified: refused, audited.
        issuer.set_user(TestUser {
            tenant_id: Some("tenant-b".into()),
            ..user("b-1", TEACHER_EMAIL, true)
        });
        assert_eq!(
            signed_in_as(&base).await?,
            Err("tenant_not_allowed".to_owned())
        );
        // A consumer account (no tenant at all).
        issuer.set_user(user("consumer-1", TEACHER_EMAIL, true));
        assert_eq!(
            signed_in_as(&base).await?,
            Err("tenant_not_allowed".to_owned())
        );
        let failures = failed_sign_ins(&server).await?;
        assert_eq!(
            failures
                .iter()
                .filter(|d| d["reason"] == "tenant_not_allowed")
                .count(),
            2,
            "{failures:?}"
        );

        // The school's Entra tenant: no email_verified (Entra sends none), the tenant vouches.
        issuer.set_user(TestUser {
            tenant_id: Some("tenant-a".into()),
            ..user("a-1", TEACHER_EMAIL, false)
        });
        assert_eq!(signed_in_as(&base).await?, Ok("t-001".to_owned()));
        // A listed Workspace domain.
        issuer.set_user(TestUser {
            hosted_domain: Some("mizuho-es.example.jp".into()),
            ..user("ws-1", "g.nakagawa@home.example.jp", true)
        });
        assert_eq!(signed_in_as(&base).await?, Ok("g-001".to_owned()));
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Every `next` of the shared table, through start and callback: the browser ends up on the
/// site, at the teacher's home page, never elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_values_stay_on_the_site() -> Result<()> {
    bounded(LIMIT, async {
        #[derive(serde::Deserialize)]
        struct Cases {
            refused: Vec<String>,
            accepted: Vec<(String, String)>,
        }
        let cases: Cases = serde_json::from_str(include_str!("browser/safe-next-cases.json"))?;
        let (issuer, server) = start(&Backend::Sqlite, &[]).await?;
        let base = server.url();
        // Every byte but letters and digits percent-encoded, as a page building the link would.
        let encode = |v: &str| -> String {
            v.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        // Sign-ins are limited per account (10 in 10 minutes), so each round is a new account
        // of the teacher's, bound afresh.
        let mut round = 0;
        let mut sign_in = async |next_query: &str| -> Result<reqwest::Response> {
            round += 1;
            classroom_domain::unbind_person(server.handle.db(), "t-001").await?;
            issuer.set_user(user(&format!("teacher-{round}"), TEACHER_EMAIL, true));
            let answer = login(&base, Some(next_query)).await?;
            ensure!(
                answer.status() == StatusCode::SEE_OTHER,
                "callback: {}",
                answer.status()
            );
            ensure!(
                set_cookie(answer.headers(), "classroom_session").is_some(),
                "not signed in; sent to {}",
                location(answer.headers())
            );
            Ok(answer)
        };
        for value in &cases.refused {
            let answer = sign_in(&encode(value)).await?;
            assert_eq!(location(answer.headers()), "/lobby.html", "next={value:?}");
        }
        // The request exactly as reported.
        let answer = sign_in("/%09/evil.example/x").await?;
        assert_eq!(location(answer.headers()), "/lobby.html");
        for (value, expected) in &cases.accepted {
            let answer = sign_in(&encode(value)).await?;
            assert_eq!(&location(answer.headers()), expected, "next={value:?}");
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
