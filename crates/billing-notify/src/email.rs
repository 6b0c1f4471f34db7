//! Email: SMTP, or the log.

use async_trait::async_trait;
use billing_core::notices::Email;
use billing_core::ports::{DeliveryError, Notifier};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Sends email through an SMTP server.
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of every `Message-ID` (the sender's domain).
    domain: String,
}

impl std::fmt::Debug for SmtpNotifier {
    // The transport holds the SMTP credentials: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpConfigError {
    #[error("BILLING_SMTP_URL is not a valid SMTP URL (smtp://user:pass@host:port or smtps://…)")]
    Url,
    #[error("BILLING_EMAIL_FROM is not a valid address: {0}")]
    From(String),
}

impl SmtpNotifier {
    /// `url`: `smtp://[user:pass@]host[:port]` (plain, or `?tls=required` for STARTTLS) or
    /// `smtps://…` (TLS). `from`: `Name <addr>` or `addr`.
    pub fn new(url: &str, from: &str) -> Result<SmtpNotifier, SmtpConfigError> {
        // The URL's error would repeat the URL, password included: not passed on.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| SmtpConfigError::Url)?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e: lettre::address::AddressError| SmtpConfigError::From(e.to_string()))?;
        let domain = from.email.domain().to_owned();
        Ok(SmtpNotifier {
            transport,
            from,
            domain,
        })
    }

    fn message(&self, email: &Email) -> Result<Message, DeliveryError> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| DeliveryError(format!("recipient {:?}: {e}", email.to)))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(format!("<{}@{}>", email.notice_id, self.domain)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| DeliveryError(format!("email: {e}")))
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        let message = self.message(email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| DeliveryError(format!("smtp: {e}")))
    }
}

/// Without SMTP: each email is written to the log (recipient, subject, notice id).
#[derive(Debug, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        tracing::info!(
            to = %email.to,
            subject = %email.subject,
            notice = %email.notice_id,
            "email not sent (no BILLING_SMTP_URL): {}",
            email.body.replace('\n', " ")
        );
        Ok(())
    }
}
