//! The handlers, by audience: the customer's wallet (`wallet`), the platform and admins
//! (`platform`), gateways and operations (`gateway`).

pub mod alerts;
pub mod autotopup;
pub mod controls;
pub mod gateway;
pub mod holds;
pub mod platform;
pub mod rates;
pub mod wallet;
