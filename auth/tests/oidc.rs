//! Full authorization code + PKCE flows against the test issuer over real HTTP, and the
//! refusals: forged signature, wrong audience, wrong issuer, expired, nonce and state
//! mismatches, a wrong PKCE verifier, a replayed code.

use std::future::Future;
use std::time::Duration;

use classroom_auth::oidc::parse_callback;
use classroom_auth::test_issuer::{Tamper, TestIssuer, TestIssuerConfig, TestUser};
use classroom_auth::{ClientAuth, OidcClient, OidcError, PendingLogin, VerifiedIdentity};

const REDIRECT: &str = "http://127.0.0.1:8080/auth/oidc/callback";

/// Every test is bounded: a hang is a failure, not a stuck CI run.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(v) => v,
        Err(_) => panic!("test timed out"),
    }
}

async fn setup(config: TestIssuerConfig) -> (TestIssuer, OidcClient) {
    let idp = TestIssuer::start(config).await.expect("issuer starts");
    let client = OidcClient::discover(idp.client_config(REDIRECT))
        .await
        .expect("discovery");
    (idp, client)
}

/// What a browser does between `begin` and the callback: follow the authorize URL (the test
/// issuer approves at once) and read `code` and `state` from the redirect.
async fn authorize(client: &OidcClient) -> (PendingLogin, String, String) {
    let (url, pending) = client.begin().expect("begin");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let resp = browser.get(url).send().await.expect("authorize request");
    assert_eq!(resp.status(), reqwest::StatusCode::FOUND);
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location header");
    let callback = url::Url::parse(location).expect("callback URL");
    assert!(location.starts_with(REDIRECT), "redirected to {location}");
    let callback = parse_callback(callback.query().unwrap_or_default()).expect("code and state");
    (pending, callback.code, callback.state)
}

async fn sign_in(client: &OidcClient) -> Result<VerifiedIdentity, OidcError> {
    let (pending, code, state) = authorize(client).await;
    client.complete(&pending, &code, &state).await
}

#[tokio::test]
async fn code_flow_with_pkce_signs_in() {
    bounded(async {
        let (idp, client) = setup(TestIssuerConfig::default()).await;
        let (url, pending) = client.begin().unwrap();
        // The authorization request carries the S256 challenge of the pending verifier.
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("scope"), Some("openid email profile"));
        assert_eq!(get("state"), Some(pending.state()));

        let id = sign_in(&client).await.expect("sign-in");
        let user = TestUser::default();
        assert_eq!(id.subject, user.subject);
        assert_eq!(id.email, user.email);
        assert!(id.email_verified);
        assert_eq!(id.name, user.name);
        assert_eq!(id.issuer, idp.issuer());
        assert!(idp.last_code_challenge().is_some());
        // One JWKS fetch, cached for the next sign-in.
        sign_in(&client).await.expect("second sign-in");
        assert_eq!(idp.jwks_fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn client_secret_basic_and_public_clients_work() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default())
            .await
            .unwrap();
        let mut config = idp.client_config(REDIRECT);
        config.client_auth = ClientAuth::ClientSecretBasic;
        let client = OidcClient::discover(config).await.unwrap();
        sign_in(&client).await.expect("basic auth");

        let public = TestIssuer::start(TestIssuerConfig {
            client_secret: None,
            ..TestIssuerConfig::default()
        })
        .await
        .unwrap();
        let client = OidcClient::discover(public.client_config(REDIRECT))
            .await
            .unwrap();
        sign_in(&client).await.expect("public client");
    })
    .await;
}

#[tokio::test]
async fn wrong_client_secret_is_refused_by_the_issuer() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default()).await.unwrap();
        let mut config = idp.client_config(REDIRECT);
        config.client_secret = Some("wrong".into());
        let client = OidcClient::discover(config).await.unwrap();
        let err = sign_in(&client).await.unwrap_err();
        assert!(
            matches!(&err, OidcError::TokenEndpoint { status: 401, error, .. } if error == "invalid_client"),
            "{err:?}"
        );
    })
    .await;
}

async fn refused_with(tamper: Tamper) -> OidcError {
    let (idp, client) = setup(TestIssuerConfig::default()).await;
    idp.set_tamper(tamper);
    sign_in(&client).await.expect_err("tampered token accepted")
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let err = bounded(refused_with(Tamper::ForgedSignature)).await;
    assert!(matches!(err, OidcError::BadSignature), "{err:?}");
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let err = bounded(refused_with(Tamper::WrongAudience)).await;
    assert!(matches!(err, OidcError::WrongAudience), "{err:?}");
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let err = bounded(refused_with(Tamper::WrongIssuer)).await;
    assert!(matches!(err, OidcError::WrongIssuer), "{err:?}");
}

#[tokio::test]
async fn expired_token_is_refused() {
    let err = bounded(refused_with(Tamper::Expired)).await;
    assert!(matches!(err, OidcError::Expired), "{err:?}");
}

#[tokio::test]
async fn nonce_mismatch_is_refused() {
    let err = bounded(refused_with(Tamper::WrongNonce)).await;
    assert!(matches!(err, OidcError::NonceMismatch), "{err:?}");
}

#[tokio::test]
async fn unsigned_and_hmac_tokens_are_refused() {
    let err = bounded(refused_with(Tamper::AlgNone)).await;
    assert!(
        matches!(err, OidcError::DisallowedAlgorithm(ref a) if a == "none"),
        "{err:?}"
    );
    let err = bounded(refused_with(Tamper::AlgHs256)).await;
    assert!(
        matches!(err, OidcError::DisallowedAlgorithm(ref a) if a == "HS256"),
        "{err:?}"
    );
}

#[tokio::test]
async fn state_mismatch_is_refused_before_redeeming() {
    bounded(async {
        let (_idp, client) = setup(TestIssuerConfig::default()).await;
        let (pending, code, _state) = authorize(&client).await;
        // The callback of another login (login CSRF): refused, and the code stays unused.
        let (other, _, other_state) = authorize(&client).await;
        assert_ne!(pending.state(), other.state());
        let err = client
            .complete(&pending, &code, &other_state)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::StateMismatch), "{err:?}");
        client
            .complete(&pending, &code, pending.state())
            .await
            .expect("the code was not spent");
    })
    .await;
}

#[tokio::test]
async fn wrong_pkce_verifier_is_refused_by_the_issuer() {
    bounded(async {
        let (_idp, client) = setup(TestIssuerConfig::default()).await;
        let (pending, code, state) = authorize(&client).await;
        // Swap in the verifier of another login: what an attacker who stole the code has.
        let (other, _, _) = authorize(&client).await;
        let mut tampered = serde_json::to_value(&pending).unwrap();
        tampered["code_verifier"] = serde_json::to_value(&other).unwrap()["code_verifier"].clone();
        let tampered: PendingLogin = serde_json::from_value(tampered).unwrap();
        let err = client.complete(&tampered, &code, &state).await.unwrap_err();
        assert!(
            matches!(&err, OidcError::TokenEndpoint { status: 400, error, .. } if error == "invalid_grant"),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn codes_are_single_use() {
    bounded(async {
        let (_idp, client) = setup(TestIssuerConfig::default()).await;
        let (pending, code, state) = authorize(&client).await;
        client
            .complete(&pending, &code, &state)
            .await
            .expect("first use");
        let err = client.complete(&pending, &code, &state).await.unwrap_err();
        assert!(matches!(err, OidcError::TokenEndpoint { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn key_rotation_refetches_the_jwks_once() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default())
            .await
            .unwrap();
        let mut config = idp.client_config(REDIRECT);
        config.jwks_refetch_interval = Duration::ZERO;
        let client = OidcClient::discover(config).await.unwrap();
        sign_in(&client).await.expect("before rotation");
        idp.rotate_key().unwrap();
        sign_in(&client).await.expect("after rotation");
        assert_eq!(idp.jwks_fetches(), 2);
    })
    .await;
}

#[tokio::test]
async fn unknown_key_within_the_refetch_interval_is_refused() {
    bounded(async {
        let (idp, client) = setup(TestIssuerConfig::default()).await;
        sign_in(&client).await.expect("before rotation");
        idp.rotate_key().unwrap();
        // Default interval (10 s): no second fetch right away.
        let err = sign_in(&client).await.unwrap_err();
        assert!(matches!(err, OidcError::UnknownKey(Some(_))), "{err:?}");
        assert_eq!(idp.jwks_fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn discovery_refuses_another_issuer() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default())
            .await
            .unwrap();
        // Same server, other spelling: the document says 127.0.0.1, so exact comparison fails.
        let mut config = idp.client_config(REDIRECT);
        config.issuer = format!("http://localhost:{}", idp.addr().port());
        let err = OidcClient::discover(config).await.unwrap_err();
        assert!(matches!(err, OidcError::IssuerMismatch { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn minted_tokens_verify_directly() {
    bounded(async {
        let (idp, client) = setup(TestIssuerConfig::default()).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = idp.claims(Some("n1"));
        let good = idp.mint(&claims, Tamper::None).unwrap();
        client
            .verify(&good, "n1", now)
            .await
            .expect("genuine token");
        let forged = idp.mint(&claims, Tamper::ForgedSignature).unwrap();
        assert!(matches!(
            client.verify(&forged, "n1", now).await,
            Err(OidcError::BadSignature)
        ));
        assert!(matches!(
            client.verify(&good, "n2", now).await,
            Err(OidcError::NonceMismatch)
        ));
    })
    .await;
}

#[tokio::test]
async fn an_unverified_email_is_reported_but_not_trusted() {
    bounded(async {
        let (idp, client) = setup(TestIssuerConfig::default()).await;
        let id = sign_in(&client).await.expect("verified sign-in");
        assert_eq!(id.trusted_email(), TestUser::default().email.as_deref());

        // An identity provider where users type their own address, and one claims a guardian's.
        idp.set_user(TestUser {
            subject: "self-service-42".into(),
            email: Some("guardian@example.jp".into()),
            email_verified: false,
            ..TestUser::default()
        });
        let id = sign_in(&client).await.expect("the token itself is valid");
        assert_eq!(id.email.as_deref(), Some("guardian@example.jp"));
        assert!(!id.email_verified);
        assert_eq!(id.trusted_email(), None);
    })
    .await;
}

#[tokio::test]
async fn tenant_allow_list_admits_only_listed_tenants() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default())
            .await
            .unwrap();
        let mut config = idp.client_config(REDIRECT);
        config.allowed_tenants = vec!["tenant-a".into(), "school.example.jp".into()];
        let client = OidcClient::discover(config).await.unwrap();

        // Entra: no email_verified, but the listed tenant's directory vouches for the address.
        idp.set_user(TestUser {
            email_verified: false,
            tenant_id: Some("tenant-a".into()),
            ..TestUser::default()
        });
        let id = sign_in(&client).await.expect("listed tenant");
        assert_eq!(id.trusted_email(), TestUser::default().email.as_deref());

        // Google Workspace domain.
        idp.set_user(TestUser {
            hosted_domain: Some("school.example.jp".into()),
            ..TestUser::default()
        });
        sign_in(&client).await.expect("listed domain");

        for (tid, hd) in [
            (Some("tenant-b"), None),
            (None, Some("evil.example")),
            // A consumer account: no tenant at all, even with a verified address.
            (None, None),
        ] {
            idp.set_user(TestUser {
                tenant_id: tid.map(str::to_owned),
                hosted_domain: hd.map(str::to_owned),
                ..TestUser::default()
            });
            let err = sign_in(&client).await.unwrap_err();
            assert!(
                matches!(err, OidcError::TenantNotAllowed { .. }),
                "tid {tid:?} hd {hd:?}: {err:?}"
            );
        }
    })
    .await;
}

/// Polls `f` until it holds, failing after `limit`.
async fn until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn scheduled_refresh_picks_up_a_rotated_key_without_a_miss() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default())
            .await
            .unwrap();
        let mut config = idp.client_config(REDIRECT);
        config.jwks_refresh = Duration::from_millis(200);
        // An unknown key would not be refetched for an hour: only the schedule can help.
        config.jwks_refetch_interval = Duration::from_secs(3600);
        let client = OidcClient::discover(config).await.unwrap();
        sign_in(&client).await.expect("before rotation");
        let fetched = idp.jwks_fetches();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let old_token = idp.mint(&idp.claims(Some("n1")), Tamper::None).unwrap();

        idp.rotate_key().unwrap();
        until(Duration::from_secs(10), "a scheduled JWKS fetch", || {
            idp.jwks_fetches() > fetched
        })
        .await;
        let id = sign_in(&client).await.expect("the rotated key is known");
        assert_eq!(id.subject, TestUser::default().subject);
        // The retired key was dropped with the refresh.
        let err = client.verify(&old_token, "n1", now).await.unwrap_err();
        assert!(matches!(err, OidcError::UnknownKey(Some(_))), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn the_refresh_task_ends_with_the_client() {
    bounded(async {
        let idp = TestIssuer::start(TestIssuerConfig::default())
            .await
            .unwrap();
        let mut config = idp.client_config(REDIRECT);
        config.jwks_refresh = Duration::from_millis(50);
        let client = OidcClient::discover(config).await.unwrap();
        until(Duration::from_secs(10), "scheduled fetches", || {
            idp.jwks_fetches() >= 2
        })
        .await;
        drop(client);
        // One fetch may be under way when the client goes; after that, none.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let settled = idp.jwks_fetches();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(idp.jwks_fetches(), settled);
    })
    .await;
}
