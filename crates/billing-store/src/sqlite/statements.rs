//! SQLite statements the ledger writer runs for every batch that Diesel would not cache: its
//! `UPDATE` statements are never cached (Diesel marks every one unsafe to cache), so a
//! wallet's row was parsed afresh for every batch. Written here with fixed text, they are
//! prepared once per connection.

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl};

use super::WalletUpdate;

/// A wallet's row after a write: its new balance, month's spend, the month its limit was
/// told and its chain's head, only if it still holds `old_balance`.
pub(crate) struct UpdateWallet<'a>(pub &'a WalletUpdate);

impl QueryId for UpdateWallet<'_> {
    type QueryId = ();
    // Cached by its text, which is always the same.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C> RunQueryDsl<C> for UpdateWallet<'_> {}

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
