//! The adapter's configuration.

use std::fmt;

/// How to reach Stripe and how to check its webhooks.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeConfig {
    /// The secret API key (`sk_live_…`, `sk_test_…`, or a restricted `rk_…` key).
    pub secret_key: String,
    /// Webhook endpoint signing secrets (`whsec_…`). A notification signed with any of them is
    /// accepted, so that a secret can be rolled: add the new one, then remove the old one.
    pub webhook_secrets: Vec<String>,
    /// Stripe's API base, [`StripeConfig::DEFAULT_API_BASE`] in production; a local fake in
    /// tests.
    pub api_base: String,
    /// This service's public base URL, for the Checkout return URLs
    /// (`{public_url}/checkout/return/stripe?topup=…`).
    pub public_url: String,
}

impl StripeConfig {
    pub const DEFAULT_API_BASE: &'static str = "https://api.stripe.com";

    /// A configuration against Stripe's production API base.
    pub fn new(
        secret_key: impl Into<String>,
        webhook_secrets: Vec<String>,
        public_url: impl Into<String>,
    ) -> StripeConfig {
        StripeConfig {
            secret_key: secret_key.into(),
            webhook_secrets,
            api_base: StripeConfig::DEFAULT_API_BASE.to_owned(),
            public_url: public_url.into(),
        }
    }

    /// Refuses a configuration that cannot work: an empty key or URL, no webhook secret, or
    /// an empty one.
    pub fn validate(&self) -> Result<(), StripeConfigError> {
        if self.secret_key.trim().is_empty() {
            return Err(StripeConfigError("secret_key is empty".into()));
        }
        if self.webhook_secrets.is_empty() {
            return Err(StripeConfigError("no webhook secret".into()));
        }
        if self.webhook_secrets.iter().any(|s| s.trim().is_empty()) {
            return Err(StripeConfigError("a webhook secret is empty".into()));
        }
        for (name, url) in [
            ("api_base", &self.api_base),
            ("public_url", &self.public_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(StripeConfigError(format!(
                    "{name} must be an http(s) URL, not {url:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Secrets never reach a log.
impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("secret_key", &"<redacted>")
            .field(
                "webhook_secrets",
                &format_args!("<{} redacted>", self.webhook_secrets.len()),
            )
            .field("api_base", &self.api_base)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// A configuration the adapter cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Stripe configuration: {0}")]
pub struct StripeConfigError(pub String);
