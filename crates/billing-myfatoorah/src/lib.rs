//! The MyFatoorah adapter of [`billing_core::ports::PaymentGateway`] (REST API v2).
//!
//! - **Checkout**: `POST /v2/SendPayment` with `NotificationOption: "LNK"` creates an invoice
//!   and answers its `InvoiceURL`, a hosted page where the customer picks any payment method
//!   the merchant has enabled. `ExecutePayment` is not used: every documented request carries
//!   a `PaymentMethodId`, which only exists after `InitiatePayment` and a choice made by the
//!   customer on our side; the core's [`billing_core::ports::CheckoutRequest`] has no such
//!   choice. The top-up id travels as `CustomerReference` and in the return URLs.
//! - **Status**: `POST /v2/GetPaymentStatus` by `InvoiceId`; only `InvoiceStatus: "Paid"`
//!   with our `CustomerReference` is reported as paid (see [`MyFatoorahGateway`]).
//! - **Notifications**: webhooks V1 (`TransactionsStatusChanged`) and V2
//!   (`PAYMENT_STATUS_CHANGED`), verified by their `MyFatoorah-Signature` header before
//!   anything else is read (see [`webhook`]).
//!
//! Amounts cross the wire as JSON numbers written with exactly the currency's exponent
//! (`12.500` KWD), built from the decimal's text and never through `f64` (this relies on
//! `serde_json`'s `arbitrary_precision` feature, which the workspace enables).

#![warn(missing_docs)]

mod api;
mod config;
mod gateway;
pub mod webhook;

pub use config::{BuildGatewayError, MyFatoorahConfig};
pub use gateway::MyFatoorahGateway;

/// The gateway's name, in `/webhooks/{name}`, in configuration and in
/// `TopUp::gateway`.
pub const GATEWAY_NAME: &str = "myfatoorah";
