//! Each check gets a fresh PostgreSQL database; its two handles are two pools on it, as two
//! server processes would be.
//!
//! Runs when `BILLING_TEST_POSTGRES_URL` names a server (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without it each check prints that it was
//! SKIPPED; with `BILLING_REQUIRE_POSTGRES=1` (as `.ci/run` sets) a missing URL fails instead.

use std::io::Write;
use std::sync::Arc;

use billing_store::{DieselStore, StoreOptions, create_postgres_database};
use billing_testkit::contract::Handle;

async fn postgres(name: &'static str) -> Option<(Handle, Handle)> {
    let Ok(admin_url) = std::env::var("BILLING_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("BILLING_REQUIRE_POSTGRES").is_err(),
            "BILLING_REQUIRE_POSTGRES is set but BILLING_TEST_POSTGRES_URL is not"
        );
        // Straight to stderr: libtest captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: PostgreSQL contract check `{name}` did not run: \
             set BILLING_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
        );
        return None;
    };
    let url = create_postgres_database(&admin_url, &format!("it_store_{name}"))
        .expect("create a fresh PostgreSQL database");
    let options = StoreOptions {
        max_connections: 8,
        ..StoreOptions::default()
    };
    let first = DieselStore::connect(&url, &options).expect("connect to PostgreSQL");
    let second = DieselStore::connect(&url, &options).expect("connect to PostgreSQL again");
    assert_eq!(first.backend(), "postgres");
    Some((Arc::new(first), Arc::new(second)))
}

billing_testkit::store_contract_tests!(postgres);
