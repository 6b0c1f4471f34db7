//! The domain of a prepaid-credits billing service.
//!
//! This crate owns every rule about money and does no I/O: storage, payment gateways, time
//! and ids come through the [`ports`]. The HTTP shell, the Diesel store and the gateway
//! adapters live in their own crates and decide nothing about money.
//!
//! - [`money`]: [`money::Credits`] (what a wallet holds, exact at [`money::LEDGER_SCALE`]) and
//!   [`money::Money`] (what a customer pays, exact at its currency's exponent).
//! - [`ledger`]: the append-only ledger and the pure decisions that guard it.
//! - [`topup`]: packs, custom amounts, bonus tiers and the top-up lifecycle.
//! - [`pricing`]: the rate card and the rounding rule of priced usage.
//! - [`holds`]: authorization holds and the available balance.
//! - [`controls`]: the monthly spending limit.
//! - [`autotopup`]: auto top-up's decisions (one charge per crossing, the monthly cap, failures).
//! - [`notices`]: low-balance alerts, notifications and events, and the outbox's retries.
//! - [`audit`]: the books recomputed from the ledger (what `billing-server audit` reports).
//! - [`ports`]: the contracts adapters implement.
//! - [`service`]: the use cases ([`service::Billing`]).

#![warn(missing_docs)]

pub mod audit;
pub mod autotopup;
pub mod controls;
pub mod holds;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod notices;
pub mod ports;
pub mod posting;
pub mod pricing;
pub mod service;
pub mod time;
pub mod topup;

pub use rust_decimal::Decimal;
