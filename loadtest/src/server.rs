//! Starting the classroom server for a run (`--spawn-server`) and reading its `/metrics` (served
//! on the server's metrics listener, not on its public port).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(
        "server binary {0} does not exist (build it with `cargo build --release --bin classroom`)"
    )]
    Missing(PathBuf),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server did not answer /healthz within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
    #[error("http: {0}")]
    Http(String),
}

/// A server process this run started; killed on drop.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    pub http: SocketAddr,
    /// The metrics listener (`/metrics`).
    pub metrics: SocketAddr,
    /// The media plane's UDP socket (for its drop counter).
    pub media: SocketAddr,
    pub secret: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl SpawnedServer {
    /// Starts `bin serve` on free loopback ports with a fresh data directory and secret, and
    /// waits until `/healthz` answers.
    pub async fn start(bin: &Path) -> Result<SpawnedServer, ServerError> {
        if !bin.is_file() {
            return Err(ServerError::Missing(bin.to_owned()));
        }
        let dir = tempfile::tempdir()?;
        let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        while metrics == http {
            metrics.set_port(free_tcp_port()?);
        }
        let media = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let secret: String = (0..40)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        // The working directory is the empty temp dir, so no config/classroom.toml is picked up:
        // the run measures the defaults.
        let child = Command::new(bin)
            .arg("serve")
            .arg("--http")
            .arg(http.to_string())
            .arg("--media-bind")
            .arg(media.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .env("CLASSROOM_TOKEN_SECRET", &secret)
            .env("CLASSROOM_LOG_LEVEL", "warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let server = SpawnedServer {
            child,
            http,
            metrics,
            media,
            secret,
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        while t0.elapsed() < READY_TIMEOUT {
            if http_get(http, "/healthz").await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ServerError::NotReady(READY_TIMEOUT, server.log_text()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback; returns the body of a 200 response.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String, ServerError> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .map_err(|_| ServerError::Http(format!("GET {path}: timeout")))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ServerError::Http(format!("GET {path}: no header end")))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(ServerError::Http(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_owned())
}

/// The server's own counts of what is open (`/metrics` gauges). A leak of sessions or peer
/// connections shows here even when it costs too little memory to see in RSS.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Gauges {
    pub participants: Option<f64>,
    pub websockets: Option<f64>,
    pub peer_connections: Option<f64>,
    pub tracks: Option<f64>,
    pub rooms: Option<f64>,
}

impl Gauges {
    /// Reads the gauges from Prometheus text.
    pub fn parse(text: &str) -> Gauges {
        Gauges {
            participants: metric(text, "classroom_participants"),
            websockets: metric(text, "classroom_websockets"),
            peer_connections: metric(text, "classroom_media_peer_connections"),
            tracks: metric(text, "classroom_tracks"),
            rooms: metric(text, "classroom_rooms"),
        }
    }

    /// Whether everything the server counts is closed (unknown gauges count as closed).
    pub fn all_closed(&self) -> bool {
        [
            self.participants,
            self.websockets,
            self.peer_connections,
            self.tracks,
            self.rooms,
        ]
        .iter()
        .all(|g| g.is_none_or(|v| v == 0.0))
    }
}

/// A counter from Prometheus text, e.g. `classroom_media_rtp_forwarded_total`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics_and_urls() {
        let text = "# HELP x y\nclassroom_media_rtp_forwarded_total 1234\nother 5\n";
        assert_eq!(
            metric(text, "classroom_media_rtp_forwarded_total"),
            Some(1234.0)
        );
        assert_eq!(metric(text, "missing"), None);
        let g = Gauges::parse("classroom_participants 3\nclassroom_websockets 0\n");
        assert_eq!(g.participants, Some(3.0));
        assert!(!g.all_closed());
        assert!(Gauges::parse("classroom_participants 0\n").all_closed());
    }
}
