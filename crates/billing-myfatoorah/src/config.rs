//! Configuration of the MyFatoorah adapter.

use std::fmt;
use std::time::Duration;

use billing_core::money::Currency;

/// How to reach MyFatoorah and how to recognise its webhooks.
#[derive(Clone)]
pub struct MyFatoorahConfig {
    /// Base URL of the API, without a trailing slash (default
    /// [`MyFatoorahConfig::DEFAULT_API_BASE`], the test environment for every country). Live
    /// accounts use their country's host (`https://api.myfatoorah.com` for Kuwait, Bahrain,
    /// Oman and Jordan; `https://api-sa.myfatoorah.com`, `-ae`, `-qa`, `-eg` elsewhere).
    pub api_base: String,
    /// The API token from the portal, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// The webhook secret key from the portal (mandatory for webhooks V2).
    pub webhook_secret: String,
    /// The currency every invoice is issued and read in. It MUST be the account's base
    /// currency: `GetPaymentStatus` reports `InvoiceValue` without naming a currency.
    pub currency: Currency,
    /// Public base URL of this service, without a trailing slash; the customer comes back to
    /// `{public_url}/checkout/return/myfatoorah?topup={topup_id}`.
    pub public_url: String,
    /// Limit on each API call, connection included.
    pub timeout: Duration,
}

impl MyFatoorahConfig {
    /// MyFatoorah's test environment (all countries).
    pub const DEFAULT_API_BASE: &'static str = "https://apitest.myfatoorah.com";
    /// Default limit on each API call.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A configuration for the test environment with the default timeout.
    pub fn new(
        token: impl Into<String>,
        webhook_secret: impl Into<String>,
        currency: Currency,
        public_url: impl Into<String>,
    ) -> MyFatoorahConfig {
        MyFatoorahConfig {
            api_base: MyFatoorahConfig::DEFAULT_API_BASE.to_owned(),
            token: token.into(),
            webhook_secret: webhook_secret.into(),
            currency,
            public_url: public_url.into(),
            timeout: MyFatoorahConfig::DEFAULT_TIMEOUT,
        }
    }

    /// Checks the configuration and returns it with trailing slashes removed from the URLs.
    pub(crate) fn validated(mut self) -> Result<MyFatoorahConfig, BuildGatewayError> {
        self.api_base = checked_base_url(&self.api_base).ok_or(BuildGatewayError::ApiBase)?;
        self.public_url = checked_base_url(&self.public_url).ok_or(BuildGatewayError::PublicUrl)?;
        if self.token.trim().is_empty() {
            return Err(BuildGatewayError::MissingToken);
        }
        if self.webhook_secret.is_empty() {
            return Err(BuildGatewayError::MissingWebhookSecret);
        }
        if self.timeout.is_zero() {
            return Err(BuildGatewayError::Timeout);
        }
        Ok(self)
    }
}

/// The token and the secret never reach a log.
impl fmt::Debug for MyFatoorahConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MyFatoorahConfig")
            .field("api_base", &self.api_base)
            .field("token", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .field("currency", &self.currency)
            .field("public_url", &self.public_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `http://` or `https://` followed by something, without query, fragment or spaces; returned
/// without trailing slashes.
fn checked_base_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let valid = !rest.is_empty()
        && !rest.starts_with('/')
        && !url.contains(['?', '#'])
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| url.to_owned())
}

/// Why [`crate::MyFatoorahGateway::new`] refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildGatewayError {
    /// `api_base` is not an absolute http(s) URL.
    #[error("api_base must be an http(s) URL without query or fragment")]
    ApiBase,
    /// `public_url` is not an absolute http(s) URL.
    #[error("public_url must be an http(s) URL without query or fragment")]
    PublicUrl,
    /// `token` is empty.
    #[error("the API token is missing")]
    MissingToken,
    /// `webhook_secret` is empty: no webhook could be verified.
    #[error("the webhook secret is missing")]
    MissingWebhookSecret,
    /// `timeout` is zero.
    #[error("the timeout must be positive")]
    Timeout,
    /// reqwest refused to build a client (TLS set-up).
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            checked_base_url("https://apitest.myfatoorah.com/"),
            Some("https://apitest.myfatoorah.com".to_owned())
        );
        assert_eq!(
            checked_base_url("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080".to_owned())
        );
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https:///x",
            "https://x?y=1",
            "https://a b",
        ] {
            assert_eq!(checked_base_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let config = MyFatoorahConfig::new("tok-123", "sec-456", Currency::USD, "https://x");
        let text = format!("{config:?}");
        assert!(
            !text.contains("tok-123") && !text.contains("sec-456"),
            "{text}"
        );
    }
}
