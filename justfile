# The front door. Everything non-trivial lives in the crates.

pg_url := "postgres://postgres@127.0.0.1:5432/postgres"

# Run every test that needs nothing but the Rust toolchain.
test:
    cargo test --workspace

# Run the PostgreSQL suites against the local server.
test-pg:
    BILLING_TEST_POSTGRES_URL={{pg_url}} BILLING_REQUIRE_POSTGRES=1 cargo test --workspace -- postgres

# What CI runs.
ci:
    .ci/run
