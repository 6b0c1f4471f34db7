//! Test support for the billing service: in-memory adapters of every storage port,
//! deterministic clocks and ids, and the contract suite that every storage adapter
//! (in-memory, SQLite, PostgreSQL) must pass.

#![warn(missing_docs)]

pub mod contract;
pub mod fake_myfatoorah;
pub mod fake_stripe;
pub mod fakes;
pub mod memory;
pub mod sandbox;

pub use fakes::{ManualClock, SequentialIds};
pub use memory::InMemoryStore;
pub use sandbox::InstantSandbox;
