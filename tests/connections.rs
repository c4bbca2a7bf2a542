//! What a client can make the server hold, and for how long: sockets that never join, a
//! participant that stops reading, HTTP requests that are never finished (issue 11,
//! "Connections").

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use classroom::server::Config;
use classroom_signaling::token::Role;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::signal::is_type;
use support::{
    CONNECT_TIMEOUT, MediaPump, PumpConfig, REPLY_TIMEOUT, RawConnection, Source, TEST_TIMEOUT,
    TestClient, TestServer,
};

async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .with_context(|| format!("the test did not finish within {TEST_TIMEOUT:?}"))?
}

fn config_with(edit: impl FnOnce(&mut classroom::config::ConnectionSettings)) -> Config {
    let mut config = Config::for_tests();
    edit(&mut config.connections);
    config
}

fn ping(id: &str) -> Value {
    json!({"type": "ping", "id": id})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unjoined_socket_is_closed_at_the_join_deadline() -> Result<()> {
    bounded(async {
        let deadline = Duration::from_secs(1);
        let server = TestServer::start_with(config_with(|c| c.join_timeout = "1s".into())).await?;
        let url = server.ws_url();

        let opened = Instant::now();
        let idler = RawConnection::connect(&url).await?;
        // A client that joined at once, to show the deadline concerns only those that do not.
        let member = TestClient::connect(&url, &server.token("s-001", "Sato", Role::Student))
            .await
            .context("a pupil joins")?;

        // Pings are answered and keep the socket from being idle, but not from having to join.
        let mut pongs = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let closing = idler.signal.wait_closed(Duration::from_secs(5));
        tokio::pin!(closing);
        let closed = loop {
            tokio::select! {
                closed = &mut closing => break closed?,
                _ = tick.tick() => {
                    pongs += idler.signal.take_events(|e| is_type(e, "pong")).len();
                    let _ = idler.send_raw(ping("keep-me").to_string());
                }
            }
        };
        let lived = opened.elapsed();
        ensure!(
            pongs >= 2,
            "the server answered only {pongs} pings before the deadline"
        );
        ensure!(
            lived >= deadline && lived < deadline * 4,
            "an unjoined socket should close at the 1 s join deadline, it lived {lived:?}"
        );
        let error = idler
            .signal
            .history()
            .into_iter()
            .find(|e| is_type(e, "error"))
            .context("an error before the close")?;
        ensure!(
            error["code"] == "timeout",
            "the error should be `timeout`: {error}"
        );
        ensure!(
            closed.frame.as_ref().map(|(code, _)| *code) == Some(1008),
            "the close code should be 1008 (policy): {closed:?}"
        );

        // The joined pupil is past the same deadline and still served.
        ensure!(
            opened.elapsed() > deadline,
            "the check must come after the deadline"
        );
        member
            .ping()
            .await
            .context("a joined socket outlives the join deadline")?;
        ensure!(
            member.signal.closed().is_none(),
            "the joined pupil was closed"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_cap_refuses_the_next_unjoined_socket() -> Result<()> {
    bounded(async {
        let server =
            TestServer::start_with(config_with(|c| c.max_unjoined_per_address = 3)).await?;
        let url = server.ws_url();

        let mut waiting = Vec::new();
        for i in 0..3 {
            let raw = RawConnection::connect(&url).await?;
            let pong = raw
                .signal
                .request(ping(&format!("w{i}")), REPLY_TIMEOUT)
                .await?;
            ensure!(
                is_type(&pong, "pong"),
                "socket {i} should be served: {pong}"
            );
            waiting.push(raw);
        }

        let fourth = RawConnection::connect(&url).await?;
        let refusal = fourth.expect_error("too_many_connections").await?;
        let message = refusal["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains('3') && message.contains("not joined"),
            "the refusal should say what the limit is and why: {refusal}"
        );
        let closed = fourth.wait_closed().await?;
        ensure!(
            closed.frame.as_ref().map(|(code, _)| *code) == Some(1013),
            "the close code should be 1013 (try again later): {closed:?}"
        );

        // A socket that joins gives its place back: the next one is served.
        let joined = waiting[0]
            .join(&server.token("s-001", "Sato", Role::Student))
            .await?;
        ensure!(is_type(&joined, "joined"), "join: {joined}");
        let fifth = RawConnection::connect(&url).await?;
        let pong = fifth.signal.request(ping("f"), REPLY_TIMEOUT).await?;
        ensure!(
            is_type(&pong, "pong"),
            "the freed place should be usable: {pong}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

type UnreadHalf = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
>;

/// Joins `url` as a participant that never reads another byte. Returns its socket's unread
/// half, which must stay alive (dropping it would close the socket).
async fn join_and_stop_reading(url: &str, token: &str) -> Result<UnreadHalf> {
    let (socket, _) = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .context("connect timed out")??;
    let (mut sink, stream) = socket.split();
    sink.send(Message::text(
        json!({"v": 1, "type": "join", "token": token}).to_string(),
    ))
    .await?;
    // The sink may go: the stream half keeps the socket open.
    Ok(stream)
}

/// One more participant with a long name joins and leaves; everyone else in the room is told
/// both, so each visit puts about `name.len()` bytes on every other member's socket.
async fn visit(server: &TestServer, url: &str, i: usize, name: &str) -> Result<()> {
    let mut claims = server.claims(&format!("visitor-{i}"), name, Role::Observer);
    // Nothing to send or receive: only the arrival and departure are fanned out.
    claims.perms.clear();
    let visitor = RawConnection::connect(url).await?;
    let joined = visitor.join(&server.token_with(claims)).await?;
    ensure!(is_type(&joined, "joined"), "visitor {i}: {joined}");
    visitor.signal.send_json(&json!({"type": "leave"}))?;
    visitor.wait_closed().await?;
    Ok(())
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_dropped_and_the_lesson_keeps_its_media() -> Result<()> {
    bounded(async {
        let send_timeout = Duration::from_secs(2);
        let server = TestServer::start_with(config_with(|c| {
            c.send_timeout = "2s".into();
            c.outbox_messages = 32;
        }))
        .await?;
        let url = server.ws_url();

        let teacher = TestClient::connect(&url, &server.token("t-001", "Tanaka", Role::Teacher))
            .await
            .context("the teacher joins")?;
        let pupil = TestClient::connect(&url, &server.token("s-001", "Sato", Role::Student))
            .await
            .context("a pupil joins")?;
        let publisher = teacher
            .publish(&[Source::Microphone, Source::Camera])
            .await?;
        let audio = publisher.track_id(Source::Microphone)?;
        let video = publisher.track_id(Source::Camera)?;
        let _pump = MediaPump::start(publisher.clone(), PumpConfig::default());
        pupil
            .subscriber
            .wait_count(&audio, 25, CONNECT_TIMEOUT)
            .await?;
        pupil
            .subscriber
            .wait_count(&video, 20, CONNECT_TIMEOUT)
            .await?;

        // A pupil whose tablet froze: joined, then never reads again.
        let mut claims = server.claims("s-002", "Frozen", Role::Student);
        claims.perms.clear();
        let frozen = join_and_stop_reading(&url, &server.token_with(claims)).await?;
        let arrival = teacher
            .expect_event(
                |e| {
                    is_type(e, "participant_joined")
                        && e.pointer("/participant/identity") == Some(&json!("s-002"))
                },
                REPLY_TIMEOUT,
            )
            .await?;
        let frozen_id = arrival
            .pointer("/participant/participant_id")
            .and_then(Value::as_str)
            .context("participant_id")?
            .to_owned();
        let is_frozen_leaving =
            |e: &Value| is_type(e, "participant_left") && e["participant_id"] == json!(frozen_id);

        // Visitors with 40 KB names: a few hundred visits fill the frozen socket's buffers
        // (a few MB on loopback) where ordinary names would take tens of thousands.
        let name = "N".repeat(40_000);
        let mut visits = 0;
        let mut dropped = false;
        while visits < 400 && !dropped {
            visit(&server, &url, visits, &name).await?;
            visits += 1;
            // Keep the readers' queues short; look for the frozen pupil's departure.
            dropped = !teacher.signal.take_events(is_frozen_leaving).is_empty();
            for client in [&teacher, &pupil] {
                client.signal.take_events(|e| {
                    is_type(e, "participant_joined") || is_type(e, "participant_left")
                });
            }
        }
        if !dropped {
            teacher
                .expect_event(is_frozen_leaving, send_timeout * 3)
                .await
                .with_context(|| {
                    format!("the frozen pupil should be dropped; {visits} visits fanned out")
                })?;
        }

        // The lesson carries on: the pupil still gets the teacher's media.
        for (track, more) in [(&audio, 50), (&video, 40)] {
            let had = pupil.subscriber.received_count(track);
            pupil
                .subscriber
                .wait_count(track, had + more, CONNECT_TIMEOUT)
                .await
                .with_context(|| format!("media on {track} after the drop"))?;
        }
        ensure!(
            pupil.signal.closed().is_none(),
            "the pupil was disconnected"
        );
        ensure!(
            teacher.signal.closed().is_none(),
            "the teacher was disconnected"
        );

        // The server closed the frozen socket: reading what it buffered ends.
        let drained = tokio::time::timeout(
            Duration::from_secs(10),
            frozen
                .take_while(|m| std::future::ready(matches!(m, Ok(m) if !m.is_close())))
                .count(),
        )
        .await;
        ensure!(drained.is_ok(), "the frozen pupil's socket is still open");

        let metrics = reqwest::get(format!("http://{}/metrics", server.handle.metrics_addr))
            .await?
            .text()
            .await?;
        let drops = ["queue_full", "send_timeout"]
            .iter()
            .map(|reason| {
                metric(
                    &metrics,
                    &format!("classroom_signaling_slow_drops_total{{reason=\"{reason}\"}}"),
                )
                .unwrap_or(0)
            })
            .sum::<u64>();
        ensure!(
            drops == 1,
            "/metrics should count one slow drop, counts {drops}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<(String, Instant)> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
            Err(_) => bail!(
                "the connection is still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ok((
                    String::from_utf8_lossy(&received).into_owned(),
                    Instant::now(),
                ));
            }
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http_header_is_cut_off() -> Result<()> {
    bounded(async {
        let header_timeout = Duration::from_secs(1);
        let server = TestServer::start_with(config_with(|c| {
            c.http_header_timeout = "1s".into();
            // Longer than the test: only the header timeout may end these connections.
            c.http_idle_timeout = "30s".into();
        }))
        .await?;
        let addr = server.handle.http_addr;

        // Twenty requests whose headers trickle in, a line every 200 ms, never finishing: each
        // stays busy (never idle), so only a bound on the whole head ends them.
        let mut slow = Vec::new();
        for i in 0..20 {
            slow.push(tokio::spawn(async move {
                let opened = Instant::now();
                let mut stream = TcpStream::connect(addr).await?;
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
                    .await?;
                let (mut reader, mut writer) = stream.split();
                let trickle = async {
                    let mut tick = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tick.tick().await;
                        if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            break;
                        }
                    }
                    // The server has closed: the reader sees it.
                    std::future::pending::<()>().await
                };
                let received = async {
                    let mut out = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        match reader.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => out.extend_from_slice(&chunk[..n]),
                        }
                    }
                    String::from_utf8_lossy(&out).into_owned()
                };
                let response = tokio::select! {
                    r = tokio::time::timeout(Duration::from_secs(5), received) => r,
                    () = trickle => bail!("request {i}: the trickle ended by itself"),
                };
                let Ok(response) = response else {
                    bail!("request {i}: still open after 5 s of trickled headers");
                };
                Ok::<_, anyhow::Error>((response, opened.elapsed()))
            }));
        }
        for (i, task) in slow.into_iter().enumerate() {
            let (response, lived) = task.await??;
            // hyper closes without an answer (an HTTP 408 would do as well).
            ensure!(
                response.is_empty() || response.starts_with("HTTP/1.1 408"),
                "request {i}: expected the connection closed unanswered, got {response:?}"
            );
            ensure!(
                lived >= header_timeout && lived < header_timeout * 4,
                "request {i}: cut after {lived:?}, expected about {header_timeout:?}"
            );
        }

        // An ordinary request is unaffected.
        let ok = reqwest::get(format!("{}/healthz", server.handle.http_url())).await?;
        ensure!(ok.status().is_success(), "healthz: {}", ok.status());
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_connection_that_sends_nothing_is_closed_when_idle() -> Result<()> {
    bounded(async {
        let idle = Duration::from_secs(1);
        let server = TestServer::start_with(config_with(|c| {
            c.http_idle_timeout = "1s".into();
            c.http_header_timeout = "30s".into();
        }))
        .await?;
        let addr: SocketAddr = server.handle.http_addr;

        let opened = Instant::now();
        let mut silent = TcpStream::connect(addr).await?;
        let (received, closed_at) = read_until_closed(&mut silent, Duration::from_secs(5))
            .await
            .context("a connection that never sends a byte")?;
        let lived = closed_at - opened;
        ensure!(
            lived >= idle && lived < idle * 4,
            "closed after {lived:?}, expected about {idle:?}"
        );
        ensure!(received.is_empty(), "nothing to answer, got {received:?}");

        // Requests that keep moving are unaffected.
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let ok = client
                .get(format!("{}/healthz", server.handle.http_url()))
                .send()
                .await?;
            ensure!(ok.status().is_success(), "healthz: {}", ok.status());
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
