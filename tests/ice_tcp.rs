//! ICE-TCP (RFC 6544) and TURN credentials, end to end with the independent webrtc-rs stack.
//!
//! Every client in this file has a TCP socket and no UDP one (`support::peer::TcpOnly`), so
//! media can only flow over the server's passive TCP candidates; the server's UDP counters prove
//! nothing went by UDP. The TCP port itself is held to its limits: garbage and silent
//! connections are closed, and the server goes on.

use crate::support;

use anyhow::{Context, Result, ensure};
use classroom::config::{Secret, TurnSettings};
use classroom::server::Config;
use classroom_signaling::token::Role;
use std::time::Duration;
use support::{CONNECT_TIMEOUT, MediaPump, PumpConfig, Source, TEST_TIMEOUT};
use support::{TestClient, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

/// One value of the server's `/metrics`.
async fn metric(server: &TestServer, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("{name} not in /metrics"))
}

/// Waits (bounded) until `metric` satisfies `ok` (counters are published once a second).
async fn wait_metric(
    server: &TestServer,
    name: &str,
    ok: impl Fn(f64) -> bool,
    within: Duration,
) -> Result<f64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = metric(server, name).await?;
        if ok(v) {
            return Ok(v);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} is still {v} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_flows_over_ice_tcp_when_the_client_has_no_udp() -> Result<()> {
    let _tcp_only = support::peer::TcpOnly::on();
    bounded(async {
        let server = TestServer::start().await?;
        ensure!(
            server.handle.media_tcp_addr.is_some(),
            "ICE-TCP is on by default"
        );
        let url = server.ws_url();
        let teacher =
            TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher)).await?;
        let pupil =
            TestClient::connect(&url, &server.token("s-001", "Sato", Role::Student)).await?;
        let publisher = teacher
            .publish(&[Source::Microphone, Source::Camera])
            .await
            .context("teacher publishes over TCP")?;
        let audio = publisher.track_id(Source::Microphone)?;
        let video = publisher.track_id(Source::Camera)?;
        let pump = MediaPump::start(publisher.clone(), PumpConfig::default());
        pupil
            .subscriber
            .wait_count(&audio, 50, CONNECT_TIMEOUT)
            .await
            .context("the pupil receives audio over TCP")?;
        pupil
            .subscriber
            .wait_count(&video, 30, CONNECT_TIMEOUT)
            .await
            .context("the pupil receives video over TCP")?;
        pump.stop().await?;

        // The teacher's publish connection and the pupil's subscribe connection.
        let open = wait_metric(
            &server,
            "classroom_media_tcp_connections",
            |v| v >= 2.0,
            Duration::from_secs(3),
        )
        .await?;
        // Counters are published once a second: the last second's frames may not be in yet.
        let frames_in = wait_metric(
            &server,
            "classroom_media_tcp_frames_received_total",
            |v| v > 80.0,
            Duration::from_secs(3),
        )
        .await?;
        let frames_out = wait_metric(
            &server,
            "classroom_media_tcp_frames_sent_total",
            |v| v > 80.0,
            Duration::from_secs(3),
        )
        .await?;
        let udp_in = metric(&server, "classroom_media_packets_received_total").await?;
        ensure!(udp_in == 0.0, "{udp_in} UDP datagrams: media went by UDP");
        eprintln!("ICE-TCP: {open} connections, {frames_in} frames in, {frames_out} out");
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// With two media shards only shard 0 accepts ICE-TCP: a pupil placed on shard 1 is served
/// through it (its frames handed over, its replies relayed back), and the teacher's packets
/// cross to shard 1 for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_serves_a_pupil_on_the_shard_without_the_listener() -> Result<()> {
    let _tcp_only = support::peer::TcpOnly::on();
    bounded(async {
        let mut config = Config::for_tests();
        config.media.shards = 2;
        // Rooms of one stay whole: the pupil goes to the least-loaded shard, 1.
        config.media.whole_room = 1;
        let server = TestServer::start_with(config).await?;
        let url = server.ws_url();
        let teacher =
            TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher)).await?;
        let pupil =
            TestClient::connect(&url, &server.token("s-001", "Sato", Role::Student)).await?;
        let publisher = teacher
            .publish(&[Source::Microphone, Source::Camera])
            .await
            .context("teacher publishes over TCP")?;
        let audio = publisher.track_id(Source::Microphone)?;
        let video = publisher.track_id(Source::Camera)?;
        let pump = MediaPump::start(publisher.clone(), PumpConfig::default());
        pupil
            .subscriber
            .wait_count(&audio, 50, CONNECT_TIMEOUT)
            .await
            .context("the pupil on shard 1 receives audio over TCP")?;
        pupil
            .subscriber
            .wait_count(&video, 30, CONNECT_TIMEOUT)
            .await
            .context("the pupil on shard 1 receives video over TCP")?;
        pump.stop().await?;
        // The teacher's publish connection on shard 0, the pupil's subscribe connection on 1
        // (gauges and counters are published once a second).
        for shard in 0..2 {
            wait_metric(
                &server,
                &format!("classroom_media_shard_peer_connections{{shard=\"{shard}\"}}"),
                |v| v == 1.0,
                Duration::from_secs(3),
            )
            .await?;
        }
        wait_metric(
            &server,
            "classroom_media_shard_cross_forwarded_received_total{shard=\"1\"}",
            |v| v > 0.0,
            Duration::from_secs(3),
        )
        .await?;
        let udp_in = metric(&server, "classroom_media_packets_received_total").await?;
        ensure!(udp_in == 0.0, "{udp_in} UDP datagrams: media went by UDP");
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_port_closes_garbage_and_silent_connections() -> Result<()> {
    let _tcp_only = support::peer::TcpOnly::on();
    bounded(async {
        let server = TestServer::start().await?;
        let addr = server.handle.media_tcp_addr.context("ICE-TCP listener")?;
        let closed_within = |mut s: tokio::net::TcpStream, within: Duration| async move {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(within, async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            ensure!(read.is_ok(), "the server kept the connection open");
            Ok(())
        };

        // An HTTP request: its first two bytes announce an 18245-byte frame.
        let mut garbage = tokio::net::TcpStream::connect(addr).await?;
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        closed_within(garbage, Duration::from_secs(2))
            .await
            .context("garbage")?;

        // Well framed, but no STUN check that any peer answers: closed at the bind deadline
        // (5 s), and so is a connection that says nothing at all.
        let mut unbound = tokio::net::TcpStream::connect(addr).await?;
        unbound.write_all(&[0, 4, 0x80, 96, 0, 1]).await?;
        let silent = tokio::net::TcpStream::connect(addr).await?;
        closed_within(unbound, Duration::from_secs(8))
            .await
            .context("unbound")?;
        closed_within(silent, Duration::from_secs(8))
            .await
            .context("silent")?;

        wait_metric(
            &server,
            "classroom_media_tcp_bad_streams_total",
            |v| v >= 1.0,
            Duration::from_secs(3),
        )
        .await?;
        wait_metric(
            &server,
            "classroom_media_tcp_unbound_closed_total",
            |v| v >= 2.0,
            Duration::from_secs(3),
        )
        .await?;
        wait_metric(
            &server,
            "classroom_media_tcp_connections",
            |v| v == 0.0,
            Duration::from_secs(3),
        )
        .await?;
        // The server goes on: a client still joins and connects over TCP.
        let pupil = TestClient::connect(
            &server.ws_url(),
            &server.token("s-002", "Suzuki", Role::Student),
        )
        .await?;
        ensure!(pupil.joined["type"] == "joined");
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_carries_turn_credentials_only_when_configured() -> Result<()> {
    let _tcp_only = support::peer::TcpOnly::on();
    bounded(async {
        let server = TestServer::start().await?;
        let pupil = TestClient::connect(
            &server.ws_url(),
            &server.token("s-001", "Sato", Role::Student),
        )
        .await?;
        ensure!(
            pupil.joined["ice_servers"] == serde_json::json!([]),
            "no TURN configured: {}",
            pupil.joined
        );
        server.shutdown().await;

        let mut config = Config::for_tests();
        config.turn = Some(TurnSettings {
            urls: vec!["turns:turn.example.org:443?transport=tcp".to_owned()],
            secret: Some(Secret::new("north-school-turn-secret")),
            secret_file: None,
            ttl: "2h".to_owned(),
        });
        let server = TestServer::start_with(config).await?;
        let pupil = TestClient::connect(
            &server.ws_url(),
            &server.token("s-001", "Sato", Role::Student),
        )
        .await?;
        let ice = &pupil.joined["ice_servers"][0];
        ensure!(
            ice["urls"] == serde_json::json!(["turns:turn.example.org:443?transport=tcp"]),
            "{ice}"
        );
        let username = ice["username"].as_str().context("username")?;
        let (expiry, identity) = username.split_once(':').context("<expiry>:<identity>")?;
        ensure!(identity == "s-001", "{username}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let expiry: u64 = expiry.parse()?;
        ensure!(
            expiry.abs_diff(now + 7200) <= 5,
            "expiry {expiry} is not two hours from {now}"
        );
        // What coturn computes from the username with the shared secret.
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            b"north-school-turn-secret",
        );
        let expected = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            aws_lc_rs::hmac::sign(&key, username.as_bytes()),
        );
        ensure!(
            ice["credential"].as_str() == Some(expected.as_str()),
            "{ice}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}
