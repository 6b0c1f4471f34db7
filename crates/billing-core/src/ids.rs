//! Prefixed identifiers (`acct_…`, `txn_…`, `topup_…`, `pack_…`, `key_…`).

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix new ids of this kind carry.
            pub const PREFIX: &'static str = $prefix;

            /// Wraps an id read from storage or a request. Ids are opaque: an unknown id is
            /// simply not found.
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            /// The id's text, exactly as stored and sent.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An account, which owns exactly one wallet.
    AccountId,
    "acct"
);
id_type!(
    /// A ledger entry (the seed documents call them transactions).
    EntryId,
    "txn"
);
id_type!(
    /// A top-up: one attempt to buy credits through a gateway.
    TopUpId,
    "topup"
);
id_type!(
    /// An authorization hold: credits reserved for a call whose cost is known when it ends.
    HoldId,
    "hold"
);
id_type!(
    /// A top-up pack.
    PackId,
    "pack"
);
id_type!(
    /// An API key's public id (not the secret).
    ApiKeyId,
    "key"
);
