//! Unit tests of ID token verification with real RS256 signatures (aws-lc-rs) and an explicit
//! clock.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::sign::RsaSigner;
use super::*;

const ISS: &str = "https://idp.example";
const CLIENT: &str = "classroom";
const NONCE: &str = "n-0S6_WzA2Mj";
const NOW: u64 = 1_800_000_000;

/// Key generation is the slow part; share two keys across the tests.
fn signers() -> &'static (RsaSigner, RsaSigner) {
    static S: OnceLock<(RsaSigner, RsaSigner)> = OnceLock::new();
    S.get_or_init(|| {
        let a = RsaSigner::generate("k1").unwrap();
        // Same kid, different key: a forgery that names the real key.
        let b = RsaSigner::generate("k1").unwrap();
        (a, b)
    })
}

fn keys() -> Vec<SigningKey> {
    parse_key_set(&json!({"keys": [signers().0.jwk()]})).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "user-1", "aud": CLIENT, "exp": NOW + 300, "iat": NOW - 5,
        "nonce": NONCE, "email": "sato@school.example.jp", "email_verified": true, "name": "Sato",
    })
}

fn check(token: &str) -> Result<VerifiedIdentity, OidcError> {
    check_with_tenants(token, &[])
}

fn check_with_tenants(token: &str, tenants: &[&str]) -> Result<VerifiedIdentity, OidcError> {
    let issuers = vec![ISS.to_owned()];
    let allowed_tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    let expected = Expected {
        issuers: &issuers,
        client_id: CLIENT,
        nonce: NONCE,
        now: NOW,
        leeway: 60,
        max_age: 600,
        allowed_tenants: &allowed_tenants,
    };
    verify_id_token(token, &keys(), &expected)
}

fn signed(claims: &Value) -> String {
    let s = &signers().0;
    s.sign(&s.header(), claims).unwrap()
}

fn with(f: impl FnOnce(&mut Value)) -> String {
    let mut c = claims();
    f(&mut c);
    signed(&c)
}

#[test]
fn good_token_verifies() {
    let id = check(&signed(&claims())).unwrap();
    assert_eq!(id.subject, "user-1");
    assert_eq!(id.issuer, ISS);
    assert_eq!(id.email.as_deref(), Some("sato@school.example.jp"));
    assert!(id.email_verified);
    assert_eq!(id.name.as_deref(), Some("Sato"));
}

#[test]
fn forged_signature_is_refused() {
    let forger = &signers().1;
    let t = forger.sign(&forger.header(), &claims()).unwrap();
    assert!(matches!(check(&t), Err(OidcError::BadSignature)));
    // A tampered payload under a genuine signature, too.
    let good = signed(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = with(|c| c["sub"] = json!("admin"));
    parts[1] = other.split('.').nth(1).unwrap();
    assert!(matches!(
        check(&parts.join(".")),
        Err(OidcError::BadSignature)
    ));
}

#[test]
fn none_and_hmac_algorithms_are_refused() {
    let s = &signers().0;
    let none = s
        .sign(&json!({"alg": "none", "kid": "k1"}), &claims())
        .unwrap();
    assert!(matches!(check(&none), Err(OidcError::DisallowedAlgorithm(a)) if a == "none"));
    let hs = s
        .sign(&json!({"alg": "HS256", "kid": "k1"}), &claims())
        .unwrap();
    assert!(matches!(check(&hs), Err(OidcError::DisallowedAlgorithm(a)) if a == "HS256"));
    assert!(matches!(
        check("garbage"),
        Err(OidcError::MalformedToken(_))
    ));
}

#[test]
fn unknown_kid_is_reported_for_a_refetch() {
    let s = &signers().0;
    let t = s
        .sign(&json!({"alg": "RS256", "kid": "k2"}), &claims())
        .unwrap();
    assert!(matches!(check(&t), Err(OidcError::UnknownKey(Some(k))) if k == "k2"));
}

#[test]
fn claims_are_checked() {
    assert!(matches!(
        check(&with(|c| c["aud"] = json!("other"))),
        Err(OidcError::WrongAudience)
    ));
    assert!(matches!(
        check(&with(|c| c["iss"] = json!("https://evil.example"))),
        Err(OidcError::WrongIssuer)
    ));
    assert!(matches!(
        check(&with(|c| c["exp"] = json!(NOW - 61))),
        Err(OidcError::Expired)
    ));
    // Within the leeway.
    assert!(check(&with(|c| c["exp"] = json!(NOW - 59))).is_ok());
    assert!(matches!(
        check(&with(|c| c["iat"] = json!(NOW + 120))),
        Err(OidcError::NotYetValid)
    ));
    assert!(matches!(
        check(&with(|c| c["iat"] = json!(NOW - 3600))),
        Err(OidcError::Expired)
    ));
    assert!(matches!(
        check(&with(|c| c["nbf"] = json!(NOW + 120))),
        Err(OidcError::NotYetValid)
    ));
    assert!(matches!(
        check(&with(|c| c["nonce"] = json!("other"))),
        Err(OidcError::NonceMismatch)
    ));
    assert!(matches!(
        check(&with(|c| {
            c.as_object_mut().unwrap().remove("nonce");
        })),
        Err(OidcError::MissingClaim("nonce"))
    ));
    assert!(matches!(
        check(&with(|c| {
            c.as_object_mut().unwrap().remove("exp");
        })),
        Err(OidcError::MissingClaim("exp"))
    ));
}

#[test]
fn multiple_audiences_need_our_azp() {
    assert!(matches!(
        check(&with(|c| c["aud"] = json!([CLIENT, "other"]))),
        Err(OidcError::WrongAudience)
    ));
    assert!(
        check(&with(|c| {
            c["aud"] = json!([CLIENT, "other"]);
            c["azp"] = json!(CLIENT);
        }))
        .is_ok()
    );
    assert!(matches!(
        check(&with(|c| c["azp"] = json!("other"))),
        Err(OidcError::WrongAudience)
    ));
}

#[test]
fn email_verified_may_be_a_string_or_absent() {
    let id = check(&with(|c| c["email_verified"] = json!("true"))).unwrap();
    assert!(id.email_verified);
    let id = check(&with(|c| {
        c.as_object_mut().unwrap().remove("email_verified");
        c["tid"] = json!("tenant");
    }))
    .unwrap();
    assert!(!id.email_verified);
    assert_eq!(id.tenant_id.as_deref(), Some("tenant"));
}

#[test]
fn only_a_verified_email_is_trusted() {
    let id = check(&signed(&claims())).unwrap();
    assert_eq!(id.trusted_email(), Some("sato@school.example.jp"));
    for unverified in [json!(false), json!("false"), json!("yes"), Value::Null] {
        let id = check(&with(|c| c["email_verified"] = unverified.clone())).unwrap();
        assert!(!id.email_trusted, "email_verified: {unverified}");
        assert_eq!(id.trusted_email(), None, "email_verified: {unverified}");
        // The address is still reported (for the audit log), just not to be matched on.
        assert_eq!(id.email.as_deref(), Some("sato@school.example.jp"));
    }
    let id = check(&with(|c| {
        c.as_object_mut().unwrap().remove("email_verified");
    }))
    .unwrap();
    assert_eq!(id.trusted_email(), None);
    let id = check(&with(|c| c["email"] = json!("  "))).unwrap();
    assert_eq!(id.trusted_email(), None);
}

#[test]
fn tenant_allow_list() {
    let entra = |tid: &str| {
        with(|c| {
            c.as_object_mut().unwrap().remove("email_verified");
            c["tid"] = json!(tid);
        })
    };
    // No list: any tenant, and an unverified address stays untrusted.
    assert_eq!(check(&entra("t-b")).unwrap().trusted_email(), None);
    // A listed tenant's directory vouches for its addresses.
    let id = check_with_tenants(&entra("T-A"), &["t-a", "school.example.jp"]).unwrap();
    assert_eq!(id.trusted_email(), Some("sato@school.example.jp"));
    assert!(matches!(
        check_with_tenants(&entra("t-b"), &["t-a"]),
        Err(OidcError::TenantNotAllowed { tenant: Some(t) }) if t == "t-b"
    ));
    // No tenant claim at all: a consumer account.
    assert!(matches!(
        check_with_tenants(&signed(&claims()), &["t-a"]),
        Err(OidcError::TenantNotAllowed { tenant: None })
    ));
    let workspace = |hd: &str| with(|c| c["hd"] = json!(hd));
    assert!(
        check_with_tenants(
            &workspace("school.example.jp"),
            &["t-a", "school.example.jp"]
        )
        .is_ok()
    );
    assert!(matches!(
        check_with_tenants(&workspace("evil.example"), &["school.example.jp"]),
        Err(OidcError::TenantNotAllowed { .. })
    ));
}

#[test]
fn oversized_subject_is_refused() {
    assert!(check(&with(|c| c["sub"] = json!("s".repeat(255)))).is_ok());
    assert!(matches!(
        check(&with(|c| c["sub"] = json!("s".repeat(256)))),
        Err(OidcError::MalformedToken(_))
    ));
    assert!(matches!(
        check(&with(|c| c["sub"] = json!(""))),
        Err(OidcError::MalformedToken(_))
    ));
}

#[test]
fn pending_login_cookie_round_trip() {
    let p = PendingLogin {
        state: "s".repeat(43),
        nonce: "n".repeat(43),
        code_verifier: "v".repeat(43),
        created_at: NOW,
    };
    let v = p.to_cookie_value();
    assert!(
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let back = PendingLogin::from_cookie_value(&v).unwrap();
    assert_eq!(back.state(), p.state());
    assert_eq!(back.code_verifier, p.code_verifier);
    assert!(PendingLogin::from_cookie_value("garbage!").is_none());
    assert!(PendingLogin::from_cookie_value(&"A".repeat(2000)).is_none());
    // Debug never shows the verifier or the nonce.
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("vvvv") && !dbg.contains("nnnn"));
}

#[test]
fn callback_query_parsing() {
    assert_eq!(
        parse_callback("code=abc%2Fd&state=xyz&session_state=1").unwrap(),
        Callback {
            code: "abc/d".into(),
            state: "xyz".into()
        }
    );
    assert!(matches!(
        parse_callback("error=access_denied&error_description=User+cancelled&state=xyz"),
        Err(OidcError::ProviderError { error, description: Some(d) }) if error == "access_denied" && d == "User cancelled"
    ));
    assert!(matches!(
        parse_callback("state=xyz"),
        Err(OidcError::MissingParameter("code"))
    ));
    assert!(matches!(
        parse_callback("code=1"),
        Err(OidcError::MissingParameter("state"))
    ));
}
