//! [`MyFatoorahGateway`]: the [`PaymentGateway`] port over MyFatoorah's REST API v2.

use std::str::FromStr;

use async_trait::async_trait;
use billing_core::money::{Money, parse_decimal};
use billing_core::ports::{
    Checkout, CheckoutRequest, GatewayError, Notification, PaymentGateway, PaymentStatus,
    VerifiedNotification,
};
use billing_core::time::Timestamp;
use billing_core::topup::TopUp;
use serde_json::{Map, Number, Value, json};

use crate::api::{self, scalar_text};
use crate::config::{BuildGatewayError, MyFatoorahConfig};
use crate::{GATEWAY_NAME, webhook};

/// Path of invoice creation (see the crate documentation for why not `ExecutePayment`).
const SEND_PAYMENT: &str = "/v2/SendPayment";
/// Path of the status inquiry.
const GET_PAYMENT_STATUS: &str = "/v2/GetPaymentStatus";
/// Longest customer name sent; MyFatoorah's own limit is not documented in the sources at
/// hand, names here are emails (at most 254 characters).
const CUSTOMER_NAME_LENGTH_MAX: usize = 254;
/// Name used when the request carries no email to name the customer by.
const CUSTOMER_NAME_FALLBACK: &str = "Customer";

/// The MyFatoorah payment gateway.
///
/// Status mapping of `GetPaymentStatus` (`Data.InvoiceStatus`):
/// - `Paid` → [`PaymentStatus::Paid`] with `Data.InvoiceValue` read exactly in the configured
///   currency, but only when `Data.CustomerReference` is the top-up's id and `Data.InvoiceId`
///   its payment reference; otherwise `Pending`, logged, never guessed;
/// - `Canceled` / `Expired` → [`PaymentStatus::Failed`] (same reference checks);
/// - `Pending` (failed card attempts leave an invoice pending: the customer may retry) and
///   anything unknown → [`PaymentStatus::Pending`].
pub struct MyFatoorahGateway {
    config: MyFatoorahConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for MyFatoorahGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyFatoorahGateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MyFatoorahGateway {
    /// Checks the configuration and builds the HTTP client (rustls, no redirects, the
    /// configured timeout on every call).
    pub fn new(config: MyFatoorahConfig) -> Result<MyFatoorahGateway, BuildGatewayError> {
        let config = config.validated()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildGatewayError::HttpClient(e.to_string()))?;
        Ok(MyFatoorahGateway { config, http })
    }

    /// The configuration in use (URLs without trailing slashes).
    pub fn config(&self) -> &MyFatoorahConfig {
        &self.config
    }

    /// Where the customer comes back after paying or failing to:
    /// `{public_url}/checkout/return/myfatoorah?topup={topup_id}`.
    pub fn return_url(&self, topup_id: &str) -> String {
        billing_core::ports::checkout_return_url(
            &self.config.public_url,
            GATEWAY_NAME,
            &billing_core::ids::TopUpId::new(topup_id),
        )
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Map<String, Value>, GatewayError> {
        api::post(
            &self.http,
            &self.config.api_base,
            &self.config.token,
            path,
            body,
        )
        .await
    }

    /// The `SendPayment` body for a checkout.
    fn send_payment_body(&self, request: &CheckoutRequest) -> Result<Value, GatewayError> {
        let email = request.customer_email.trim();
        let name: String = if email.is_empty() {
            CUSTOMER_NAME_FALLBACK.to_owned()
        } else {
            email.chars().take(CUSTOMER_NAME_LENGTH_MAX).collect()
        };
        let return_url = self.return_url(request.topup_id.as_str());
        let mut body = json!({
            "NotificationOption": "LNK",
            "CustomerName": name,
            "InvoiceValue": invoice_value(&request.price)?,
            "DisplayCurrencyIso": self.config.currency.code(),
            "CustomerReference": request.topup_id.as_str(),
            "CallBackUrl": return_url,
            "ErrorUrl": return_url,
        });
        match body.as_object_mut() {
            Some(body) if !email.is_empty() => {
                body.insert("CustomerEmail".to_owned(), Value::String(email.to_owned()));
            }
            _ => {}
        }
        Ok(body)
    }
}

/// The amount as a JSON number written with exactly the currency's exponent (`12.500` KWD,
/// `25.00` USD), built from the decimal's text, never through `f64`.
fn invoice_value(price: &Money) -> Result<Value, GatewayError> {
    let mut amount = price.amount();
    amount.rescale(price.currency().exponent());
    let text = amount.to_string();
    Number::from_str(&text)
        .map(Value::Number)
        .map_err(|_| GatewayError::InvalidRequest(format!("amount {text} is not a JSON number")))
}

/// A checkout URL MyFatoorah answered: an absolute http(s) URL.
fn checked_url(url: &str) -> Option<String> {
    let url = url.trim();
    let absolute = url.starts_with("https://") || url.starts_with("http://");
    (absolute && !url.chars().any(char::is_whitespace)).then(|| url.to_owned())
}

/// What `GetPaymentStatus` says, before the reference checks.
enum InvoiceStatus {
    Paid,
    Failed(String),
    Pending,
}

fn invoice_status(status: &str) -> InvoiceStatus {
    match status.trim().to_ascii_lowercase().as_str() {
        "paid" => InvoiceStatus::Paid,
        "canceled" | "cancelled" => InvoiceStatus::Failed("invoice canceled".to_owned()),
        "expired" => InvoiceStatus::Failed("invoice expired".to_owned()),
        _ => InvoiceStatus::Pending,
    }
}

#[async_trait]
impl PaymentGateway for MyFatoorahGateway {
    fn name(&self) -> &str {
        GATEWAY_NAME
    }

    /// `POST /v2/SendPayment` (`NotificationOption: "LNK"`): answers the invoice id and its
    /// `InvoiceURL` (or `PaymentURL`). Refuses a price in another currency than the
    /// configured one.
    ///
    /// MyFatoorah has no idempotency key: a second call for the same top-up creates a second
    /// invoice. The core calls this once per top-up and records only the invoice it receives;
    /// an invoice whose creation timed out is never shown to anyone and expires unpaid.
    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, GatewayError> {
        if request.price.currency() != self.config.currency {
            return Err(GatewayError::InvalidRequest(format!(
                "this MyFatoorah account charges in {}, not {}",
                self.config.currency,
                request.price.currency()
            )));
        }
        let body = self.send_payment_body(request)?;
        let data = self.post(SEND_PAYMENT, &body).await?;
        let invoice_id = data
            .get("InvoiceId")
            .and_then(scalar_text)
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                GatewayError::Transient("SendPayment answered no InvoiceId".to_owned())
            })?;
        let checkout_url = ["InvoiceURL", "PaymentURL"]
            .iter()
            .find_map(|key| data.get(*key).and_then(Value::as_str).and_then(checked_url))
            .ok_or_else(|| {
                GatewayError::Transient("SendPayment answered no InvoiceURL".to_owned())
            })?;
        Ok(Checkout {
            payment_ref: invoice_id,
            checkout_url,
        })
    }

    /// Verifies the `MyFatoorah-Signature` header before reading anything else (see
    /// [`webhook::verify`]).
    ///
    /// `now` is not used: MyFatoorah signs no timestamp, so there is no replay window to
    /// check. Replays are harmless because the core deduplicates events and settles only on
    /// `payment_status`, asked server to server.
    async fn verify_notification(
        &self,
        notification: &Notification,
        _now: Timestamp,
    ) -> Result<VerifiedNotification, GatewayError> {
        webhook::verify(notification, &self.config.webhook_secret)
    }

    /// `POST /v2/GetPaymentStatus` with `{"Key": <invoice id>, "KeyType": "InvoiceId"}`,
    /// mapped as the type's documentation says. A top-up without a payment reference has no
    /// invoice to ask about: `Pending`.
    async fn payment_status(&self, topup: &TopUp) -> Result<PaymentStatus, GatewayError> {
        let Some(payment_ref) = topup.payment_ref.as_deref() else {
            tracing::warn!(topup = %topup.id, "myfatoorah: top-up has no invoice id; left pending");
            return Ok(PaymentStatus::Pending);
        };
        let body = json!({ "Key": payment_ref, "KeyType": "InvoiceId" });
        let data = self.post(GET_PAYMENT_STATUS, &body).await?;
        let status = data
            .get("InvoiceStatus")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                GatewayError::Transient("GetPaymentStatus answered no InvoiceStatus".to_owned())
            })?;
        let status = invoice_status(status);
        if matches!(status, InvoiceStatus::Pending) {
            return Ok(PaymentStatus::Pending);
        }
        if !references_match(&data, topup, payment_ref) {
            return Ok(PaymentStatus::Pending);
        }
        match status {
            InvoiceStatus::Paid => Ok(PaymentStatus::Paid {
                amount: self.paid_amount(&data)?,
            }),
            InvoiceStatus::Failed(reason) => Ok(PaymentStatus::Failed { reason }),
            InvoiceStatus::Pending => Ok(PaymentStatus::Pending),
        }
    }
}

impl MyFatoorahGateway {
    /// `Data.InvoiceValue` (a number, or a numeric string) as money of the configured
    /// currency, exactly: more decimals than the currency has is an unreadable answer.
    fn paid_amount(&self, data: &Map<String, Value>) -> Result<Money, GatewayError> {
        let unreadable =
            |what: &str| GatewayError::Transient(format!("GetPaymentStatus: InvoiceValue {what}"));
        let text = data
            .get("InvoiceValue")
            .and_then(scalar_text)
            .ok_or_else(|| unreadable("missing"))?;
        let value = parse_decimal(&text).map_err(|_| unreadable("is not a decimal"))?;
        Money::new(value, self.config.currency).map_err(|e| unreadable(&e.to_string()))
    }
}

/// Whether the invoice is the one this top-up created: `Data.InvoiceId` is its payment
/// reference and `Data.CustomerReference` its id. Logged when not.
fn references_match(data: &Map<String, Value>, topup: &TopUp, payment_ref: &str) -> bool {
    let invoice = data.get("InvoiceId").and_then(scalar_text);
    if invoice.as_deref().map(str::trim) != Some(payment_ref) {
        tracing::warn!(
            topup = %topup.id,
            payment_ref,
            answered = ?invoice,
            "myfatoorah: GetPaymentStatus answered about another invoice; left pending"
        );
        return false;
    }
    let reference = data.get("CustomerReference").and_then(Value::as_str);
    if reference != Some(topup.id.as_str()) {
        tracing::warn!(
            topup = %topup.id,
            payment_ref,
            customer_reference = ?reference,
            "myfatoorah: invoice's CustomerReference is not this top-up; left pending"
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_core::Decimal;
    use billing_core::money::Currency;

    fn money(amount: &str, currency: &str) -> Money {
        let currency = Currency::from_code(currency).expect("known currency");
        Money::new(Decimal::from_str_exact(amount).expect("decimal"), currency).expect("money")
    }

    #[test]
    fn invoice_values_keep_the_currency_exponent() {
        for (amount, currency, json) in [
            ("12.5", "KWD", "12.500"),
            ("12.500", "KWD", "12.500"),
            ("0.001", "BHD", "0.001"),
            ("25", "USD", "25.00"),
            ("19.99", "USD", "19.99"),
            ("500", "JPY", "500"),
            ("123456789.123", "OMR", "123456789.123"),
        ] {
            let value = invoice_value(&money(amount, currency)).expect("number");
            assert_eq!(
                serde_json::to_string(&value).expect("serializes"),
                json,
                "{amount} {currency}"
            );
        }
    }

    #[test]
    fn statuses() {
        assert!(matches!(invoice_status("Paid"), InvoiceStatus::Paid));
        assert!(matches!(
            invoice_status("Canceled"),
            InvoiceStatus::Failed(_)
        ));
        assert!(matches!(
            invoice_status("Expired"),
            InvoiceStatus::Failed(_)
        ));
        for other in ["Pending", "", "Authorize", "DuePayment", "Unknown"] {
            assert!(
                matches!(invoice_status(other), InvoiceStatus::Pending),
                "{other}"
            );
        }
    }
}
