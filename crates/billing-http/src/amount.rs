//! Amounts on the wire: JSON numbers written with their exact decimal digits, never through
//! `f64`. Accepted as a JSON number or a string (`25.00` or `"25.00"`).

use std::str::FromStr;

use billing_core::Decimal;
use billing_core::money::{Credits, Money, parse_decimal};
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

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        let text = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s,
            _ => return Err(de::Error::custom("amount must be a decimal number")),
        };
        parse_decimal(&text)
            .map(Amount)
            .map_err(|e| de::Error::custom(format!("amount {text:?}: {e}")))
    }
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
            ("12345678901234.123456789", "12345678901234.123456789"),
        ] {
            let got: Amount = serde_json::from_str(json).expect(json);
            assert_eq!(got.0, d(want), "{json}");
            assert_eq!(got.0.to_string(), want);
        }
        for bad in ["\"abc\"", "true", "null", "[1]", "1e3", "\"1e3\"", "\"\""] {
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
