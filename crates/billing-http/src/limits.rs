//! Limits on what a client may send, before any handler runs:
//!
//! - request headers over [`HEADER_BYTES_MAX`] in all answer `431 headers_too_large`
//!   (actix-web's own limit is far larger; a request head is never legitimately that big);
//! - a body must arrive in full within [`BODY_TIMEOUT`] of the request head: a client that
//!   trickles it (a byte a second) is answered `408 request_timeout` and its connection
//!   closed, instead of holding a worker's connection for as long as it likes. (The head
//!   itself has actix-web's client request timeout, 5 s, answered `408` too.)
//!
//! Bodies over their size limit answer `413` from their extractor (`JsonConfig`,
//! `FormConfig`, `PayloadConfig` in `configure`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use futures_core::Stream;

use crate::error::ApiError;

/// The most bytes of request headers (names, values and separators) a request may carry.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// How long after its head a request's body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A body that fails once its deadline passes, and says so.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // What has arrived is always read: only waiting for the client past the deadline
        // fails (the server's own delays before it reads the body never do).
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the body did not arrive in time",
            )))));
        }
        Poll::Pending
    }
}

/// Middleware: the header size limit and the body deadline.
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > HEADER_BYTES_MAX {
        let api = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers are larger than {HEADER_BYTES_MAX} bytes"),
        );
        return Ok(req
            .into_response(api.closing_response())
            .map_into_right_body());
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let body = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(BODY_TIMEOUT)),
        timed_out: timed_out.clone(),
    };
    let body: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(body);
    req.set_payload(Payload::from(body));
    let response = next.call(req).await?;
    if timed_out.load(Ordering::SeqCst) {
        // Whatever the extractor made of the failed read, the answer is a timeout.
        let api = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        );
        let (req, _) = response.into_parts();
        return Ok(ServiceResponse::new(req, api.closing_response()).map_into_right_body());
    }
    Ok(response.map_into_left_body())
}
