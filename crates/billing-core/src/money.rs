//! Money, currencies and credits.
//!
//! Two quantities live here and never mix implicitly:
//! - [`Money`]: what a customer pays, in a [`Currency`] with an ISO 4217 exponent.
//! - [`Credits`]: what a wallet holds, in the deployment's wallet unit.
//!
//! # Rounding rules
//! There are exactly two places where rounding happens, both named here:
//! 1. **Bonus credits** ([`crate::topup::BonusTier::bonus_for`]) are rounded *towards zero*
//!    to the ledger scale ([`LEDGER_SCALE`]): a bonus never grants a fraction the ledger cannot
//!    hold, and never more than the advertised percentage.
//! 2. **Money to credits** for custom top-ups ([`crate::topup::TopUpPolicy::credits_for`]):
//!    `amount × credits_per_unit`, rounded towards zero to the ledger scale.
//!
//! Everything else is exact: amounts with more decimals than allowed are refused, never rounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Number of decimal places every ledger amount is stored with (nano-units).
///
/// Chosen up front and hard to change later: 10^-9 of the wallet unit is fine enough for
/// per-token LLM prices ($0.02 per million tokens is 2×10^-8 per token), and an `i64` at this
/// scale still holds ±9,223,372,036.854775807 units per amount and per balance.
pub const LEDGER_SCALE: u32 = 9;

const LEDGER_FACTOR: i64 = 1_000_000_000;

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// More decimals than allowed: [`LEDGER_SCALE`] for credits, the currency's exponent for money.
    #[error("amount has more than {max_scale} decimal places")]
    TooPrecise {
        /// The most decimals allowed.
        max_scale: u32,
    },
    /// Too large: credits beyond `i64` ledger units, money above [`PAYMENT_MAX_MAJOR_UNITS`], or a
    /// number a `Decimal` cannot hold.
    #[error("amount is out of range")]
    OutOfRange,
    /// Zero or negative where a positive amount is required, or negative money.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// Money in two different currencies was combined (the left one, then the right one).
    #[error("amounts in different currencies: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The text is not a decimal number at all.
    #[error("amount is not a decimal number")]
    NotANumber,
}

/// Scale of `value` once trailing zeros are dropped (`1.50` has scale 1).
fn significant_scale(value: Decimal) -> u32 {
    value.normalize().scale()
}

/// A number of credits in the wallet unit, exact at [`LEDGER_SCALE`] and within `i64` range
/// at that scale. May be negative (a debit entry's amount).
///
/// # Examples
///
/// ```
/// use billing_core::money::Credits;
///
/// let balance: Credits = "10.5".parse().expect("a valid amount");
/// let one_unit = Credits::from_units(1); // 10^-9 credits
/// let after = balance.checked_sub(one_unit).expect("in range");
/// assert_eq!(after.to_string(), "10.499999999");
/// assert_eq!(after.to_units(), Ok(10_499_999_999));
/// // More than nine decimals is refused, never rounded.
/// assert!("0.0000000001".parse::<Credits>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(Decimal);

impl Credits {
    /// No credits.
    pub const ZERO: Credits = Credits(Decimal::ZERO);

    /// The largest amount the ledger can hold: `i64::MAX` ledger units.
    pub fn max() -> Credits {
        Credits(Decimal::new(i64::MAX, LEDGER_SCALE))
    }

    /// Checked construction: refuses more than [`LEDGER_SCALE`] decimals and values whose
    /// ledger units do not fit an `i64`.
    pub fn new(value: Decimal) -> Result<Credits, AmountError> {
        if significant_scale(value) > LEDGER_SCALE {
            return Err(AmountError::TooPrecise {
                max_scale: LEDGER_SCALE,
            });
        }
        let credits = Credits(value.normalize());
        credits.to_units()?;
        Ok(credits)
    }

    /// Like [`Credits::new`], and the value must be strictly positive.
    pub fn positive(value: Decimal) -> Result<Credits, AmountError> {
        let credits = Credits::new(value)?;
        if credits.0 <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        Ok(credits)
    }

    /// Rebuilds credits from integer ledger units. Always exact.
    pub fn from_units(units: i64) -> Credits {
        Credits(Decimal::new(units, LEDGER_SCALE).normalize())
    }

    /// The amount in integer ledger units (× 10^[`LEDGER_SCALE`]). Exact or an error, never
    /// truncated.
    pub fn to_units(self) -> Result<i64, AmountError> {
        let scaled = self
            .0
            .checked_mul(Decimal::from(LEDGER_FACTOR))
            .ok_or(AmountError::OutOfRange)?;
        if !scaled.fract().is_zero() {
            return Err(AmountError::TooPrecise {
                max_scale: LEDGER_SCALE,
            });
        }
        i64::try_from(scaled).map_err(|_| AmountError::OutOfRange)
    }

    /// The exact value in the wallet unit.
    pub fn value(self) -> Decimal {
        self.0
    }

    /// Whether it is below zero (a debit's amount).
    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// Whether it is above zero.
    pub fn is_positive(self) -> bool {
        self.0 > Decimal::ZERO
    }

    /// The magnitude (a debit's size).
    pub fn abs(self) -> Credits {
        Credits(self.0.abs())
    }

    /// The opposite amount (a debit entry from a positive charge). Exact; the result is
    /// checked like any other amount when it is stored.
    pub fn negated(self) -> Credits {
        Credits(-self.0)
    }

    /// Checked addition that stays within the ledger's range.
    pub fn checked_add(self, other: Credits) -> Result<Credits, AmountError> {
        let sum = self.0.checked_add(other.0).ok_or(AmountError::OutOfRange)?;
        Credits::new(sum)
    }

    /// Checked subtraction that stays within the ledger's range.
    pub fn checked_sub(self, other: Credits) -> Result<Credits, AmountError> {
        let difference = self.0.checked_sub(other.0).ok_or(AmountError::OutOfRange)?;
        Credits::new(difference)
    }

    /// The exact sum of `amounts`, or an error when it leaves the ledger's range.
    pub fn sum(amounts: impl IntoIterator<Item = Credits>) -> Result<Credits, AmountError> {
        amounts
            .into_iter()
            .try_fold(Credits::ZERO, Credits::checked_add)
    }

    /// Rounds `value` towards zero to the ledger scale. One of the two named rounding points
    /// (see the module documentation); callers say which rule they apply.
    pub fn round_toward_zero(value: Decimal) -> Result<Credits, AmountError> {
        Credits::new(
            value.round_dp_with_strategy(LEDGER_SCALE, rust_decimal::RoundingStrategy::ToZero),
        )
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credits({})", self.0)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Credits {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Credits, AmountError> {
        let value = parse_decimal(s)?;
        Credits::new(value)
    }
}

/// Parses a plain decimal (`12`, `-0.15`, `1e3` is refused). Leading `+` is refused too.
pub fn parse_decimal(s: &str) -> Result<Decimal, AmountError> {
    let s = s.trim();
    let digits = s.strip_prefix('-').unwrap_or(s);
    let valid = !digits.is_empty()
        && !digits.starts_with('.')
        && !digits.ends_with('.')
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1;
    if !valid {
        return Err(AmountError::NotANumber);
    }
    // Leading zeros say nothing; trailing zeros of the fraction are dropped only where the
    // text would not fit a Decimal's 28 digits otherwise. More than 28 significant digits
    // does not fit: that is out of range, not a rounding opportunity.
    let (sign, digits) = s.strip_prefix('-').map_or(("", s), |d| ("-", d));
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = match int.trim_start_matches('0') {
        "" => "0",
        significant => significant,
    };
    let frac = if int.len() + frac.len() > 28 {
        frac.trim_end_matches('0')
    } else {
        frac
    };
    let text = if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    };
    Decimal::from_str_exact(&text).map_err(|_| AmountError::OutOfRange)
}

/// Largest exponent magnitude [`parse_json_number`] reads (beyond it no amount fits).
const JSON_EXPONENT_MAX: u32 = 30;

/// Parses a JSON number's text exactly: a plain decimal as [`parse_decimal`], or with an
/// exponent (`1e-9`, `2.5E+3`), as JSON allows and as JavaScript writes small numbers. The
/// value is exact (never through `f64`); trailing zeros an exponent leaves are dropped.
pub fn parse_json_number(s: &str) -> Result<Decimal, AmountError> {
    let Some(at) = s.find(['e', 'E']) else {
        return parse_decimal(s);
    };
    let (mantissa, exponent) = (&s[..at], &s[at + 1..]);
    let mantissa = parse_decimal(mantissa)?;
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(AmountError::NotANumber);
    }
    let magnitude: u32 = match digits.trim_start_matches('0') {
        "" => 0,
        significant if significant.len() <= 2 => {
            significant.parse().map_err(|_| AmountError::NotANumber)?
        }
        _ => return Err(AmountError::OutOfRange),
    };
    if magnitude > JSON_EXPONENT_MAX {
        return Err(AmountError::OutOfRange);
    }
    let mantissa = mantissa.normalize();
    let value = if exponent.starts_with('-') {
        // Exact: the same digits with a larger scale, when the scale fits.
        let scale = mantissa.scale() + magnitude;
        if scale > 28 {
            return Err(AmountError::OutOfRange);
        }
        Decimal::from_i128_with_scale(mantissa.mantissa(), scale)
    } else {
        (0..magnitude)
            .try_fold(mantissa, |v, _| v.checked_mul(Decimal::TEN))
            .ok_or(AmountError::OutOfRange)?
    };
    Ok(value.normalize())
}

/// An ISO 4217 currency with its exponent (number of minor-unit decimals).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    exponent: u32,
}

/// Currencies the service knows, with their ISO 4217 exponents.
const CURRENCIES: &[(&str, u32)] = &[
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("CHF", 2),
    ("INR", 2),
    ("SAR", 2),
    ("AED", 2),
    ("QAR", 2),
    ("EGP", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("BHD", 3),
    ("OMR", 3),
    ("JOD", 3),
];

/// A currency code the service does not know; holds the code as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency {0:?}")]
pub struct UnknownCurrencyError(pub String);

impl Currency {
    /// US dollars (exponent 2), the default policy's currency.
    pub const USD: Currency = Currency {
        code: *b"USD",
        exponent: 2,
    };

    /// Looks up a currency by its ISO code (case-insensitive).
    pub fn from_code(code: &str) -> Result<Currency, UnknownCurrencyError> {
        let upper = code.to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == upper)
            .map(|(c, exponent)| {
                let bytes = c.as_bytes();
                Currency {
                    code: [bytes[0], bytes[1], bytes[2]],
                    exponent: *exponent,
                }
            })
            .ok_or(UnknownCurrencyError(code.to_owned()))
    }

    /// The upper-case ISO 4217 code (`USD`).
    pub fn code(&self) -> &str {
        // The code is built only from the ASCII table above.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimals of the minor unit (USD 2, JPY 0, KWD 3).
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money in a currency, exact to the currency's exponent. Never negative: money
/// here is a price or a payment.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

/// Upper bound on any single payment, in major units, whatever the currency. Far above any
/// top-up; it exists so that arithmetic on money can never overflow.
pub const PAYMENT_MAX_MAJOR_UNITS: i64 = 1_000_000_000;

impl Money {
    /// Checked construction: at most the currency's exponent in decimals, not negative, and at
    /// most [`PAYMENT_MAX_MAJOR_UNITS`].
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, AmountError> {
        if significant_scale(amount) > currency.exponent() {
            return Err(AmountError::TooPrecise {
                max_scale: currency.exponent(),
            });
        }
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(AmountError::NotPositive);
        }
        if amount > Decimal::from(PAYMENT_MAX_MAJOR_UNITS) {
            return Err(AmountError::OutOfRange);
        }
        let mut amount = amount.normalize();
        amount.rescale(currency.exponent());
        Ok(Money { amount, currency })
    }

    /// Builds money from an integer count of minor units (cents, fils). Exact.
    pub fn from_minor_units(minor: i64, currency: Currency) -> Result<Money, AmountError> {
        Money::new(Decimal::new(minor, currency.exponent()), currency)
    }

    /// The amount in minor units (Stripe's wire format). Exact by construction.
    pub fn minor_units(&self) -> i64 {
        let mut scaled = self.amount;
        scaled.rescale(self.currency.exponent());
        // `Money::new` bounds the amount to 10^9 major units and the exponent to 3, so the
        // mantissa fits an i64 with room to spare.
        i64::try_from(scaled.mantissa()).unwrap_or(i64::MAX)
    }

    /// The amount in major units, written with exactly the currency's exponent
    /// (`25.00` USD, `5` JPY, `1.250` KWD).
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency it is in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The exact sum; refuses amounts in different currencies (`CurrencyMismatch`) and sums above
    /// [`PAYMENT_MAX_MAJOR_UNITS`] (`OutOfRange`).
    pub fn checked_add(&self, other: &Money) -> Result<Money, AmountError> {
        if self.currency != other.currency {
            return Err(AmountError::CurrencyMismatch(self.currency, other.currency));
        }
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or(AmountError::OutOfRange)?;
        Money::new(sum, self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("test decimal")
    }

    #[test]
    fn credits_refuse_more_than_ledger_scale() {
        assert!(Credits::new(d("0.000000001")).is_ok());
        assert_eq!(
            Credits::new(d("0.0000000001")),
            Err(AmountError::TooPrecise { max_scale: 9 })
        );
        // Trailing zeros are not precision.
        assert!(Credits::new(d("1.500000000000")).is_ok());
    }

    #[test]
    fn credits_limits_round_trip_through_units() {
        let max = Credits::max();
        assert_eq!(max.to_units(), Ok(i64::MAX));
        assert_eq!(Credits::from_units(i64::MAX), max);
        let min = Credits::from_units(i64::MIN + 1);
        assert_eq!(min.to_units(), Ok(i64::MIN + 1));
        assert_eq!(
            Credits::new(d("9223372036.854775808")),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(
            max.checked_add(Credits::from_units(1)),
            Err(AmountError::OutOfRange)
        );
    }

    #[test]
    fn money_respects_currency_exponent() {
        let kwd = Currency::from_code("kwd").expect("known");
        assert_eq!(kwd.exponent(), 3);
        assert_eq!(
            Money::new(d("1.2345"), kwd),
            Err(AmountError::TooPrecise { max_scale: 3 })
        );
        let m = Money::new(d("1.25"), kwd).expect("valid");
        assert_eq!(m.minor_units(), 1250);
        assert_eq!(m.amount().to_string(), "1.250");
        let jpy = Currency::from_code("JPY").expect("known");
        assert!(Money::new(d("1.5"), jpy).is_err());
        assert_eq!(Money::new(d("500"), jpy).expect("valid").minor_units(), 500);
        assert_eq!(
            Money::new(d("-1"), Currency::USD),
            Err(AmountError::NotPositive)
        );
    }

    #[test]
    fn parse_decimal_refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "", "-", ".5", "5.", "1e3", "+1", "abc", "1.2.3", "NaN", "0x10",
        ] {
            assert_eq!(parse_decimal(bad), Err(AmountError::NotANumber), "{bad}");
        }
        assert_eq!(parse_decimal("-0.15"), Ok(d("-0.15")));
        assert_eq!(parse_decimal("007.50"), Ok(d("7.50")));
        assert_eq!(
            parse_decimal("000.015610000000000000000000000000").map(|v| v.to_string()),
            Ok("0.01561".to_owned())
        );
        assert_eq!(
            parse_decimal("123456789012345678901234567890"),
            Err(AmountError::OutOfRange)
        );
    }

    #[test]
    fn json_numbers_with_exponents_are_read_exactly() {
        for (text, want) in [
            ("25.50", "25.50"),
            ("1e-9", "0.000000001"),
            ("1E-09", "0.000000001"),
            ("1.5e-05", "0.000015"),
            ("1.0e-9", "0.000000001"),
            ("2.5E+3", "2500"),
            ("1e3", "1000"),
            ("-4e0", "-4"),
            ("7e00", "7"),
            ("0e5", "0"),
        ] {
            let got = parse_json_number(text).expect(text);
            assert_eq!(got.to_string(), want, "{text}");
        }
        for (bad, why) in [
            ("1e", AmountError::NotANumber),
            ("e5", AmountError::NotANumber),
            ("1e+", AmountError::NotANumber),
            ("1e5.5", AmountError::NotANumber),
            ("1e-1e", AmountError::NotANumber),
            ("1e-31", AmountError::OutOfRange),
            ("1e999999999999", AmountError::OutOfRange),
            ("1e30", AmountError::OutOfRange),
            ("1.2345678901234567890e-20", AmountError::OutOfRange),
        ] {
            assert_eq!(parse_json_number(bad), Err(why), "{bad}");
        }
    }

    proptest! {
        /// Any ledger amount survives the trip to storage units and back, unit for unit.
        #[test]
        fn credits_units_round_trip(units in any::<i64>()) {
            let credits = Credits::from_units(units);
            prop_assert_eq!(credits.to_units(), Ok(units));
            prop_assert_eq!(Credits::new(credits.value()), Ok(credits));
            prop_assert_eq!(credits.to_string().parse::<Credits>(), Ok(credits));
        }

        /// Addition and subtraction of credits never lose a unit: they agree with i128
        /// arithmetic on ledger units, and fail exactly when the result leaves i64.
        #[test]
        fn credits_arithmetic_is_exact(a in any::<i64>(), b in any::<i64>()) {
            let (x, y) = (Credits::from_units(a), Credits::from_units(b));
            let sum = i128::from(a) + i128::from(b);
            match x.checked_add(y) {
                Ok(s) => prop_assert_eq!(i128::from(s.to_units().expect("in range")), sum),
                Err(_) => prop_assert!(i64::try_from(sum).is_err()),
            }
            let difference = i128::from(a) - i128::from(b);
            match x.checked_sub(y) {
                Ok(s) => prop_assert_eq!(i128::from(s.to_units().expect("in range")), difference),
                Err(_) => prop_assert!(i64::try_from(difference).is_err()),
            }
        }

        /// Money survives minor units, in every exponent.
        #[test]
        fn money_minor_units_round_trip(minor in 0i64..=1_000_000_000_000, code in prop::sample::select(vec!["USD", "JPY", "KWD"])) {
            let currency = Currency::from_code(code).expect("known");
            let max_minor = PAYMENT_MAX_MAJOR_UNITS * 10i64.pow(currency.exponent());
            match Money::from_minor_units(minor, currency) {
                Ok(money) => {
                    prop_assert!(minor <= max_minor);
                    prop_assert_eq!(money.minor_units(), minor);
                    prop_assert_eq!(Money::new(money.amount(), currency), Ok(money));
                }
                Err(e) => {
                    prop_assert!(minor > max_minor);
                    prop_assert_eq!(e, AmountError::OutOfRange);
                }
            }
        }

        /// Rounding toward zero never grants more than the exact value and loses less than one
        /// ledger unit.
        #[test]
        fn rounding_toward_zero_is_bounded(units in 0i64..1_000_000_000_000, extra in 0u32..1000) {
            let exact = Decimal::new(units, LEDGER_SCALE) + Decimal::new(i64::from(extra), LEDGER_SCALE + 3);
            let rounded = Credits::round_toward_zero(exact).expect("in range");
            prop_assert!(rounded.value() <= exact);
            prop_assert!(exact - rounded.value() < Decimal::new(1, LEDGER_SCALE));
        }
    }
}
