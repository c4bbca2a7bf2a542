//! Time bounds on HTTP connections, so a client cannot hold the server's connections open by
//! sending slowly or not at all.
//!
//! Two bounds, at two layers:
//! * the request head (hyper's header read timeout): a request line and headers must arrive
//!   whole within the limit, however slowly they trickle in;
//! * the connection ([`IdleStream`]): nothing moving in either direction for the idle limit
//!   closes it. That covers what the head timeout cannot see: a connection that never sends its
//!   first byte (hyper waits for it to tell HTTP/1 from HTTP/2), a body that stops, a response
//!   the client stops reading, and HTTP/2.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Applies the request head limit to the server's HTTP/1 connections.
pub fn limit_request_heads<E>(builder: &mut Builder<E>, header_timeout: Duration) {
    // Without a timer hyper silently ignores its header timeout.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
}

/// Wraps every accepted connection in an [`IdleStream`].
#[derive(Debug, Clone, Copy)]
pub struct IdleAcceptor {
    idle: Duration,
}

impl IdleAcceptor {
    pub fn new(idle: Duration) -> Self {
        IdleAcceptor { idle }
    }
}

impl<I, S> Accept<I, S> for IdleAcceptor
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = IdleStream<I>;
    type Service = S;
    type Future = Ready<io::Result<(IdleStream<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        ready(Ok((IdleStream::new(stream, self.idle), service)))
    }
}

/// A stream that fails with `TimedOut` once no byte has been read or written for `idle`.
///
/// The timer is only re-armed when it fires, not on every byte: progress just records the time,
/// which keeps the per-read cost to a clock read.
#[derive(Debug)]
pub struct IdleStream<I> {
    inner: I,
    idle: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<I> IdleStream<I> {
    pub fn new(inner: I, idle: Duration) -> Self {
        let now = Instant::now();
        IdleStream {
            inner,
            idle,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when the inner stream is pending: `Ready` with an error once idle too long,
    /// otherwise `Pending` with the timer registered to wake this task.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_progress + self.idle;
            if Instant::now() >= due {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no traffic for {:?}", self.idle),
                )));
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleStream<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleStream<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_silent_peer_times_out_and_traffic_keeps_it_open() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = IdleStream::new(near, IDLE);
        let mut byte = [0u8; 1];
        let opened = Instant::now();
        // A byte every 100 ms: never 300 ms without traffic, so the stream outlives its limit.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            far.write_all(b"x").await.unwrap();
            stream.read_exact(&mut byte).await.unwrap();
        }
        assert!(opened.elapsed() > IDLE * 2);
        let silent = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
            .await
            .expect("the idle limit ends the read")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(silent.elapsed() >= IDLE, "{:?}", silent.elapsed());
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out_the_writer() {
        let (near, _far) = tokio::io::duplex(8);
        let mut stream = IdleStream::new(near, IDLE);
        let err = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&[0u8; 64]))
            .await
            .expect("the idle limit ends the write")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
