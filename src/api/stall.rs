//! `apiServer.writeTimeout` on the API port: a socket wrapper that fails a
//! write (or flush) which has made no progress for the timeout, so hyper
//! (HTTP) and the WebSocket API (`/ws/v1`, which runs on the same socket
//! after the upgrade) drop a client that stopped reading instead of holding
//! its file descriptor and buffers for ever.
//!
//! The clock starts when a write first finds the socket full and restarts on
//! every byte written: a slow reader that keeps reading is not cut off.

use prometheus::IntCounter;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A socket whose stalled writes fail with `TimedOut`; see the module docs.
pub struct StallTimeout<S> {
    inner: S,
    limit: Option<Duration>,
    stalled: Option<Pin<Box<Sleep>>>,
    /// Counts the connections cut off (`connmix_api_write_timeouts_total`).
    counter: IntCounter,
}

impl<S> StallTimeout<S> {
    /// `limit` `None` never times out.
    pub fn new(inner: S, limit: Option<Duration>, counter: IntCounter) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
            counter,
        }
    }

    /// Turns the inner result into the wrapper's: progress restarts the
    /// clock; a pending write starts it, and fails once it has run out.
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(limit) = self.limit else {
                    return Poll::Pending;
                };
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        self.counter.inc();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "write stalled longer than engine.apiServer.writeTimeout",
                        )))
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_limit() {
        let (near, _far) = tokio::io::duplex(16);
        let counter = IntCounter::new("t", "t").unwrap();
        let mut s = StallTimeout::new(near, Some(Duration::from_millis(100)), counter.clone());
        let err = s.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn a_reading_peer_is_never_cut_off() {
        let (near, mut far) = tokio::io::duplex(16);
        let counter = IntCounter::new("t", "t").unwrap();
        let mut s = StallTimeout::new(near, Some(Duration::from_secs(5)), counter.clone());
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut buf)
                .await
                .unwrap();
            buf.len()
        });
        s.write_all(&[0u8; 4096]).await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        assert_eq!(reader.await.unwrap(), 4096);
        assert_eq!(counter.get(), 0);
    }
}
