//! A request body that fails when its client stops sending: without it, a client that
//! sends a body one byte a minute (or stops half-way) holds its connection and the
//! request's buffers for as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::transport::http::error_response;

/// The error a stalled body ends with; the middleware answers 408 instead of the 400 an
/// extractor would make of it.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body for {} s", .0.as_secs())]
pub struct BodyStalled(Duration);

/// `inner`, failing with [`BodyStalled`] when no frame arrives for `timeout` while it is
/// being read; `stalled` is set when it does.
struct StallingBody {
    inner: Body,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    stalled: Arc<AtomicBool>,
}

impl http_body::Body for StallingBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stalled.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(BodyStalled(this.timeout).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: the request's body fails after `timeout` without a byte, and such a
/// request is answered 408 with the reason, and its connection closed (the rest of its
/// body will not be read).
pub(crate) async fn limit_body_stall(
    timeout: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let stalled = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(StallingBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            stalled: Arc::clone(&stalled),
        })
    });
    let response = next.run(request).await;
    if !stalled.load(Ordering::Relaxed) {
        return response;
    }
    let mut response = error_response(
        StatusCode::REQUEST_TIMEOUT,
        "body_stalled",
        BodyStalled(timeout).to_string(),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
