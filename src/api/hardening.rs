//! What keeps one request from taking the server down or holding it: a panic in a
//! handler answers 500 and the worker goes on ([`catch_panics`]), and a request body that
//! stalls or trickles is cut ([`body_deadline`]).
//!
//! Recursion and size limits live with each parser (params, YAML, `rules:if`,
//! durations); these two are the net under all of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};

use crate::error::ApiError;
use bytes::Bytes;
use futures_util::{FutureExt, Stream};
use tokio::time::{Instant, Sleep};

/// Middleware: a panic while a request is handled answers GitLab's 500 instead of
/// dropping the connection with the worker. It is logged with the request's span.
pub async fn catch_panics<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    // The request went into the call and is gone; the answer is an error, which actix
    // turns into its response (`ApiError::Internal`: GitLab's 500, logged).
    match std::panic::AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ApiError::Internal(anyhow::anyhow!("a handler panicked: {message}")).into())
        }
    }
}

/// The answer to a body cut by [`body_deadline`]: 408, and the connection closed (the
/// rest of the body is never read).
#[derive(Debug, thiserror::Error)]
#[error("request body too slow")]
struct BodyTooSlow;

impl ResponseError for BodyTooSlow {
    fn status_code(&self) -> StatusCode {
        StatusCode::REQUEST_TIMEOUT
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::RequestTimeout()
            .force_close()
            .json(serde_json::json!({ "message": "408 Request Timeout" }))
    }
}

/// Middleware: a request body must keep coming. It is cut — the handler reads an error,
/// and the answer becomes 408 with the connection closed — when no byte came for
/// `body_timeout`, or when, past that time, it came slower on average than
/// `body_min_rate` bytes a second. Without this a client could announce a large body,
/// send a byte now and then, and hold a connection (and what the handler holds) forever.
pub async fn body_deadline<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let announced = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let limits = req
        .app_data::<web::Data<crate::AppState>>()
        .map(|s| (s.settings.body_timeout, s.settings.body_min_rate));
    let (Some((idle, min_rate)), true) = (limits, announced) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let cut = Arc::new(AtomicBool::new(false));
    let timed = TimedBody {
        inner: req.take_payload(),
        pace: Pace {
            idle,
            min_rate,
            started: Instant::now(),
            last: Instant::now(),
            received: 0,
        },
        timer: None,
        cut: cut.clone(),
        done: false,
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(timed),
    });
    let response = next.call(req).await;
    if !cut.load(Ordering::SeqCst) {
        return response.map(ServiceResponse::map_into_left_body);
    }
    // Whatever the handler or a middleware made of the error, the client hears that it
    // was too slow, and the connection (with the rest of the body unread) is closed.
    match response {
        Ok(response) => {
            let (request, _) = response.into_parts();
            Ok(ServiceResponse::new(request, BodyTooSlow.error_response()).map_into_right_body())
        }
        Err(_) => Err(BodyTooSlow.into()),
    }
}

/// A request body with a deadline (see [`body_deadline`]).
struct TimedBody {
    inner: Payload,
    pace: Pace,
    /// Armed the first time the body makes the reader wait: a small body that came with
    /// the headers (a job request's) costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    cut: Arc<AtomicBool>,
    done: bool,
}

/// How a body has come so far, and what it must keep to.
struct Pace {
    idle: Duration,
    min_rate: u64,
    started: Instant,
    last: Instant,
    received: u64,
}

impl Pace {
    /// When the body is cut if nothing more comes: `idle` after the last byte, or when
    /// the average rate falls under `min_rate` (never before `idle` from the start).
    fn deadline(&self) -> Instant {
        let idle = self.last + self.idle;
        if self.min_rate == 0 {
            return idle;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        let slow = self.started + earned.max(self.idle);
        idle.min(slow)
    }
}

impl Stream for TimedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.pace.received += chunk.len() as u64;
                this.pace.last = Instant::now();
                if let Some(timer) = this.timer.as_mut() {
                    let deadline = this.pace.deadline();
                    timer.as_mut().reset(deadline);
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => {
                this.done = true;
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        let deadline = this.pace.deadline();
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = this.pace.deadline();
            if deadline <= Instant::now() {
                this.done = true;
                this.cut.store(true, Ordering::SeqCst);
                tracing::info!(
                    received = this.pace.received,
                    "a request body stalled or came too slowly; cut"
                );
                return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request body too slow",
                )))));
            }
            timer.as_mut().reset(deadline);
        }
    }
}
