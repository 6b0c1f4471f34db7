//! Diesel's view of the tables in `migrations/` (identical on both backends).

diesel::table! {
    accounts (id) {
        id -> Text,
        name -> Text,
        email -> Text,
        balance -> BigInt,
        created_at -> BigInt,
        limit_enabled -> Bool,
        limit_monthly -> Nullable<BigInt>,
        limit_action -> Text,
        spend_month_start -> BigInt,
        spend_month -> BigInt,
        alert_enabled -> Bool,
        alert_threshold -> Nullable<BigInt>,
        limit_told_month -> Nullable<BigInt>,
        ledger_head -> Nullable<Text>,
    }
}

diesel::table! {
    auto_topups (account_id) {
        account_id -> Text,
        enabled -> Bool,
        threshold -> Nullable<BigInt>,
        amount_minor -> Nullable<BigInt>,
        currency -> Text,
        monthly_cap_minor -> Nullable<BigInt>,
        credits -> BigInt,
        bonus -> BigInt,
        failure_limit -> Integer,
        pending_topup_id -> Nullable<Text>,
        failures -> Integer,
        month_start -> BigInt,
        month_charged_minor -> BigInt,
        disabled_reason -> Nullable<Text>,
    }
}

diesel::table! {
    payment_methods (account_id) {
        account_id -> Text,
        gateway -> Text,
        reference -> Text,
        brand -> Nullable<Text>,
        last4 -> Nullable<Text>,
        saved_at -> BigInt,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        notice_id -> Text,
        channel -> Text,
        topic -> Text,
        account_id -> Text,
        balance -> BigInt,
        cause_kind -> Text,
        cause_id -> Text,
        threshold -> Nullable<BigInt>,
        amount -> Nullable<BigInt>,
        reason -> Nullable<Text>,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    ledger_chain_backfill (id) {
        id -> Integer,
        finished_at -> BigInt,
    }
}

diesel::table! {
    ledger_entries (seq) {
        seq -> BigInt,
        id -> Text,
        account_id -> Text,
        kind -> Text,
        amount -> BigInt,
        balance_after -> BigInt,
        description -> Text,
        reference -> Nullable<Text>,
        created_at -> BigInt,
        usage_model -> Nullable<Text>,
        usage_input_tokens -> Nullable<BigInt>,
        usage_output_tokens -> Nullable<BigInt>,
        usage_input_per_million -> Nullable<BigInt>,
        usage_output_per_million -> Nullable<BigInt>,
        hash -> Nullable<Text>,
    }
}

diesel::table! {
    holds (id) {
        id -> Text,
        account_id -> Text,
        amount -> BigInt,
        status -> Text,
        captured_amount -> Nullable<BigInt>,
        entry_id -> Nullable<Text>,
        rate_model -> Nullable<Text>,
        rate_input_per_million -> Nullable<BigInt>,
        rate_output_per_million -> Nullable<BigInt>,
        created_at -> BigInt,
        expires_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    rates (model) {
        model -> Text,
        input_per_million -> BigInt,
        output_per_million -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    refund_links (refund_entry_id, refunded_entry_id) {
        refund_entry_id -> Text,
        refunded_entry_id -> Text,
    }
}

diesel::table! {
    idempotency_keys (scope, key) {
        scope -> Text,
        key -> Text,
        fingerprint -> Text,
        result_ref -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    topups (seq) {
        seq -> BigInt,
        id -> Text,
        account_id -> Text,
        pack_id -> Nullable<Text>,
        pack_name -> Nullable<Text>,
        price_minor -> BigInt,
        currency -> Text,
        credits -> BigInt,
        bonus -> BigInt,
        status -> Text,
        gateway -> Text,
        payment_ref -> Nullable<Text>,
        checkout_url -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    packs (id) {
        id -> Text,
        name -> Text,
        price_minor -> BigInt,
        currency -> Text,
        credits -> BigInt,
        popular -> Bool,
        active -> Bool,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        account_id -> Nullable<Text>,
        scope -> Text,
        prefix -> Text,
        hash -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        expires_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
        requests_per_minute_max -> Nullable<Integer>,
    }
}

diesel::table! {
    dashboard_sessions (hash) {
        hash -> Text,
        account_id -> Text,
        key_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        ended_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_events (gateway, event_id) {
        gateway -> Text,
        event_id -> Text,
        received_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    ledger_entries,
    outbox,
    refund_links,
    topups
);
