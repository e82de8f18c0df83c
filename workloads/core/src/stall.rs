//! A connection that fails once its peer stops moving bytes: the one mechanism behind the
//! ingest listeners' write-stall timeout (a client that never reads its answers) and the
//! API listeners' idle timeout (no byte either way).
//!
//! The timer runs only while a watched read or write is pending, from the moment it first
//! is; any watched read or write that completes stops it. A pending operation whose timer
//! has run out fails with `TimedOut`, which ends the connection that awaits it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Which operations the timer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Writes only: reads are bounded elsewhere (hyper's header timer, a body timeout).
    Writes,
    /// Reads and writes: no byte moving either way.
    ReadsAndWrites,
}

/// `inner`, failing a watched operation that has been pending for `timeout` with nothing
/// watched completing meanwhile; `held` (a place under a connection cap) is kept as long
/// as the connection.
pub struct StallTimeout<IO, H = ()> {
    inner: IO,
    timeout: Duration,
    watch: Watch,
    /// Running while a watched operation is pending; cleared when one completes.
    stalled: Option<Pin<Box<Sleep>>>,
    _held: H,
}

impl<IO> StallTimeout<IO> {
    pub fn new(inner: IO, timeout: Duration, watch: Watch) -> Self {
        StallTimeout {
            inner,
            timeout,
            watch,
            stalled: None,
            _held: (),
        }
    }

    /// The same connection, keeping `held` until it is dropped.
    pub fn holding<H>(self, held: H) -> StallTimeout<IO, H> {
        StallTimeout {
            inner: self.inner,
            timeout: self.timeout,
            watch: self.watch,
            stalled: self.stalled,
            _held: held,
        }
    }
}

impl<IO, H> StallTimeout<IO, H> {
    /// What a watched operation's answer makes of the timer.
    fn after<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let what = match self.watch {
                    Watch::Writes => "the peer read nothing of what was sent",
                    Watch::ReadsAndWrites => "no byte moved",
                };
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} for {} s", timeout.as_secs()),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin, H: Unpin> AsyncRead for StallTimeout<IO, H> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match self.watch {
            Watch::Writes => polled,
            Watch::ReadsAndWrites => self.after(polled, cx),
        }
    }
}

impl<IO: AsyncWrite + Unpin, H: Unpin> AsyncWrite for StallTimeout<IO, H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.after(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.after(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.after(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_peer_fails_a_watched_read_but_not_an_unwatched_one() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched =
            StallTimeout::new(near, Duration::from_millis(200), Watch::ReadsAndWrites);
        // Bytes that move keep it alive.
        far.write_all(b"ab").await.unwrap();
        let mut two = [0u8; 2];
        watched.read_exact(&mut two).await.unwrap();
        let mut one = [0u8; 1];
        let silent = tokio::time::timeout(Duration::from_secs(60), watched.read(&mut one))
            .await
            .expect("the watched read did not end");
        assert_eq!(silent.unwrap_err().kind(), io::ErrorKind::TimedOut);

        let (near, _far) = tokio::io::duplex(64);
        let mut unwatched = StallTimeout::new(near, Duration::from_millis(200), Watch::Writes);
        let waiting =
            tokio::time::timeout(Duration::from_millis(600), unwatched.read(&mut one)).await;
        assert!(waiting.is_err(), "an unwatched read timed out");
    }

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails() {
        let (near, _far) = tokio::io::duplex(8);
        let mut stalled = StallTimeout::new(near, Duration::from_millis(200), Watch::Writes);
        let writing = stalled.write_all(&[0u8; 64]);
        let ended = tokio::time::timeout(Duration::from_secs(60), writing)
            .await
            .expect("the stalled write did not end");
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
