//! The few HTTP calls of OIDC (discovery, JWKS, token endpoint), with bounded bodies: an issuer
//! (or whatever answers in its place) cannot make us buffer an unbounded response.

use serde::de::DeserializeOwned;

use super::OidcError;

/// Discovery documents and JWKS are a few KB; Entra's JWKS with x5c chains is ~10 KB.
const MAX_BODY: usize = 1024 * 1024;

pub(crate) async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, OidcError> {
    let resp = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| OidcError::http(url, &e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(OidcError::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let body = read_limited(url, resp).await?;
    serde_json::from_slice(&body).map_err(|e| OidcError::BadResponse {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

pub(crate) async fn read_limited(
    url: &str,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| OidcError::http(url, &e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::BadResponse {
                url: url.to_owned(),
                message: format!("response larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An HTTP client for OIDC calls: rustls with aws-lc-rs and the OS trust store, short timeouts,
/// no redirects (an issuer's endpoints answer directly; following redirects would only widen
/// what a misconfiguration can reach).
pub fn default_client() -> Result<reqwest::Client, OidcError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("classroom-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OidcError::Config(format!("cannot build the HTTP client: {e}")))
}
