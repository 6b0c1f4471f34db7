//! The Stripe Checkout adapter of [`billing_core::ports::PaymentGateway`].
//!
//! - [`StripeGateway::create_checkout`] creates a Checkout Session in `payment` mode with one
//!   inline-priced line item, under the idempotency key `checkout-{topup_id}`.
//! - [`StripeGateway::verify_notification`] checks the `Stripe-Signature` header (HMAC-SHA256,
//!   constant time, every configured secret, a 300 s window around the core's clock) before it
//!   reads anything from the body, then tells the core which top-up and session the event is
//!   about. The event's own claims about payment are never used.
//! - [`StripeGateway::payment_status`] retrieves the Checkout Session (and, when it must, its
//!   PaymentIntent) from Stripe, server to server, and answers `Paid` only for a complete, paid
//!   session.
//! - [`StripeGateway::saved_payment_method`] and [`StripeGateway::charge_off_session`] support a
//!   later auto top-up: the customer and card saved by a checkout with
//!   `save_payment_method`, and an off-session PaymentIntent charged to them.
//!
//! The adapter decides nothing about money: it converts [`billing_core::money::Money`] to and
//! from Stripe's integer minor units and reports what Stripe says.

mod config;
mod error;
mod event;
mod gateway;
mod signature;

pub use config::{StripeConfig, StripeConfigError};
pub use gateway::{GATEWAY_NAME, REQUEST_TIMEOUT, SavedPaymentMethod, StripeGateway};
pub use signature::{SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS, verify_signature};
