//! Kubernetes quantities (`resource.Quantity`) for `ExternalMetricValue.value`.
//!
//! [`Quantity::from_f64`] turns a metric value into the quantity the HPA reads. The value is
//! **correctly rounded to milli-units** (the exact binary value of the `f64` is rounded to the
//! nearest thousandth) instead of truncated as `int64(v*1000)` in kube-metrics-adapter and
//! prometheus-adapter, so `1.001` gives `"1001m"`, not `"1"`. Values too large for an `int64`
//! count of milli-units move to a larger suffix instead of overflowing, and NaN or ±Inf are
//! refused with a [`QuantityError`] instead of serialising `-9223372036854775808m`.
//!
//! The text form is apimachinery's canonical `DecimalSI` form (`CanonicalizeBytes`): all factors
//! of ten move into the exponent, the exponent is lowered to a multiple of three, and the largest
//! suffix of `n u m "" k M G T P E` is used; no fractional digits; `0` for zero. Exponents above 18
//! keep the `E` suffix with a longer mantissa (`1e21` → `"1000E"`), which Kubernetes parses.
//!
//! ```
//! use adapter_extmetrics::quantity::{format_f64, Quantity};
//!
//! assert_eq!(format_f64(8.308).unwrap(), "8308m");
//! assert_eq!(format_f64(10.0).unwrap(), "10");
//! assert_eq!(format_f64(1.5e6).unwrap(), "1500k");
//! assert_eq!(format_f64(1.001).unwrap(), "1001m"); // not truncated to "1"
//! assert_eq!(format_f64(0.0001).unwrap(), "0"); // below half a milli-unit
//! assert!(format_f64(f64::NAN).is_err());
//!
//! let q = Quantity::parse("1.5Gi").unwrap();
//! assert_eq!(q.to_string(), "1610612736");
//! assert_eq!(Quantity::parse("250m").unwrap().to_f64(), 0.25);
//! ```
//!
//! Parsing ([`Quantity::parse`]) follows apimachinery's `ParseQuantity`: an optional sign, digits
//! with an optional decimal point, then a suffix (`n u m k M G T P E`, `Ki Mi Gi Ti Pi Ei`, or an
//! `e`/`E` exponent such as `1e3` or `5E-3`). Like apimachinery, values are rounded **up** (away
//! from zero) to nano-units and capped at `2^63-1` units.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a metric value cannot become a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The value is NaN (Prometheus returns it for e.g. `0/0`).
    #[error("metric value is NaN and cannot be represented as a Kubernetes quantity")]
    NaN,
    /// The value is +Inf or -Inf.
    #[error("metric value is {}Inf and cannot be represented as a Kubernetes quantity", if *negative { "-" } else { "+" })]
    Infinite {
        /// Whether it is -Inf.
        negative: bool,
    },
}

/// Why a quantity string does not parse (messages as apimachinery's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseQuantityError {
    /// The string does not have the shape `<signedNumber><suffix>`.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
    )]
    Format(String),
    /// The suffix is not one Kubernetes knows.
    #[error("unable to parse quantity's suffix: {0:?}")]
    Suffix(String),
}

/// A decimal quantity: `(-1)^negative × digits × 10^exponent`, kept exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    negative: bool,
    /// ASCII digits without leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    exponent: i32,
}

/// Formats a metric value as the canonical quantity string; shorthand for
/// `Quantity::from_f64(v)?.to_string()`.
pub fn format_f64(v: f64) -> Result<String, QuantityError> {
    Ok(Quantity::from_f64(v)?.to_string())
}

const I64_MAX_DIGITS: &[u8] = b"9223372036854775807";

impl Quantity {
    /// Zero.
    pub fn zero() -> Self {
        Quantity { negative: false, digits: Vec::new(), exponent: 0 }
    }

    /// `milli / 1000`, like apimachinery's `NewMilliQuantity(milli, DecimalSI)`.
    pub fn from_milli(milli: i64) -> Self {
        let digits = milli.unsigned_abs().to_string().into_bytes();
        Self::normalized(milli < 0, digits, -3)
    }

    /// The metric value rounded to the nearest milli-unit (ties, which only exactly
    /// representable values such as `0.0625` can produce, go to the even milli-unit).
    /// NaN and ±Inf are errors; there is no upper bound.
    pub fn from_f64(v: f64) -> Result<Self, QuantityError> {
        if v.is_nan() {
            return Err(QuantityError::NaN);
        }
        if v.is_infinite() {
            return Err(QuantityError::Infinite { negative: v < 0.0 });
        }
        // `{:.3}` formats the exact binary value correctly rounded to three decimals.
        let text = format!("{:.3}", v.abs());
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
        Ok(Self::normalized(v.is_sign_negative(), digits, -3))
    }

    /// Parses a Kubernetes quantity string (see the module docs for the grammar).
    pub fn parse(s: &str) -> Result<Self, ParseQuantityError> {
        let format_err = || ParseQuantityError::Format(s.to_owned());
        let bytes = s.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        match bytes.first() {
            Some(b'-') => {
                negative = true;
                pos = 1;
            }
            Some(b'+') => pos = 1,
            _ => {}
        }
        let mut digits = Vec::new();
        let mut frac_len: i32 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while pos < bytes.len() {
            match bytes[pos] {
                b @ b'0'..=b'9' => {
                    seen_digit = true;
                    digits.push(b);
                    if seen_point {
                        frac_len = frac_len.checked_add(1).ok_or_else(format_err)?;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            pos += 1;
        }
        if !seen_digit {
            return Err(format_err());
        }
        let suffix = &s[pos..];
        let (base2_pow, exp10) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            _ => {
                let rest = suffix.strip_prefix(['e', 'E']).ok_or_else(|| suffix_or_format(s, suffix))?;
                let unsigned = rest.strip_prefix(['+', '-']).unwrap_or(rest);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(suffix_or_format(s, suffix));
                }
                let e: i32 = rest.parse().map_err(|_| ParseQuantityError::Suffix(suffix.to_owned()))?;
                (0, e)
            }
        };
        for _ in 0..base2_pow / 10 {
            digits = mul_small(&digits, 1024);
        }
        let exponent = exp10.checked_sub(frac_len).ok_or_else(format_err)?;
        let mut q = Self::normalized(negative, digits, exponent);
        q.round_up_to_nano();
        q.cap_to_i64_units();
        Ok(q)
    }

    /// Whether the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The nearest `f64`.
    pub fn to_f64(&self) -> f64 {
        if self.is_zero() {
            return 0.0;
        }
        let digits = String::from_utf8_lossy(&self.digits);
        let sign = if self.negative { "-" } else { "" };
        format!("{sign}{digits}e{}", self.exponent).parse().unwrap_or(f64::NAN)
    }

    /// `ceil(q × 1000)`, saturating at the `i64` range: what the HPA reads with
    /// `Quantity.MilliValue()` and sums over items.
    pub fn milli_value(&self) -> i64 {
        if self.is_zero() {
            return 0;
        }
        let exp = i64::from(self.exponent) + 3;
        let saturated = if self.negative { i64::MIN } else { i64::MAX };
        let (int_digits, frac_nonzero) = if exp >= 0 {
            if self.digits.len() as i64 + exp > 20 {
                return saturated;
            }
            let mut d = self.digits.clone();
            d.extend(std::iter::repeat_n(b'0', exp as usize));
            (d, false)
        } else {
            let keep = self.digits.len() as i64 + exp;
            if keep <= 0 {
                (Vec::new(), true)
            } else {
                (self.digits[..keep as usize].to_vec(), true)
            }
        };
        let mut magnitude: i128 = 0;
        for d in int_digits {
            magnitude = magnitude * 10 + i128::from(d - b'0');
        }
        let mut value = if self.negative { -magnitude } else { magnitude };
        if frac_nonzero && !self.negative {
            value += 1;
        }
        i64::try_from(value).unwrap_or(saturated)
    }

    fn normalized(negative: bool, mut digits: Vec<u8>, mut exponent: i32) -> Self {
        let lead = digits.iter().take_while(|&&b| b == b'0').count();
        digits.drain(..lead);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Self::zero();
        }
        Quantity { negative, digits, exponent }
    }

    fn round_up_to_nano(&mut self) {
        if self.exponent >= -9 {
            return;
        }
        let drop = (-9 - i64::from(self.exponent)) as usize;
        let keep = self.digits.len().saturating_sub(drop);
        let mut kept = self.digits[..keep].to_vec();
        // Every dropped digit group is non-zero (normalised), so round away from zero.
        kept = add_one(&kept);
        *self = Self::normalized(self.negative, kept, -9);
    }

    fn cap_to_i64_units(&mut self) {
        if self.is_zero() {
            return;
        }
        let int_len = self.digits.len() as i64 + i64::from(self.exponent);
        let over = match int_len.cmp(&(I64_MAX_DIGITS.len() as i64)) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => {
                let mut int_digits = self.digits.clone();
                if self.exponent > 0 {
                    int_digits.extend(std::iter::repeat_n(b'0', self.exponent as usize));
                }
                let (int_part, frac) = int_digits.split_at(I64_MAX_DIGITS.len());
                match int_part.cmp(I64_MAX_DIGITS) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => !frac.is_empty(),
                }
            }
        };
        if over {
            *self = Self::normalized(self.negative, I64_MAX_DIGITS.to_vec(), 0);
        }
    }
}

fn suffix_or_format(s: &str, suffix: &str) -> ParseQuantityError {
    let known = suffix.bytes().all(|b| b"eEinumkKMGTP+-0123456789".contains(&b));
    if known {
        ParseQuantityError::Suffix(suffix.to_owned())
    } else {
        ParseQuantityError::Format(s.to_owned())
    }
}

fn mul_small(digits: &[u8], factor: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(digits.len() + 4);
    let mut carry: u32 = 0;
    for &d in digits.iter().rev() {
        let v = u32::from(d - b'0') * factor + carry;
        out.push(b'0' + (v % 10) as u8);
        carry = v / 10;
    }
    while carry > 0 {
        out.push(b'0' + (carry % 10) as u8);
        carry /= 10;
    }
    out.reverse();
    out
}

fn add_one(digits: &[u8]) -> Vec<u8> {
    let mut out = digits.to_vec();
    for d in out.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return out;
        }
    }
    out.insert(0, b'1');
    out
}

impl Default for Quantity {
    fn default() -> Self {
        Self::zero()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let mut digits = self.digits.clone();
        let mut exp = self.exponent;
        while exp.rem_euclid(3) != 0 {
            digits.push(b'0');
            exp -= 1;
        }
        if exp > 18 {
            digits.extend(std::iter::repeat_n(b'0', (exp - 18) as usize));
            exp = 18;
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            // Unreachable for parsed (nano) and f64 (milli) quantities; still valid syntax.
            _ => "",
        };
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&String::from_utf8_lossy(&digits))?;
        if suffix.is_empty() && exp != 0 {
            write!(f, "e{exp}")
        } else {
            f.write_str(suffix)
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = ParseQuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Quantity::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        format_f64(v).unwrap()
    }

    #[test]
    fn doc_table_rows() {
        assert_eq!(f(0.001), "1m");
        assert_eq!(f(1.0), "1");
        assert_eq!(f(1234.0), "1234");
        assert_eq!(f(8.308), "8308m");
        assert_eq!(f(1500.0), "1500");
        assert_eq!(f(1.5e6), "1500k");
        assert_eq!(f(2.5e9), "2500M");
        assert_eq!(f(10.0), "10");
        assert_eq!(f(1.5), "1500m");
    }

    #[test]
    fn rounds_to_nearest_milli_instead_of_truncating() {
        assert_eq!(f(1.001), "1001m");
        assert_eq!(f(0.0001), "0");
        assert_eq!(f(0.0004999), "0");
        assert_eq!(f(0.0005001), "1m");
        assert_eq!(f(0.9999), "1");
        assert_eq!(f(2.0004), "2");
        assert_eq!(f(2.0006), "2001m");
        assert_eq!(f(0.1 + 0.2), "300m");
        assert_eq!(f(33.333333), "33333m");
        assert_eq!(f(66.6666666), "66667m");
    }

    #[test]
    fn negatives_and_zero() {
        assert_eq!(f(0.0), "0");
        assert_eq!(f(-0.0), "0");
        assert_eq!(f(-0.0001), "0");
        assert_eq!(f(-1.5), "-1500m");
        assert_eq!(f(-2000.0), "-2k");
        assert_eq!(f(-0.25), "-250m");
    }

    #[test]
    fn large_values_do_not_overflow() {
        // int64(v*1000) overflows above ~9.2e15.
        assert_eq!(f(1e16), "10P");
        assert_eq!(f(9.3e15), "9300T");
        assert_eq!(f(1e18), "1E");
        assert_eq!(f(1e21), "1000E");
        assert_eq!(f(123456789012345678.0), "123456789012345680");
        let huge = f(f64::MAX);
        assert!(huge.starts_with("17976931348623157") && huge.len() == 309, "{huge}");
        assert_eq!(f(-1e20), "-100E");
    }

    #[test]
    fn largest_suffix_multiple_of_three() {
        assert_eq!(f(1000.0), "1k");
        assert_eq!(f(10000.0), "10k");
        assert_eq!(f(100000.0), "100k");
        assert_eq!(f(1234567.0), "1234567");
        assert_eq!(f(0.01), "10m");
        assert_eq!(f(0.1), "100m");
        assert_eq!(f(1e12), "1T");
        assert_eq!(f(1e15), "1P");
    }

    #[test]
    fn nan_and_inf_refused() {
        assert_eq!(format_f64(f64::NAN), Err(QuantityError::NaN));
        assert_eq!(format_f64(f64::INFINITY), Err(QuantityError::Infinite { negative: false }));
        assert_eq!(format_f64(f64::NEG_INFINITY), Err(QuantityError::Infinite { negative: true }));
        assert!(QuantityError::NaN.to_string().contains("NaN"));
        assert!(QuantityError::Infinite { negative: true }.to_string().contains("-Inf"));
    }

    #[test]
    fn from_milli_matches_new_milli_quantity() {
        assert_eq!(Quantity::from_milli(1).to_string(), "1m");
        assert_eq!(Quantity::from_milli(1000).to_string(), "1");
        assert_eq!(Quantity::from_milli(1234000).to_string(), "1234");
        assert_eq!(Quantity::from_milli(1_500_000_000).to_string(), "1500k");
        assert_eq!(Quantity::from_milli(0).to_string(), "0");
        assert_eq!(Quantity::from_milli(i64::MIN).to_string(), "-9223372036854775808m");
    }

    #[test]
    fn parse_suffixes() {
        let p = |s: &str| Quantity::parse(s).unwrap().to_string();
        assert_eq!(p("100m"), "100m");
        assert_eq!(p("0.5"), "500m");
        assert_eq!(p(".5"), "500m");
        assert_eq!(p("5."), "5");
        assert_eq!(p("+5"), "5");
        assert_eq!(p("-5k"), "-5k");
        assert_eq!(p("1500m"), "1500m");
        assert_eq!(p("1000m"), "1");
        assert_eq!(p("3n"), "3n");
        assert_eq!(p("3u"), "3u");
        assert_eq!(p("1k"), "1k");
        assert_eq!(p("1M"), "1M");
        assert_eq!(p("1G"), "1G");
        assert_eq!(p("1T"), "1T");
        assert_eq!(p("1P"), "1P");
        assert_eq!(p("1E"), "1E");
        assert_eq!(p("1Ki"), "1024");
        assert_eq!(p("1Mi"), "1048576");
        assert_eq!(p("1Gi"), "1073741824");
        assert_eq!(p("1Ti"), "1099511627776");
        assert_eq!(p("1Pi"), "1125899906842624");
        assert_eq!(p("1Ei"), "1152921504606846976");
        assert_eq!(p("0.5Ki"), "512");
        assert_eq!(p("1e3"), "1k");
        assert_eq!(p("1E3"), "1k");
        assert_eq!(p("1e+3"), "1k");
        assert_eq!(p("5e-3"), "5m");
        assert_eq!(p("12E-1"), "1200m");
        assert_eq!(p("0"), "0");
        assert_eq!(p("-0"), "0");
        assert_eq!(p("000.000"), "0");
    }

    #[test]
    fn parse_rounds_up_to_nano_and_caps() {
        let p = |s: &str| Quantity::parse(s).unwrap().to_string();
        assert_eq!(p("0.1n"), "1n");
        assert_eq!(p("1.0000000001"), "1000000001n");
        assert_eq!(p("-0.1n"), "-1n");
        assert_eq!(p("1e-20"), "1n");
        assert_eq!(p("1e30"), "9223372036854775807");
        assert_eq!(p("9223372036854775807"), "9223372036854775807");
        assert_eq!(p("9223372036854775807.5"), "9223372036854775807");
        assert_eq!(p("-10E"), "-9223372036854775807");
    }

    #[test]
    fn parse_errors() {
        for bad in ["", "m", "-", ".", "1.2.3", " 1", "1 ", "1x", "abc"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(Quantity::parse("1e"), Err(ParseQuantityError::Suffix(_))));
        assert!(matches!(Quantity::parse("1Kb"), Err(ParseQuantityError::Format(_))));
        assert!(matches!(Quantity::parse("1kk"), Err(ParseQuantityError::Suffix(_))));
        assert!(matches!(Quantity::parse("1e3.5"), Err(ParseQuantityError::Format(_))));
        assert!(Quantity::parse("").unwrap_err().to_string().starts_with("quantities must match"));
    }

    #[test]
    fn values_and_milli_value() {
        assert_eq!(Quantity::parse("250m").unwrap().to_f64(), 0.25);
        assert_eq!(Quantity::parse("1Ki").unwrap().to_f64(), 1024.0);
        assert_eq!(Quantity::parse("-3").unwrap().to_f64(), -3.0);
        assert_eq!(Quantity::zero().to_f64(), 0.0);
        assert_eq!(Quantity::parse("1.5").unwrap().milli_value(), 1500);
        assert_eq!(Quantity::parse("1n").unwrap().milli_value(), 1);
        assert_eq!(Quantity::parse("-1n").unwrap().milli_value(), 0);
        assert_eq!(Quantity::parse("-1500m").unwrap().milli_value(), -1500);
        assert_eq!(Quantity::from_f64(1e30).unwrap().milli_value(), i64::MAX);
        assert_eq!(Quantity::from_f64(-1e30).unwrap().milli_value(), i64::MIN);
        assert_eq!(Quantity::from_f64(8.308).unwrap().milli_value(), 8308);
        assert!(Quantity::parse("-1").unwrap().is_negative());
        assert!(Quantity::parse("0m").unwrap().is_zero());
    }

    #[test]
    fn round_trips_through_text() {
        for v in [0.001, 8.308, 1.5e6, 2.5e9, 1e16, -7.125, 123.456, 1e-3, 42.0] {
            let q = Quantity::from_f64(v).unwrap();
            let back = Quantity::parse(&q.to_string()).unwrap();
            assert_eq!(back, q, "{v}");
            assert_eq!(back.to_f64(), v, "{v}");
        }
    }

    #[test]
    fn serde_as_string() {
        let q = Quantity::from_f64(8.308).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"8308m\"");
        let back: Quantity = serde_json::from_str("\"1.5\"").unwrap();
        assert_eq!(back.to_string(), "1500m");
        assert!(serde_json::from_str::<Quantity>("\"x\"").is_err());
    }
}
