//! Go's `math` functions where their results differ from the C library's in the last
//! bit: Prometheus computes `^`, `atan2`, `ln`, `log2`, `log10`, `atan`, `asin` and
//! `acos` with them, and an answer that is meant to be Prometheus' has its bits.
//!
//! The algorithms are those of Go's portable code (Cephes for the arctangent, FreeBSD's
//! `e_log.c` for the logarithm), which Go also runs on amd64 for all of these but the
//! logarithm, whose assembly there follows the same steps. Where Go's own result rests
//! on its amd64 `Exp` (the fractional part of a power), the C library's `exp` stands in:
//! integer and half powers, the common ones, are Go's bit for bit.

// The constants are written as their sources print them, digits beyond a double's
// included, so that they can be checked against those sources.
#![allow(clippy::excessive_precision)]

use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, LOG10_E, LOG2_E, PI};

const SHIFT: u32 = 52;
const MASK: u64 = 0x7ff;
const BIAS: i64 = 1023;

/// `x` as `frac × 2^exp` with `frac` in [½, 1) (Go's `Frexp`); zero, infinities and
/// NaN as they are, with exponent 0.
pub(crate) fn frexp(x: f64) -> (f64, i64) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let (x, mut exp) = normalize(x);
    let bits = x.to_bits();
    exp += ((bits >> SHIFT) & MASK) as i64 - BIAS + 1;
    let bits = (bits & !(MASK << SHIFT)) | (((BIAS - 1) as u64) << SHIFT);
    (f64::from_bits(bits), exp)
}

/// `frac × 2^exp`, rounded once (Go's `Ldexp`).
pub(crate) fn ldexp(frac: f64, exp: i64) -> f64 {
    if frac == 0.0 || !frac.is_finite() {
        return frac;
    }
    let (frac, e) = normalize(frac);
    let bits = frac.to_bits();
    let mut exp = exp.saturating_add(e).saturating_add(((bits >> SHIFT) & MASK) as i64 - BIAS);
    if exp < -1075 {
        return 0.0f64.copysign(frac);
    }
    if exp > 1023 {
        return f64::INFINITY.copysign(frac);
    }
    // A subnormal result: build it 2^53 larger, then scale, so that it rounds once.
    let mut m = 1.0;
    if exp < -1022 {
        exp += 53;
        m = 1.0 / (1u64 << 53) as f64;
    }
    let bits = (bits & !(MASK << SHIFT)) | (((exp + BIAS) as u64) << SHIFT);
    m * f64::from_bits(bits)
}

/// A subnormal `x` scaled into the normal range, with the power of two taken out.
fn normalize(x: f64) -> (f64, i64) {
    if x.abs() < f64::MIN_POSITIVE {
        (x * (1u64 << 52) as f64, -52)
    } else {
        (x, 0)
    }
}

fn is_odd_int(x: f64) -> bool {
    if x.abs() >= (1u64 << 53) as f64 {
        // Beyond 2^53 every float is an even integer.
        return false;
    }
    x.fract() == 0.0 && (x.trunc() as i64) & 1 == 1
}

/// Go's `math.Pow`: whole powers by repeated squaring of the mantissa, the exponents
/// kept apart, so `x ^ 2` is `x * x` rounded once (the C library's `pow` can round an
/// exact tie the other way).
pub(crate) fn pow(x: f64, y: f64) -> f64 {
    if y == 0.0 || x == 1.0 {
        return 1.0;
    }
    if y == 1.0 {
        return x;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 {
        if y < 0.0 {
            return if is_odd_int(y) { f64::INFINITY.copysign(x) } else { f64::INFINITY };
        }
        return if is_odd_int(y) { x } else { 0.0 };
    }
    if y.is_infinite() {
        return huge_power(x, y);
    }
    if x.is_infinite() {
        if x < 0.0 {
            return pow(1.0 / x, -y); // pow(-0, -y)
        }
        return if y < 0.0 { 0.0 } else { f64::INFINITY };
    }
    if y == 0.5 {
        return x.sqrt();
    }
    if y == -0.5 {
        return 1.0 / x.sqrt();
    }
    let (mut yi, mut yf) = (y.abs().trunc(), y.abs().fract());
    if yf != 0.0 && x < 0.0 {
        return f64::NAN;
    }
    if yi >= (1u64 << 63) as f64 {
        // An even integer so large that only ±1 stays finite and non-zero.
        return huge_power(x, y);
    }
    // The answer is a1 × 2^ae.
    let (mut a1, mut ae) = (1.0, 0i64);
    if yf != 0.0 {
        if yf > 0.5 {
            yf -= 1.0;
            yi += 1.0;
        }
        a1 = (yf * log(x)).exp();
    }
    let (mut x1, mut xe) = frexp(x);
    let mut i = yi as i64;
    while i != 0 {
        if !(-(1 << 12)..=(1 << 12)).contains(&xe) {
            // The exponent already over- or underflows whatever the other bits add.
            ae += xe;
            break;
        }
        if i & 1 == 1 {
            a1 *= x1;
            ae += xe;
        }
        x1 *= x1;
        xe <<= 1;
        if x1 < 0.5 {
            x1 += x1;
            xe -= 1;
        }
        i >>= 1;
    }
    if y < 0.0 {
        a1 = 1.0 / a1;
        ae = -ae;
    }
    ldexp(a1, ae)
}

/// `x` to an infinite or even, huge power `y`: 1 for -1, else 0 or infinity.
fn huge_power(x: f64, y: f64) -> f64 {
    if x == -1.0 {
        1.0
    } else if (x.abs() < 1.0) == (y > 0.0) {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Go's `math.Log` (FreeBSD's `e_log.c`).
pub(crate) fn log(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const L1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
    const L2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
    const L3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
    const L4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
    const L5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
    const L6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
    const L7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    let (mut f1, mut ki) = frexp(x);
    if f1 < std::f64::consts::SQRT_2 / 2.0 {
        f1 *= 2.0;
        ki -= 1;
    }
    let f = f1 - 1.0;
    let k = ki as f64;
    let s = f / (2.0 + f);
    let s2 = s * s;
    let s4 = s2 * s2;
    let t1 = s2 * (L1 + s4 * (L3 + s4 * (L5 + s4 * L7)));
    let t2 = s4 * (L2 + s4 * (L4 + s4 * L6));
    let r = t1 + t2;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// Go's `math.Log10`: the natural logarithm times 1/ln 10.
pub(crate) fn log10(x: f64) -> f64 {
    log(x) * LOG10_E
}

/// Go's `math.Log2`, exact for powers of two.
pub(crate) fn log2(x: f64) -> f64 {
    let (frac, exp) = frexp(x);
    if frac == 0.5 {
        return (exp - 1) as f64;
    }
    log(frac) * LOG2_E + exp as f64
}

/// Cephes' rational approximation of the arctangent on [0, 0.66].
fn xatan(x: f64) -> f64 {
    const P0: f64 = -8.750608600031904122785e-01;
    const P1: f64 = -1.615753718733365076637e+01;
    const P2: f64 = -7.500855792314704667340e+01;
    const P3: f64 = -1.228866684490136173410e+02;
    const P4: f64 = -6.485021904942025371773e+01;
    const Q0: f64 = 2.485846490142306297962e+01;
    const Q1: f64 = 1.650270098316988542046e+02;
    const Q2: f64 = 4.328810604912902668951e+02;
    const Q3: f64 = 4.853903996359136964868e+02;
    const Q4: f64 = 1.945506571482613964425e+02;
    let z = x * x;
    let z = z * ((((P0 * z + P1) * z + P2) * z + P3) * z + P4)
        / (((((z + Q0) * z + Q1) * z + Q2) * z + Q3) * z + Q4);
    x * z + x
}

/// The arctangent of a positive `x`, reduced to [0, 0.66].
fn satan(x: f64) -> f64 {
    // π/2 is FRAC_PI_2 plus this.
    const MOREBITS: f64 = 6.123233995736765886130e-17;
    const TAN_3PI_8: f64 = 2.41421356237309504880;
    if x <= 0.66 {
        return xatan(x);
    }
    if x > TAN_3PI_8 {
        return FRAC_PI_2 - xatan(1.0 / x) + MOREBITS;
    }
    FRAC_PI_4 + xatan((x - 1.0) / (x + 1.0)) + 0.5 * MOREBITS
}

/// Go's `math.Atan`.
pub(crate) fn atan(x: f64) -> f64 {
    if x == 0.0 || x.is_nan() {
        return x;
    }
    if x > 0.0 {
        satan(x)
    } else {
        -satan(-x)
    }
}

/// Go's `math.Atan2`.
pub(crate) fn atan2(y: f64, x: f64) -> f64 {
    if y.is_nan() || x.is_nan() {
        return f64::NAN;
    }
    if y == 0.0 {
        return if x >= 0.0 && x.is_sign_positive() { 0.0f64.copysign(y) } else { PI.copysign(y) };
    }
    if x == 0.0 {
        return FRAC_PI_2.copysign(y);
    }
    if x.is_infinite() {
        let angle = match (x > 0.0, y.is_infinite()) {
            (true, true) => FRAC_PI_4,
            (true, false) => 0.0,
            (false, true) => 3.0 * FRAC_PI_4,
            (false, false) => PI,
        };
        return angle.copysign(y);
    }
    if y.is_infinite() {
        return FRAC_PI_2.copysign(y);
    }
    let q = atan(y / x);
    if x < 0.0 {
        if q <= 0.0 {
            q + PI
        } else {
            q - PI
        }
    } else {
        q
    }
}

/// Go's `math.Asin`.
pub(crate) fn asin(x: f64) -> f64 {
    if x == 0.0 {
        return x;
    }
    let (x, negative) = if x < 0.0 { (-x, true) } else { (x, false) };
    if x > 1.0 {
        return f64::NAN;
    }
    let t = (1.0 - x * x).sqrt();
    let a = if x > 0.7 { FRAC_PI_2 - satan(t / x) } else { satan(x / t) };
    if negative {
        -a
    } else {
        a
    }
}

/// Go's `math.Acos`.
pub(crate) fn acos(x: f64) -> f64 {
    FRAC_PI_2 - asin(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_and_ldexp_invert_each_other() {
        for x in [1.0, 0.75, -3.5, 1e300, 5e-324, 2.2250738585072014e-308, 123456789.0] {
            let (frac, exp) = frexp(x);
            assert!((0.5..1.0).contains(&frac.abs()), "{x}: {frac}");
            assert_eq!(ldexp(frac, exp), x, "{x}");
        }
        assert_eq!(ldexp(0.625, -1073), 5e-324); // 1.25 × 2^-1074, rounded once
        assert_eq!(ldexp(0.75, -1073), 1e-323); // a tie, to even
        assert_eq!(ldexp(0.5, -1074), 0.0); // a tie, to even
        assert_eq!(ldexp(0.5, 1025), f64::INFINITY);
    }

    #[test]
    fn whole_powers_round_once_like_go() {
        // 103907063² is 10796677741285969, a tie between two floats: Go rounds it to
        // even, as `x * x` does; glibc's `pow` gives the other one.
        let x = 103_907_063.0f64;
        assert_eq!(pow(x, 2.0), x * x);
        assert_eq!(pow(x, 2.0), 10_796_677_741_285_968.0);
        assert_eq!(pow(2.0, -1074.0), 5e-324);
        assert_eq!(pow(-2.0, 3.0), -8.0);
        assert_eq!(pow(4.0, 0.5), 2.0);
        assert!(pow(-8.0, 1.0 / 3.0).is_nan());
        assert_eq!(pow(0.0, -3.0), f64::INFINITY);
        assert_eq!(pow(-0.0, -3.0), f64::NEG_INFINITY);
        assert_eq!(pow(f64::NEG_INFINITY, 3.0), f64::NEG_INFINITY);
        assert_eq!(pow(-1.0, f64::INFINITY), 1.0);
        assert_eq!(pow(10.0, 400.0), f64::INFINITY);
    }

    /// Prometheus 2.42's answers (Go's `math` on amd64) for memory gauges `x`: `ln`,
    /// `log2`, `log10`, `atan(x/1e8)`, `asin(x/1e9)`, `acos(x/1e9)`, `x ^ 3` and
    /// `x atan2 3e7`. The C library differs from each row in three to five places.
    #[test]
    fn results_are_prometheus_bit_for_bit() {
        let rows = [
            (
                97980329.0,
                [
                    18.40027729199719,
                    26.545988800146155,
                    7.99113889340409,
                    0.7751971451774057,
                    0.09813778104820832,
                    1.4726585457466883,
                    9.406253529031711e+23,
                    1.273675922686574,
                ],
            ),
            (
                200146970.0,
                [
                    19.11456250464225,
                    27.5764845342095,
                    8.301349019760929,
                    1.1074424850857194,
                    0.20150792371550325,
                    1.3692884030793933,
                    8.017649363283117e+24,
                    1.4220141037215346,
                ],
            ),
            (
                120921967.0,
                [
                    18.610655994696582,
                    26.84950111123922,
                    8.0825052030964,
                    0.8798195305135665,
                    0.121218612383191,
                    1.4495777144117055,
                    1.7681357664269646e+24,
                    1.3276124617690892,
                ],
            ),
            (
                104168431.0,
                [
                    18.461519675929182,
                    26.63434288373705,
                    8.017736122804353,
                    0.8058119557579451,
                    0.10435774657268214,
                    1.4664385802222144,
                    1.1303381049947686e+24,
                    1.2903892428557189,
                ],
            ),
        ];
        for (x, want) in rows {
            let got = [
                log(x),
                log2(x),
                log10(x),
                atan(x / 1e8),
                asin(x / 1e9),
                acos(x / 1e9),
                pow(x, 3.0),
                atan2(x, 3e7),
            ];
            assert_eq!(got, want, "{x}");
        }
    }

    #[test]
    fn logarithms_and_arctangents_keep_their_special_cases() {
        assert_eq!(log(1.0), 0.0);
        assert_eq!(log(0.0), f64::NEG_INFINITY);
        assert!(log(-1.0).is_nan());
        assert_eq!(log2(1024.0), 10.0);
        assert_eq!(log2(0.125), -3.0);
        assert_eq!(log10(1000.0), 3.0);
        assert_eq!(atan2(0.0, -1.0), PI);
        assert_eq!(atan2(-0.0, 1.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(atan2(1.0, 0.0), FRAC_PI_2);
        assert_eq!(atan2(f64::INFINITY, f64::NEG_INFINITY), 3.0 * FRAC_PI_4);
        assert_eq!(atan(f64::INFINITY), FRAC_PI_2);
        assert_eq!(asin(1.0), FRAC_PI_2);
        assert!(asin(1.5).is_nan());
        assert_eq!(acos(1.0), 0.0);
    }
}
