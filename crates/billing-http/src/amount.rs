//! Amounts on the wire: JSON numbers written with their exact decimal digits, never through
//! `f64`. Accepted as a JSON number or a string (`25.00` or `"25.00"`).

use std::str::FromStr;

use billing_core::Decimal;
use billing_core::money::{Credits, Money, parse_decimal, parse_json_number};
use serde::de::{self, Deserializer};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

/// A decimal amount as JSON sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl Amount {
    /// Credits shown with at least `min_scale` decimals (`25.50` for a USD wallet) and every
    /// significant digit beyond (`0.000150` stays `0.00015`).
    pub fn credits(credits: Credits, min_scale: u32) -> Amount {
        Amount(pad(credits.value(), min_scale))
    }

    /// Money shown at its currency's exponent (`20.00` USD, `12.500` KWD).
    pub fn money(money: &Money) -> Amount {
        Amount(money.amount())
    }
}

fn pad(value: Decimal, min_scale: u32) -> Decimal {
    let mut value = value.normalize();
    if value.scale() < min_scale {
        value.rescale(min_scale);
    }
    value
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json's `arbitrary_precision` keeps the digits of a Number parsed from text.
        let number =
            serde_json::Number::from_str(&self.0.to_string()).map_err(ser::Error::custom)?;
        number.serialize(serializer)
    }
}

/// Request amounts are below this many units (of the wallet or the currency).
pub const REQUEST_AMOUNT_LIMIT: u32 = 1_000_000_000;

impl<'de> Deserialize<'de> for Amount {
    /// A JSON number (its exact text; exponents allowed, as JSON and JavaScript write them)
    /// or a string holding a plain decimal with no surrounding space; below
    /// [`REQUEST_AMOUNT_LIMIT`] in magnitude.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        let (text, parsed) = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                let parsed = parse_json_number(&text);
                (text, parsed)
            }
            serde_json::Value::String(s) if s.trim() != s => {
                return Err(de::Error::custom(format!(
                    "amount {s:?}: no spaces around the digits"
                )));
            }
            serde_json::Value::String(s) => {
                let parsed = parse_decimal(&s);
                (s, parsed)
            }
            _ => return Err(de::Error::custom("amount must be a decimal number")),
        };
        let value = parsed.map_err(|e| de::Error::custom(format!("amount {text:?}: {e}")))?;
        if value.abs() >= Decimal::from(REQUEST_AMOUNT_LIMIT) {
            return Err(de::Error::custom(format!(
                "amount {text:?}: must be less than {REQUEST_AMOUNT_LIMIT}"
            )));
        }
        Ok(Amount(value))
    }
}

/// A whole number from 0 to `max` in a JSON body, where `3.0` is `3` (as JSON Schema reads
/// it).
fn whole<'de, D: Deserializer<'de>>(deserializer: D, max: u64) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(n) => {
            let text = n.to_string();
            parse_json_number(&text)
                .ok()
                .filter(|v| v.fract().is_zero())
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v <= max)
                .map(Some)
                .ok_or_else(|| {
                    de::Error::custom(format!("{text} is not a whole number from 0 to {max}"))
                })
        }
    }
}

/// [`whole`] for a `u32` field.
pub fn whole_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    whole(deserializer, u64::from(u32::MAX))
        .map(|v| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// [`whole`] for a `u64` field.
pub fn whole_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    whole(deserializer, u64::MAX)
}

/// The schema of a positive request amount with at most `decimals` decimals.
pub fn request_amount_schema(decimals: u32) -> serde_json::Value {
    let step = if decimals == 0 {
        serde_json::json!(1)
    } else {
        let text = format!("0.{}1", "0".repeat(decimals as usize - 1));
        serde_json::Value::Number(serde_json::Number::from_str(&text).unwrap_or_else(|_| 1.into()))
    };
    let mut any_of = vec![
        serde_json::json!({
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": REQUEST_AMOUNT_LIMIT,
            "multipleOf": step,
        }),
        serde_json::json!({
            "type": "string",
            "pattern": if decimals == 0 {
                "^0*[1-9][0-9]{0,8}(\\.0+)?$".to_owned()
            } else {
                format!("^0*[1-9][0-9]{{0,8}}(\\.[0-9]{{1,{decimals}}}0*)?$")
            },
        }),
    ];
    if decimals > 0 {
        any_of.push(serde_json::json!({
            "type": "string",
            "pattern": format!("^0+\\.[0-9]{{0,{}}}[1-9]0*$", decimals - 1),
        }));
    }
    serde_json::json!({
        "description": format!(
            "An exact decimal greater than zero with at most {decimals} decimals, below {REQUEST_AMOUNT_LIMIT}: \
             a JSON number (its digits are read exactly) or a string"
        ),
        "anyOf": any_of,
    })
}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::Custom("decimal".into())))
            .description(Some(
                "An exact decimal, written with its digits (also accepted as a string)",
            ))
            .examples([serde_json::json!(25.5)])
            .into()
    }
}

impl ToSchema for Amount {}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    #[test]
    fn numbers_and_strings_parse_exactly() {
        for (json, want) in [
            ("25.00", "25.00"),
            ("\"25.00\"", "25.00"),
            ("0.000000001", "0.000000001"),
            ("123456789.123456789", "123456789.123456789"),
        ] {
            let got: Amount = serde_json::from_str(json).expect(json);
            assert_eq!(got.0, d(want), "{json}");
            assert_eq!(got.0.to_string(), want);
        }
        let exponent: Amount = serde_json::from_str("1.5e-5").expect("exponent");
        assert_eq!(exponent.0.to_string(), "0.000015");
        for bad in [
            "\"abc\"",
            "true",
            "null",
            "[1]",
            "\"1e3\"",
            "\"\"",
            "\" 5\"",
            "\"5 \"",
            "1e9",
            "-1000000000",
            "\"1000000000\"",
            "1e-40",
        ] {
            assert!(serde_json::from_str::<Amount>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serializes_with_exact_digits() {
        let credits = Credits::new(d("25.5")).expect("credits");
        let json = serde_json::to_string(&Amount::credits(credits, 2)).expect("json");
        assert_eq!(json, "25.50");
        let tiny = Credits::new(d("0.000150")).expect("credits");
        assert_eq!(
            serde_json::to_string(&Amount::credits(tiny, 2)).expect("json"),
            "0.00015"
        );
        let negative = Credits::new(d("-0.15")).expect("credits");
        assert_eq!(
            serde_json::to_string(&Amount::credits(negative, 2)).expect("json"),
            "-0.15"
        );
        assert_eq!(
            serde_json::to_string(&Amount::credits(Credits::new(d("5000")).expect("c"), 0))
                .expect("json"),
            "5000"
        );
    }
}
