//! The last 30 days of a wallet as an inline SVG drawn on the server: the balance at the
//! end of each day as a line, the day's usage as bars. Amounts are exact until they become
//! pixel coordinates, the only place a float appears.

use billing_core::Decimal;
use billing_core::ledger::{EntryKind, LedgerEntry};
use billing_core::time::Timestamp;

use crate::page::escape;

/// Days the chart shows, today included.
pub const DAYS: usize = 30;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One day: the balance at its end and what usage took during it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub balance: Decimal,
    pub spend: Decimal,
}

/// The first instant (UTC) of the window's first day.
pub fn window_start(now: Timestamp) -> Timestamp {
    let today = now.as_micros().div_euclid(MICROS_PER_DAY);
    Timestamp::from_micros((today - (DAYS as i64 - 1)) * MICROS_PER_DAY)
}

/// The days of the window ending with `now`'s day, from `entries` newest first (every entry
/// of the window, then at least the newest one before it if there is one).
pub fn days(entries: &[LedgerEntry], now: Timestamp) -> Vec<Day> {
    let start = window_start(now).as_micros();
    let mut chronological: Vec<&LedgerEntry> = entries.iter().collect();
    chronological.reverse();
    // The balance the window opens with: after the newest entry before it, or else before
    // the oldest entry read (`balance_after − amount`, exact by the running-sum rule).
    let mut balance = match chronological
        .iter()
        .rev()
        .find(|e| e.created_at.as_micros() < start)
    {
        Some(e) => e.balance_after.value(),
        None => chronological.first().map_or(Decimal::ZERO, |e| {
            e.balance_after.value() - e.amount.value()
        }),
    };
    let mut out = Vec::with_capacity(DAYS);
    let mut next = chronological
        .iter()
        .skip_while(|e| e.created_at.as_micros() < start)
        .peekable();
    for day in 0..DAYS as i64 {
        let day_start = start + day * MICROS_PER_DAY;
        let day_end = day_start + MICROS_PER_DAY;
        let mut spend = Decimal::ZERO;
        while let Some(e) = next.next_if(|e| e.created_at.as_micros() < day_end) {
            balance = e.balance_after.value();
            if e.kind == EntryKind::Usage {
                spend -= e.amount.value();
            }
        }
        let date = Timestamp::from_micros(day_start).to_rfc3339();
        out.push(Day {
            date: date.get(..10).unwrap_or(&date).to_owned(),
            balance,
            spend,
        });
    }
    out
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 8.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 10.0;

fn to_f64(value: Decimal) -> f64 {
    value.to_string().parse().unwrap_or(0.0)
}

/// `value` with at least `scale` decimals.
fn shown(value: Decimal, scale: u32) -> Decimal {
    let mut value = value.normalize();
    if value.scale() < scale {
        value.rescale(scale);
    }
    value
}

/// The chart's markup: an `<svg>` with a title, a text summary and the numbers of every
/// day in `<title>` tooltips (so that it reads without colour and without sight). Amounts
/// are shown with at least `scale` decimals.
pub fn svg(days: &[Day], unit: &str, scale: u32) -> String {
    let max_balance = days.iter().map(|d| d.balance).max().unwrap_or_default();
    let max_spend = days.iter().map(|d| d.spend).max().unwrap_or_default();
    let top = to_f64(max_balance.max(max_spend)).max(1.0);
    let plot = HEIGHT - BOTTOM - TOP;
    let step = (WIDTH - 2.0 * LEFT) / days.len().max(1) as f64;
    let y = |v: Decimal| TOP + plot - to_f64(v) / top * plot;
    let mut bars = String::new();
    let mut points = Vec::with_capacity(days.len());
    for (i, day) in days.iter().enumerate() {
        let x = LEFT + step * i as f64;
        let bar_top = y(day.spend);
        bars.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{bar_top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d4a72c\"><title>{}: spent {} {unit}, balance {} {unit}</title></rect>",
            x + step * 0.15,
            step * 0.7,
            (TOP + plot - bar_top).max(0.0),
            escape(&day.date),
            shown(day.spend, scale),
            shown(day.balance, scale),
            unit = escape(unit),
        ));
        points.push(format!("{:.1},{:.1}", x + step / 2.0, y(day.balance)));
    }
    let first = days.first().map(|d| d.date.as_str()).unwrap_or_default();
    let last = days.last().map(|d| d.date.as_str()).unwrap_or_default();
    let spent: Decimal = days.iter().map(|d| d.spend).sum();
    let summary = format!(
        "Balance now {} {unit}; {} {unit} spent on usage in the last {} days.",
        shown(days.last().map(|d| d.balance).unwrap_or_default(), scale),
        shown(spent, scale),
        days.len(),
        unit = escape(unit),
    );
    format!(
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"chart-title chart-desc\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"chart-title\">Balance and daily spend, last {days} days</title>\
         <desc id=\"chart-desc\">{summary}</desc>\
         <line x1=\"{LEFT}\" y1=\"{base:.1}\" x2=\"{right:.1}\" y2=\"{base:.1}\" stroke=\"#d0d7de\"/>\
         {bars}\
         <polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"2.5\" points=\"{points}\"/>\
         <text x=\"{LEFT}\" y=\"{label_y}\" font-size=\"11\" fill=\"#57606a\">{first}</text>\
         <text x=\"{right:.1}\" y=\"{label_y}\" font-size=\"11\" fill=\"#57606a\" text-anchor=\"end\">{last}</text>\
         </svg>\
         <div class=\"legend\"><span><span class=\"key\" style=\"background:#0b5cad\"></span>Balance (line)</span>\
         <span><span class=\"key\" style=\"background:#d4a72c;height:.6rem\"></span>Daily spend (bars)</span></div>\
         <p class=\"muted small\" id=\"chart-summary\">{summary}</p>",
        days = days.len(),
        base = TOP + plot,
        right = WIDTH - LEFT,
        label_y = HEIGHT - 5.0,
        points = points.join(" "),
        first = escape(first),
        last = escape(last),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_core::ids::{AccountId, EntryId};
    use billing_core::money::{Credits, parse_decimal};

    fn entry(secs: i64, kind: EntryKind, amount: &str, after: &str) -> LedgerEntry {
        LedgerEntry {
            id: EntryId::new(format!("e{secs}")),
            account_id: AccountId::new("acct"),
            kind,
            amount: Credits::new(parse_decimal(amount).expect("amount")).expect("credits"),
            balance_after: Credits::new(parse_decimal(after).expect("after")).expect("credits"),
            description: String::new(),
            reference: None,
            created_at: Timestamp::from_secs(secs),
            usage: None,
        }
    }

    #[test]
    fn days_carry_the_balance_and_sum_the_spend() {
        let day = 86_400;
        let now = Timestamp::from_secs(100 * day + 3600);
        let start = window_start(now).as_secs();
        assert_eq!(start, 71 * day);
        // Newest first, as the ledger answers.
        let entries = vec![
            entry(start + 29 * day + 10, EntryKind::Usage, "-1.50", "46.00"),
            entry(start + 2 * day + 20, EntryKind::Usage, "-2.25", "47.50"),
            entry(start + 2 * day + 10, EntryKind::TopUp, "40", "49.75"),
            entry(start + 10, EntryKind::Usage, "-0.25", "9.75"),
            entry(start - 10, EntryKind::TopUp, "10", "10"),
        ];
        let days = days(&entries, now);
        assert_eq!(days.len(), DAYS);
        assert_eq!(days[0].balance, Decimal::new(975, 2));
        assert_eq!(days[0].spend, Decimal::new(25, 2));
        assert_eq!(days[1].balance, Decimal::new(975, 2), "carried forward");
        assert_eq!(days[2].balance, Decimal::new(4750, 2));
        assert_eq!(days[2].spend, Decimal::new(225, 2), "a top-up is not spend");
        assert_eq!(days[29].balance, Decimal::new(4600, 2));
        assert_eq!(days[29].spend, Decimal::new(150, 2));
        assert_eq!(days[0].date, Timestamp::from_secs(start).to_rfc3339()[..10]);
        let svg = svg(&days, "USD", 2);
        assert!(
            svg.contains("Balance now 46.00 USD; 4.00 USD spent"),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), DAYS);
    }

    #[test]
    fn without_an_entry_before_the_window_the_oldest_entry_gives_the_opening_balance() {
        let day = 86_400;
        let now = Timestamp::from_secs(100 * day);
        let start = window_start(now).as_secs();
        let entries = vec![entry(start + 3 * day, EntryKind::Usage, "-1", "4")];
        let days = days(&entries, now);
        assert_eq!(days[0].balance, Decimal::from(5));
        assert_eq!(days[3].balance, Decimal::from(4));
    }

    #[test]
    fn an_empty_wallet_draws_a_flat_chart() {
        let days = days(&[], Timestamp::from_secs(1_000_000));
        assert!(
            days.iter()
                .all(|d| d.balance.is_zero() && d.spend.is_zero())
        );
        let svg = svg(&days, "<b>", 2);
        assert!(svg.contains("&lt;b&gt;"), "the unit is escaped");
        assert!(!svg.contains("NaN"));
    }
}
