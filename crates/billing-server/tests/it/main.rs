//! End-to-end tests: the real server on port 0, real HTTP, a fresh SQLite file or
//! PostgreSQL database per test. The PostgreSQL variants run when
//! `BILLING_TEST_POSTGRES_URL` is set and say SKIPPED otherwise.

mod audit;
mod autotopup;
mod backup;
mod batching;
mod controls;
mod dashboard;
mod fuzz;
mod gateways;
mod helpers;
mod holds;
mod limits;
mod logs;
mod notices;
mod pricing;
mod scenarios;
mod startup;
mod statements;
mod tenancy;

use audit::*;
use autotopup::*;
use backup::*;
use batching::*;
use controls::*;
use dashboard::*;
use holds::*;
use limits::*;
use notices::*;
use pricing::*;
use scenarios::*;
use startup::*;
use statements::*;
use tenancy::*;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::$name(crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::$name(crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    top_up_through_the_sandbox,
    webhooks_credit_once_and_only_when_verified,
    reconciliation_completes_lost_webhooks,
    racing_usage_debits,
    usage_is_idempotent,
    accounts_are_isolated,
    bad_inputs_are_refused_and_write_nothing,
    admin_operations,
    stripe_checkout_end_to_end,
    stripe_reconciliation,
    myfatoorah_end_to_end,
    myfatoorah_reconciliation,
    tenancy_matrix,
    platform_keys_act_on_their_own_account,
    key_management,
    revocation_reaches_other_processes_within_the_cache_ttl,
    failed_authentications_are_throttled,
    unsupported_methods_answer_405,
    answers_are_never_stored,
    rate_card_prices_usage,
    racing_holds,
    holds_race_debits,
    hold_lifecycle,
    processes_start_together,
    spending_limit_blocks_exactly,
    low_balance_alert_emails_once_per_crossing,
    spending_limit_reached_is_told_once,
    notices_survive_kill_9,
    auto_topup_charges_once,
    stripe_auto_topup,
    stripe_auto_topup_needs_the_customer,
    readiness_follows_the_database,
    kill_9_with_batches_in_flight,
    sigterm_drains_in_flight_requests,
    hostile_requests_are_cut_off,
    connections_past_the_bound_wait_until_one_closes,
    dashboard_sessions_outlive_restarts_and_end_with_their_key,
    audit_names_tampered_rows,
    a_clock_far_behind_the_ledger_refuses_to_start,
    statements_are_the_ledger_as_csv,
    backup_under_load_restores_exact_books,
);

/// Several processes on one database is the PostgreSQL deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_debits_race_across_processes() {
    batching::debits_race_across_processes(helpers::Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_auto_topup_across_processes() {
    autotopup::auto_topup_across_processes(helpers::Backend::Postgres).await;
}

/// Fuzzing is about the HTTP shell and the core's parsing: SQLite is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_hostile_input_never_fails_the_server() {
    fuzz::hostile_input_never_fails_the_server(helpers::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_reach_the_logs() {
    logs::secrets_never_reach_the_logs().await;
}
