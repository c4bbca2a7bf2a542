//! The CSRF middleware on a real axum server over HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use classroom_auth::web::{CsrfGuard, require_csrf};
use classroom_auth::{CookiePolicy, CsrfKey, csrf_token, new_token};
use reqwest::StatusCode;

async fn serve() -> (String, Arc<CsrfGuard>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let guard = Arc::new(CsrfGuard {
        key: CsrfKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        cookies: CookiePolicy::for_public_url(&origin, Duration::from_secs(3600)),
        public_origin: origin.clone(),
    });
    let app = Router::new()
        .route(
            "/change",
            post(|| async { "changed" }).get(|| async { "read" }),
        )
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            require_csrf,
        ));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, guard)
}

#[tokio::test]
async fn csrf_middleware_over_http() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let (origin, guard) = serve().await;
        let http = reqwest::Client::new();
        let url = format!("{origin}/change");
        let sid = new_token().unwrap();
        let cookie = format!("classroom_session={sid}");
        let token = csrf_token(&guard.key, &sid);

        let status = |r: reqwest::Response| r.status();
        // Safe methods pass.
        let r = http
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::OK);
        // Session without token: refused.
        let r = http
            .post(&url)
            .header("cookie", &cookie)
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::FORBIDDEN);
        // Session with the right token from our origin: allowed.
        let r = http
            .post(&url)
            .header("cookie", &cookie)
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .header("x-csrf-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::OK);
        // The right token from a foreign page: refused.
        let r = http
            .post(&url)
            .header("cookie", &cookie)
            .header("origin", "https://evil.example")
            .header("x-csrf-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::FORBIDDEN);
        // Another session's token: refused.
        let other = csrf_token(&guard.key, &new_token().unwrap());
        let r = http
            .post(&url)
            .header("cookie", &cookie)
            .header("x-csrf-token", other)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::FORBIDDEN);
        // No session: only the origin check (login CSRF).
        let r = http
            .post(&url)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::FORBIDDEN);
        let r = http
            .post(&url)
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::OK);
    })
    .await
    .expect("test timed out");
}
