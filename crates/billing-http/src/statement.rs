//! Statements as CSV (RFC 4180): what the dashboard's download, `GET /v1/wallet/transactions`
//! with `Accept: text/csv` and `billing-server statement` write. Amounts are the ledger's
//! exact decimals, never floats; text a spreadsheet would run as a formula is defused.

use billing_core::ledger::LedgerEntry;

use crate::WalletUnit;

/// The header row, in column order.
pub const CSV_HEADER: &str = "id,created_at,type,amount,balance_after,currency,description,\
                              reference,model,input_tokens,output_tokens\r\n";

/// The entries (in the order given) as a CSV document: a header, then one CRLF-terminated
/// row each.
pub fn statement_csv(entries: &[LedgerEntry], unit: &WalletUnit) -> String {
    let mut out = String::with_capacity(CSV_HEADER.len() + entries.len() * 120);
    out.push_str(CSV_HEADER);
    for e in entries {
        let usage = e.usage.as_ref();
        let row = [
            field(e.id.as_str(), false),
            field(&e.created_at.to_rfc3339(), false),
            field(&e.kind.to_string(), false),
            field(&unit.show(e.amount).0.to_string(), false),
            field(&unit.show(e.balance_after).0.to_string(), false),
            field(&unit.code, true),
            field(&e.description, true),
            field(e.reference.as_deref().unwrap_or_default(), true),
            field(usage.map_or("", |u| u.model.as_str()), true),
            usage.map_or_else(String::new, |u| u.input_tokens.to_string()),
            usage.map_or_else(String::new, |u| u.output_tokens.to_string()),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. Text a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`.
fn field(text: &str, is_text: bool) -> String {
    let guarded = if is_text && text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if guarded.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn csv_fields_follow_rfc_4180_and_never_start_a_formula() {
        assert_eq!(field("plain", true), "plain");
        assert_eq!(field("a,b", true), "\"a,b\"");
        assert_eq!(field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines", true), "\"two\nlines\"");
        assert_eq!(field("=SUM(A1)", true), "'=SUM(A1)");
        assert_eq!(field("-1.50", false), "-1.50", "amounts keep their sign");
        assert_eq!(field("@x,y", true), "\"'@x,y\"");
    }
}
