//! Each check gets a fresh SQLite file; its two handles are two pools on that file.

use std::sync::Arc;

use billing_store::{DieselStore, StoreOptions};
use billing_testkit::contract::Handle;

async fn sqlite(name: &'static str) -> Option<(Handle, Handle)> {
    let dir =
        std::env::temp_dir().join(format!("billing-store-it-{}-{}", std::process::id(), name));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("billing.db");
    let url = path.to_str().expect("utf-8 temp path").to_owned();
    let options = StoreOptions {
        max_connections: 8,
        ..StoreOptions::default()
    };
    let first = DieselStore::connect(&url, &options).expect("open sqlite");
    let second = DieselStore::connect(&url, &options).expect("open sqlite again");
    assert_eq!(first.backend(), "sqlite");
    Some((Arc::new(first), Arc::new(second)))
}

billing_testkit::store_contract_tests!(sqlite);
