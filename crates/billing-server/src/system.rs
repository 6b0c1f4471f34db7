//! The real `Clock` and `IdGenerator`.

use std::time::{SystemTime, UNIX_EPOCH};

use billing_core::ports::{Clock, IdGenerator};
use billing_core::time::Timestamp;

/// The system clock, UTC.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_micros(micros)
    }
}

/// `{prefix}_{24 lower-case base32 characters}`: 120 random bits from the OS generator.
#[derive(Debug, Default)]
pub struct RandomIds;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl IdGenerator for RandomIds {
    fn new_id(&self, prefix: &str) -> String {
        let mut bytes = [0u8; 15];
        rand::fill(&mut bytes);
        let mut out = String::with_capacity(prefix.len() + 25);
        out.push_str(prefix);
        out.push('_');
        // 15 bytes = 120 bits = 24 base32 digits, 5 bits each.
        let mut acc: u32 = 0;
        let mut bits = 0;
        for byte in bytes {
            acc = (acc << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_random_base32() {
        let ids = RandomIds;
        let a = ids.new_id("txn");
        let b = ids.new_id("txn");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 24);
        assert!(a[4..].bytes().all(|c| ALPHABET.contains(&c)));
    }
}
