//! The rate card: prices per million input and output tokens, by model, in the wallet's
//! unit, and the one rounding rule of priced usage.
//!
//! Cost = (input_tokens × input_per_million + output_tokens × output_per_million) / 10^6,
//! computed exactly, then **rounded up** to the ledger scale ([`LEDGER_SCALE`], 10^-9) once,
//! on the total of a request: a platform never charges less than the rate card says, and
//! never more than one ledger unit above it.

use rust_decimal::Decimal;

use crate::money::{AmountError, Credits, LEDGER_SCALE};

/// Most tokens of each kind one request may report.
pub const TOKENS_MAX: u64 = 1_000_000_000;
/// Prices per million tokens are below this (in wallet units).
pub const PRICE_PER_MILLION_LIMIT: u32 = 1_000_000;
/// Longest model name, in bytes.
pub const MODEL_LENGTH_MAX: usize = 100;

/// A model's prices, per million tokens, in the wallet's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// The model name (see [`check_model`]).
    pub model: String,
    /// Price of a million input tokens, in the wallet's unit (at most 9 decimals).
    pub input_per_million: Decimal,
    /// Price of a million output tokens, in the wallet's unit (at most 9 decimals).
    pub output_per_million: Decimal,
}

/// What a priced usage entry records: the model, the tokens and the prices it was charged
/// at (a later price change does not alter it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDetail {
    /// The model charged for.
    pub model: String,
    /// Input tokens charged for.
    pub input_tokens: u64,
    /// Output tokens charged for.
    pub output_tokens: u64,
    /// The price per million input tokens it was charged at.
    pub input_per_million: Decimal,
    /// The price per million output tokens it was charged at.
    pub output_per_million: Decimal,
}

/// Why a rate or a priced request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The model name is empty, too long, or has a character outside `A-Z a-z 0-9 . - _ :`.
    #[error(
        "model must be 1 to {MODEL_LENGTH_MAX} characters: letters, digits, `.`, `-`, `_`, `:`"
    )]
    InvalidModel,
    /// A price (the field named) is negative, not below [`PRICE_PER_MILLION_LIMIT`], or has more
    /// than [`LEDGER_SCALE`] decimals.
    #[error(
        "{0} must be from 0 to below {PRICE_PER_MILLION_LIMIT} with at most {LEDGER_SCALE} decimals"
    )]
    InvalidPrice(&'static str),
    /// A token count (the field named) is above [`TOKENS_MAX`].
    #[error("{0} must be a whole number from 0 to {TOKENS_MAX}")]
    InvalidTokens(&'static str),
    /// A price is not a valid ledger amount, or the cost leaves the ledger's range.
    #[error(transparent)]
    Amount(#[from] AmountError),
}

/// A model name: 1 to [`MODEL_LENGTH_MAX`] of `A-Z a-z 0-9 . - _ :` (no `/`: the name is a
/// path segment of `/v1/admin/rates/{model}`).
pub fn check_model(model: &str) -> Result<(), PricingError> {
    let valid = !model.is_empty()
        && model.len() <= MODEL_LENGTH_MAX
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    valid.then_some(()).ok_or(PricingError::InvalidModel)
}

fn check_price(field: &'static str, price: Decimal) -> Result<(), PricingError> {
    let valid = !price.is_sign_negative()
        && price < Decimal::from(PRICE_PER_MILLION_LIMIT)
        && price.normalize().scale() <= LEDGER_SCALE;
    valid.then_some(()).ok_or(PricingError::InvalidPrice(field))
}

impl Rate {
    /// A validated rate.
    pub fn new(
        model: &str,
        input_per_million: Decimal,
        output_per_million: Decimal,
    ) -> Result<Rate, PricingError> {
        check_model(model)?;
        check_price("input_per_million", input_per_million)?;
        check_price("output_per_million", output_per_million)?;
        Ok(Rate {
            model: model.to_owned(),
            input_per_million: input_per_million.normalize(),
            output_per_million: output_per_million.normalize(),
        })
    }

    /// What `input_tokens` and `output_tokens` cost at this rate, rounded up to the ledger
    /// scale, with the detail to record on the entry.
    ///
    /// # Examples
    ///
    /// ```
    /// use billing_core::Decimal;
    /// use billing_core::pricing::Rate;
    ///
    /// // 0.50 per million input tokens, 1.50 per million output tokens.
    /// let rate = Rate::new("chat-v1", Decimal::new(50, 2), Decimal::new(150, 2))
    ///     .expect("a valid rate");
    /// // 1000 × 0.50 / 10^6 + 500 × 1.50 / 10^6 = 0.0005 + 0.00075
    /// let (cost, detail) = rate.price(1000, 500).expect("in range");
    /// assert_eq!(cost.to_string(), "0.00125");
    /// assert_eq!((detail.input_tokens, detail.output_tokens), (1000, 500));
    /// // One token at 0.0003 per million is 3 × 10^-10: rounded up to one ledger unit.
    /// let tiny = Rate::new("tiny", Decimal::new(3, 4), Decimal::ZERO).expect("a valid rate");
    /// assert_eq!(tiny.price(1, 0).expect("in range").0.to_string(), "0.000000001");
    /// ```
    pub fn price(
        &self,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<(Credits, UsageDetail), PricingError> {
        if input_tokens > TOKENS_MAX {
            return Err(PricingError::InvalidTokens("input_tokens"));
        }
        if output_tokens > TOKENS_MAX {
            return Err(PricingError::InvalidTokens("output_tokens"));
        }
        let cost = cost(
            input_tokens,
            output_tokens,
            self.input_per_million,
            self.output_per_million,
        )?;
        Ok((
            cost,
            UsageDetail {
                model: self.model.clone(),
                input_tokens,
                output_tokens,
                input_per_million: self.input_per_million,
                output_per_million: self.output_per_million,
            },
        ))
    }
}

/// The exact cost rounded up to the ledger scale (see the module's rule), in integers: prices
/// in ledger units (10^-9), times tokens, is the cost in 10^-15 units, exact in `i128` (at
/// most 2 × 10^9 tokens × 10^15 units); dividing by 10^6 rounding up gives ledger units.
pub fn cost(
    input_tokens: u64,
    output_tokens: u64,
    input_per_million: Decimal,
    output_per_million: Decimal,
) -> Result<Credits, PricingError> {
    let units = |price: Decimal| Credits::new(price).and_then(Credits::to_units);
    let femto = i128::from(input_tokens) * i128::from(units(input_per_million)?)
        + i128::from(output_tokens) * i128::from(units(output_per_million)?);
    let ledger_units = (femto + 999_999).div_euclid(1_000_000);
    let ledger_units =
        i64::try_from(ledger_units).map_err(|_| PricingError::Amount(AmountError::OutOfRange))?;
    Ok(Credits::from_units(ledger_units))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    #[test]
    fn the_seed_rate_prices_exactly() {
        let rate = Rate::new("assisters-chat-v1", d("0.50"), d("1.50")).expect("rate");
        let (cost, detail) = rate.price(1000, 500).expect("price");
        // 1000 × 0.50 / 10^6 + 500 × 1.50 / 10^6 = 0.0005 + 0.00075
        assert_eq!(cost.value(), d("0.00125"));
        assert_eq!(detail.model, "assisters-chat-v1");
        assert_eq!((detail.input_tokens, detail.output_tokens), (1000, 500));
        // One token at $0.0003 per million is 3×10^-10: rounded up to one ledger unit.
        let cheap = Rate::new("tiny", d("0.0003"), d("0")).expect("rate");
        assert_eq!(
            cheap.price(1, 0).expect("price").0.value(),
            d("0.000000001")
        );
        assert_eq!(cheap.price(0, 0).expect("price").0.value(), d("0"));
        let max = Rate::new("max", d("999999.999999999"), d("999999.999999999")).expect("rate");
        assert_eq!(
            max.price(TOKENS_MAX, TOKENS_MAX)
                .expect("in range")
                .0
                .value(),
            d("1999999999.999998")
        );
    }

    #[test]
    fn bad_rates_and_tokens_are_refused() {
        assert!(Rate::new("", d("1"), d("1")).is_err());
        assert!(Rate::new("a b", d("1"), d("1")).is_err());
        assert!(Rate::new(&"m".repeat(101), d("1"), d("1")).is_err());
        assert!(Rate::new("m", d("-1"), d("1")).is_err());
        assert!(Rate::new("m", d("1"), d("1000000")).is_err());
        assert!(Rate::new("m", d("0.0000000001"), d("1")).is_err());
        assert!(Rate::new("org.model:v1.2_x-y", d("1.000000000"), d("0")).is_ok());
        assert!(Rate::new("org/model", d("1"), d("0")).is_err());
        let rate = Rate::new("m", d("1"), d("1")).expect("rate");
        assert_eq!(
            rate.price(TOKENS_MAX + 1, 0),
            Err(PricingError::InvalidTokens("input_tokens"))
        );
        assert_eq!(
            rate.price(0, TOKENS_MAX + 1),
            Err(PricingError::InvalidTokens("output_tokens"))
        );
    }

    proptest::proptest! {
        /// The charged cost is the exact formula rounded up to 10^-9: never below it, and
        /// less than one ledger unit above it.
        #[test]
        fn cost_is_the_exact_formula_rounded_up(
            input in 0u64..=TOKENS_MAX,
            output in 0u64..=TOKENS_MAX,
            input_units in 0i64..1_000_000_000_000,
            output_units in 0i64..1_000_000_000_000,
        ) {
            // Prices up to 1000 per million, at 9 decimals.
            let pin = Decimal::new(input_units, 9);
            let pout = Decimal::new(output_units, 9);
            let charged = cost(input, output, pin, pout).expect("in range").value();
            // The exact cost in units of 10^-15 (tokens × price-in-10^-9 / 10^6), in i128.
            let exact_femto = i128::from(input) * i128::from(input_units)
                + i128::from(output) * i128::from(output_units);
            let charged_units = charged.mantissa() * 10i128.pow(9 - charged.scale());
            // charged (10^-9 units) × 10^6 ≥ exact, and less than one unit (10^6 femto) more.
            proptest::prop_assert!(charged_units * 1_000_000 >= exact_femto);
            proptest::prop_assert!(charged_units * 1_000_000 - exact_femto < 1_000_000);
        }
    }
}
