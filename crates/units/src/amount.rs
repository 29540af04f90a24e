//! Integer amounts in an asset's base units (satoshi, wei, …).
//!
//! An [`Amount`] never holds a fraction and never overflows: every constructor is range
//! checked and every operation is checked. Decimal strings are converted exactly, or refused.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest number of decimals an asset may declare. `10^38` is the largest power of ten
/// below `u128::MAX`, so formatting and parsing never overflow.
pub const MAX_DECIMALS: u8 = 38;

/// An amount of some asset in its base units. The field is private: build one with
/// [`Amount::from_base_units`] or [`Amount::parse_decimal`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u128);

/// Why an amount could not be built, parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount is negative")]
    Negative,
    #[error("amount {0:?} is not a plain decimal number (digits with at most one '.')")]
    Malformed(String),
    #[error("amount has more decimal places than the asset's {decimals}")]
    TooPrecise { decimals: u8 },
    #[error("amount exceeds the largest representable amount")]
    Overflow,
    #[error("subtraction would make the amount negative")]
    Underflow,
    #[error("asset declares {0} decimals; at most {MAX_DECIMALS} are supported")]
    BadDecimals(u8),
}

impl Amount {
    /// Zero base units.
    pub const ZERO: Amount = Amount(0);
    /// The largest amount: `10^38 - 1` base units (38 digits; fits a `NUMERIC(38)` column).
    pub const MAX: Amount = Amount(99_999_999_999_999_999_999_999_999_999_999_999_999);

    /// Build an amount from base units, refusing anything above [`Amount::MAX`].
    pub fn from_base_units(units: u128) -> Result<Self, AmountError> {
        if units > Self::MAX.0 {
            return Err(AmountError::Overflow);
        }
        Ok(Amount(units))
    }

    /// The amount in base units.
    pub fn base_units(self) -> u128 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Result<Amount, AmountError> {
        let sum = self.0.checked_add(other.0).ok_or(AmountError::Overflow)?;
        Amount::from_base_units(sum)
    }

    pub fn checked_sub(self, other: Amount) -> Result<Amount, AmountError> {
        self.0.checked_sub(other.0).map(Amount).ok_or(AmountError::Underflow)
    }

    /// Parse a decimal string such as `"0.1"` for an asset with `decimals` places, exactly.
    ///
    /// Grammar: `digits [ "." digits ]`. No sign, exponent, whitespace or separators. Digits
    /// past the asset's precision are accepted only when they are zeros, because only then is
    /// the value exact.
    pub fn parse_decimal(text: &str, decimals: u8) -> Result<Self, AmountError> {
        if decimals > MAX_DECIMALS {
            return Err(AmountError::BadDecimals(decimals));
        }
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if text.starts_with('-') {
            return Err(AmountError::Negative);
        }
        let malformed = || AmountError::Malformed(truncate_for_message(text));
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let frac = match frac_part {
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(malformed())
            }
            Some(f) => f,
            None => "",
        };
        let significant_frac = frac.trim_end_matches('0');
        if significant_frac.len() > usize::from(decimals) {
            return Err(AmountError::TooPrecise { decimals });
        }
        let mut units: u128 = 0;
        for digit in int_part.trim_start_matches('0').bytes() {
            units = units
                .checked_mul(10)
                .and_then(|u| u.checked_add(u128::from(digit - b'0')))
                .ok_or(AmountError::Overflow)?;
        }
        units = units.checked_mul(pow10(decimals)?).ok_or(AmountError::Overflow)?;
        let mut frac_units: u128 = 0;
        for digit in significant_frac.bytes() {
            frac_units = frac_units * 10 + u128::from(digit - b'0');
        }
        // `significant_frac.len() <= decimals`, so the exponent cannot underflow.
        let scale = decimals - u8::try_from(significant_frac.len()).map_err(|_| malformed())?;
        frac_units = frac_units.checked_mul(pow10(scale)?).ok_or(AmountError::Overflow)?;
        let total = units.checked_add(frac_units).ok_or(AmountError::Overflow)?;
        Amount::from_base_units(total)
    }

    /// Format as a canonical decimal string: no trailing zeros, no dot for whole amounts.
    /// `parse_decimal(format_decimal(a, d), d) == a` for every amount and valid `d`.
    pub fn format_decimal(self, decimals: u8) -> Result<String, AmountError> {
        let scale = pow10(decimals)?;
        let int_part = self.0 / scale;
        let frac_part = self.0 % scale;
        if frac_part == 0 {
            return Ok(int_part.to_string());
        }
        let frac = format!("{frac_part:0width$}", width = usize::from(decimals));
        Ok(format!("{int_part}.{}", frac.trim_end_matches('0')))
    }
}

fn pow10(exp: u8) -> Result<u128, AmountError> {
    if exp > MAX_DECIMALS {
        return Err(AmountError::BadDecimals(exp));
    }
    Ok(10u128.pow(u32::from(exp)))
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(64).collect()
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

impl fmt::Display for Amount {
    /// Base units, as an integer. Decimal display needs the asset: see `format_decimal`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Amount {
    type Err = AmountError;
    /// Parse an integer number of base units.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse_decimal(s, 0)
    }
}

// On the wire and in storage an amount is a string of base units: JSON numbers lose
// precision above 2^53 in many clients.
impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_tenth_of_an_ether_is_exactly_ten_to_the_seventeen_wei() {
        assert_eq!(Amount::parse_decimal("0.1", 18).unwrap().base_units(), 100_000_000_000_000_000);
    }

    #[test]
    fn sub_satoshi_is_refused() {
        assert_eq!(
            Amount::parse_decimal("0.0000000001", 8),
            Err(AmountError::TooPrecise { decimals: 8 })
        );
        assert_eq!(Amount::parse_decimal("0.00000001", 8).unwrap().base_units(), 1);
    }

    #[test]
    fn trailing_zeros_past_precision_are_exact_and_accepted() {
        assert_eq!(Amount::parse_decimal("1.0000000000", 8).unwrap().base_units(), 100_000_000);
    }

    #[test]
    fn malformed_inputs_are_refused() {
        for bad in ["", "-1", "+1", "1e5", " 1", "1 ", "1.", ".5", "1..2", "1,5", "0x10", "١"] {
            assert!(Amount::parse_decimal(bad, 8).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Amount::parse_decimal("-0.5", 8), Err(AmountError::Negative));
    }

    #[test]
    fn overflow_is_refused() {
        let max = Amount::MAX.format_decimal(18).unwrap();
        assert_eq!(Amount::parse_decimal(&max, 18).unwrap(), Amount::MAX);
        assert_eq!(Amount::parse_decimal("100000000000000000000", 18), Err(AmountError::Overflow));
        assert_eq!(
            Amount::MAX.checked_add(Amount::from_base_units(1).unwrap()),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            Amount::ZERO.checked_sub(Amount::from_base_units(1).unwrap()),
            Err(AmountError::Underflow)
        );
        assert_eq!(Amount::from_base_units(u128::MAX), Err(AmountError::Overflow));
    }

    #[test]
    fn formatting_is_canonical() {
        let a = Amount::from_base_units(1_500_000_000_000_000_000).unwrap();
        assert_eq!(a.format_decimal(18).unwrap(), "1.5");
        assert_eq!(Amount::from_base_units(100_000_000).unwrap().format_decimal(8).unwrap(), "1");
        assert_eq!(Amount::from_base_units(1).unwrap().format_decimal(6).unwrap(), "0.000001");
        assert_eq!(Amount::ZERO.format_decimal(0).unwrap(), "0");
    }

    #[test]
    fn serde_uses_strings_of_base_units() {
        let a = Amount::from_base_units(u128::from(u64::MAX) * 4).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"73786976294838206460\"");
        assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), a);
        assert!(serde_json::from_str::<Amount>("\"1.5\"").is_err());
        assert!(serde_json::from_str::<Amount>("15").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(units in 0u128..=Amount::MAX.base_units(), decimals in 0u8..=MAX_DECIMALS) {
            let a = Amount::from_base_units(units).unwrap();
            let text = a.format_decimal(decimals).unwrap();
            prop_assert_eq!(Amount::parse_decimal(&text, decimals).unwrap(), a);
        }

        #[test]
        fn checked_add_matches_integer_addition(a in 0u128..=Amount::MAX.base_units(), b in 0u128..=Amount::MAX.base_units()) {
            let sum = Amount::from_base_units(a).unwrap().checked_add(Amount::from_base_units(b).unwrap());
            match a.checked_add(b).filter(|s| *s <= Amount::MAX.base_units()) {
                Some(s) => prop_assert_eq!(sum.unwrap().base_units(), s),
                None => prop_assert_eq!(sum, Err(AmountError::Overflow)),
            }
        }

        #[test]
        fn sub_then_add_is_identity(a in 0u128..=Amount::MAX.base_units(), b in 0u128..=Amount::MAX.base_units()) {
            let (hi, lo) = (a.max(b), a.min(b));
            let (hi, lo) = (Amount::from_base_units(hi).unwrap(), Amount::from_base_units(lo).unwrap());
            prop_assert_eq!(hi.checked_sub(lo).unwrap().checked_add(lo).unwrap(), hi);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,50}", decimals in 0u8..=40) {
            let _ = Amount::parse_decimal(&text, decimals);
        }
    }
}
