# The front door. Everything non-trivial lives in the crates.

pg_url := "postgres://postgres@127.0.0.1:5432/postgres"
loadgen := "target/release/billing-loadgen"

# Run the service: embedded SQLite, sandbox payments.
run:
    cargo run --release -p billing-server

# Run every test that needs nothing but the Rust toolchain.
test:
    cargo test --workspace

# Run the PostgreSQL suites against the local server.
test-pg:
    BILLING_TEST_POSTGRES_URL={{pg_url}} BILLING_REQUIRE_POSTGRES=1 cargo test --workspace -- postgres

# The end-to-end tests only (real server, real HTTP), on SQLite and PostgreSQL.
e2e:
    BILLING_TEST_POSTGRES_URL={{pg_url}} cargo test -p billing-server --test it

# Usage-debit throughput, p99 at half the peak, and the database alone doing one debit per
# transaction (pgbench; Python's sqlite3 loop), for the README's four workloads.
bench: drop-test-databases
    cargo build --release -p billing-loadgen
    {{loadgen}} --table {{pg_url}} -c 32 -t 10

# Drop the PostgreSQL test databases that test runs left behind (their process is gone).
drop-test-databases:
    BILLING_TEST_POSTGRES_URL={{pg_url}} .ci/drop-test-databases

# What CI runs.
ci:
    .ci/run
