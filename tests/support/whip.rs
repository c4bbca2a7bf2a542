//! A WHIP (RFC 9725) publisher: the publish offer of [`super::publisher`], sent as one HTTP POST
//! with a bearer token instead of a signaling message. WHIP's answer names no track ids, so the
//! test tells [`WhipOffer::complete`] which ids the room announced for which source.

use super::media::Source;
use super::publisher::{PublishOffer, Publisher};
use anyhow::{Context, Result, anyhow};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// What the endpoint answered.
pub struct WhipReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl WhipReply {
    /// The JSON body of a refusal.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error` code of a refusal.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// POSTs `body` to `url` with the given token and content type (either may be absent).
pub async fn post(
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: String,
) -> Result<WhipReply> {
    let mut req = client().post(url).body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    reply(req.send().await.context("POST to the WHIP endpoint")?).await
}

pub async fn request(method: reqwest::Method, url: &str) -> Result<WhipReply> {
    let resp = client()
        .request(method, url)
        .send()
        .await
        .with_context(|| format!("request {url}"))?;
    reply(resp).await
}

/// `method` on `url` with `Authorization: Bearer {token}`.
pub async fn request_as(method: reqwest::Method, url: &str, token: &str) -> Result<WhipReply> {
    let resp = client()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("request {url}"))?;
    reply(resp).await
}

async fn reply(resp: reqwest::Response) -> Result<WhipReply> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.context("read the WHIP reply")?;
    Ok(WhipReply {
        status,
        headers,
        body,
    })
}

/// An offer published over WHIP.
pub struct WhipOffer {
    offer: PublishOffer,
    sources: Vec<Source>,
    pub reply: WhipReply,
}

impl WhipOffer {
    /// Creates the offer for `sources` and POSTs it to `endpoint` with `token`.
    pub async fn post(endpoint: &str, token: &str, sources: &[Source]) -> Result<WhipOffer> {
        let offer = PublishOffer::create(sources).await?;
        let reply = post(
            endpoint,
            Some(token),
            Some("application/sdp"),
            offer.sdp.clone(),
        )
        .await?;
        Ok(WhipOffer {
            offer,
            sources: sources.to_vec(),
            reply,
        })
    }

    /// Applies the SDP answer and waits until the connection is up; `track_ids` are the ids the
    /// room announced for each source.
    pub async fn complete(self, track_ids: &HashMap<Source, String>) -> Result<Arc<Publisher>> {
        let tracks: Vec<Value> = self
            .offer
            .mids()
            .into_iter()
            .zip(&self.sources)
            .map(|(mid, source)| {
                let id = track_ids
                    .get(source)
                    .ok_or_else(|| anyhow!("no track id for {}", source.as_str()))?;
                Ok(json!({"mid": mid, "track_id": id}))
            })
            .collect::<Result<_>>()?;
        let reply = json!({"type": "publish_answer", "sdp": self.reply.body, "tracks": tracks});
        self.offer.complete(&reply).await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}
