//! `billing-server statement`: an account's statement as a CSV file, without HTTP.

use std::io::Write;

use billing_core::ids::AccountId;
use billing_core::ledger::EntryKind;
use billing_core::ports::Store;
use billing_core::service::{StatementQuery, statement_of};
use billing_core::time::Timestamp;
use billing_http::WalletUnit;
use billing_http::statement::statement_csv;

use billing_store::{DieselStore, StoreOptions};

use crate::Config;

/// What `billing-server statement` was asked for, as typed.
#[derive(Debug, Clone, Default)]
pub struct StatementRequest {
    pub account: String,
    /// A day (`2026-11-01`) or an RFC 3339 instant, inclusive.
    pub from: Option<String>,
    /// A day or an RFC 3339 instant, exclusive.
    pub to: Option<String>,
    /// Only this entry type.
    pub kind: Option<String>,
}

fn bound(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, String> {
    text.map(|t| {
        Timestamp::parse_day_or_instant(t)
            .ok_or_else(|| format!("--{name} must be a day (2026-11-01) or an RFC 3339 instant"))
    })
    .transpose()
}

/// Writes the statement as CSV to `output` (a new file; stdout when `None`) and returns the
/// summary line: the period, the count and the opening and closing balances. It opens the
/// database alone (migrations run as at a start; no pack is seeded, no gateway built).
pub async fn write_statement(
    config: &Config,
    request: &StatementRequest,
    output: Option<&str>,
) -> Result<String, String> {
    let query = StatementQuery {
        kind: request
            .kind
            .as_deref()
            .map(str::parse::<EntryKind>)
            .transpose()
            .map_err(|e| format!("--type: {e}"))?,
        from: bound("from", request.from.as_deref())?,
        to: bound("to", request.to.as_deref())?,
    };
    let url = config.database_url.clone();
    // A mistyped path must not become a new, empty database.
    if !billing_store::is_postgres_url(&url) && billing_store::existing_sqlite_file(&url).is_none()
    {
        return Err(format!("no database at {url}"));
    }
    let options = StoreOptions {
        max_connections: 2,
        ..StoreOptions::default()
    };
    let store = tokio::task::spawn_blocking(move || DieselStore::connect(&url, &options))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let statement = statement_of(
        &store as &dyn Store,
        &AccountId::new(request.account.clone()),
        &query,
    )
    .await
    .map_err(|e| e.to_string())?;
    let unit = WalletUnit {
        code: config.wallet_unit.clone(),
        display_scale: config.display_scale,
    };
    let csv = statement_csv(&statement.entries, &unit);
    match output {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| format!("{path}: {e}"))?;
            if let Err(e) = file
                .write_all(csv.as_bytes())
                .and_then(|()| file.sync_all())
            {
                // No half statement left behind (it would also block the rerun).
                drop(file);
                let _ = std::fs::remove_file(path);
                return Err(format!("{path}: {e}"));
            }
        }
        None => std::io::stdout()
            .write_all(csv.as_bytes())
            .map_err(|e| format!("stdout: {e}"))?,
    }
    let show = |at: Option<Timestamp>, open: &str| {
        at.map_or_else(|| open.to_owned(), Timestamp::to_rfc3339)
    };
    Ok(format!(
        "statement of {} from {} to {}: {} transaction(s), opening balance {} {}, closing balance {} {}",
        statement.account.id,
        show(query.from, "the first transaction"),
        show(query.to, "now"),
        statement.entries.len(),
        unit.show(statement.opening_balance).0,
        unit.code,
        unit.show(statement.closing_balance).0,
        unit.code,
    ))
}
