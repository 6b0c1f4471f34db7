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

# Usage-debit throughput and latency on SQLite and PostgreSQL, uniform and hot wallet.
bench:
    cargo build --release -p billing-loadgen
    {{loadgen}} --backend sqlite --mode uniform -c 32 -t 10
    {{loadgen}} --backend sqlite --mode hot -c 32 -t 10
    {{loadgen}} --backend {{pg_url}} --mode uniform -c 32 -t 10
    {{loadgen}} --backend {{pg_url}} --mode hot -c 32 -t 10

# What CI runs.
ci:
    .ci/run
