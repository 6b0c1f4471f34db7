//! Adapters of billing-core's [`Notifier`](billing_core::ports::Notifier) and
//! [`EventSink`](billing_core::ports::EventSink) ports:
//!
//! - [`SmtpNotifier`]: email over SMTP with `lettre` (`smtp://user:pass@host:port`,
//!   `smtps://…`, `smtp://…?tls=required`); [`LogNotifier`] when no SMTP server is configured.
//! - [`HttpEventSink`]: each event POSTed as `{"id", "type", "created_at", "data"}` with
//!   `Billing-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, signed afresh on every
//!   attempt; [`NoEvents`] when no receiver is configured.

mod email;
mod events;

pub use email::{LogNotifier, SmtpNotifier};
pub use events::{HttpEventSink, NoEvents, event_body, sign, verify};
