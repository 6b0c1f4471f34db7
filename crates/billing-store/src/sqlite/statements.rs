//! SQLite statements the ledger writer runs for every posting or batch, written with fixed
//! text and a static query id so that diesel finds each one's prepared statement by its type:
//! its own `UPDATE` statements are never cached (diesel marks every one unsafe to cache), and
//! its `INSERT` of a row with optional columns (a ledger entry's) is looked up by its SQL text,
//! which diesel writes afresh for every row (a tenth of the writer's time on one hot wallet,
//! measured). A claim's row has no optional column: diesel's own insert of it already has a
//! static query id.
//! Each statement here is prepared once per connection and then only bound and stepped.

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl};

use super::WalletUpdate;
use crate::rows::NewEntryRow;

/// Declares a statement's static query id (its own marker type) and `RunQueryDsl`.
macro_rules! static_statement {
    ($statement:ident, $marker:ident) => {
        /// The query id of its statement: one prepared statement per connection.
        pub(crate) struct $marker;

        impl QueryId for $statement<'_> {
            type QueryId = $marker;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl<C> RunQueryDsl<C> for $statement<'_> {}
    };
}

/// A wallet's row after a write: its new balance, month's spend, the month its limit was
/// told and its chain's head, only if it still holds `old_balance`.
pub(crate) struct UpdateWallet<'a>(pub &'a WalletUpdate);

static_statement!(UpdateWallet, UpdateWalletId);

impl QueryFragment<Sqlite> for UpdateWallet<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE accounts SET balance = ");
        out.push_bind_param::<BigInt, _>(&self.0.balance)?;
        out.push_sql(", spend_month_start = ");
        out.push_bind_param::<BigInt, _>(&self.0.month_start)?;
        out.push_sql(", spend_month = ");
        out.push_bind_param::<BigInt, _>(&self.0.spent)?;
        out.push_sql(", limit_told_month = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.0.told)?;
        out.push_sql(", ledger_head = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.0.head)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(&self.0.id)?;
        out.push_sql(" AND balance = ");
        out.push_bind_param::<BigInt, _>(&self.0.old_balance)?;
        Ok(())
    }
}

/// A ledger entry, every column but `seq` (which SQLite assigns).
pub(crate) struct InsertEntry<'a>(pub &'a NewEntryRow);

static_statement!(InsertEntry, InsertEntryId);

impl QueryFragment<Sqlite> for InsertEntry<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        // Every field named: a column added to the row is a compile error here.
        let NewEntryRow {
            id,
            account_id,
            kind,
            amount,
            balance_after,
            description,
            reference,
            created_at,
            usage_model,
            usage_input_tokens,
            usage_output_tokens,
            usage_input_per_million,
            usage_output_per_million,
            hash,
        } = self.0;
        out.push_sql(
            "INSERT INTO ledger_entries (id, account_id, kind, amount, balance_after, \
             description, reference, created_at, usage_model, usage_input_tokens, \
             usage_output_tokens, usage_input_per_million, usage_output_per_million, hash) \
             VALUES (",
        );
        out.push_bind_param::<Text, _>(id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(account_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(kind)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(amount)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(balance_after)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(description)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(reference)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(usage_model)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(usage_input_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(usage_output_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(usage_input_per_million)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(usage_output_per_million)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(hash)?;
        out.push_sql(")");
        Ok(())
    }
}
