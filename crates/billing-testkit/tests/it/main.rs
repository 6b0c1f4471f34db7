//! The contract suite against the in-memory store.

use std::sync::Arc;

use billing_testkit::InMemoryStore;
use billing_testkit::contract::Handle;

async fn memory(_name: &'static str) -> Option<(Handle, Handle)> {
    let store: Handle = Arc::new(InMemoryStore::new());
    Some((store.clone(), store))
}

billing_testkit::store_contract_tests!(memory);
