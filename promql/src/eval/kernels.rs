//! Numeric kernels of PromQL functions and aggregations, reproducing Prometheus 3.14
//! float semantics bit for bit (amd64 Go: no fused multiply-add anywhere).
//!
//! Everything here is pure arithmetic on already-selected data: windows arrive as the
//! float points of one series, in time order, with stale markers removed. Label
//! handling, annotations and the choice of window are the evaluator's job.
//!
//! Sources (prometheus/prometheus): `promql/functions.go`, `promql/quantile.go`,
//! `promql/engine.go` (`aggregation`), `util/kahansum`, `util/almost`; Go's `strconv`
//! (`ParseFloat`, `FormatFloat`), `math.Max`/`math.Min`, `time`; and
//! `github.com/facette/natsort@2cd4dd1e2dcb` for `sort_by_label`.

// Kernels are added ahead of their callers; this goes once the evaluator calls every
// kernel.
#![allow(dead_code)]

use std::cmp::Ordering;

use super::Compat;
use crate::value::{Point, STALE_NAN_BITS};

// ---------------------------------------------------------------------------------------
// Common helpers
// ---------------------------------------------------------------------------------------

/// Bits of Go's `math.NaN()` (`0x7FF8000000000001`), which Prometheus returns wherever it
/// *creates* a NaN (as opposed to propagating one). Rust's `f64::NAN` has payload 0.
pub(crate) const GO_NAN_BITS: u64 = 0x7FF8_0000_0000_0001;

/// Go's `math.NaN()`.
pub(crate) fn go_nan() -> f64 {
    f64::from_bits(GO_NAN_BITS)
}

fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Go's `math.Max` (amd64 assembly and generic code agree): `+Inf` wins over everything,
/// including NaN; otherwise NaN propagates; `Max(+0, -0) = +0`.
pub(crate) fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        return f64::INFINITY;
    }
    if x.is_nan() || y.is_nan() {
        return go_nan();
    }
    if x == 0.0 && x == y {
        return if x.is_sign_negative() { y } else { x };
    }
    if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: `-Inf` wins over everything, including NaN; otherwise NaN
/// propagates; `Min(+0, -0) = -0`.
pub(crate) fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if x.is_nan() || y.is_nan() {
        return go_nan();
    }
    if x == 0.0 && x == y {
        return if x.is_sign_negative() { x } else { y };
    }
    if x < y {
        x
    } else {
        y
    }
}

/// Go's `time.Duration(ms * time.Millisecond).Seconds()`: whole seconds plus the
/// nanosecond remainder divided by 1e9, which can differ by an ulp from `ms / 1000.0`.
pub(crate) fn go_duration_seconds_from_ms(ms: i64) -> f64 {
    let sec = ms / 1000;
    let nsec = (ms % 1000) * 1_000_000;
    sec as f64 + nsec as f64 / 1e9
}

/// Go's `sort.Search(n, f)`: the smallest `i` in `[0, n)` with `f(i)` true (assuming
/// `f` is monotone), else `n`. Reproduced literally because with NaN counts `f` need not
/// be monotone and the probe order then matters.
fn go_sort_search(n: usize, mut f: impl FnMut(usize) -> bool) -> usize {
    let (mut i, mut j) = (0usize, n);
    while i < j {
        let h = i + (j - i) / 2;
        if !f(h) {
            i = h + 1;
        } else {
            j = h;
        }
    }
    i
}

// ---------------------------------------------------------------------------------------
// 1. Kahan–Neumaier summation (util/kahansum)
// ---------------------------------------------------------------------------------------

/// One Kahan–Neumaier step, `kahansum.Inc(x, sum, c)`: returns the new running sum and
/// compensation. An infinite running sum resets the compensation to 0.
pub(crate) fn kahan_inc(x: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + x;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= x.abs() {
        c + ((sum - t) + x)
    } else {
        c + ((x - t) + sum)
    };
    (t, c)
}

/// [`kahan_inc`] as `compat`'s Prometheus takes it: 2.x's `kahanSumInc` kept the
/// compensation of an infinite sum (infinite or NaN, so that the sum ends NaN), where 3
/// sets it to 0 (checked against 2.42: `stdvar_over_time` of `-1e308, -1e308, -1e308,
/// 1e308` is NaN there, -Inf in 3).
#[inline(always)]
fn kahan_inc_as(compat: Compat, x: f64, sum: f64, c: f64) -> (f64, f64) {
    kahan_inc_lane(x, sum, c, compat == Compat::Prometheus3)
}

/// A Kahan–Neumaier sum: `sum_over_time` (start from [`KahanSum::new`]) and the `sum`
/// aggregator (start from [`KahanSum::starting_with`] the first value).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct KahanSum {
    sum: f64,
    c: f64,
}

impl KahanSum {
    /// An empty sum (`sum_over_time` starts here and adds every sample).
    pub(crate) fn new() -> Self {
        KahanSum { sum: 0.0, c: 0.0 }
    }

    /// A sum whose running value is `first` with no compensation, as the `sum`
    /// aggregator starts a group.
    pub(crate) fn starting_with(first: f64) -> Self {
        KahanSum { sum: first, c: 0.0 }
    }

    /// Adds `x` with one [`kahan_inc`] step.
    pub(crate) fn add(&mut self, x: f64) {
        let (s, c) = kahan_inc(x, self.sum, self.c);
        self.sum = s;
        self.c = c;
    }

    /// `sum_over_time`'s result: the running sum if it is ±Inf, else sum + compensation.
    pub(crate) fn value(&self) -> f64 {
        if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        }
    }

    /// The `sum` aggregator's result: always sum + compensation (the compensation is 0
    /// whenever the sum is infinite, so this equals [`KahanSum::value`]).
    pub(crate) fn aggregation_value(&self) -> f64 {
        self.sum + self.c
    }
}

// ---------------------------------------------------------------------------------------
// 2-5. rate family, deriv, resets/changes
// ---------------------------------------------------------------------------------------

/// What [`extrapolated_rate_of`] is told about the series of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CounterKind {
    /// `delta`: no reset handling.
    Gauge,
    /// `rate`, `increase`: decreases are resets.
    Counter,
    /// A counter window known to have no decrease (the caller counted them while
    /// sliding): the same result without looking for one.
    CounterWithoutResets,
}

impl CounterKind {
    /// For `rate`/`increase` when `counter`, else `delta`; `resets` is the window's
    /// number of decreasing values when known.
    pub(crate) fn of(counter: bool, resets: Option<usize>) -> Self {
        match (counter, resets) {
            (false, _) => CounterKind::Gauge,
            (true, Some(0)) => CounterKind::CounterWithoutResets,
            (true, _) => CounterKind::Counter,
        }
    }
}

/// Margins of `extrapolated_rate_of`'s comparisons by products: a billionth, where
/// the roundings the products skip are below 1e-15 of the values.
const CLEARLY_BELOW_THRESHOLD: f64 = 1.1 * (1.0 - 1e-9);
const CLEARLY_ABOVE: f64 = 1.0 + 1e-9;

/// `extrapolatedRate` for `rate` (`is_rate`), `increase` (a counter `kind`) and `delta`
/// (`Gauge`), float samples only, without start timestamps.
///
/// `points` are the samples in the window `(range_start_ms, range_end_ms]`;
/// `range_ms` is the selector's (or subquery's) range, whose Go `Duration.Seconds()`
/// divides a rate. Fewer than two points give `None` (no output).
///
/// Inlined into the sliding loop, where the range's seconds are the same at every
/// window and consecutive windows' divisions overlap: 5–8% off `r_rps_one_15s`. Always:
/// with the closures below the compiler stopped inlining it, which cost as much again.
#[inline(always)]
pub(crate) fn extrapolated_rate_of(
    points: &[Point],
    range_start_ms: i64,
    range_end_ms: i64,
    range_ms: i64,
    kind: CounterKind,
    is_rate: bool,
    zero_clamp_first: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let is_counter = kind != CounterKind::Gauge;
    let first = points[0];
    let last = points[points.len() - 1];
    let num_samples_minus_one = points.len() - 1;

    let mut result = last.v - first.v;
    if kind == CounterKind::Counter {
        for w in points.windows(2) {
            if w[1].v < w[0].v {
                result += w[0].v;
            }
        }
    }

    let mut duration_to_start = (first.t - range_start_ms) as f64 / 1000.0;
    let mut duration_to_end = (range_end_ms - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    // Go divides for the average gap between samples and for the time to the counter's
    // zero at every window, but most windows only compare a duration with them, and by
    // far. Such comparisons are decided here by products first (a division takes a
    // dozen additions' time, and a window had seven); the quotients are taken, exactly
    // as Go rounds them, only when the products leave the answer within a billionth.
    // Five divisions a window instead of seven: `r_rps_one_15s` evaluates 7% sooner,
    // `rate(…[5m])` over all series at 15 s steps 13%.
    let average_duration_between_samples = || sampled_interval / num_samples_minus_one as f64;
    let samples_minus_one = num_samples_minus_one as f64;
    // `d >= average * 1.1`. Durations are whole milliseconds or the time to the zero
    // point, never NaN; a tiny one only makes the product smaller, and the margin
    // covers its rounding (the sampled interval is 0 or at least a millisecond).
    let reaches_threshold = |d: f64| {
        d * samples_minus_one >= sampled_interval * CLEARLY_BELOW_THRESHOLD
            && d >= average_duration_between_samples() * 1.1
    };

    // Counters cannot be negative: stop the extrapolation at the zero point. Before 2.51
    // (`zero_clamp_first`) that came before the threshold test, since then after it.
    let clamp_to_zero = |duration_to_start: &mut f64| {
        if is_counter && result > 0.0 && first.v >= 0.0 {
            // `sampled_interval * (first / result) < duration_to_start` is false when
            // `first * sampled_interval` clearly exceeds `result * duration_to_start`
            // (both normal: no under- or overflow blurs them).
            let zero_far = first.v * sampled_interval;
            let start_near = result * *duration_to_start * CLEARLY_ABOVE;
            if zero_far.is_finite() && start_near.is_normal() && zero_far >= start_near {
                return;
            }
            let duration_to_zero = sampled_interval * (first.v / result);
            if duration_to_zero < *duration_to_start {
                *duration_to_start = duration_to_zero;
            }
        }
    };
    if zero_clamp_first {
        clamp_to_zero(&mut duration_to_start);
    }
    if reaches_threshold(duration_to_start) {
        duration_to_start = average_duration_between_samples() / 2.0;
    }
    if !zero_clamp_first {
        clamp_to_zero(&mut duration_to_start);
    }
    if reaches_threshold(duration_to_end) {
        duration_to_end = average_duration_between_samples() / 2.0;
    }

    // Go: `factor := 1.0; if sampledInterval != 0 { factor = ... }`.
    let mut factor = 1.0;
    if sampled_interval != 0.0 {
        factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    }
    if is_rate {
        factor /= go_duration_seconds_from_ms(range_ms);
    }
    Some(result * factor)
}

/// `instantValue` for `irate` (`is_rate`) and `idelta`: uses the last two points.
/// Fewer than two points, or two points with the same timestamp, give `None`.
/// For `irate` a decrease is a counter reset and the last value is taken as the
/// increase; NaN comparisons are false, so NaN values subtract normally.
pub(crate) fn instant_value(points: &[Point], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let a = points[points.len() - 2];
    let b = points[points.len() - 1];
    let sampled_interval = b.t - a.t;
    if sampled_interval == 0 {
        return None;
    }
    let mut result = if is_rate && b.v < a.v { b.v } else { b.v - a.v };
    if is_rate {
        result /= sampled_interval as f64 / 1000.0;
    }
    Some(result)
}

/// `linearRegression`: least-squares slope and intercept at `intercept_time_ms`, with
/// Kahan-compensated sums of x, y, xy and x² (x in seconds relative to the intercept
/// time). A constant series gives `(0, y0)`, or `(NaN, NaN)` if `y0` is ±Inf. An empty
/// slice (where Go would panic) gives `(NaN, NaN)`.
pub(crate) fn linear_regression(points: &[Point], intercept_time_ms: i64, compat: Compat) -> (f64, f64) {
    let Some(first) = points.first() else {
        return (go_nan(), go_nan());
    };
    let mut sums = RegressionSums::<1>::default();
    let mut const_y = true;
    for (i, p) in points.iter().enumerate() {
        if const_y && i > 0 && p.v != first.v {
            const_y = false;
        }
        sums.add([(p.t - intercept_time_ms) as f64 / 1e3], [p.v], compat);
    }
    let [fit] = sums.fit([points.len() as f64], [first.v], [const_y]);
    fit
}

/// How many regressions [`linear_regressions_each`] takes side by side: their eight sums
/// fill eight AVX-512 registers (sixteen lanes were slower, 0.55 ms against 0.45 for
/// `deriv` of 202 gauges over 61 windows of 20 values).
const REGRESSION_LANES: usize = 8;

/// [`linear_regression`] of each of `windows` (none empty) at its intercept time,
/// appended to `out` in their order, each as if alone: a range query's windows of one
/// series, or an instant query's of many. In vector lanes as [`avg_over_time_2_each`]'s
/// windows (one by one, the four sums' chains of additions kept most of the CPU idle).
fn linear_regressions_each(windows: &[(&[Point], i64)], compat: Compat, out: &mut Vec<(f64, f64)>) {
    run_in_lanes::<_, REGRESSION_LANES>(Regression(compat), windows, out);
}

/// [`linear_regression`] of `L` windows, each with its intercept time, in lanes. A lane
/// past the end of its window adds zeros, which change no sum: none is ever -0 (each
/// starts at +0, and a sum is -0 only of two); an infinite sum has its compensation at
/// 0 already (Prometheus 3), or one that makes the sum end NaN either way (2.x: infinite
/// then NaN), and a NaN sum stays NaN.
#[derive(Clone, Copy)]
struct Regression(Compat);

impl Lanes for Regression {
    type Window<'p> = (&'p [Point], i64);
    type Out = (f64, f64);
    #[inline(always)]
    fn lanes<const L: usize>(self, windows: [(&[Point], i64); L]) -> [(f64, f64); L] {
        let compat = self.0;
        let shortest = windows.iter().map(|w| w.0.len()).min().unwrap_or(0);
        let longest = windows.iter().map(|w| w.0.len()).max().unwrap_or(0);
        let init_y: [f64; L] = std::array::from_fn(|k| windows[k].0.first().map_or(0.0, |p| p.v));
        // Whether a window's values all equal its first (NaN equals none): apart, where most
        // stop at the second value.
        let const_y: [bool; L] =
            std::array::from_fn(|k| windows[k].0.iter().skip(1).all(|p| p.v == init_y[k]));
        let mut sums = RegressionSums::<L>::default();
        // Milliseconds from the intercept time, divided by 1000 in the lanes (gathered one
        // by one, the quotients were taken one by one too).
        let ms_of = |k: usize, p: &Point| (p.t - windows[k].1) as f64;
        let seconds = |ms: [f64; L]| ms.map(|ms| ms / 1e3);
        // As in `avg_over_time_2_lanes`: the steps where every lane has a value, then the
        // rest; values gathered first.
        let mut j = 0;
        while j < shortest {
            let x = seconds(std::array::from_fn(|k| ms_of(k, &windows[k].0[j])));
            sums.add(x, std::array::from_fn(|k| windows[k].0[j].v), compat);
            j += 1;
        }
        while j < longest {
            let x = seconds(std::array::from_fn(|k| windows[k].0.get(j).map_or(0.0, |p| ms_of(k, p))));
            sums.add(x, std::array::from_fn(|k| windows[k].0.get(j).map_or(0.0, |p| p.v)), compat);
            j += 1;
        }
        let n: [f64; L] = std::array::from_fn(|k| windows[k].0.len() as f64);
        sums.fit(n, init_y, const_y)
    }
}

/// The Kahan-compensated sums of a least-squares fit, in `L` lanes.
#[derive(Debug, Clone, Copy)]
struct RegressionSums<const L: usize> {
    x: [f64; L],
    c_x: [f64; L],
    y: [f64; L],
    c_y: [f64; L],
    xy: [f64; L],
    c_xy: [f64; L],
    x2: [f64; L],
    c_x2: [f64; L],
}

impl<const L: usize> Default for RegressionSums<L> {
    fn default() -> Self {
        let zero = [0.0; L];
        RegressionSums { x: zero, c_x: zero, y: zero, c_y: zero, xy: zero, c_xy: zero, x2: zero, c_x2: zero }
    }
}

impl<const L: usize> RegressionSums<L> {
    /// Adds the points `(x, y)`, one a lane, with `compat`'s compensated step.
    #[inline(always)]
    fn add(&mut self, x: [f64; L], y: [f64; L], compat: Compat) {
        let reset = compat == Compat::Prometheus3;
        for k in 0..L {
            (self.x[k], self.c_x[k]) = kahan_inc_lane(x[k], self.x[k], self.c_x[k], reset);
            (self.y[k], self.c_y[k]) = kahan_inc_lane(y[k], self.y[k], self.c_y[k], reset);
            (self.xy[k], self.c_xy[k]) = kahan_inc_lane(x[k] * y[k], self.xy[k], self.c_xy[k], reset);
            (self.x2[k], self.c_x2[k]) = kahan_inc_lane(x[k] * x[k], self.x2[k], self.c_x2[k], reset);
        }
    }

    /// Each lane's slope and intercept, over `n` points whose first value is `init_y`,
    /// all equal to it if `const_y`. In lanes too: a fit takes five divisions.
    #[inline(always)]
    fn fit(&self, n: [f64; L], init_y: [f64; L], const_y: [bool; L]) -> [(f64, f64); L] {
        let mut fits = [(0.0, 0.0); L];
        for (k, fit) in fits.iter_mut().enumerate() {
            let sum_x = self.x[k] + self.c_x[k];
            let sum_y = self.y[k] + self.c_y[k];
            let sum_xy = self.xy[k] + self.c_xy[k];
            let sum_x2 = self.x2[k] + self.c_x2[k];
            let cov_xy = sum_xy - sum_x * sum_y / n[k];
            let var_x = sum_x2 - sum_x * sum_x / n[k];
            let slope = cov_xy / var_x;
            let intercept = sum_y / n[k] - slope * sum_x / n[k];
            // No points (where Go would panic) fit as NaN.
            *fit = match (const_y[k], init_y[k].is_infinite() || n[k] == 0.0) {
                (false, _) => (slope, intercept),
                (true, false) => (0.0, init_y[k]),
                (true, true) => (go_nan(), go_nan()),
            };
        }
        fits
    }
}

/// [`kahan_inc`] (`reset`: an infinite sum's compensation set to 0, as Prometheus 3
/// does, [`kahan_inc_as`]) with both outcomes computed and one chosen, so that lanes can
/// take the step side by side: the same bits.
#[inline(always)]
fn kahan_inc_lane(x: f64, sum: f64, c: f64, reset: bool) -> (f64, f64) {
    let t = sum + x;
    let (large, small) = if sum.abs() >= x.abs() { (sum, x) } else { (x, sum) };
    let compensated = c + ((large - t) + small);
    (t, if reset && t.is_infinite() { 0.0 } else { compensated })
}

/// `deriv`: the regression slope with the first sample's time as intercept time.
/// Fewer than two points give `None`.
pub(crate) fn deriv(points: &[Point], compat: Compat) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    Some(linear_regression(points, points[0].t, compat).0)
}

/// `predict_linear(v, duration_secs)`: `slope·d + intercept`, with the intercept taken
/// at `eval_time_ms`, the **step** time (`enh.Ts`, not the @/offset-adjusted time).
/// Fewer than two points give `None`.
pub(crate) fn predict_linear(
    points: &[Point],
    eval_time_ms: i64,
    duration_secs: f64,
    compat: Compat,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(points, eval_time_ms, compat);
    Some(slope * duration_secs + intercept)
}

/// `resets`: the number of decreases between consecutive samples (NaN comparisons are
/// false). One sample gives 0 (so does an empty slice; the caller outputs nothing for an
/// empty window).
pub(crate) fn resets(points: &[Point]) -> f64 {
    decreases(points) as f64
}

/// How many values are lower than the one before them: a counter's resets.
pub(crate) fn decreases(points: &[Point]) -> usize {
    points.windows(2).filter(|w| w[1].v < w[0].v).count()
}

/// `changes`: the number of consecutive pairs that differ, where two NaNs count as
/// equal (but `0 → NaN` is a change). One sample gives 0 (so does an empty slice).
pub(crate) fn changes(points: &[Point]) -> f64 {
    change_count(points) as f64
}

/// How many neighbours of `points` differ, [`changed`].
pub(crate) fn change_count(points: &[Point]) -> usize {
    points.windows(2).filter(|w| changed(w[0].v, w[1].v)).count()
}

/// Whether `b` after `a` is a change for `changes`: they differ, and are not both NaN.
#[inline(always)]
pub(crate) fn changed(a: f64, b: f64) -> bool {
    b != a && !(a.is_nan() && b.is_nan())
}

// ---------------------------------------------------------------------------------------
// 6. *_over_time
// ---------------------------------------------------------------------------------------

// The window statistics below return a plain `f64` because the caller only calls them
// for non-empty windows (Prometheus outputs nothing for an empty window). For an empty
// slice they return NaN (Go would panic or not be called), never panic.

/// `sum_over_time`: Kahan–Neumaier sum from 0; ±Inf is returned without compensation.
pub(crate) fn sum_over_time(points: &[Point]) -> f64 {
    if points.is_empty() {
        return go_nan();
    }
    let mut k = KahanSum::new();
    for p in points {
        k.add(p.v);
    }
    k.value()
}

/// `avg_over_time`: direct Kahan mean, switching to the incremental mean once the sum
/// would overflow, finished as `S/n + C/n` (3.10+). Same algorithm as [`AvgAcc`].
pub(crate) fn avg_over_time(points: &[Point]) -> f64 {
    let Some((first, rest)) = points.split_first() else {
        return go_nan();
    };
    let mut acc = AvgAcc::new(first.v);
    for p in rest {
        acc.add(p.v);
    }
    acc.value()
}

/// Whether no value of `points` exceeds `bound` in magnitude (NaN is none): the bounds
/// under which the lane kernels need not look out for overflows. Not `all`: stopping at
/// the first large value makes a branch a value.
fn none_beyond(points: &[Point], bound: f64) -> bool {
    points.iter().fold(true, |within, p| within & (p.v.is_nan() | (p.v.abs() <= bound)))
}

/// Whether no value of `points` exceeds 1e290 in magnitude (NaN is none): then no sum
/// of them overflows, however many (once a sum passes 2^1017 such values are below half
/// its last place and it stops growing), so [`sum_over_time`] and [`avg_over_time`] of
/// any window of them never meet an infinite sum (nor switch to the incremental mean).
fn below_sum_bound(points: &[Point]) -> bool {
    none_beyond(points, 1e290)
}

/// How many windows [`sums_over_time_each`] takes side by side: a compensated sum is a
/// chain of additions, each waiting for the one before.
const SUM_LANES: usize = 16;

/// [`sum_over_time`] (or, `avg`, [`avg_over_time`]) of each of `windows` (none empty),
/// appended to `out` in their order, each as if alone. `bounded`: [`below_sum_bound`]
/// holds for every window; the windows then run in lanes ([`run_in_lanes`]), else one
/// by one.
fn sums_over_time_each(windows: &[&[Point]], bounded: bool, avg: bool, out: &mut Vec<f64>) {
    if !bounded {
        out.extend(windows.iter().map(|w| if avg { avg_over_time(w) } else { sum_over_time(w) }));
        return;
    }
    run_in_lanes::<_, SUM_LANES>(SumLanes { avg }, windows, out);
}

/// [`sum_over_time`] (`avg`: [`avg_over_time`]) of `L` windows whose values are all below
/// the sum bound, in lanes: every sum starts at +0 and adds every value, so no sum is
/// ever -0 (a sum is -0 only of two) and a lane past the end of its window adds +0,
/// which changes nothing. (`avg_over_time` starts at its first value instead, which
/// differs only for a first -0, and only in a sum that the compensation, never -0,
/// turns to +0 at the end either way, or for a first NaN, which makes the answer NaN
/// either way.) Without infinities Kahan's steps need not look for them, and the mean
/// is never incremental.
#[derive(Clone, Copy)]
struct SumLanes {
    avg: bool,
}

impl Lanes for SumLanes {
    type Window<'p> = &'p [Point];
    type Out = f64;
    #[inline(always)]
    fn lanes<const L: usize>(self, windows: [&[Point]; L]) -> [f64; L] {
        let (shortest, longest) = lengths(&windows);
        let (mut sum, mut c) = ([0.0; L], [0.0; L]);
        let mut add = |v: [f64; L]| {
            for (k, v) in v.into_iter().enumerate() {
                (sum[k], c[k]) = kahan_inc_lane(v, sum[k], c[k], false);
            }
        };
        // As in `avg_over_time_2_lanes`: the steps where every lane has a value, then the
        // rest; values gathered first.
        let mut j = 0;
        while j < shortest {
            add(std::array::from_fn(|k| windows[k][j].v));
            j += 1;
        }
        while j < longest {
            add(std::array::from_fn(|k| windows[k].get(j).map_or(0.0, |p| p.v)));
            j += 1;
        }
        std::array::from_fn(|k| {
            let n = windows[k].len() as f64;
            match (windows[k].is_empty(), self.avg) {
                (true, _) => go_nan(),
                (false, true) => sum[k] / n + c[k] / n,
                (false, false) => sum[k] + c[k],
            }
        })
    }
}

/// `avg_over_time` of Prometheus 2 (`Compat::Prometheus2`; checked against 2.42): an
/// incremental mean, each step compensated as a Kahan–Neumaier sum without 3's reset of
/// the compensation at infinities, finished as `mean + c`. An infinite mean stays
/// (unless a NaN or the other infinity comes), as the subtraction would make it NaN.
pub(crate) fn avg_over_time_2(points: &[Point]) -> f64 {
    if points.is_empty() {
        return go_nan();
    }
    let (mut mean, mut c) = (0.0, 0.0);
    for (j, p) in points.iter().enumerate() {
        mean_2_step(&mut mean, &mut c, (j + 1) as f64, p.v);
    }
    mean_2_value(mean, c)
}

/// How many [`avg_over_time_2`] windows [`avg_over_time_2_each`] takes side by side. A
/// mean is a chain of divisions, each waiting for the one before; sixteen chains keep
/// AVX-512's divider busy (two 8-lane registers), and AVX2's (four of 4).
const MEAN_2_LANES: usize = 16;

/// Whether no value of `points` exceeds 1e300 in magnitude (NaN is none).
fn below_overflow(points: &[Point]) -> bool {
    none_beyond(points, 1e300)
}

/// [`avg_over_time_2`] of each of `windows`, appended to `out` in their order, each as
/// if alone: a range query's windows of one series, or an instant query's of many, side
/// by side ([`run_in_lanes`]). `bounded`: no value exceeds 1e300 in magnitude
/// ([`below_overflow`]), so no mean can overflow (it stays within the values' bounds, a
/// step's terms within twice them) and the lanes need not look for infinite means.
fn avg_over_time_2_each(windows: &[&[Point]], bounded: bool, out: &mut Vec<f64>) {
    run_in_lanes::<_, MEAN_2_LANES>(Mean2Lanes { bounded }, windows, out);
}

/// [`avg_over_time_2_each`]'s kernel (`bounded`: no mean can overflow).
#[derive(Clone, Copy)]
struct Mean2Lanes {
    bounded: bool,
}

impl Lanes for Mean2Lanes {
    type Window<'p> = &'p [Point];
    type Out = f64;
    #[inline(always)]
    fn lanes<const L: usize>(self, windows: [&[Point]; L]) -> [f64; L] {
        match self.bounded {
            true => avg_over_time_2_lanes::<L, true>(windows),
            false => avg_over_time_2_lanes::<L, false>(windows),
        }
    }
}

/// A function whose windows are long chains of dependent steps, which
/// [`laned_values`] takes side by side: one after the other, a series at a time, they
/// left most of the CPU idle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Laned {
    /// `sum_over_time` ([`sums_over_time_each`]), of values whose sums are not exact.
    Sum,
    /// `avg_over_time` under `Compat::Prometheus3`, likewise.
    Avg,
    /// `avg_over_time` under `Compat::Prometheus2` ([`avg_over_time_2_each`]).
    Mean2,
    /// `stdvar_over_time` and `stddev_over_time` ([`stdvar_over_time_each`]).
    Stdvar,
    Stddev,
    /// `deriv` ([`linear_regressions_each`], the intercept at the window's first sample).
    Deriv,
    /// `predict_linear` by this many seconds (the intercept at the window's step).
    Predict(f64),
    /// `double_exponential_smoothing` by a valid smoothing and trend factor
    /// ([`SmoothLanes`]).
    Smooth(f64, f64),
}

impl Laned {
    /// The fewest points a window needs to have a value: a fit takes two.
    pub(crate) fn fewest(self) -> usize {
        match self {
            Laned::Deriv | Laned::Predict(_) | Laned::Smooth(..) => 2,
            _ => 1,
        }
    }

    /// Whether lanes need not look out for overflows in windows of `points`
    /// ([`below_sum_bound`], [`below_overflow`], [`below_variance_bound`]; a fit always
    /// looks).
    pub(crate) fn bounded(self, points: &[Point]) -> bool {
        match self {
            Laned::Sum | Laned::Avg => below_sum_bound(points),
            Laned::Mean2 => below_overflow(points),
            Laned::Stdvar | Laned::Stddev => below_variance_bound(points),
            Laned::Deriv | Laned::Predict(_) | Laned::Smooth(..) => true,
        }
    }

    /// The value of one window alone, at the step `t` (`None` below [`Laned::fewest`]).
    pub(crate) fn of(self, points: &[Point], t: i64, compat: Compat) -> Option<f64> {
        match self {
            Laned::Sum => Some(sum_over_time(points)),
            Laned::Avg => Some(avg_over_time(points)),
            Laned::Mean2 => Some(avg_over_time_2(points)),
            Laned::Stdvar => Some(stdvar_over_time(points, compat)),
            Laned::Stddev => Some(stddev_over_time(points, compat)),
            Laned::Deriv => deriv(points, compat),
            Laned::Predict(d) => predict_linear(points, t, d, compat),
            Laned::Smooth(sf, tf) => double_exponential_smoothing(points, sf, tf),
        }
    }
}

/// The buffers of [`laned_values`]' fits, kept from call to call (a range query calls
/// once a series).
#[derive(Default)]
pub(crate) struct FitBuffers<'p> {
    at: Vec<(&'p [Point], i64)>,
    fits: Vec<(f64, f64)>,
}

/// `f` of each of `windows` (at least [`Laned::fewest`] points each; `step(i)` the
/// time of the `i`th one's step), appended to `out` in their order, each as if alone.
/// `bounded`: [`Laned::bounded`] holds for every window.
pub(crate) fn laned_values<'p>(
    f: Laned,
    windows: &[&'p [Point]],
    step: impl Fn(usize) -> i64,
    bounded: bool,
    compat: Compat,
    buffers: &mut FitBuffers<'p>,
    out: &mut Vec<f64>,
) {
    match f {
        Laned::Sum | Laned::Avg => sums_over_time_each(windows, bounded, f == Laned::Avg, out),
        Laned::Smooth(sf, tf) => run_in_lanes::<_, SMOOTH_LANES>(SmoothLanes { sf, tf }, windows, out),
        Laned::Mean2 => avg_over_time_2_each(windows, bounded, out),
        Laned::Stdvar | Laned::Stddev => {
            let start = out.len();
            stdvar_over_time_each(windows, bounded, compat, out);
            if f == Laned::Stddev {
                out[start..].iter_mut().for_each(|v| *v = v.sqrt());
            }
        }
        Laned::Deriv | Laned::Predict(_) => {
            let FitBuffers { at, fits } = buffers;
            at.clear();
            at.extend(
                windows.iter().enumerate().map(|(i, w)| {
                    (*w, if f == Laned::Deriv { w.first().map_or(0, |p| p.t) } else { step(i) })
                }),
            );
            fits.clear();
            linear_regressions_each(at, compat, fits);
            out.extend(fits.iter().map(|&(slope, intercept)| match f {
                Laned::Predict(d) => slope * d + intercept,
                _ => slope,
            }));
        }
    }
}

/// The shortest and the longest of the windows in lanes: the steps up to the first
/// take every lane, those up to the second only some.
#[inline(always)]
fn lengths<const L: usize>(windows: &[&[Point]; L]) -> (usize, usize) {
    let shortest = windows.iter().map(|w| w.len()).min().unwrap_or(0);
    (shortest, windows.iter().map(|w| w.len()).max().unwrap_or(0))
}

/// A kernel whose windows [`run_in_lanes`] takes side by side.
trait Lanes: Copy {
    type Window<'p>: Copy + Default;
    type Out: Copy + Default;
    /// The kernel of `L` windows, one a lane; inlined into the caller's instruction set.
    fn lanes<const L: usize>(self, windows: [Self::Window<'_>; L]) -> [Self::Out; L];
}

/// `kernel` of each of `windows`, appended to `out`: `MAX` windows side by side, a
/// short last chunk in 4 or 8 lanes filled with its last window again. On x86-64 the
/// lanes run in the widest vectors the CPU has (`pulp` picks AVX-512 or AVX2 at run
/// time, or stays with the baseline's two lanes). Every instruction set rounds each
/// operation the same way, so the answers do not depend on which one ran.
fn run_in_lanes<K: Lanes, const MAX: usize>(kernel: K, windows: &[K::Window<'_>], out: &mut Vec<K::Out>) {
    struct Run<'a, 'p, K: Lanes, const MAX: usize>(K, &'a [K::Window<'p>], &'a mut [K::Out]);
    impl<K: Lanes, const MAX: usize> pulp::WithSimd for Run<'_, '_, K, MAX> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(kernel, windows, out) = self;
            for (windows, out) in windows.chunks(MAX).zip(out.chunks_mut(MAX)) {
                let lanes = |k: usize| windows.get(k).or(windows.last()).copied().unwrap_or_default();
                let mut put = |values: &[K::Out]| out.iter_mut().zip(values).for_each(|(o, v)| *o = *v);
                match windows.len() {
                    ..=4 => put(&kernel.lanes::<4>(std::array::from_fn(lanes))),
                    5..=8 if MAX > 8 => put(&kernel.lanes::<8>(std::array::from_fn(lanes))),
                    _ => put(&kernel.lanes::<MAX>(std::array::from_fn(lanes))),
                }
            }
        }
    }
    let start = out.len();
    out.resize(start + windows.len(), K::Out::default());
    pulp::Arch::new().dispatch(Run::<K, MAX>(kernel, windows, &mut out[start..]));
}

/// [`avg_over_time_2`] of `L` windows in lanes: the steps of `mean_2_step` side by side
/// up to an infinite mean, which skips values, then lane by lane. Inlined into the
/// caller's instruction set.
///
/// A lane past the end of its window takes its own mean as the next value, a step that
/// changes nothing while the mean is finite: `x` is +0, `mean + x` is `mean` (never -0,
/// as a sum is -0 only of two), and so the compensation gains +0 (never -0 either). A
/// NaN mean stays NaN. So every lane takes every step, in vectors, without masks (with
/// which the lanes went through memory at each step).
///
/// `BOUNDED`: no mean can become infinite (no value above 1e300 in magnitude), so the
/// lanes do not look (a sixth of the time).
#[inline(always)]
fn avg_over_time_2_lanes<const L: usize, const BOUNDED: bool>(windows: [&[Point]; L]) -> [f64; L] {
    let (shortest, longest) = lengths(&windows);
    let (mut mean, mut c) = ([0.0_f64; L], [0.0_f64; L]);
    // Not `any`: stopping at the first infinite lane makes a branch a lane.
    let finite = |mean: &[f64; L]| BOUNDED || !mean.iter().fold(false, |inf, m| inf | m.is_infinite());
    let mut j = 0;
    // The steps where every lane has a value, then those where some lanes are past
    // their end (scrape jitter makes a series' windows differ by a value or two): two
    // loops, so that the first makes no choice a lane.
    while j < shortest && finite(&mean) {
        // Gathered first: indexing lane by lane below kept the loop from vectors.
        let v: [f64; L] = std::array::from_fn(|k| windows[k][j].v);
        mean_2_lanes_step(&mut mean, &mut c, (j + 1) as f64, v);
        j += 1;
    }
    while j < longest && finite(&mean) {
        let v: [f64; L] = std::array::from_fn(|k| windows[k].get(j).map_or(mean[k], |p| p.v));
        mean_2_lanes_step(&mut mean, &mut c, (j + 1) as f64, v);
        j += 1;
    }
    if j < longest {
        // Out of line: lanes indexed by a variable here would keep them in memory above.
        (mean, c) = avg_over_time_2_rest(&windows, j, mean, c);
    }
    std::array::from_fn(|k| if windows[k].is_empty() { go_nan() } else { mean_2_value(mean[k], c[k]) })
}

/// The step of `mean_2_step` in each lane, for finite means.
#[inline(always)]
fn mean_2_lanes_step<const L: usize>(mean: &mut [f64; L], c: &mut [f64; L], count: f64, v: [f64; L]) {
    for k in 0..L {
        let x = v[k] / count - mean[k] / count;
        let t = mean[k] + x;
        c[k] += if mean[k].abs() >= x.abs() { (mean[k] - t) + x } else { (x - t) + mean[k] };
        mean[k] = t;
    }
}

/// The steps of [`avg_over_time_2_lanes`] from the `from`th value on, lane by lane.
#[inline(never)]
fn avg_over_time_2_rest<const L: usize>(
    windows: &[&[Point]; L],
    from: usize,
    mut mean: [f64; L],
    mut c: [f64; L],
) -> ([f64; L], [f64; L]) {
    for (k, w) in windows.iter().enumerate() {
        for (j, p) in w.iter().enumerate().skip(from) {
            mean_2_step(&mut mean[k], &mut c[k], (j + 1) as f64, p.v);
        }
    }
    (mean, c)
}

/// Adds the `count`-th value `v` to an [`avg_over_time_2`] mean.
#[inline(always)]
fn mean_2_step(mean: &mut f64, c: &mut f64, count: f64, v: f64) {
    if mean.is_infinite() && (v.is_finite() || (v.is_infinite() && (*mean > 0.0) == (v > 0.0))) {
        return;
    }
    let x = v / count - *mean / count;
    let t = *mean + x;
    *c += if mean.abs() >= x.abs() { (*mean - t) + x } else { (x - t) + *mean };
    *mean = t;
}

fn mean_2_value(mean: f64, c: f64) -> f64 {
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

/// Whether every value is a whole number of at most 2^53 / n in magnitude (n values):
/// then every partial sum of any of them is a whole number of at most 2^53, exact in
/// floating point, so [`sum_over_time`] and [`avg_over_time`] of any window of them are
/// [`exact_sum_over_time`] of its integer sum. NaN and ±Inf are not whole numbers.
pub(crate) fn sums_are_exact(points: &[Point]) -> bool {
    let limit = (1u64 << 53) as f64 / points.len().max(1) as f64;
    // `v as i64` truncates (and is 0 for NaN): equal back only for whole numbers. No
    // `fract()`, a library call on x86-64's baseline.
    points.iter().all(|p| p.v.abs() <= limit && p.v as i64 as f64 == p.v)
}

/// [`sum_over_time`] (`avg` false) or [`avg_over_time`] of `n` values whose sums are
/// exact ([`sums_are_exact`]) and add up to `sum`. Their Kahan compensation stays +0,
/// so these are the kernels' own final steps: `S + C` and `S/n + C/n`.
pub(crate) fn exact_sum_over_time(sum: i64, n: usize, avg: bool) -> f64 {
    let (sum, c, count) = (sum as f64, 0.0, n as f64);
    if avg {
        sum / count + c / count
    } else {
        sum + c
    }
}

/// `min_over_time`: starts with the first value and takes `v` when `v < cur` or `cur`
/// is NaN, so the result is NaN only if every value is NaN.
pub(crate) fn min_over_time(points: &[Point]) -> f64 {
    extreme_over_time(points, min_step)
}

/// `max_over_time`: as [`min_over_time`] with `v > cur`.
pub(crate) fn max_over_time(points: &[Point]) -> f64 {
    extreme_over_time(points, max_step)
}

/// The fold of `step` ([`min_step`] or [`max_step`]) over the values of `points`, from
/// the first. Each step waits for the one before (a compare, a NaN test and a choice),
/// so longer windows fold in four interleaved chains, joined in order: their extreme
/// is the fold's value, the extreme of the values that are not NaN (or, all NaN, the
/// last value, as the chain that holds it is joined last or the rest follow it). Bit
/// for bit too, as equal floats have equal bits, but for zeros: -0 equals +0 and the
/// fold keeps the earliest, so a zero extreme folds again, in order.
/// Windows of 20 gauge values (criterion `range_max_over_time_gauge`): 49 → 33 µs.
#[inline(always)]
fn extreme_over_time(points: &[Point], step: fn(f64, f64) -> f64) -> f64 {
    let fold = |points: &[Point]| match points.split_first() {
        Some((first, rest)) => rest.iter().fold(first.v, |cur, p| step(cur, p.v)),
        None => go_nan(),
    };
    if points.len() < 12 {
        return fold(points);
    }
    let (head, rest) = points.split_at(4);
    let mut chains = [head[0].v, head[1].v, head[2].v, head[3].v];
    let quads = rest.chunks_exact(4);
    let tail = quads.remainder();
    for quad in quads {
        for (chain, p) in chains.iter_mut().zip(quad) {
            *chain = step(*chain, p.v);
        }
    }
    let joined = tail
        .iter()
        .fold(step(step(step(chains[0], chains[1]), chains[2]), chains[3]), |cur, p| step(cur, p.v));
    if joined == 0.0 {
        fold(points)
    } else {
        joined
    }
}

/// `count_over_time`: the number of samples.
pub(crate) fn count_over_time(points: &[Point]) -> f64 {
    points.len() as f64
}

/// `last_over_time`: the newest value (NaN for an empty slice).
pub(crate) fn last_over_time(points: &[Point]) -> f64 {
    points.last().map_or_else(go_nan, |p| p.v)
}

/// `first_over_time`: the oldest value (NaN for an empty slice).
pub(crate) fn first_over_time(points: &[Point]) -> f64 {
    points.first().map_or_else(go_nan, |p| p.v)
}

/// `varianceOverTime`: Welford's algorithm with Kahan-compensated mean and M2 (`compat`'s
/// compensated step, [`kahan_inc_as`]).
fn variance_over_time(points: &[Point], compat: Compat) -> f64 {
    if points.is_empty() {
        return go_nan();
    }
    let mut count = 0.0f64;
    let (mut mean, mut c_mean) = (0.0f64, 0.0f64);
    let (mut aux, mut c_aux) = (0.0f64, 0.0f64);
    for p in points {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc_as(compat, delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc_as(compat, delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// How many [`stdvar_over_time`] windows [`stdvar_over_time_each`] takes side by side: as
/// for [`avg_over_time_2_each`], a window is a chain of divisions.
const VARIANCE_LANES: usize = 16;

/// Whether no value of `points` exceeds 1e100 in magnitude (NaN is none): then no step
/// of Welford's algorithm over them overflows (a squared deviation stays below 1e201, a
/// sum of fewer than 2^53 of them far below the largest float), so no Kahan step meets
/// an infinite sum, and Prometheus 2's and 3's steps agree. A NaN makes every later
/// term NaN, in lanes as alone.
fn below_variance_bound(points: &[Point]) -> bool {
    none_beyond(points, 1e100)
}

/// [`stdvar_over_time`] of each of `windows` (none empty), appended to `out` in their
/// order, each as if alone: a range query's windows of one series, or an instant
/// query's of many, with `compat`'s compensated step. `bounded`: [`below_variance_bound`]
/// holds for every window; the windows then run in lanes as [`avg_over_time_2_each`]'s
/// do (one at a time, each step waited on the division of the one before), else one by
/// one.
fn stdvar_over_time_each(windows: &[&[Point]], bounded: bool, compat: Compat, out: &mut Vec<f64>) {
    if !bounded {
        out.extend(windows.iter().map(|w| variance_over_time(w, compat)));
        return;
    }
    run_in_lanes::<_, VARIANCE_LANES>(Variance, windows, out);
}

/// [`variance_over_time`] of `L` windows whose values are all below the variance bound,
/// in lanes. Without infinities, Kahan's steps need not look for them.
///
/// A lane past the end of its window takes its current mean (`mean + c_mean`) as the
/// next value, a step that changes nothing: the deviation is +0, and so is each term
/// added (no sum here is ever -0: each starts at +0, and a sum is -0 only of two).
#[derive(Clone, Copy)]
struct Variance;

impl Lanes for Variance {
    type Window<'p> = &'p [Point];
    type Out = f64;
    #[inline(always)]
    fn lanes<const L: usize>(self, windows: [&[Point]; L]) -> [f64; L] {
        let (shortest, longest) = lengths(&windows);
        let mut state = VarianceLanes { mean: [0.0; L], c_mean: [0.0; L], aux: [0.0; L], c_aux: [0.0; L] };
        // As in `avg_over_time_2_lanes`: the steps where every lane has a value, then the
        // rest; values gathered first.
        let mut j = 0;
        while j < shortest {
            let v: [f64; L] = std::array::from_fn(|k| windows[k][j].v);
            state.step((j + 1) as f64, v);
            j += 1;
        }
        while j < longest {
            let v: [f64; L] =
                std::array::from_fn(|k| windows[k].get(j).map_or(state.mean[k] + state.c_mean[k], |p| p.v));
            state.step((j + 1) as f64, v);
            j += 1;
        }
        std::array::from_fn(|k| {
            if windows[k].is_empty() {
                go_nan()
            } else {
                (state.aux[k] + state.c_aux[k]) / windows[k].len() as f64
            }
        })
    }
}

/// Welford's running mean and sum of squared deviations, Kahan-compensated, in lanes.
struct VarianceLanes<const L: usize> {
    mean: [f64; L],
    c_mean: [f64; L],
    aux: [f64; L],
    c_aux: [f64; L],
}

impl<const L: usize> VarianceLanes<L> {
    /// [`variance_over_time`]'s step for the `count`-th values `v`, sums finite.
    #[inline(always)]
    fn step(&mut self, count: f64, v: [f64; L]) {
        for (k, v) in v.into_iter().enumerate() {
            let delta = v - (self.mean[k] + self.c_mean[k]);
            (self.mean[k], self.c_mean[k]) = finite_kahan_inc(delta / count, self.mean[k], self.c_mean[k]);
            let square = delta * (v - (self.mean[k] + self.c_mean[k]));
            (self.aux[k], self.c_aux[k]) = finite_kahan_inc(square, self.aux[k], self.c_aux[k]);
        }
    }
}

/// [`kahan_inc`] where the new sum cannot be infinite. Apart from [`kahan_inc_lane`],
/// whose step gives the same bits: the compiler lays the two out differently, and each
/// suits its own kernel (the other in its place made the variance lanes 10% and the
/// fits' 15% slower).
#[inline(always)]
fn finite_kahan_inc(x: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + x;
    (t, c + if sum.abs() >= x.abs() { (sum - t) + x } else { (x - t) + sum })
}

/// `stdvar_over_time` (population variance; Welford + Kahan).
pub(crate) fn stdvar_over_time(points: &[Point], compat: Compat) -> f64 {
    variance_over_time(points, compat)
}

/// `stddev_over_time`: the square root of [`stdvar_over_time`].
pub(crate) fn stddev_over_time(points: &[Point], compat: Compat) -> f64 {
    variance_over_time(points, compat).sqrt()
}

/// Up to how many values [`quantile`] sorts; more it selects in (one thread, 202 gauges'
/// windows: 32 values sorted 0.048 ms, selected 0.051; 40 values 0.070 and 0.060; 80
/// values 0.274 and 0.095).
const SORTED_QUANTILE_VALUES: usize = 32;

/// `quantile_over_time(phi, r)`: [`quantile`] of the window's values. The caller emits
/// the `quantile value should be between 0 and 1` warning for NaN or out-of-range phi.
/// A window in order already (a counter's) is read as it is.
pub(crate) fn quantile_over_time(phi: f64, points: &[Point]) -> f64 {
    let (lower, upper, weight) = match quantile_ranks(phi, points.len()) {
        Ok(ranks) => ranks,
        Err(v) => return v,
    };
    if points.windows(2).all(|w| cmp_nan_first(w[0].v, w[1].v) != Ordering::Greater) {
        return weighed(points[lower].v, points[upper].v, weight);
    }
    let mut values: Vec<f64> = points.iter().map(|p| p.v).collect();
    quantile(phi, &mut values)
}

/// `mad_over_time`: NaN if any value is NaN; otherwise the median of the absolute
/// deviations from the median (both medians through [`quantile`]).
pub(crate) fn mad_over_time(points: &[Point]) -> f64 {
    if points.is_empty() || points.iter().any(|p| p.v.is_nan()) {
        return go_nan();
    }
    let mut values: Vec<f64> = points.iter().map(|p| p.v).collect();
    let median = quantile(0.5, &mut values);
    for v in values.iter_mut() {
        *v = (*v - median).abs();
    }
    quantile(0.5, &mut values)
}

/// `compareOverTime` with `returnTimestamp`: the timestamp (seconds) of the last sample
/// for which `better(v, current)` held, starting from the first sample.
fn ts_of_compare(points: &[Point], better: impl Fn(f64, f64) -> bool) -> f64 {
    let Some(first) = points.first() else {
        return go_nan();
    };
    let mut cur = first.v;
    let mut ts = first.t;
    for p in points {
        if better(p.v, cur) {
            cur = p.v;
            ts = p.t;
        }
    }
    ts as f64 / 1000.0
}

/// `ts_of_min_over_time`: timestamp in seconds of the **last** minimum (`v <= cur` or
/// `cur` NaN).
pub(crate) fn ts_of_min_over_time(points: &[Point]) -> f64 {
    ts_of_compare(points, |v, cur| v <= cur || cur.is_nan())
}

/// `ts_of_max_over_time`: timestamp in seconds of the **last** maximum (`v >= cur` or
/// `cur` NaN).
pub(crate) fn ts_of_max_over_time(points: &[Point]) -> f64 {
    ts_of_compare(points, |v, cur| v >= cur || cur.is_nan())
}

/// `ts_of_first_over_time`: the oldest sample's timestamp in seconds.
pub(crate) fn ts_of_first_over_time(points: &[Point]) -> f64 {
    points.first().map_or_else(go_nan, |p| p.t as f64 / 1000.0)
}

/// `ts_of_last_over_time`: the newest sample's timestamp in seconds.
pub(crate) fn ts_of_last_over_time(points: &[Point]) -> f64 {
    points.last().map_or_else(go_nan, |p| p.t as f64 / 1000.0)
}

/// Validates `double_exponential_smoothing`'s factors with Prometheus' exact runtime
/// errors (checked whenever the window is non-empty). NaN factors pass, as in Go.
pub(crate) fn validate_smoothing(sf: f64, tf: f64) -> Result<(), String> {
    if sf <= 0.0 || sf >= 1.0 {
        return Err(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
            go_format_fixed(sf, 6)
        ));
    }
    if tf <= 0.0 || tf >= 1.0 {
        return Err(format!("invalid trend factor. Expected: 0 < tf < 1, got: {}", go_format_fixed(tf, 6)));
    }
    Ok(())
}

/// `double_exponential_smoothing(r, sf, tf)` (Holt's linear method, same math as 2.x
/// `holt_winters`). Fewer than two points give `None`. Validation is separate:
/// [`validate_smoothing`].
pub(crate) fn double_exponential_smoothing(points: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let mut s0 = 0.0f64;
    let mut s1 = points[0].v;
    let mut b = points[1].v - points[0].v;
    for (i, p) in points.iter().enumerate().skip(1) {
        let x = sf * p.v;
        // calcTrendValue(i-1, ...): the initial trend is used unchanged at i == 1.
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// How many windows [`SmoothLanes`] takes side by side.
const SMOOTH_LANES: usize = 16;

/// [`double_exponential_smoothing`] of `L` windows of two points or more, in lanes:
/// Holt's recurrence is a chain of dependent steps, four operations deep. Each lane
/// takes the scalar function's operations in its order, so its bits; a lane past the
/// end of its window keeps its state (the steps have no value that changes nothing).
#[derive(Clone, Copy)]
struct SmoothLanes {
    sf: f64,
    tf: f64,
}

impl Lanes for SmoothLanes {
    type Window<'p> = &'p [Point];
    type Out = f64;
    #[inline(always)]
    fn lanes<const L: usize>(self, windows: [&[Point]; L]) -> [f64; L] {
        let SmoothLanes { sf, tf } = self;
        let (shortest, longest) = lengths(&windows);
        let value = |k: usize, j: usize| windows[k].get(j).map_or(0.0, |p| p.v);
        let mut s0 = [0.0; L];
        let mut s1: [f64; L] = std::array::from_fn(|k| value(k, 0));
        let mut b: [f64; L] = std::array::from_fn(|k| value(k, 1) - value(k, 0));
        // The second point keeps the initial trend.
        let v: [f64; L] = std::array::from_fn(|k| value(k, 1));
        for k in 0..L {
            let (x, y) = (sf * v[k], (1.0 - sf) * (s1[k] + b[k]));
            s0[k] = s1[k];
            s1[k] = x + y;
        }
        // As in `avg_over_time_2_lanes`: the steps where every lane has a value, then
        // the rest; values gathered first.
        let mut j = 2;
        while j < shortest {
            let v: [f64; L] = std::array::from_fn(|k| windows[k][j].v);
            for k in 0..L {
                b[k] = tf * (s1[k] - s0[k]) + (1.0 - tf) * b[k];
                let (x, y) = (sf * v[k], (1.0 - sf) * (s1[k] + b[k]));
                s0[k] = s1[k];
                s1[k] = x + y;
            }
            j += 1;
        }
        while j < longest {
            let v: [f64; L] = std::array::from_fn(|k| value(k, j));
            let live: [bool; L] = std::array::from_fn(|k| j < windows[k].len());
            for k in 0..L {
                let trend = tf * (s1[k] - s0[k]) + (1.0 - tf) * b[k];
                let (x, y) = (sf * v[k], (1.0 - sf) * (s1[k] + trend));
                if live[k] {
                    b[k] = trend;
                    s0[k] = s1[k];
                    s1[k] = x + y;
                }
            }
            j += 1;
        }
        s1
    }
}

// ---------------------------------------------------------------------------------------
// 7. quantile
// ---------------------------------------------------------------------------------------

/// The order of Go's `vectorByValueHeap` (NaN before everything), made total so that
/// Rust's sort cannot misbehave: NaNs first, then ascending, `-0 == +0`.
pub(crate) fn cmp_nan_first(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `quantile(phi, values)` of the `quantile` aggregator, of `quantile_over_time` and of
/// `mad_over_time`'s medians (reorders `values`; a `&mut Vec<f64>` coerces to the slice).
///
/// Empty input or NaN phi → NaN; phi < 0 → -Inf; phi > 1 → +Inf. Otherwise the values
/// in order, NaN first, are weighed by the literal formula `x_lo·(1−w) + x_hi·w`, so
/// `Inf·0` yields NaN (`quantile(0.5, {1, 2, +Inf})` is NaN).
///
/// The answer is a stable sort's: values that compare equal (-0 and +0, NaNs) keep their
/// order, as Go's sort keeps them for up to 12 values (NaNs it reverses, which no result
/// shows: a quantile that takes a NaN is NaN), and as a sliding window's sorted values
/// keep them, so that the order of zeros of both signs, which can decide the sign of a
/// zero result, does not depend on the path.
///
/// Past [`SORTED_QUANTILE_VALUES`] only the two values the quantile reads are looked
/// for, not the whole order: a selection finds the value at a place (any of equal ones
/// has its bits, but for zeros; NaNs come first, and any makes the answer NaN), and a
/// zero's sign is the sign of the zero that many places into the values' zeros.
pub(crate) fn quantile(phi: f64, values: &mut [f64]) -> f64 {
    let (lower, upper, weight) = match quantile_ranks(phi, values.len()) {
        Ok(ranks) => ranks,
        Err(v) => return v,
    };
    if values.len() <= SORTED_QUANTILE_VALUES {
        values.sort_by(|a, b| cmp_nan_first(*a, *b));
        return weighed(values[lower], values[upper], weight);
    }
    // The zeros in their order, before the selection moves them.
    let zeros: Vec<f64> = values.iter().copied().filter(|&v| v == 0.0).collect();
    // The value `v` at `at` of the order, its sign found if a zero: the zeros come after
    // the NaNs and the negative values.
    let signed = |v: f64, at: usize, values: &[f64]| {
        if v != 0.0 {
            return v;
        }
        let before = values.iter().filter(|&&v| v.is_nan() || v < 0.0).count();
        zeros.get(at - before).copied().unwrap_or(v)
    };
    let (_, &mut v, _) = values.select_nth_unstable_by(lower, |a, b| cmp_nan_first(*a, *b));
    let x_lower = signed(v, lower, values);
    let x_upper = if upper == lower {
        x_lower
    } else {
        // After the selection the values past its place are its successors.
        let v = values[upper..].iter().copied().min_by(|a, b| cmp_nan_first(*a, *b));
        signed(v.unwrap_or(f64::NAN), upper, values)
    };
    weighed(x_lower, x_upper, weight)
}

/// [`quantile`] of `values` sorted already (NaN first, [`cmp_nan_first`]).
pub(crate) fn quantile_sorted(phi: f64, values: &[f64]) -> f64 {
    match quantile_ranks(phi, values.len()) {
        Ok((lower, upper, weight)) => weighed(values[lower], values[upper], weight),
        Err(v) => v,
    }
}

/// The quantile between the values `lower` and `upper` at `weight`, as Go writes it:
/// `Inf·0` is NaN (`quantile(0.5, {1, 2, +Inf})` is NaN).
#[inline(always)]
fn weighed(lower: f64, upper: f64, weight: f64) -> f64 {
    lower * (1.0 - weight) + upper * weight
}

/// The places in `n` sorted values of the two that the `phi` quantile weighs, and the
/// upper one's weight; or the answer without values (none, or `phi` NaN or out of
/// [0, 1]).
fn quantile_ranks(phi: f64, n: usize) -> Result<(usize, usize, f64), f64> {
    if n == 0 || phi.is_nan() {
        return Err(go_nan());
    }
    if phi < 0.0 {
        return Err(f64::NEG_INFINITY);
    }
    if phi > 1.0 {
        return Err(f64::INFINITY);
    }
    let n = n as f64;
    let rank = phi * (n - 1.0);
    let lower_index = go_max(0.0, rank.floor());
    let upper_index = go_min(n - 1.0, lower_index + 1.0);
    Ok((lower_index as usize, upper_index as usize, rank - rank.floor()))
}

// ---------------------------------------------------------------------------------------
// 8. Aggregation accumulators
// ---------------------------------------------------------------------------------------

/// `avg` aggregation state (and `avg_over_time`): a Kahan sum until the sum would
/// overflow, then an incremental Kahan mean. Bit-exact with Prometheus 3.10+.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AvgAcc {
    sum: f64,
    c: f64,
    mean: f64,
    count: f64,
    incremental: bool,
}

impl AvgAcc {
    /// A group started by its first value.
    pub(crate) fn new(first: f64) -> Self {
        AvgAcc { sum: first, c: 0.0, mean: first, count: 1.0, incremental: false }
    }

    /// Adds the next value.
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (s, c) = kahan_inc(v, self.sum, self.c);
            if !s.is_infinite() {
                self.sum = s;
                self.c = c;
                return;
            }
            // The sum would overflow: continue with the incremental mean.
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        let q = (self.count - 1.0) / self.count;
        (self.mean, self.c) = kahan_inc(v / self.count, q * self.mean, q * self.c);
    }

    /// The number of values added so far.
    pub(crate) fn count(&self) -> f64 {
        self.count
    }

    /// The mean: `mean + C` after a switch to incremental mode, else `S/n + C/n`.
    pub(crate) fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// The `avg` aggregation of Prometheus 2 (`Compat::Prometheus2`; 2.42's `aggregation`):
/// an incremental mean without compensation, `mean += v/n - mean/n`, started at the
/// group's first value. An infinite mean stays unless a NaN or the other infinity comes,
/// as the subtraction would make it NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IncrementalMean {
    mean: f64,
    count: f64,
}

impl IncrementalMean {
    /// A group started by its first value.
    pub(crate) fn new(first: f64) -> Self {
        IncrementalMean { mean: first, count: 1.0 }
    }

    /// Adds the next value.
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        let keeps = v.is_finite() || (v.is_infinite() && (self.mean > 0.0) == (v > 0.0));
        if self.mean.is_infinite() && keeps {
            return;
        }
        self.mean += v / self.count - self.mean / self.count;
    }

    /// The mean.
    pub(crate) fn value(&self) -> f64 {
        self.mean
    }
}

/// `stddev`/`stdvar` aggregation state: plain Welford (no Kahan). In Prometheus 3 a first
/// value of NaN or ±Inf seeds the M2 accumulator with NaN, so a single such value gives
/// NaN; 2.x seeds it with 0 whatever the value, so a single one gives 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StddevAcc {
    count: f64,
    mean: f64,
    m2: f64,
}

impl StddevAcc {
    /// A group started by its first value, as `compat`'s Prometheus starts it.
    pub(crate) fn new(first: f64, compat: Compat) -> Self {
        let seed_nan = compat == Compat::Prometheus3 && (first.is_nan() || first.is_infinite());
        let m2 = if seed_nan { go_nan() } else { 0.0 };
        StddevAcc { count: 1.0, mean: first, m2 }
    }

    /// Adds the next value.
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - self.mean;
        self.mean += delta / self.count;
        self.m2 += delta * (v - self.mean);
    }

    /// `stdvar`: `M2 / n`.
    pub(crate) fn stdvar(&self) -> f64 {
        self.m2 / self.count
    }

    /// `stddev`: `sqrt(M2 / n)`.
    pub(crate) fn stddev(&self) -> f64 {
        (self.m2 / self.count).sqrt()
    }
}

/// One `min` aggregation / `min_over_time` step: `v` replaces `cur` if `v < cur` or
/// `cur` is NaN.
pub(crate) fn min_step(cur: f64, v: f64) -> f64 {
    if v < cur || cur.is_nan() {
        v
    } else {
        cur
    }
}

/// One `max` aggregation / `max_over_time` step: `v` replaces `cur` if `v > cur` or
/// `cur` is NaN.
pub(crate) fn max_step(cur: f64, v: f64) -> f64 {
    if v > cur || cur.is_nan() {
        v
    } else {
        cur
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` (the `count_values` label): the shortest
/// decimal that round-trips, never with an exponent; `NaN`, `+Inf`, `-Inf`; `-0` for
/// negative zero.
pub(crate) fn go_format_float(v: f64) -> String {
    let mut out = String::new();
    write_go_float(&mut out, v);
    out
}

/// [`go_format_float`] appended to `out`, without a `String` per value: results
/// serialise hundreds of thousands of them.
///
/// The digits come from `zmij` (Schubfach), the same text as Ryu's, whose digits are
/// Go's: when two shortest decimals are equally near (`1690060720831323.25` lies
/// halfway between `…323.2` and `…323.3`), they and Go pick the even last digit; Rust's
/// `Display` picks the larger, so it cannot be used here. `zmij` takes about half
/// Ryu's time, and a range query's answer is mostly floats.
pub(crate) fn write_go_float(out: &mut String, v: f64) {
    write_float::<false>(out, v);
}

/// [`write_go_float`], or [`write_api_float`] if `API`: the two differ only where
/// `zmij` writes an exponent, off the path of ordinary values.
#[inline(always)]
fn write_float<const API: bool>(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.abs() < 1e15 && v as i64 as f64 == v && !(v == 0.0 && v.is_sign_negative()) {
        // Whole numbers (counters, byte counts) have their integer's digits as shortest
        // text: below 1e15 the floats are at most 1/8 apart, so no shorter decimal reads
        // back as the same one. Integer formatting is several times faster still. (Not
        // `fract()`: a library call on x86-64's baseline.)
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else if let Some(n) = thousandths(v) {
        // Means of whole numbers over a few values: `.25`, `.375`, `.8`.
        if n < 0 {
            out.push('-');
        }
        let n = n.unsigned_abs();
        out.push_str(itoa::Buffer::new().format(n / 1000));
        out.push('.');
        let frac = n % 1000;
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let places = if digits[2] != 0 {
            3
        } else if digits[1] != 0 {
            2
        } else {
            1
        };
        for d in &digits[..places] {
            out.push(char::from(b'0' + *d as u8));
        }
    } else {
        let mut buf = zmij::Buffer::new();
        let text = buf.format_finite(v);
        // Looking for the `e` took a third of the time of writing a matrix of fractions,
        // and so did reading the text's last two bytes just after `zmij` wrote them.
        // Within these bounds the value is not whole (see above), so neither is needed.
        if ZMIJ_PLAIN.contains(&v.abs()) {
            out.push_str(text);
        } else if !text.contains('e') {
            // Whole numbers in this range come with a `.0` that Go leaves out.
            out.push_str(text.strip_suffix(".0").unwrap_or(text));
        } else {
            // Below 1e-5 or from 1e16 on, the text has an exponent; Go's has one only
            // in the API's form and only below 1e-6 or from 1e21 on.
            let (digits, point) = shortest_digits(text.strip_prefix('-').unwrap_or(text));
            if v.is_sign_negative() {
                out.push('-');
            }
            if API && (v.abs() < 1e-6 || v.abs() >= 1e21) {
                push_exponent_form(out, &digits, point - 1);
            } else {
                push_plain(out, &digits, point);
            }
        }
    }
}

/// A sample value as Prometheus' API writes it (`jsonutil.MarshalValue`): as
/// [`write_go_float`], but with Go's `'e'` form (`1e+21`, `-2.5e-07`) below 1e-6 and
/// from 1e21 on. Scalars' values keep the plain form, as Prometheus writes those
/// through `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn write_api_float(out: &mut String, v: f64) {
    write_float::<true>(out, v);
}

/// `digits` as Go's `%e` of the shortest decimal, `x` the decimal exponent of their
/// first: `d.ddde±XX`, the exponent of two digits at least.
fn push_exponent_form(out: &mut String, digits: &str, x: i64) {
    let (first, rest) = digits.split_at(1);
    out.push_str(first);
    if !rest.is_empty() {
        out.push('.');
        out.push_str(rest);
    }
    out.push('e');
    out.push(if x < 0 { '-' } else { '+' });
    let ax = x.unsigned_abs();
    if ax < 10 {
        out.push('0');
    }
    out.push_str(itoa::Buffer::new().format(ax));
}

/// `v` in thousandths when a decimal of at most three places reads back as `v` (`n` /
/// 1000 rounds to it, division being correctly rounded as reading is) and `v` is not
/// whole. Below 2^42 two floats lie less than 0.001 apart, so no other such decimal
/// reads back as `v`, and those with fewer places are among them: this one, trailing
/// zeros dropped, is the shortest, the text Go writes. Checked in two steps, the
/// second (a division) only for `v` that are likely to pass.
fn thousandths(v: f64) -> Option<i64> {
    if v.abs() >= (1u64 << 42) as f64 {
        return None;
    }
    let scaled = v * 1000.0;
    let n = scaled as i64;
    (n as f64 == scaled && n % 1000 != 0 && n as f64 / 1000.0 == v).then_some(n)
}

/// Magnitudes that `zmij` writes without an exponent, whatever their digits. It writes
/// leading digits from 10^-5 to 10^15 in place; these bounds keep a decade inside
/// that, so that no rounding of the shortest decimal can leave it.
const ZMIJ_PLAIN: std::ops::Range<f64> = 1e-4..1e15;

/// `digits` with the decimal point `point` digits into them (negative: before them),
/// as a plain decimal: `("12", -6)` is `0.00000012`, `("1", 22)` is `1` and 21 zeros.
fn push_plain(out: &mut String, digits: &str, point: i64) {
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(digits);
    } else if let Some((int, frac)) = digits.split_at_checked(point as usize) {
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    }
}

/// Go's `fmt` `%.<prec>f` (`strconv.FormatFloat(v, 'f', prec, 64)` plus fmt's NaN/Inf
/// spelling): exact decimal expansion rounded half-to-even; `NaN`, `+Inf`, `-Inf`.
pub(crate) fn go_format_fixed(v: f64, prec: usize) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v:.prec$}")
    }
}

/// The shortest decimal digits in `text` (`zmij`'s or Ryu's spelling of a finite float
/// without its sign), without leading or trailing zeros, and where the point goes:
/// `|v| = 0.d₁d₂… × 10^point` (`("0", 1)` for zero).
fn shortest_digits(text: &str) -> (String, i64) {
    let (mantissa, exp) = match text.split_once('e') {
        // The exponents are small decimal integers; the fallback never triggers.
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let int_len = mantissa.find('.').unwrap_or(mantissa.len()) as i64;
    let all: String = mantissa.chars().filter(|&c| c != '.').collect();
    let leading = (all.len() - all.trim_start_matches('0').len()) as i64;
    match all.trim_matches('0') {
        "" => ("0".to_owned(), 1),
        digits => (digits.to_owned(), int_len + exp - leading),
    }
}

/// Go's `%g` / `strconv.FormatFloat(v, 'g', -1, 64)`, used in annotations such as
/// `quantile value should be between 0 and 1, got %g`: shortest digits, exponent form
/// (`1e+06`, `1e-05`) when the decimal exponent is < -4 or >= 6.
pub(crate) fn go_format_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v == f64::INFINITY {
        return "+Inf".to_string();
    }
    if v == f64::NEG_INFINITY {
        return "-Inf".to_string();
    }
    // Shortest round-trip digits, ties to even as Go's (see `write_go_float`).
    let (digits, dp) = shortest_digits(zmij::Buffer::new().format_finite(v.abs()));
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let x = dp - 1;
    if !(-4..6).contains(&x) {
        push_exponent_form(&mut out, &digits, x);
    } else {
        // %f with max(nd - dp, 0) fraction digits.
        push_plain(&mut out, &digits, dp);
    }
    out
}

// ---------------------------------------------------------------------------------------
// 9. Classic histograms
// ---------------------------------------------------------------------------------------

/// One classic-histogram bucket: upper bound (`le`) and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    /// The `le` bound.
    pub(crate) upper: f64,
    /// The cumulative count.
    pub(crate) count: f64,
}

/// Full result of [`bucket_quantile_detailed`], including the data of the
/// `input to histogram_quantile needed to be fixed for monotonicity` info annotation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BucketQuantileResult {
    /// The quantile.
    pub(crate) value: f64,
    /// A decrease between buckets had to be removed (triggers the info annotation).
    pub(crate) forced_monotonic: bool,
    /// A relative difference ≤ 1e-12 between adjacent buckets was ignored.
    pub(crate) fixed_precision: bool,
    /// Lowest upper bound at which monotonicity was forced (+Inf if none, 0 if the
    /// monotonicity pass did not run).
    pub(crate) min_bucket: f64,
    /// Highest such upper bound (-Inf if none, 0 if the pass did not run).
    pub(crate) max_bucket: f64,
    /// Largest removed decrease (0 if none).
    pub(crate) max_diff: f64,
}

impl BucketQuantileResult {
    fn plain(value: f64) -> Self {
        BucketQuantileResult {
            value,
            forced_monotonic: false,
            fixed_precision: false,
            min_bucket: 0.0,
            max_bucket: 0.0,
            max_diff: 0.0,
        }
    }
}

/// Go sorts buckets by upper bound with a comparator that calls NaN equal to anything;
/// here NaN bounds sort last (a total order), which only matters for `le="NaN"`.
fn sort_buckets(buckets: &mut [Bucket]) {
    buckets.sort_by(|a, b| match (a.upper.is_nan(), b.upper.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.upper.partial_cmp(&b.upper).unwrap_or(Ordering::Equal),
    });
}

/// `coalesceBuckets`: merges sorted buckets with equal bounds (`le="1"` and `le="1.0"`)
/// by summing counts, in place; returns the new length.
fn coalesce_buckets(buckets: &mut [Bucket]) -> usize {
    if buckets.is_empty() {
        return 0;
    }
    let mut last = buckets[0];
    let mut i = 0;
    for j in 1..buckets.len() {
        let b = buckets[j];
        if b.upper == last.upper {
            last.count += b.count;
        } else {
            buckets[i] = last;
            last = b;
            i += 1;
        }
    }
    buckets[i] = last;
    i + 1
}

/// `ensureMonotonicAndIgnoreSmallDeltas`: silently absorbs relative differences within
/// `tolerance` (either direction), then removes remaining decreases; `prev` only moves
/// on accepted increases.
fn ensure_monotonic_and_ignore_small_deltas(buckets: &mut [Bucket], tolerance: f64) -> BucketQuantileResult {
    let mut r = BucketQuantileResult::plain(0.0);
    r.min_bucket = f64::INFINITY;
    r.max_bucket = f64::NEG_INFINITY;
    let Some(first) = buckets.first() else {
        return r;
    };
    let mut prev = first.count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, tolerance) {
            b.count = prev;
            r.fixed_precision = true;
            continue;
        }
        if curr < prev {
            b.count = prev;
            r.forced_monotonic = true;
            if b.upper < r.min_bucket {
                r.min_bucket = b.upper;
            }
            if b.upper > r.max_bucket {
                r.max_bucket = b.upper;
            }
            let diff = prev - curr;
            if diff > r.max_diff {
                r.max_diff = diff;
            }
            continue;
        }
        prev = curr;
    }
    r
}

/// How far apart, relatively, neighbouring buckets' counts may be and still count as
/// equal in Prometheus 3 (prometheus/prometheus#13153, after 2.42): floating-point noise
/// of summed rates. 2.42 took every difference ([`ensure_monotonic_2`]).
const SMALL_DELTAS: f64 = 1e-12;

/// 2.42's `ensureMonotonic`: each count below the largest before it becomes that
/// largest, the first count included (a NaN there stops all fixing; a NaN later is
/// passed over). Prometheus 3's, with tolerance 0, differs only around NaN counts.
fn ensure_monotonic_2(buckets: &mut [Bucket]) -> BucketQuantileResult {
    let mut r = BucketQuantileResult::plain(0.0);
    let Some(first) = buckets.first() else {
        return r;
    };
    let mut max = first.count;
    for b in buckets.iter_mut().skip(1) {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
            r.forced_monotonic = true;
        }
    }
    r
}

/// `BucketQuantile` (classic `histogram_quantile`), full result. Sorts and coalesces
/// `buckets` in place.
///
/// In Go's order: phi NaN → NaN, phi < 0 → -Inf, phi > 1 → +Inf (before any bucket
/// checks); highest bound not +Inf → NaN; coalescing; the monotonicity/small-delta fix
/// (`almost.Equal(prev, c, 1e-12)`); fewer than 2 buckets or 0 observations → NaN; then
/// linear interpolation (the +Inf bucket yields the second-highest bound, a first bucket
/// with bound ≤ 0 yields that bound). Empty input (a Go panic) gives NaN. Under
/// `Compat::Prometheus2` the monotonicity fix is 2.42's ([`ensure_monotonic_2`]).
pub(crate) fn bucket_quantile_detailed(
    phi: f64,
    buckets: &mut [Bucket],
    compat: Compat,
) -> BucketQuantileResult {
    if phi.is_nan() {
        return BucketQuantileResult::plain(go_nan());
    }
    if phi < 0.0 {
        return BucketQuantileResult::plain(f64::NEG_INFINITY);
    }
    if phi > 1.0 {
        return BucketQuantileResult::plain(f64::INFINITY);
    }
    if buckets.is_empty() {
        return BucketQuantileResult::plain(go_nan());
    }
    sort_buckets(buckets);
    if buckets[buckets.len() - 1].upper != f64::INFINITY {
        return BucketQuantileResult::plain(go_nan());
    }
    let n = coalesce_buckets(buckets);
    let buckets = &mut buckets[..n];
    let mut r = match compat {
        Compat::Prometheus3 => ensure_monotonic_and_ignore_small_deltas(buckets, SMALL_DELTAS),
        Compat::Prometheus2 => ensure_monotonic_2(buckets),
    };

    r.value = go_nan();
    if n < 2 {
        return r;
    }
    let observations = buckets[n - 1].count;
    if observations == 0.0 {
        return r;
    }
    let mut rank = phi * observations;
    let b = go_sort_search(n - 1, |i| buckets[i].count >= rank);

    if b == n - 1 {
        r.value = buckets[n - 2].upper;
        return r;
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        r.value = buckets[0].upper;
        return r;
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        bucket_start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    r.value = bucket_start + (bucket_end - bucket_start) * (rank / count);
    r
}

/// `BucketQuantile` (classic `histogram_quantile`) as `compat`'s Prometheus computes it:
/// `(value, forced_monotonic, fixed_small_deltas)`. See [`bucket_quantile_detailed`].
pub(crate) fn bucket_quantile(phi: f64, buckets: &mut [Bucket], compat: Compat) -> (f64, bool, bool) {
    let r = bucket_quantile_detailed(phi, buckets, compat);
    (r.value, r.forced_monotonic, r.fixed_precision)
}

/// `BucketFraction` (classic `histogram_fraction(lo, hi, v)`): sorts and coalesces
/// `buckets` in place, **no** monotonicity fix.
///
/// Highest bound not +Inf → NaN; total count 0 or a NaN bound → NaN; `lo >= hi` → 0.
/// The first bucket's lower bound is 0 if its upper bound is > 0, else -Inf; inside a
/// bucket ranks are interpolated linearly (a -Inf lower bound yields the bucket's count,
/// a +Inf upper bound the previous count). Empty input gives NaN.
pub(crate) fn bucket_fraction(lo: f64, hi: f64, buckets: &mut [Bucket]) -> f64 {
    if buckets.is_empty() {
        return go_nan();
    }
    sort_buckets(buckets);
    if buckets[buckets.len() - 1].upper != f64::INFINITY {
        return go_nan();
    }
    let n = coalesce_buckets(buckets);
    let buckets = &buckets[..n];

    let count = buckets[n - 1].count;
    if count == 0.0 || lo.is_nan() || hi.is_nan() {
        return go_nan();
    }
    if lo >= hi {
        return 0.0;
    }

    let mut rank = 0.0f64;
    let (mut lower_rank, mut upper_rank) = (0.0f64, 0.0f64);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if buckets[0].upper <= 0.0 { f64::NEG_INFINITY } else { 0.0 };

    for (i, b) in buckets.iter().enumerate() {
        if i > 0 {
            lower_bound = buckets[i - 1].upper;
        }
        let upper_bound = b.upper;
        let interpolate = |v: f64, rank: f64| -> f64 {
            if lower_bound == f64::NEG_INFINITY {
                return b.count;
            }
            rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
        };

        if !lower_set && lower_bound >= lo {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= hi {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lo && upper_bound > lo {
            lower_rank = interpolate(lo, rank);
            lower_set = true;
        }
        if !upper_set && lower_bound < hi && upper_bound > hi {
            upper_rank = interpolate(hi, rank);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// Go's `underscoreOK`: underscores only between digits, or between a base prefix and a
/// digit.
fn go_underscore_ok(s: &[u8]) -> bool {
    let mut s = s;
    if let Some((&c, rest)) = s.split_first() {
        if c == b'-' || c == b'+' {
            s = rest;
        }
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1] | 0x20 == b'x';
    }
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&(c | 0x20))) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// Go's `atofHex` for float64: rounds a hex mantissa (`trunc`: nonzero bits were
/// dropped) times `2^exp` to nearest-even; `None` on overflow (Go's `ErrRange`).
fn go_atof_hex(mut mantissa: u64, mut exp: i64, neg: bool, trunc: bool) -> Option<f64> {
    const MANTBITS: i64 = 52;
    const BIAS: i64 = -1023;
    let max_exp: i64 = (1 << 11) + BIAS - 2;
    let min_exp: i64 = BIAS + 1;
    exp += MANTBITS;
    while mantissa != 0 && mantissa >> (MANTBITS + 2) == 0 {
        mantissa <<= 1;
        exp -= 1;
    }
    if trunc {
        mantissa |= 1;
    }
    while mantissa >> (1 + MANTBITS + 2) != 0 {
        mantissa = (mantissa >> 1) | (mantissa & 1);
        exp += 1;
    }
    while mantissa > 1 && exp < min_exp - 2 {
        mantissa = (mantissa >> 1) | (mantissa & 1);
        exp += 1;
    }
    let mut round = mantissa & 3;
    mantissa >>= 2;
    round |= mantissa & 1;
    exp += 2;
    if round == 3 {
        mantissa += 1;
        if mantissa == 1 << (1 + MANTBITS) {
            mantissa >>= 1;
            exp += 1;
        }
    }
    if mantissa >> MANTBITS == 0 {
        exp = BIAS;
    }
    if exp > max_exp {
        return None;
    }
    let mut bits = mantissa & ((1u64 << MANTBITS) - 1);
    bits |= (((exp - BIAS) & 0x7FF) as u64) << MANTBITS;
    if neg {
        bits |= 1u64 << 63;
    }
    Some(f64::from_bits(bits))
}

/// Go's `strconv.ParseFloat(s, 64)` as used for `le` labels, `None` where Go returns an
/// error (syntax or range).
///
/// Accepts: `inf`/`infinity` in any case with an optional sign; `nan` in any case
/// without sign; decimal `[+-]digits[.digits][(e|E)[+-]digits]` (at least one mantissa
/// digit); hex `[+-]0x` mantissa with mandatory `p` exponent (`0x1p-3`, `0x1.8p1`);
/// `_` only between digits (or after a base prefix). Values that overflow (`1e400`,
/// `0x1p2000`) are range errors; underflow gives ±0 without error.
pub(crate) fn parse_le(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    // special(): signed inf/infinity, unsigned nan.
    {
        let (neg, rest) = match b[0] {
            b'+' => (false, &b[1..]),
            b'-' => (true, &b[1..]),
            _ => (false, b),
        };
        // Compared in place: this runs for every bucket at every step.
        if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
            return Some(if neg { f64::NEG_INFINITY } else { f64::INFINITY });
        }
        if rest.len() == b.len() && rest.eq_ignore_ascii_case(b"nan") {
            return Some(go_nan());
        }
    }

    // readFloat().
    let mut i = 0usize;
    let mut neg = false;
    match b[0] {
        b'+' => i += 1,
        b'-' => {
            i += 1;
            neg = true;
        }
        _ => {}
    }
    let mut hex = false;
    let mut base: u64 = 10;
    let mut max_mant_digits = 19;
    let mut exp_char = b'e';
    if i + 2 < b.len() && b[i] == b'0' && b[i + 1] | 0x20 == b'x' {
        hex = true;
        base = 16;
        max_mant_digits = 16;
        exp_char = b'p';
        i += 2;
    }
    let mut underscores = false;
    let mut sawdot = false;
    let mut sawdigits = false;
    let mut nd: i64 = 0;
    let mut nd_mant: i64 = 0;
    let mut dp: i64 = 0;
    let mut mantissa: u64 = 0;
    let mut trunc = false;
    while i < b.len() {
        let c = b[i];
        if c == b'_' {
            underscores = true;
        } else if c == b'.' {
            if sawdot {
                break;
            }
            sawdot = true;
            dp = nd;
        } else if c.is_ascii_digit() {
            sawdigits = true;
            if c == b'0' && nd == 0 {
                dp -= 1;
            } else {
                nd += 1;
                if nd_mant < max_mant_digits {
                    mantissa = mantissa.wrapping_mul(base).wrapping_add(u64::from(c - b'0'));
                    nd_mant += 1;
                } else if c != b'0' {
                    trunc = true;
                }
            }
        } else if hex && (b'a'..=b'f').contains(&(c | 0x20)) {
            sawdigits = true;
            nd += 1;
            if nd_mant < max_mant_digits {
                mantissa = mantissa.wrapping_mul(16).wrapping_add(u64::from((c | 0x20) - b'a' + 10));
                nd_mant += 1;
            } else {
                trunc = true;
            }
        } else {
            break;
        }
        i += 1;
    }
    if !sawdigits {
        return None;
    }
    if !sawdot {
        dp = nd;
    }
    if hex {
        dp *= 4;
        nd_mant *= 4;
    }
    if i < b.len() && b[i] | 0x20 == exp_char {
        i += 1;
        if i >= b.len() {
            return None;
        }
        let mut esign: i64 = 1;
        match b[i] {
            b'+' => i += 1,
            b'-' => {
                i += 1;
                esign = -1;
            }
            _ => {}
        }
        if i >= b.len() || !b[i].is_ascii_digit() {
            return None;
        }
        let mut e: i64 = 0;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            if b[i] == b'_' {
                underscores = true;
            } else if e < 10000 {
                e = e * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        dp += e * esign;
    } else if hex {
        return None;
    }
    if underscores && !go_underscore_ok(&b[..i]) {
        return None;
    }
    if i != b.len() {
        return None;
    }

    if hex {
        let exp = if mantissa != 0 { dp - nd_mant } else { 0 };
        return go_atof_hex(mantissa, exp, neg, trunc);
    }
    // Decimal: the grammar is checked; Rust's correctly rounded parser gives the same
    // value as Go's (both round half to even), and overflow to ±Inf is Go's ErrRange.
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let v: f64 = cleaned.parse().ok()?;
    if v.is_infinite() {
        return None;
    }
    Some(v)
}

// ---------------------------------------------------------------------------------------
// 10. Elementwise math
// ---------------------------------------------------------------------------------------

/// `round(v, to_nearest)`: `floor(v·(1/to) + 0.5) / (1/to)` (ties toward +Inf:
/// `round(-2.5) = -2`).
pub(crate) fn go_round(v: f64, to_nearest: f64) -> f64 {
    let inv = 1.0 / to_nearest;
    (v * inv + 0.5).floor() / inv
}

/// `clamp(v, lo, hi)` for one element: `math.Max(lo, math.Min(hi, v))` with Go
/// semantics (NaN propagates except against an infinity of the winning sign). The caller
/// returns an empty vector when `hi < lo`. `clamp_min(v, lo) = clamp(v, lo, +Inf)`,
/// `clamp_max(v, hi) = clamp(v, -Inf, hi)`.
pub(crate) fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    go_max(lo, go_min(hi, v))
}

/// `sgn`: -1 for negative, 1 for positive, otherwise the input (±0, NaN).
pub(crate) fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else if v > 0.0 {
        1.0
    } else {
        v
    }
}

/// `deg`: `v * 180 / π`, evaluated left to right as in Go.
pub(crate) fn deg(v: f64) -> f64 {
    v * 180.0 / std::f64::consts::PI
}

/// `rad`: `v * π / 180`, evaluated left to right as in Go.
pub(crate) fn rad(v: f64) -> f64 {
    v * std::f64::consts::PI / 180.0
}

// ---------------------------------------------------------------------------------------
// 11. Date functions
// ---------------------------------------------------------------------------------------

/// Go's `int64(v)` on amd64 (`CVTTSD2SQ`): truncation toward zero; NaN, ±Inf and values
/// outside `[-2^63, 2^63)` give `i64::MIN` (the "integer indefinite" value). Rust's `as`
/// would saturate instead.
pub(crate) fn go_f64_to_i64(v: f64) -> i64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if v.is_nan() || !(-TWO_63..TWO_63).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

/// Calendar fields of a Unix time in UTC, as Go's `time.Unix(secs, 0).UTC()` reports
/// them (proleptic Gregorian, valid for every `i64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateParts {
    /// `year()`.
    pub(crate) year: i64,
    /// `month()`, 1–12.
    pub(crate) month: u32,
    /// `day_of_month()`, 1–31.
    pub(crate) day_of_month: u32,
    /// `day_of_year()`, 1–366.
    pub(crate) day_of_year: u32,
    /// `day_of_week()`, 0 = Sunday.
    pub(crate) day_of_week: u32,
    /// `days_in_month()`, 28–31.
    pub(crate) days_in_month: u32,
    /// `hour()`, 0–23.
    pub(crate) hour: u32,
    /// `minute()`, 0–59.
    pub(crate) minute: u32,
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Go's `unixToInternal + internalToAbsolute` (Go ≤ 1.22 constants): seconds from Go's
/// "absolute" epoch (year -292277022399) to 1970. Go converts a Unix time to an unsigned
/// absolute time by adding this with int64 wrap-around, so Unix times below its negation
/// (only the ~258 years above `i64::MIN` seconds) wrap and are presented as if `2^64`
/// seconds later.
const GO_UNIX_TO_ABSOLUTE: i128 = 9_223_372_028_715_321_600;

/// The calendar fields of `secs` seconds since the epoch (UTC), as Go's
/// `time.Unix(secs, 0).UTC()` presents them: the proleptic Gregorian calendar, including
/// Go's wrap-around for the lowest Unix times (so `i64::MIN`, which is what NaN and ±Inf
/// convert to, reads as 292277026596-12-04 15:30:08).
pub(crate) fn date_parts(secs: i64) -> DateParts {
    let mut secs = i128::from(secs);
    if secs + GO_UNIX_TO_ABSOLUTE < 0 {
        secs += 1i128 << 64;
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i128::from(month <= 2)) as i64;

    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    const DIM: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = is_leap(year);
    let m = month as usize; // 1..=12
    let day_of_year = CUM[m - 1] + day as u32 + u32::from(leap && m > 2);
    let days_in_month = DIM[m - 1] + u32::from(leap && m == 2);
    DateParts {
        year,
        month: month as u32,
        day_of_month: day as u32,
        day_of_year,
        day_of_week: (days + 4).rem_euclid(7) as u32,
        days_in_month,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
    }
}

/// The date functions' argument conversion: Go `time.Unix(int64(v), 0)`, including the
/// amd64 result for NaN/±Inf/out-of-range values (`i64::MIN` seconds, presented by Go as
/// 292277026596-12-04 15:30:08 UTC; the Go spec calls such conversions
/// implementation-defined).
pub(crate) fn date_parts_from_value(v: f64) -> DateParts {
    date_parts(go_f64_to_i64(v))
}

/// One date function (`year`, `month`, `day_of_month`, `day_of_year`, `day_of_week`,
/// `days_in_month`, `hour`, `minute`) of a sample value in seconds, converted as Go's
/// `int64(v)` ([`date_parts_from_value`]). An unknown name gives NaN. For the
/// argument-less form pass the step time in seconds truncated toward zero (or use
/// [`date_parts_from_step_ms`]).
pub(crate) fn date_part(name: &str, v: f64) -> f64 {
    let d = date_parts_from_value(v);
    match name {
        "year" => d.year as f64,
        "month" => f64::from(d.month),
        "day_of_month" => f64::from(d.day_of_month),
        "day_of_year" => f64::from(d.day_of_year),
        "day_of_week" => f64::from(d.day_of_week),
        "days_in_month" => f64::from(d.days_in_month),
        "hour" => f64::from(d.hour),
        "minute" => f64::from(d.minute),
        _ => go_nan(),
    }
}

/// The date functions without argument: `time.Unix(T / 1000, 0)` with Go's truncating
/// division of the step time in milliseconds.
pub(crate) fn date_parts_from_step_ms(t_ms: i64) -> DateParts {
    date_parts(t_ms / 1000)
}

// ---------------------------------------------------------------------------------------
// 12. sort_by_label natural order (facette/natsort@2cd4dd1e2dcb)
// ---------------------------------------------------------------------------------------

/// `chunkify`: maximal runs of ASCII digits (`\d+`) and of everything else (`\D+`).
fn natsort_chunks(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=b.len() {
        if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
            if start < i {
                out.push(&s[start..i]);
            }
            start = i;
        }
    }
    out
}

/// `natsort.Compare(a, b)` of the version Prometheus pins (regexp chunks, `strconv.Atoi`):
/// `Some(true)` if `a` sorts before `b`. Quirks kept: chunks that are equal as integers
/// (`"01"` vs `"1"`) make it return true in *both* directions; digit runs above
/// `i64::MAX` compare as strings. `None` means Go panics (index out of range), which
/// happens exactly when `a` is non-empty and `b` is empty.
pub(crate) fn natsort_less(a: &str, b: &str) -> Option<bool> {
    let ca = natsort_chunks(a);
    let cb = natsort_chunks(b);
    for (i, &x) in ca.iter().enumerate() {
        let y = *cb.get(i)?;
        let xi = if x.as_bytes()[0].is_ascii_digit() { x.parse::<i64>().ok() } else { None };
        let yi = if y.as_bytes()[0].is_ascii_digit() { y.parse::<i64>().ok() } else { None };
        let equal = match (xi, yi) {
            (Some(p), Some(q)) => {
                if p != q {
                    return Some(p < q);
                }
                true
            }
            _ => x == y,
        };
        if equal {
            if i == ca.len() - 1 {
                return Some(true);
            }
            if i == cb.len() - 1 {
                return Some(false);
            }
            continue;
        }
        return Some(x < y);
    }
    Some(false)
}

/// Go's runtime error text for the `natsort.Compare(non-empty, "")` panic, as Prometheus'
/// evaluator reports it.
pub(crate) const NATSORT_PANIC_MESSAGE: &str =
    "unexpected error: runtime error: index out of range [0] with length 0";

/// Compares two digit runs by numeric value (arbitrary length): leading zeros stripped,
/// then length, then bytes.
fn cmp_digit_runs(x: &str, y: &str) -> Ordering {
    let x = x.trim_start_matches('0');
    let y = y.trim_start_matches('0');
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// The per-label comparison of `sort_by_label` (ascending; reverse it for
/// `sort_by_label_desc`): `Equal` means "move on to the next label / `labels.Compare`".
///
/// A **total** order (safe for `sort_by`) that agrees with the natsort version Prometheus
/// pins ([`natsort_less`]) wherever that one is consistent: strings are split into runs
/// of ASCII digits and of other bytes; two digit runs compare by numeric value, other
/// runs bytewise; when all runs of the shorter string are equal, the shorter one sorts
/// first. Deliberate differences, all where Go's comparator is inconsistent or panics:
/// digit runs above `i64::MAX` (Go compares those as strings, which is not transitive);
/// numerically equal spellings such as `"01"`/`"1"` give `Equal` here (Go answers
/// "less" both ways, so its result depends on its sort's probe order); and an empty
/// value sorts after a non-empty one (Go gives that for `Compare("", x)` but panics for
/// `Compare(x, "")`, see [`natural_cmp_go`]).
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    if a.is_empty() {
        return Ordering::Greater;
    }
    if b.is_empty() {
        return Ordering::Less;
    }
    let ca = natsort_chunks(a);
    let cb = natsort_chunks(b);
    for (x, y) in ca.iter().zip(cb.iter()) {
        let both_digits = x.as_bytes()[0].is_ascii_digit() && y.as_bytes()[0].is_ascii_digit();
        let o = if both_digits { cmp_digit_runs(x, y) } else { x.cmp(y) };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Go's exact `sort_by_label` per-label comparator: `Equal` for identical values, else
/// `Less` iff `natsort.Compare(a, b)` ([`natsort_less`]), and `Err` with Prometheus' query
/// error where Go panics (`a` non-empty, `b` empty). Not a total order (see
/// [`natural_cmp`]); only for callers that reproduce Go's own comparison sequence.
pub(crate) fn natural_cmp_go(a: &str, b: &str) -> Result<Ordering, String> {
    if a == b {
        return Ok(Ordering::Equal);
    }
    match natsort_less(a, b) {
        Some(true) => Ok(Ordering::Less),
        Some(false) => Ok(Ordering::Greater),
        None => Err(NATSORT_PANIC_MESSAGE.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// 13. almost.Equal
// ---------------------------------------------------------------------------------------

/// `util/almost.Equal`: a stale marker equals only a stale marker; NaN equals NaN;
/// `a == b`; if either is 0 or `|a|+|b|` is subnormal, `|a−b| < ε·MinNormal`; else
/// `|a−b| / min(|a|+|b|, MaxFloat64) < ε`. Used with ε = 1e-6 by promqltest and with
/// ε = 1e-12 by `histogram_quantile`'s small-delta rule.
pub(crate) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if is_stale(a) || is_stale(b) {
        return is_stale(a) && is_stale(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let min_normal = f64::MIN_POSITIVE;
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < epsilon * min_normal;
    }
    diff / go_min(abs_sum, f64::MAX) < epsilon
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const P3: Compat = Compat::Prometheus3;

    /// `extrapolated_rate_of` with the flags of the functions that call it.
    fn extrapolated_rate(
        points: &[Point],
        start: i64,
        end: i64,
        range: i64,
        is_counter: bool,
        is_rate: bool,
        zero_clamp_first: bool,
    ) -> Option<f64> {
        let kind = CounterKind::of(is_counter, None);
        extrapolated_rate_of(points, start, end, range, kind, is_rate, zero_clamp_first)
    }

    fn pts(step_ms: i64, start_ms: i64, vals: &[f64]) -> Vec<Point> {
        vals.iter().enumerate().map(|(i, &v)| Point { t: start_ms + i as i64 * step_ms, v }).collect()
    }

    /// Points of a promqltest `load <step>` series at slots `k·step`, restricted to the
    /// range window `(end - range, end]`.
    fn window(step_ms: i64, vals: &[f64], end_ms: i64, range_ms: i64) -> Vec<Point> {
        pts(step_ms, 0, vals).into_iter().filter(|p| p.t > end_ms - range_ms && p.t <= end_ms).collect()
    }

    /// `a+bxN` expansion by repeated float addition, as promqltest does.
    fn series(start: f64, inc: f64, times: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(times + 1);
        let mut v = start;
        for _ in 0..=times {
            out.push(v);
            v += inc;
        }
        out
    }

    fn close(a: f64, b: f64) -> bool {
        almost_equal(a, b, 1e-6)
    }

    const M: i64 = 60_000;

    // --- Kahan -------------------------------------------------------------------------

    #[test]
    fn kahan_recovers_small_terms() {
        let mut k = KahanSum::new();
        for v in [1.0, 1e100, 1.0, -1e100] {
            k.add(v);
        }
        assert_eq!(k.value(), 2.0);
        let mut k = KahanSum::starting_with(1e100);
        k.add(1.0);
        k.add(-1e100);
        assert_eq!(k.aggregation_value(), 1.0);
    }

    #[test]
    fn kahan_inf_resets_compensation() {
        let (s, c) = kahan_inc(f64::INFINITY, 1.0, 0.5);
        assert_eq!(s, f64::INFINITY);
        assert_eq!(c, 0.0);
        let (s, c) = kahan_inc(1.0, 1e16, 0.0);
        assert_eq!(s, 1e16);
        assert_eq!(c, 1.0);
        let (s, c) = kahan_inc(1e16, 1.0, 0.0);
        assert_eq!(s, 1e16);
        assert_eq!(c, 1.0);
    }

    // --- rate family -------------------------------------------------------------------

    #[test]
    fn increase_functions_test() {
        // http_requests_total{path="/foo"} 0+10x10 etc, loaded at 5m, eval at 50m.
        let foo = series(0.0, 10.0, 10);
        let mut bar = series(0.0, 18.0, 5);
        bar.extend(series(0.0, 18.0, 5));
        let dings = series(10.0, 10.0, 10);
        let bumms = series(1.0, 10.0, 10);
        let inc = |vals: &[f64], range: i64| {
            let end = 50 * M;
            let w = window(5 * M, vals, end, range);
            extrapolated_rate(&w, end - range, end, range, true, false, false).unwrap()
        };
        assert!(close(inc(&foo, 50 * M), 100.0));
        assert!(close(inc(&bar, 50 * M), 160.0));
        assert!(close(inc(&dings, 50 * M), 100.0));
        assert!(close(inc(&bumms, 50 * M), 100.0));
        assert!(close(inc(&foo, 100 * M), 100.0));
        assert!(close(inc(&bar, 100 * M), 162.0));
        assert!(close(inc(&dings, 100 * M), 105.0));
        assert!(close(inc(&bumms, 100 * M), 101.0));
    }

    #[test]
    fn increase_counter_reset() {
        let w = window(5 * M, &[0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0], 30 * M, 30 * M);
        assert!(close(extrapolated_rate(&w, 0, 30 * M, 30 * M, true, false, false).unwrap(), 7.0));
    }

    #[test]
    fn rate_functions_test() {
        let mut mid = series(0.0, 27.0, 4);
        mid.extend(series(0.0, 27.0, 5));
        let w = window(5 * M, &mid, 50 * M, 50 * M);
        assert!(close(extrapolated_rate(&w, 0, 50 * M, 50 * M, true, true, false).unwrap(), 0.08));

        let mut end = series(0.0, 10.0, 9);
        end.extend([0.0, 10.0]);
        let w = window(5 * M, &end, 50 * M, 5 * M);
        assert_eq!(extrapolated_rate(&w, 45 * M, 50 * M, 5 * M, true, true, false), None);
        let w = window(5 * M, &end, 50 * M, 6 * M);
        assert_eq!(extrapolated_rate(&w, 44 * M, 50 * M, 6 * M, true, true, false), Some(0.0));

        let win = series(0.0, 80.0, 10);
        let w = window(5 * M, &win, 50 * M, 50 * M);
        let r = extrapolated_rate(&w, 0, 50 * M, 50 * M, true, true, false).unwrap();
        assert!(close(r, 0.26666666666666666));

        // rate(x[10m] offset 5m) at 50m.
        let a = series(0.0, 10.0, 10);
        let w = window(5 * M, &a, 45 * M, 10 * M);
        let r = extrapolated_rate(&w, 35 * M, 45 * M, 10 * M, true, true, false).unwrap();
        assert!(close(r, 0.03333333333333333));
    }

    #[test]
    fn rate_zero_cutoff() {
        // load 4m; testcounter_zero_cutoff_total{start=..} X+240x10; rate([20m]) at 10m.
        let cases = [(0.0, 0.5), (60.0, 0.55), (120.0, 0.6), (180.0, 0.6), (240.0, 0.6), (300.0, 0.6)];
        for (start, want) in cases {
            let vals = series(start, 240.0, 10);
            let w = window(4 * M, &vals, 10 * M, 20 * M);
            let r = extrapolated_rate(&w, -10 * M, 10 * M, 20 * M, true, true, false).unwrap();
            assert!(close(r, want), "start {start}: {r} != {want}");
            let w = window(4 * M, &vals, 50 * M, 20 * M);
            let r = extrapolated_rate(&w, 30 * M, 50 * M, 20 * M, true, true, false).unwrap();
            assert!(close(r, 0.6), "start {start} at 50m: {r}");
        }
    }

    /// Go's `extrapolatedRate` as written, a division wherever Go divides: the
    /// reference for `extrapolated_rate_of`, which skips divisions whose comparison
    /// products decide.
    fn extrapolated_rate_as_go(
        w: &[Point],
        start: i64,
        end: i64,
        range: i64,
        counter: bool,
        clamp_first: bool,
    ) -> f64 {
        let (first, last) = (w[0], w[w.len() - 1]);
        let mut result = last.v - first.v;
        if counter {
            for p in w.windows(2) {
                if p[1].v < p[0].v {
                    result += p[0].v;
                }
            }
        }
        let mut to_start = (first.t - start) as f64 / 1000.0;
        let mut to_end = (end - last.t) as f64 / 1000.0;
        let sampled = (last.t - first.t) as f64 / 1000.0;
        let average = sampled / (w.len() - 1) as f64;
        let threshold = average * 1.1;
        let clamp = |to_start: &mut f64| {
            if counter && result > 0.0 && first.v >= 0.0 {
                let to_zero = sampled * (first.v / result);
                if to_zero < *to_start {
                    *to_start = to_zero;
                }
            }
        };
        if clamp_first {
            clamp(&mut to_start);
        }
        if to_start >= threshold {
            to_start = average / 2.0;
        }
        if !clamp_first {
            clamp(&mut to_start);
        }
        if to_end >= threshold {
            to_end = average / 2.0;
        }
        let mut factor = (sampled + to_start + to_end) / sampled;
        factor /= go_duration_seconds_from_ms(range);
        result * factor
    }

    proptest::proptest! {
        /// Bit for bit Go's result, also where a duration meets the threshold or the
        /// zero point within rounding: small whole numbers and round gaps make ties, the
        /// other values reach the ends of the float range.
        #[test]
        fn rates_skip_only_divisions_that_change_nothing(
            gaps in proptest::collection::vec(
                proptest::prop_oneof![1i64..40_000, proptest::sample::select(vec![1000i64, 10_000, 11_000, 15_000])],
                1..12,
            ),
            first in proptest::prop_oneof![
                0.0f64..10.0,
                proptest::sample::select(vec![0.0, 1.0, 2.0, 3.0, 1e-310, 1e300, f64::MAX, f64::INFINITY, f64::NAN, -1.0]),
            ],
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![0.0f64, 1.0, 2.0, 6.0, 1e-300, 1e300, -1.0]),
                    0.0f64..1e6,
                ],
                12,
            ),
            to_start in proptest::prop_oneof![0i64..40_000, proptest::sample::select(vec![0i64, 5000, 11_000, 16_500])],
            to_end in proptest::prop_oneof![0i64..40_000, proptest::sample::select(vec![0i64, 5000, 11_000, 16_500])],
            range in proptest::sample::select(vec![60_000i64, 300_000, 1001]),
            clamp_first: bool,
            // Puts the counter's zero point at this multiple of the time to the start.
            near_zero in proptest::option::of(proptest::prop_oneof![0.999f64..1.001, proptest::strategy::Just(1.0)]),
        ) {
            let points = |first: f64| {
                let mut w = vec![Point { t: 0, v: first }];
                for (gap, step) in gaps.iter().zip(&steps) {
                    let prev = w[w.len() - 1];
                    w.push(Point { t: prev.t + gap, v: prev.v + step });
                }
                w
            };
            let mut w = points(first);
            if let Some(f) = near_zero {
                let (increase, sampled) = (w[w.len() - 1].v - first, w[w.len() - 1].t as f64);
                w = points(increase * (to_start as f64 / sampled) * f);
            }
            let (start, end) = (-to_start, w[w.len() - 1].t + to_end);
            for counter in [true, false] {
                let kind = CounterKind::of(counter, None);
                let got = extrapolated_rate_of(&w, start, end, range, kind, true, clamp_first).unwrap();
                let want = extrapolated_rate_as_go(&w, start, end, range, counter, clamp_first);
                proptest::prop_assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{got:?} != {want:?} (counter {counter})"
                );
            }
        }
    }

    #[test]
    fn delta_functions_test() {
        let w = window(5 * M, &[0.0, 50.0, 100.0, 150.0, 200.0], 20 * M, 20 * M);
        assert!(close(extrapolated_rate(&w, 0, 20 * M, 20 * M, false, false, false).unwrap(), 200.0));
        let w = window(5 * M, &[200.0, 150.0, 100.0, 50.0, 0.0], 20 * M, 20 * M);
        assert!(close(extrapolated_rate(&w, 0, 20 * M, 20 * M, false, false, false).unwrap(), -200.0));
    }

    #[test]
    fn range_seconds_like_go() {
        assert_eq!(go_duration_seconds_from_ms(300_000), 300.0);
        assert_eq!(go_duration_seconds_from_ms(1001), 1.0 + 1_000_000.0 / 1e9);
        assert_eq!(go_duration_seconds_from_ms(-1500), -1.0 + -500_000_000.0 / 1e9);
    }

    #[test]
    fn irate_idelta() {
        let foo = series(0.0, 10.0, 10);
        let w = window(5 * M, &foo, 50 * M, 50 * M);
        assert!(close(instant_value(&w, true).unwrap(), 0.03333333333333333));
        let mut bar = series(0.0, 10.0, 5);
        bar.extend(series(0.0, 10.0, 5));
        let w = window(5 * M, &bar, 30 * M, 50 * M);
        assert_eq!(instant_value(&w, true), Some(0.0));

        // http_requests_nan 1 NaN NaN 5 11, [15m1s] at 5m..20m: _ NaN NaN NaN 0.02.
        let nan = [1.0, f64::NAN, f64::NAN, 5.0, 11.0];
        for (t, want) in [(5, f64::NAN), (10, f64::NAN), (15, f64::NAN), (20, 0.02)] {
            let w = window(5 * M, &nan, t * M, 15 * M + 1000);
            assert!(close(instant_value(&w, true).unwrap(), want), "t={t}");
        }
        let w = window(5 * M, &nan, 0, 15 * M + 1000);
        assert_eq!(instant_value(&w, true), None);
        let w = window(5 * M, &nan, 20 * M, 15 * M + 1000);
        assert_eq!(instant_value(&w, false), Some(6.0));

        let w = window(5 * M, &[0.0, 50.0, 100.0, 50.0], 20 * M, 20 * M);
        assert_eq!(instant_value(&w, false), Some(-50.0));
        let same = [Point { t: 5, v: 1.0 }, Point { t: 5, v: 2.0 }];
        assert_eq!(instant_value(&same, true), None);
    }

    // --- deriv / predict_linear ---------------------------------------------------------

    fn reset_middle() -> Vec<f64> {
        let mut v = series(0.0, 10.0, 4);
        v.extend(series(0.0, 10.0, 5));
        v
    }

    #[test]
    fn deriv_and_predict_linear() {
        let total = series(0.0, 80.0, 10);
        let w = window(5 * M, &total, 50 * M, 50 * M);
        assert!(close(deriv(&w, P3).unwrap(), 0.26666666666666666));

        let w = window(5 * M, &reset_middle(), 50 * M, 100 * M);
        assert!(close(deriv(&w, P3).unwrap(), 0.010606060606060607));

        let w = window(5 * M, &reset_middle(), 50 * M, 50 * M);
        assert!(close(predict_linear(&w, 50 * M, 3600.0, P3).unwrap(), 70.0));

        // predict_linear(x[55m] @ 3000, 3600): the window is fixed, t_ref is the step.
        let w = window(5 * M, &reset_middle(), 50 * M, 55 * M);
        assert!(close(predict_linear(&w, 50 * M, 3600.0, P3).unwrap(), 76.81818181818181));
        assert!(close(predict_linear(&w, 10 * M, 3600.0, P3).unwrap(), 51.36363636363637));
        assert!(close(predict_linear(&w, 70 * M, 3600.0, P3).unwrap(), 89.54545454545455));

        // -Inf 0+80x10 Inf → NaN.
        let mut inf = vec![f64::NEG_INFINITY];
        inf.extend(series(0.0, 80.0, 10));
        inf.push(f64::INFINITY);
        let w = window(5 * M, &inf, 100 * M, 100 * M);
        assert!(deriv(&w, P3).unwrap().is_nan());
        assert!(predict_linear(&w, 100 * M, 6000.0, P3).unwrap().is_nan());

        assert_eq!(deriv(&w[..1], P3), None);
        // Prometheus 2.42's answer, as for `stdvar_over_time` above.
        let w = pts(15_000, 0, &[1e308, -1e308, 5.0, 7.0]);
        assert!(deriv(&w, Compat::Prometheus2).unwrap().is_nan());
        assert_eq!(deriv(&w, P3), Some(f64::NEG_INFINITY));
        assert_eq!(linear_regression(&pts(1000, 0, &[3.0, 3.0]), 0, P3), (0.0, 3.0));
        let (s, i) = linear_regression(&pts(1000, 0, &[f64::INFINITY, f64::INFINITY]), 0, P3);
        assert!(s.is_nan() && i.is_nan());
    }

    // --- resets / changes ---------------------------------------------------------------

    #[test]
    fn resets_and_changes() {
        let foo = [1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0];
        let bar = [1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let biz = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let r = |v: &[f64], range| resets(&window(5 * M, v, 50 * M, range));
        let c = |v: &[f64], range| changes(&window(5 * M, v, 50 * M, range));
        assert!(window(5 * M, &foo, 50 * M, 5 * M).is_empty());
        assert_eq!(r(&foo, 5 * M), 0.0);
        assert_eq!(r(&foo, 10 * M), 0.0);
        assert_eq!(r(&foo, 20 * M), 1.0);
        assert_eq!(r(&foo, 32 * M), 2.0);
        assert_eq!(r(&bar, 32 * M), 1.0);
        assert_eq!(r(&foo, 50 * M), 3.0);
        assert_eq!(r(&biz, 50 * M), 0.0);
        assert_eq!(c(&foo, 20 * M), 2.0);
        assert_eq!(c(&bar, 30 * M), 4.0);
        assert_eq!(c(&foo, 50 * M), 7.0);
        assert_eq!(c(&bar, 50 * M), 8.0);
        assert_eq!(c(&biz, 50 * M), 1.0);

        let nan = [f64::NAN, f64::NAN, f64::NAN];
        let mixed = [0.0, f64::NAN, 0.0];
        assert_eq!(changes(&window(5 * M, &nan, 15 * M, 20 * M)), 0.0);
        assert_eq!(changes(&window(5 * M, &mixed, 15 * M, 20 * M)), 2.0);
    }

    // --- *_over_time --------------------------------------------------------------------

    fn over(vals: &[f64]) -> Vec<Point> {
        pts(10_000, 0, vals)
    }

    /// 400 pseudo-random values of both signs and many sizes: below 1.5e5 times 1,
    /// 1e-3, 1e9, 7 and `big`.
    fn mixed_values(mut seed: u64, big: f64) -> Vec<f64> {
        (0..400)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let scale = [1.0, 1e-3, 1e9, 7.0, big][(seed >> 60) as usize % 5];
                ((seed >> 20) % 1_000_003) as f64 / 7.0 * scale * if seed & 1 == 0 { 1.0 } else { -1.0 }
            })
            .collect()
    }

    /// [`avg_over_time_2_each`] of the windows `points[lo..hi]`, as a range query's.
    fn means_of(points: &[Point], ranges: &[(usize, usize)], out: &mut Vec<f64>) {
        let windows: Vec<&[Point]> = ranges.iter().map(|&(lo, hi)| &points[lo..hi]).collect();
        avg_over_time_2_each(&windows, windows.iter().all(|w| below_overflow(w)), out);
    }

    /// Prometheus 2.42's answers for these windows (`avg_over_time(g[..])` of a backfilled
    /// file): its incremental mean is off the exact one in the last bit for the first,
    /// and keeps an infinite mean through finite values.
    #[test]
    fn avg_over_time_2_is_prometheus_2() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        for (vals, want) in [
            (&[4.0, 4.0, 4.0, 4.0, 3.0, 4.0][..], 3.833333333333333),
            (&[4.0, 4.0, 4.0, 3.0, 4.0, 4.0, 4.0, 3.0, 4.0], 3.7777777777777777),
            (&[1e308, 1e308, 1e308, -1e308], 5e307),
            (&[1e308, 1e308, -1e308, 5.0, 1e308, 1e308, 1e308, 1e308, 2.0], 5.555555555555556e307),
            (&[inf, 1.0, 2.0, 3.0], inf),
            (&[inf, 1.0, 2.0, 3.0, nan, 4.0], nan),
            (&[-inf, -inf, 1.0, inf], nan),
            (&[0.1, 0.2, 0.3, 0.7], 0.32499999999999996),
            (&[0.1, 0.2, 0.3, 0.7, 1.1, 1e-17], 0.4),
            (&[0.2, 0.3, 0.7, 1.1, 1e-17, 3.3, 1e16, -1e16, 0.5], 0.4333333333333333),
        ] {
            let got = avg_over_time_2(&over(vals));
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{vals:?}: {got:e}, want {want:e}"
            );
        }
        assert_ne!(avg_over_time(&over(&[4.0, 4.0, 4.0, 4.0, 3.0, 4.0])), 3.833333333333333);
        // Side by side, of different lengths, each as alone; one lane, a few, and more
        // than a vector's worth.
        let all = over(&[1e308, 4.0, inf, 4.0, 3.0, 0.1, nan, 1e-17, 4.0, -1e308, 5.0, 0.7]);
        for (a, b) in [(0, 12), (1, 7), (2, 2), (3, 11)] {
            let four = [(a, b), (1, 9), (b - 1, all.len()), (0, a + 1)];
            let windows: Vec<(usize, usize)> = four.iter().cycle().take(4 * a * a + 1).copied().collect();
            let mut got = Vec::new();
            means_of(&all, &windows, &mut got);
            assert_eq!(got.len(), windows.len());
            for (&(lo, hi), got) in windows.iter().zip(got) {
                // Any NaN: which one comes out of two depends on the order of operands,
                // which compilers take as theirs to choose.
                let w = &all[lo..hi];
                let want = avg_over_time_2(w);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{w:?}: {got}, {want}"
                );
            }
        }
        // Windows of different series (an instant query's), as many as a lane count and
        // around it, with and without values above 1e300.
        let calm = over(&[3.5, -2.0, 7.25, 1e10, 0.1, 4.0, -0.0, 9.0, 1e-5, 2.0, 6.5, 8.0]);
        for n in [1, 3, 4, 5, 8, 9, 16, 17, 40] {
            let windows: Vec<&[Point]> =
                (0..n).map(|k| &all[k % 5..(k % 5 + k % 8).min(all.len())]).collect();
            let mut got = vec![7.0];
            avg_over_time_2_each(&windows, windows.iter().all(|w| below_overflow(w)), &mut got);
            assert_eq!((got.len(), got[0]), (n + 1, 7.0));
            for (w, got) in windows.iter().zip(&got[1..]) {
                let want = avg_over_time_2(w);
                assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{w:?}");
            }
            let tame: Vec<&[Point]> =
                (0..n).map(|k| &calm[k % 5..(k % 5 + 1 + k % 8).min(calm.len())]).collect();
            let mut got = Vec::new();
            avg_over_time_2_each(&tame, tame.iter().all(|w| below_overflow(w)), &mut got);
            for (w, got) in tame.iter().zip(got) {
                let want = avg_over_time_2(w);
                assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{w:?}");
            }
        }
        // Signed zeros, in lanes that end at different steps: bit for bit.
        let zeros = over(&[-0.0, -0.0, 0.0, -0.0, -0.0, 1.0, -1.0]);
        let windows = [(0, 1), (0, 2), (1, 5), (3, 4), (2, 3), (3, 7), (0, 7)];
        let mut got = Vec::new();
        means_of(&zeros, &windows, &mut got);
        for (&(lo, hi), got) in windows.iter().zip(got) {
            assert_eq!(got.to_bits(), avg_over_time_2(&zeros[lo..hi]).to_bits(), "{lo}..{hi}");
        }
        // Long runs of finite values of all sizes, lanes side by side all the way.
        let values = mixed_values(3, 1e300);
        // As they are (some above 1e300: lanes that look for infinite means), and scaled
        // down below that (lanes that need not look).
        let tame: Vec<f64> = values.iter().map(|v| if v.abs() > 1e300 { v * 1e-10 } else { *v }).collect();
        for (all, o) in
            [over(&values), over(&tame)].iter().flat_map(|all| (0..300).step_by(7).map(move |o| (all, o)))
        {
            let windows: Vec<(usize, usize)> =
                (0..o % 40).map(|k| (o + k, o + k + 15 + k * k % 11)).collect();
            // Appended after what `out` holds.
            let mut got = vec![7.0];
            means_of(all, &windows, &mut got);
            assert_eq!((got.len(), got[0]), (windows.len() + 1, 7.0));
            for (&(lo, hi), got) in windows.iter().zip(&got[1..]) {
                let w = &all[lo..hi];
                assert_eq!(got.to_bits(), avg_over_time_2(w).to_bits(), "{w:?}");
            }
            // The lanes as the baseline instruction set runs them (the test above runs
            // the widest this machine has).
            if let Some(lanes) = windows.get(..4) {
                let lanes: [&[Point]; 4] = std::array::from_fn(|k| &all[lanes[k].0..lanes[k].1]);
                for (w, got) in lanes.iter().zip(avg_over_time_2_lanes::<4, false>(lanes)) {
                    assert_eq!(got.to_bits(), avg_over_time_2(w).to_bits(), "{w:?}");
                }
            }
        }
    }

    #[test]
    fn avg_over_time_special_values() {
        let inf = f64::INFINITY;
        let ninf = f64::NEG_INFINITY;
        // The test files' 9.988465674311579e+307 (same double, shortest spelling).
        let big = 9.98846567431158e307;
        let cases: &[(&[f64], f64)] = &[
            (&[1.0, 2.0, 3.0, 4.0, 5.0], 3.0),
            (&[1.0, 2.0, 3.0, 4.0, inf], inf),
            (&[1.0, 2.0, 3.0, 4.0, ninf], ninf),
            (&[1.0, 2.0, 3.0, inf, ninf], f64::NAN),
            (&[inf, 0.0, inf], inf),
            (&[inf, inf, inf, ninf], f64::NAN),
            (&[1.0, 2.0, 3.0, ninf, ninf], ninf),
            (&[ninf, 0.0, ninf], ninf),
            (&[ninf, ninf, ninf, inf], f64::NAN),
            (&[1.0, 2.0, ninf, ninf, inf], f64::NAN),
            (&[big, big], big),
            (&[-big, -big, -big], -big),
            (&[-big, big], 0.0),
            (&[1.0, 2.0, 3.0, f64::NAN, f64::NAN], f64::NAN),
            (&[1.0, 2.0, 3.0], 2.0),
        ];
        for (vals, want) in cases {
            let got = avg_over_time(&over(vals));
            assert!(almost_equal(got, *want, 0.0), "{vals:?}: {got} != {want}");
        }
        assert!(avg_over_time(&[]).is_nan());
    }

    #[test]
    fn exact_sums_are_the_kernels_sums() {
        let pts = |vs: &[f64]| vs.iter().map(|&v| Point { t: 0, v }).collect::<Vec<_>>();
        let limit = |n: usize| (1u64 << 53) as f64 / n as f64;
        // Whole numbers up to the limit, of either sign, -0 included; nothing else.
        assert!(sums_are_exact(&pts(&[0.0, -0.0, 3.0, -7.0, 1e6])));
        assert!(sums_are_exact(&pts(&[limit(2), -limit(2)])));
        assert!(!sums_are_exact(&pts(&[limit(2), limit(2) + 2.0])));
        for v in [0.5, -1e-300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert!(!sums_are_exact(&pts(&[1.0, v])), "{v}");
        }
        // Random whole numbers at every scale up to the limit: every window's integer
        // sum gives the kernels' results bit for bit.
        let mut seed: u64 = 11;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 11
        };
        for round in 0..2_000 {
            let n = 1 + (next() % 40) as usize;
            let scale = limit(n) / (1u64 << (next() % 53)) as f64;
            let vs: Vec<f64> = (0..n)
                .map(|_| match next() % 10 {
                    0 => -0.0,
                    1 => limit(n).floor(),
                    2 => -limit(n).floor(),
                    _ => ((next() as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * scale,
                })
                .map(f64::trunc)
                .collect();
            let points = pts(&vs);
            assert!(sums_are_exact(&points), "{round}: {vs:?}");
            let sum: i64 = vs.iter().map(|&v| v as i64).sum();
            for (avg, kernel) in [(false, sum_over_time(&points)), (true, avg_over_time(&points))] {
                let exact = exact_sum_over_time(sum, n, avg);
                assert_eq!(exact.to_bits(), kernel.to_bits(), "{round} avg={avg}: {vs:?}: {exact} {kernel}");
            }
        }
    }

    #[test]
    fn avg_over_time_extreme_magnitudes() {
        let cases: &[(&[f64], f64)] = &[
            (&[1.0, 1e100, 1.0, -1e100], 0.5),
            (&[1e10, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6], 1.6666666666666675e9),
            (
                &[
                    5.30921651659898,
                    0.961118537914768,
                    1.62091361305318,
                    0.865089463758091,
                    0.323055185914577,
                    0.951811357687154,
                ],
                1.67186744582113,
            ),
            (&[1.78264e50, 0.76342771, 1.9592258, 7.69805412, 458.90154], 3.56528e49),
            (&[0.76342771, 1.9592258, 7.69805412, 1.78264e50, 458.90154], 3.56528e49),
            (&[1.78264e50, 0.76342771, 1.9592258, 2.258e220, 7.69805412, 458.90154], 3.76333333333333e219),
            (&[-1.78264e50, 0.76342771, 1.9592258, 2.258e220, 7.69805412, -458.90154], 3.76333333333333e219),
            (
                &[-1.78264e50, 0.76342771, 1.9592258, -2.258e220, 7.69805412, -458.90154],
                -3.76333333333333e219,
            ),
            (&[-1.78264e215, 0.76342771, 1.9592258, 2.258e220, 7.69805412, -458.90154], 3.76330362266667e219),
            (
                &[-1.78264e215, 0.76342771, 1.9592258, 2.258e220, 7.69805412, 1.78264e215, -458.90154],
                3.225714285714286e219,
            ),
            (
                &[
                    -1.78264e219,
                    0.76342771,
                    1.9592258,
                    2.3757689e217,
                    -2.3757689e217,
                    2.258e220,
                    7.69805412,
                    1.78264e219,
                    -458.90154,
                ],
                2.5088888888888888e219,
            ),
            (
                &[
                    -2.258e220,
                    -1.78264e219,
                    0.76342771,
                    1.9592258,
                    2.3757689e217,
                    -2.3757689e217,
                    2.258e220,
                    7.69805412,
                    1.78264e219,
                    -458.90154,
                ],
                0.0,
            ),
        ];
        for (vals, want) in cases {
            let got = avg_over_time(&over(vals));
            assert!(close(got, *want), "{vals:?}: {got} != {want}");
        }
    }

    #[test]
    fn avg_exact_52() {
        // foo 52+0x100 averaged over 10, 11, 12, 13 samples must be exactly 52.
        for n in 1..=101 {
            let vals = vec![52.0; n];
            assert_eq!(avg_over_time(&over(&vals)), 52.0);
            let mut acc = AvgAcc::new(52.0);
            for _ in 1..n {
                acc.add(52.0);
            }
            assert_eq!(acc.value(), 52.0);
            assert_eq!(acc.count(), n as f64);
        }
    }

    #[test]
    fn sum_over_time_values() {
        assert_eq!(sum_over_time(&over(&[1.0, 1e100, 1.0, -1e100])), 2.0);
        for n in [1000usize, 1001, 1002, 1003, 2000, 2001, 3003] {
            let vals = vec![1.0; n];
            assert_eq!(sum_over_time(&pts(1, 0, &vals)), n as f64);
        }
        let big = 9.98846567431158e307;
        assert_eq!(sum_over_time(&over(&[big, big])), f64::INFINITY);
        assert!(sum_over_time(&over(&[1.0, f64::INFINITY, f64::NEG_INFINITY])).is_nan());
        assert!(sum_over_time(&[]).is_nan());
        assert_eq!(sum_over_time(&over(&[-0.0])), 0.0);
    }

    /// The chained folds of `min_over_time`/`max_over_time` give the sequential fold's
    /// bits, NaN payloads and zeros' signs included: windows of 0 to 40 values drawn
    /// from NaNs of two payloads, both zeros, infinities and repeated numbers.
    #[test]
    fn extremes_fold_in_chains_as_in_order() {
        let palette =
            [f64::NAN, -f64::NAN, 0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, 1.0, -1.0, 2.5, -7.0];
        let in_order = |vals: &[f64], step: fn(f64, f64) -> f64| match vals.split_first() {
            Some((first, rest)) => rest.iter().fold(*first, |cur, v| step(cur, *v)),
            None => f64::NAN,
        };
        let mut seed = 7u64;
        for n in 0..4000 {
            let len = n % 41;
            // Some windows without NaN or zero, where the chains' answer stands.
            let from = if n % 3 == 0 { 4 } else { 0 };
            let vals: Vec<f64> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    palette[from + (seed >> 33) as usize % (palette.len() - from)]
                })
                .collect();
            let points = over(&vals);
            for (got, step) in [
                (max_over_time(&points), max_step as fn(f64, f64) -> f64),
                (min_over_time(&points), min_step),
            ] {
                let want = in_order(&vals, step);
                assert!(
                    got.to_bits() == want.to_bits() || (len == 0 && got.is_nan()),
                    "{vals:?}: {got:?} {want:?}"
                );
            }
        }
    }

    #[test]
    fn min_max_count_over_time() {
        let nan = f64::NAN;
        let data: &[(&[f64], f64, f64)] = &[
            (&[2.0, 0.0, 3.0], 0.0, 3.0),
            (&[2.0, 0.0, nan], 0.0, 2.0),
            (&[2.0, nan, 1.0], 1.0, 2.0),
            (&[nan, 0.0, 1.0], 0.0, 1.0),
        ];
        for (vals, mn, mx) in data {
            assert_eq!(min_over_time(&over(vals)), *mn, "{vals:?}");
            assert_eq!(max_over_time(&over(vals)), *mx, "{vals:?}");
            assert_eq!(count_over_time(&over(vals)), 3.0);
        }
        assert!(min_over_time(&over(&[nan, nan, nan])).is_nan());
        assert!(max_over_time(&over(&[nan, nan, nan])).is_nan());
        assert!(min_over_time(&[]).is_nan());
        assert!(first_over_time(&over(&[nan, 0.0])).is_nan());
        assert_eq!(last_over_time(&over(&[nan, 0.0])), 0.0);
        assert_eq!(min_over_time(&over(&[5.0, 2.0, 4.0])), 2.0);
        assert_eq!(max_over_time(&over(&[5.0, 2.0, 4.0])), 5.0);
    }

    #[test]
    fn stddev_stdvar_over_time() {
        let w = over(&[0.0, 8.0, 8.0, 2.0, 3.0]);
        assert!(close(stdvar_over_time(&w, P3), 10.56));
        assert!(close(stddev_over_time(&w, P3), 3.249615));
        let w = over(&[1.5990505637277868; 3]);
        assert_eq!(stdvar_over_time(&w, P3), 0.0);
        assert_eq!(stddev_over_time(&w, P3), 0.0);
        assert_eq!(stddev_over_time(&over(&[1.0, 1.0, 1.0]), P3), 0.0);
        assert!(stddev_over_time(&[], P3).is_nan());
        // Prometheus 2.42's answer (a backfilled file): its compensation of the infinite
        // sum turns NaN, where 3's is set to 0.
        let w = over(&[-1e308, -1e308, -1e308, 1e308]);
        assert!(stdvar_over_time(&w, Compat::Prometheus2).is_nan());
        assert_eq!(stdvar_over_time(&w, P3), f64::NEG_INFINITY);
    }

    /// The windows every lane kernel is checked on with `assert_alone`: values beyond its
    /// bound (`beyond`) and not finite, which go one by one, and windows of different
    /// lengths (a range query's of one series, jittered), as many as a lane count and
    /// around it, over values of many sizes and signs up to about `big`, below the bound.
    fn check_lane_windows(
        assert_alone: impl Fn(&[Point], &[(usize, usize)]),
        beyond: f64,
        big: f64,
        seed: u64,
    ) {
        let wild =
            over(&[1e308, 4.0, f64::INFINITY, 4.0, 3.0, 0.1, f64::NAN, 1e-17, 4.0, -1e308, 5.0, beyond]);
        for n in [1, 4, 5, 9, 17] {
            let ranges: Vec<(usize, usize)> = (0..n).map(|k| (k % 5, (k % 5 + 1 + k % 8).min(12))).collect();
            assert_alone(&wild, &ranges);
        }
        let all = over(&mixed_values(seed, big));
        for o in (0..300).step_by(7) {
            let ranges: Vec<(usize, usize)> = (0..o % 40).map(|k| (o + k, o + k + 1 + k * k % 19)).collect();
            assert_alone(&all, &ranges);
        }
    }

    /// Windows `lo..lo + 1 + len` of `n` points, from a proptest's `(lo, len)` pairs.
    fn cut(n: usize, cuts: &[(usize, usize)]) -> Vec<(usize, usize)> {
        cuts.iter().map(|&(lo, len)| (lo % n, (lo % n + 1 + len).min(n))).collect()
    }

    /// [`sums_over_time_each`] of the windows `points[lo..hi]`, sums and means, checked
    /// bit for bit against [`sum_over_time`] and [`avg_over_time`] of each alone.
    fn assert_sums_alone(points: &[Point], ranges: &[(usize, usize)]) {
        let windows: Vec<&[Point]> = ranges.iter().map(|&(lo, hi)| &points[lo..hi]).collect();
        let bounded = windows.iter().all(|w| below_sum_bound(w));
        for avg in [false, true] {
            let alone = |w: &[Point]| if avg { avg_over_time(w) } else { sum_over_time(w) };
            let mut got = vec![7.0];
            sums_over_time_each(&windows, bounded, avg, &mut got);
            assert_eq!((got.len(), got[0]), (windows.len() + 1, 7.0));
            for (w, got) in windows.iter().zip(&got[1..]) {
                assert!(same_float(*got, alone(w)), "{w:?} (avg {avg}): {got:e}, {:e}", alone(w));
            }
            // The lanes as the baseline instruction set runs them.
            if let (Some(four), true) = (windows.get(..4), bounded) {
                let lanes: [&[Point]; 4] = std::array::from_fn(|k| four[k]);
                for (w, got) in lanes.iter().zip(SumLanes { avg }.lanes::<4>(lanes)) {
                    assert!(same_float(got, alone(w)), "{w:?} (avg {avg})");
                }
            }
        }
    }

    #[test]
    fn sums_side_by_side_are_each_alone() {
        // Signed zeros first and later, in lanes that end at different steps.
        let zeros = over(&[-0.0, -0.0, 0.0, -0.0, -0.0, 1.0, -1.0, -0.0]);
        assert_sums_alone(&zeros, &[(0, 1), (0, 2), (1, 5), (3, 4), (2, 3), (3, 8), (0, 8), (4, 5)]);
        // Decimal fractions whose sums round, beside longer windows.
        let fractions = over(&[0.1, 0.2, 0.3, 0.7, 1.1, 1e-17, 3.3, 1e16, -1e16, 0.5, 1.0 / 3.0, 2.5]);
        assert_sums_alone(&fractions, &[(0, 3), (3, 7), (7, 11), (0, 12), (8, 10), (2, 9)]);
        check_lane_windows(assert_sums_alone, 1e300, 1e284, 13);
    }

    /// [`stdvar_over_time_each`] of the windows `points[lo..hi]`, checked bit for bit
    /// against [`stdvar_over_time`] of each alone (any NaN for a NaN), with both
    /// versions' compensated steps.
    fn assert_variances_alone(points: &[Point], ranges: &[(usize, usize)]) {
        let windows: Vec<&[Point]> = ranges.iter().map(|&(lo, hi)| &points[lo..hi]).collect();
        let bounded = windows.iter().all(|w| below_variance_bound(w));
        for compat in [Compat::Prometheus3, Compat::Prometheus2] {
            // Appended after what `out` holds.
            let mut got = vec![7.0];
            stdvar_over_time_each(&windows, bounded, compat, &mut got);
            assert_eq!((got.len(), got[0]), (windows.len() + 1, 7.0));
            for (w, got) in windows.iter().zip(&got[1..]) {
                let want = stdvar_over_time(w, compat);
                assert!(same_float(*got, want), "{w:?}: {got:e}, {want:e}");
            }
        }
        // The lanes as the baseline instruction set runs them (the calls above run the
        // widest this machine has).
        if let (Some(four), true) = (windows.get(..4), bounded) {
            let lanes: [&[Point]; 4] = std::array::from_fn(|k| four[k]);
            for (w, got) in lanes.iter().zip(Variance.lanes::<4>(lanes)) {
                assert!(same_float(got, stdvar_over_time(w, P3)), "{w:?}");
            }
        }
    }

    #[test]
    fn variances_side_by_side_are_each_alone() {
        // Signed zeros, in lanes that end at different steps.
        let zeros = over(&[-0.0, -0.0, 0.0, -0.0, -0.0, 1.0, -1.0]);
        assert_variances_alone(&zeros, &[(0, 1), (0, 2), (1, 5), (3, 4), (2, 3), (3, 7), (0, 7)]);
        // Short windows of decimal fractions beside a long one: their lanes go on past
        // their end with compensations of the mean that are not zero, which the no-op
        // steps must take in (steps with the mean alone change the last bits).
        let fractions = over(&[1.0, 0.1, 1.0, 0.2, 3.0, 1.0, 1.0, 0.7, 2.5, 0.1, 1.0 / 3.0, 1e-17]);
        assert_variances_alone(&fractions, &[(0, 3), (3, 7), (7, 11), (0, 12), (8, 10)]);
        check_lane_windows(assert_variances_alone, 1e101, 1e94, 5);
    }

    proptest::proptest! {
        /// Compensated sums and means, and Welford's variances, in lanes are each
        /// window's alone, bit for bit, whatever the values (each kernel's lanes take
        /// only windows below its bound) and lengths.
        #[test]
        fn sums_and_variances_in_lanes_are_each_alone(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    -1e6f64..1e6,
                    proptest::sample::select(vec![
                        0.0, -0.0, 0.1, 1.0, 1e-300, 1e16, 1e99, -1e100, 1e101, -1e290, 1e291, f64::NAN,
                        f64::INFINITY,
                    ]),
                ],
                1..80,
            ),
            cuts in proptest::collection::vec((0usize..80, 0usize..30), 1..40),
        ) {
            let points = over(&values);
            let ranges = cut(points.len(), &cuts);
            assert_sums_alone(&points, &ranges);
            assert_variances_alone(&points, &ranges);
        }
    }

    /// [`laned_values`] of `double_exponential_smoothing` over the windows
    /// `points[lo..hi]` of two points or more, checked bit for bit against the scalar
    /// function of each alone, in the widest lanes this machine has and in four.
    fn assert_smoothing_alone(points: &[Point], ranges: &[(usize, usize)], sf: f64, tf: f64) {
        let windows: Vec<&[Point]> =
            ranges.iter().map(|&(lo, hi)| &points[lo..hi]).filter(|w| w.len() >= 2).collect();
        let mut got = vec![7.0];
        let f = Laned::Smooth(sf, tf);
        laned_values(f, &windows, |_| 0, true, Compat::Prometheus3, &mut Default::default(), &mut got);
        assert_eq!((got.len(), got[0]), (windows.len() + 1, 7.0));
        for (w, got) in windows.iter().zip(&got[1..]) {
            let want = double_exponential_smoothing(w, sf, tf);
            assert!(want.is_some_and(|want| same_float(*got, want)), "{w:?}: {got:e}, {want:?}");
        }
        if let Some(four) = windows.get(..4) {
            let lanes: [&[Point]; 4] = std::array::from_fn(|k| four[k]);
            for (w, got) in lanes.iter().zip(SmoothLanes { sf, tf }.lanes::<4>(lanes)) {
                assert!(double_exponential_smoothing(w, sf, tf).is_some_and(|want| same_float(got, want)));
            }
        }
    }

    proptest::proptest! {
        /// Holt's smoothing in lanes is each window's alone, bit for bit, whatever the
        /// values, factors and lengths (lanes ending at different steps).
        #[test]
        fn smoothing_in_lanes_is_each_alone(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    -1e6f64..1e6,
                    proptest::sample::select(vec![0.0, -0.0, 0.1, 1e-300, 1e308, -1e308, f64::NAN, f64::INFINITY]),
                ],
                2..80,
            ),
            cuts in proptest::collection::vec((0usize..80, 0usize..40), 1..40),
            sf in 0.001f64..0.999,
            tf in 0.001f64..0.999,
        ) {
            let points = over(&values);
            assert_smoothing_alone(&points, &cut(points.len(), &cuts), sf, tf);
        }
    }

    /// Go's `linearRegression` as written there, step for step, to check the kernels'
    /// arrangement of it against: with 3's `kahansum.Inc`, or 2.x's `kahanSumInc`, which
    /// kept an infinite sum's compensation.
    fn go_linear_regression(points: &[Point], intercept_time_ms: i64, compat: Compat) -> (f64, f64) {
        let inc = |x: f64, sum: f64, c: f64| match compat {
            Compat::Prometheus3 => kahan_inc(x, sum, c),
            Compat::Prometheus2 => {
                let t = sum + x;
                if sum.abs() >= x.abs() {
                    (t, c + ((sum - t) + x))
                } else {
                    (t, c + ((x - t) + sum))
                }
            }
        };
        let init_y = points[0].v;
        let mut const_y = true;
        let mut n = 0.0f64;
        let (mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0);
        let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
        for (i, p) in points.iter().enumerate() {
            if const_y && i > 0 && p.v != init_y {
                const_y = false;
            }
            n += 1.0;
            let x = (p.t - intercept_time_ms) as f64 / 1e3;
            (sum_x, c_x) = inc(x, sum_x, c_x);
            (sum_y, c_y) = inc(p.v, sum_y, c_y);
            (sum_xy, c_xy) = inc(x * p.v, sum_xy, c_xy);
            (sum_x2, c_x2) = inc(x * x, sum_x2, c_x2);
        }
        if const_y {
            return if init_y.is_infinite() { (f64::NAN, f64::NAN) } else { (0.0, init_y) };
        }
        sum_x += c_x;
        sum_y += c_y;
        sum_xy += c_xy;
        sum_x2 += c_x2;
        let cov_xy = sum_xy - sum_x * sum_y / n;
        let var_x = sum_x2 - sum_x * sum_x / n;
        let slope = cov_xy / var_x;
        (slope, sum_y / n - slope * sum_x / n)
    }

    /// Both floats the same bits, or both NaN.
    fn same_float(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// [`linear_regression`] and [`linear_regressions_each`] of the windows
    /// `points[lo..hi]` at `intercept` (at their first sample for `None`), checked bit
    /// for bit against Go's steps (any NaN for a NaN), for both versions.
    fn assert_regressions_alone(points: &[Point], ranges: &[(usize, usize)], intercept: Option<i64>) {
        let windows: Vec<(&[Point], i64)> =
            (ranges.iter()).map(|&(lo, hi)| (&points[lo..hi], intercept.unwrap_or(points[lo].t))).collect();
        for compat in [Compat::Prometheus3, Compat::Prometheus2] {
            let mut got = vec![(7.0, 7.0)];
            linear_regressions_each(&windows, compat, &mut got);
            assert_eq!((got.len(), got[0]), (windows.len() + 1, (7.0, 7.0)));
            for (&(w, at), got) in windows.iter().zip(&got[1..]) {
                let want = go_linear_regression(w, at, compat);
                let alone = linear_regression(w, at, compat);
                for (a, b, c) in [(got.0, alone.0, want.0), (got.1, alone.1, want.1)] {
                    assert!(
                        same_float(a, c) && same_float(b, c),
                        "{w:?} at {at}: {got:?}, {alone:?}, {want:?}"
                    );
                }
            }
            // The lanes as the baseline instruction set runs them.
            if let Some(four) = windows.get(..4) {
                let lanes: [(&[Point], i64); 4] = std::array::from_fn(|k| four[k]);
                for ((w, at), got) in lanes.iter().zip(Regression(compat).lanes::<4>(lanes)) {
                    let want = go_linear_regression(w, *at, compat);
                    assert!(same_float(got.0, want.0) && same_float(got.1, want.1), "{w:?}");
                }
            }
        }
    }

    #[test]
    fn regressions_side_by_side_are_each_alone() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        // Constant windows (one of them infinite), signed zeros, NaN, and sums that
        // overflow, in lanes of different lengths.
        let odd = over(&[3.0, 3.0, 3.0, -0.0, 0.0, inf, inf, nan, 1e308, 1e308, -1e308, 2.0, 2.0, 1e-300]);
        let ranges = [(0, 3), (0, 5), (5, 7), (5, 8), (7, 9), (8, 11), (11, 13), (0, 14), (3, 5), (1, 12)];
        for intercept in [None, Some(0), Some(140_000), Some(-3)] {
            assert_regressions_alone(&odd, &ranges, intercept);
        }
        // Jittered times, values of many sizes and signs, windows of different lengths.
        let mut seed = 11u64;
        let jittered: Vec<Point> = (mixed_values(7, 1e300).into_iter().enumerate())
            .map(|(i, v)| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                Point { t: i as i64 * 15_000 + (seed >> 54) as i64, v }
            })
            .collect();
        let tame = over(&mixed_values(9, 7.0));
        for o in (0..300).step_by(7) {
            let ranges: Vec<(usize, usize)> = (0..o % 23).map(|k| (o + k, o + k + 2 + k * k % 19)).collect();
            assert_regressions_alone(&jittered, &ranges, None);
            assert_regressions_alone(&tame, &ranges, Some(o as i64 * 1000 + 60_000));
        }
    }

    proptest::proptest! {
        /// The fits in lanes are Go's, bit for bit, whatever the values and lengths.
        #[test]
        fn regressions_in_lanes_are_each_alone(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    -1e6f64..1e6,
                    proptest::sample::select(vec![0.0, -0.0, 1.0, 5.0, 1e-300, 1e300, f64::MAX, f64::NAN, f64::INFINITY]),
                ],
                2..60,
            ),
            gaps in proptest::collection::vec(proptest::prop_oneof![1i64..40_000, proptest::strategy::Just(15_000)], 60),
            cuts in proptest::collection::vec((0usize..60, 0usize..25), 1..30),
            intercept in proptest::option::of(-100_000i64..1_000_000),
        ) {
            let mut t = 0;
            let points: Vec<Point> = values.iter().zip(&gaps).map(|(&v, gap)| { t += gap; Point { t, v } }).collect();
            let ranges: Vec<(usize, usize)> = cuts
                .iter()
                .map(|&(lo, len)| {
                    let lo = lo % (points.len() - 1);
                    (lo, (lo + 2 + len).min(points.len()))
                })
                .collect();
            assert_regressions_alone(&points, &ranges, intercept);
        }
    }

    #[test]
    fn mad_over_time_values() {
        assert_eq!(mad_over_time(&over(&[4.0, 6.0, 2.0, 1.0, 999.0, 1.0, 2.0])), 1.0);
        assert_eq!(mad_over_time(&over(&[1.0, 2.0, 3.0, 4.0, 5.0])), 1.0);
        assert_eq!(mad_over_time(&over(&[7.0; 5])), 0.0);
        assert_eq!(mad_over_time(&over(&[5.0])), 0.0);
        let got = mad_over_time(&over(&[1.0, 2.0, f64::NAN, 4.0]));
        assert_eq!(got.to_bits(), GO_NAN_BITS);
        assert_eq!(mad_over_time(&over(&[1.0, 2.0, 4.0, 10.0])), 1.5);
    }

    #[test]
    fn ts_of_functions() {
        // load 10s53ms: metric 1 2 3 0 5 6 2 1 4; [90s] at 90s.
        let w = window(10_053, &[1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 2.0, 1.0, 4.0], 90_000, 90_000);
        assert_eq!(ts_of_min_over_time(&w), 30.159);
        assert_eq!(ts_of_max_over_time(&w), 50.265);
        let w = window(10_053, &[1.0, 2.0, 3.0], 90_000, 90_000);
        assert_eq!(ts_of_last_over_time(&w), 20.106);
        assert_eq!(ts_of_first_over_time(&w), 10.053);
        // Ties pick the last extreme.
        let w = pts(1000, 0, &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!(ts_of_min_over_time(&w), 3.0);
        assert_eq!(ts_of_max_over_time(&w), 2.0);
        let w = pts(1000, 0, &[f64::NAN, 1.0, f64::NAN]);
        assert_eq!(ts_of_max_over_time(&w), 1.0);
        assert!(ts_of_min_over_time(&[]).is_nan());
    }

    #[test]
    fn quantile_over_time_values() {
        let two = over(&[0.0, 1.0]);
        let three = over(&[0.0, 1.0, 2.0]);
        let uneven = over(&[0.0, 1.0, 4.0]);
        let cases = [
            (0.0, [0.0, 0.0, 0.0]),
            (0.5, [0.5, 1.0, 1.0]),
            (0.75, [0.75, 1.5, 2.5]),
            (0.8, [0.8, 1.6, 2.8]),
            (1.0, [1.0, 2.0, 4.0]),
            (-1.0, [f64::NEG_INFINITY; 3]),
            (2.0, [f64::INFINITY; 3]),
        ];
        for (phi, want) in cases {
            for (w, want) in [&two, &three, &uneven].iter().zip(want) {
                let got = quantile_over_time(phi, w);
                assert!(close(got, want), "phi {phi}: {got} != {want}");
            }
        }
        assert!(quantile_over_time(f64::NAN, &two).is_nan());
        assert!(quantile_over_time(0.5, &[]).is_nan());
    }

    proptest::proptest! {
        /// The quantile of the two values a selection finds (windows and the
        /// aggregation's values) is the quantile of the whole stably sorted values, bit
        /// for bit (zeros of both signs among the values, so that which of equal ones
        /// is taken shows; NaNs of several payloads).
        #[test]
        fn quantiles_select_as_the_stable_sort(
            values in proptest::collection::vec(
                proptest::sample::select(vec![
                    0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 2.5, 1e300, f64::INFINITY, f64::NEG_INFINITY,
                    f64::NAN, -f64::NAN, f64::from_bits(0x7ff8_0000_0000_0001), 0.1,
                ]),
                0..100,
            ),
            phi in proptest::prop_oneof![
                0.0f64..=1.0,
                proptest::sample::select(vec![0.0, 0.5, 1.0, 0.25, 0.9, -0.5, 1.5, f64::NAN]),
            ],
            // Windows in order already (a counter's) take a path of their own; windows
            // in the reverse order must not.
            order in 0..3u8,
        ) {
            let mut values = values;
            if order > 0 {
                values.sort_by(|a, b| cmp_nan_first(*a, *b));
            }
            if order == 2 {
                values.reverse();
            }
            let points = over(&values);
            let mut sorted = values.clone();
            sorted.sort_by(|a, b| cmp_nan_first(*a, *b));
            let want = quantile_sorted(phi, &sorted);
            let of_values = quantile(phi, &mut values.clone());
            for got in [quantile_over_time(phi, &points), of_values] {
                // Which NaN an operation on two passes on is not defined (LLVM may swap
                // the operands of an addition): a NaN is a NaN.
                proptest::prop_assert!(same_float(got, want), "{:?} at {}: {} != {}", values, phi, got, want);
            }
        }
    }

    #[test]
    fn double_exponential_smoothing_trends() {
        // load 10s; at 8000s over [1m] (6 samples: t = 7950..8000s).
        let at = 8_000_000;
        let check = |vals: &[f64], want: f64| {
            let w = window(10_000, vals, at, M);
            assert_eq!(w.len(), 6);
            let got = double_exponential_smoothing(&w, 0.01, 0.1).unwrap();
            assert!(close(got, want), "{got} != {want}");
        };
        let mut a = series(0.0, 10.0, 1000);
        a.extend(series(100.0, 30.0, 1000));
        check(&a, 8000.0);
        let mut b = series(0.0, 20.0, 1000);
        b.extend(series(200.0, 30.0, 1000));
        check(&b, 16000.0);
        check(&series(0.0, 40.0, 2000), 32000.0);
        check(&series(8000.0, -10.0, 1000), 0.0);
        check(&series(0.0, -20.0, 1000), -16000.0);
        let mut c = series(0.0, -40.0, 1000);
        c.extend(series(0.0, 40.0, 1000));
        check(&c, -32000.0);
        assert_eq!(double_exponential_smoothing(&over(&[1.0]), 0.5, 0.5), None);
    }

    #[test]
    fn smoothing_validation_messages() {
        assert_eq!(validate_smoothing(0.5, 0.5), Ok(()));
        assert_eq!(
            validate_smoothing(1.0, 0.5),
            Err("invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000".to_string())
        );
        assert_eq!(
            validate_smoothing(0.5, 0.0),
            Err("invalid trend factor. Expected: 0 < tf < 1, got: 0.000000".to_string())
        );
        assert_eq!(
            validate_smoothing(-0.25, 0.5),
            Err("invalid smoothing factor. Expected: 0 < sf < 1, got: -0.250000".to_string())
        );
        assert_eq!(
            validate_smoothing(0.5, f64::INFINITY),
            Err("invalid trend factor. Expected: 0 < tf < 1, got: +Inf".to_string())
        );
        assert_eq!(validate_smoothing(f64::NAN, 0.5), Ok(()));
    }

    // --- quantile -----------------------------------------------------------------------

    #[test]
    fn quantile_aggregator_values() {
        let q = |phi: f64, v: &[f64]| quantile(phi, &mut v.to_vec());
        assert!(close(q(0.8, &[0.0, 1.0]), 0.8));
        assert!(close(q(0.8, &[0.0, 1.0, 2.0]), 1.6));
        assert!(close(q(0.8, &[0.0, 1.0, 4.0]), 2.8));
        // NaN is the smallest value.
        assert!(close(q(0.8, &[0.0, 1.0, f64::NAN]), 0.6));
        assert!(q(0.2, &[0.0, 1.0, f64::NAN]).is_nan());
        assert!(close(q(0.2, &[1.0, 0.0, 4.0]), 0.4));
        // Literal formula: Inf·0 = NaN.
        assert!(q(0.5, &[1.0, 2.0, f64::INFINITY]).is_nan());
        // Even phi = 1 multiplies the top value by a zero weight.
        assert!(q(1.0, &[1.0, 2.0, f64::INFINITY]).is_nan());
        assert_eq!(q(1.0, &[1.0, 2.0, 3.0]), 3.0);
        assert_eq!(q(-0.1, &[1.0]), f64::NEG_INFINITY);
        assert_eq!(q(1.1, &[1.0]), f64::INFINITY);
        assert_eq!(q(f64::NAN, &[1.0]).to_bits(), GO_NAN_BITS);
        assert_eq!(q(0.5, &[]).to_bits(), GO_NAN_BITS);
        let mut v = [3.0, f64::NAN, 1.0];
        quantile(0.5, &mut v);
        assert!(v[0].is_nan() && v[1] == 1.0 && v[2] == 3.0);
    }

    // --- aggregation accumulators -------------------------------------------------------

    #[test]
    fn avg_acc_matches_aggregators_test() {
        let avg = |v: &[f64]| {
            let mut a = AvgAcc::new(v[0]);
            for &x in &v[1..] {
                a.add(x);
            }
            a.value()
        };
        let inf = f64::INFINITY;
        let big = 9.98846567431158e307;
        assert_eq!(avg(&[2.0, 8.0, 1e100, -1e100]), 2.5);
        assert_eq!(avg(&[big, big, big, big]), big);
        assert_eq!(avg(&[-big, -big, -big, -big]), -big);
        assert_eq!(avg(&[-big, -big, big, big]), 0.0);
        assert_eq!(avg(&[inf, 0.0]), inf);
        assert!(avg(&[inf, -inf]).is_nan());
        assert!(avg(&[-inf, 0.0, inf]).is_nan());
        assert_eq!(avg(&[52.0; 12]), 52.0);
        let mut k = KahanSum::starting_with(2.0);
        for x in [8.0, 1e100, -1e100] {
            k.add(x);
        }
        assert_eq!(k.aggregation_value(), 10.0);
    }

    #[test]
    fn stddev_acc_seeding() {
        let run = |v: &[f64]| {
            let mut a = StddevAcc::new(v[0], Compat::Prometheus3);
            for &x in &v[1..] {
                a.add(x);
            }
            (a.stddev(), a.stdvar())
        };
        let (sd, var) = run(&[1.0, 2.0]);
        assert_eq!((sd, var), (0.5, 0.25));
        assert!(run(&[f64::NAN]).0.is_nan());
        assert!(run(&[f64::INFINITY]).1.is_nan());
        assert!(run(&[1.0, 2.0, f64::NAN]).0.is_nan());
        assert!(run(&[f64::NAN, 1.0, 2.0]).0.is_nan());
        assert!(run(&[1.0, 2.0, f64::INFINITY]).0.is_nan());
        assert_eq!(run(&[5.0]), (0.0, 0.0));
        // http_requests at 50m: 100, 200, ..., 800.
        let v: Vec<f64> = (1..=8).map(|i| f64::from(i) * 100.0).collect();
        let (sd, var) = run(&v);
        assert!(close(sd, 229.12878474779));
        assert!(close(var, 52500.0));
        // 0+1.33x10 three times: all equal → exactly 0.
        let x = series(0.0, 1.33, 10)[10];
        assert_eq!(run(&[x, x, x]), (0.0, 0.0));
        // 2.x seeds M2 with 0: a lone NaN or infinity gives 0; later ones still NaN.
        let run2 = |v: &[f64]| {
            let mut a = StddevAcc::new(v[0], Compat::Prometheus2);
            for &x in &v[1..] {
                a.add(x);
            }
            (a.stddev(), a.stdvar())
        };
        assert_eq!(run2(&[f64::NAN]), (0.0, 0.0));
        assert_eq!(run2(&[f64::NEG_INFINITY]), (0.0, 0.0));
        assert!(run2(&[f64::NAN, 1.0]).0.is_nan());
        assert!(run2(&[f64::INFINITY, 1.0]).1.is_nan());
        assert_eq!(run2(&[1.0, 2.0]), (0.5, 0.25));
    }

    /// Prometheus 2.42's `avg` aggregation, transcribed from its `aggregation` as it reads
    /// (`groupCount++`, the two infinity tests, `mean += v/n - mean/n`).
    fn go_avg_2(values: &[f64]) -> f64 {
        let mut mean = values[0];
        let mut count = 1.0;
        for &v in &values[1..] {
            count += 1.0;
            if mean.is_infinite() {
                if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                    continue;
                }
                if !v.is_infinite() && !v.is_nan() {
                    continue;
                }
            }
            mean += v / count - mean / count;
        }
        mean
    }

    #[test]
    fn incremental_mean_is_prometheus_2s_avg() {
        let inf = f64::INFINITY;
        let mut cases: Vec<Vec<f64>> = vec![
            vec![1.0],
            vec![1.0, 2.0, 4.0],
            vec![0.1, 0.2, 0.3, 0.7],
            vec![1e308, 1e308, -1e308],
            vec![inf, 1.0, inf],
            vec![inf, -inf],
            vec![1.0, inf, f64::NAN],
            vec![-inf, 2.0, -inf, 3.0],
            vec![f64::NAN, 1.0],
            vec![-0.0, -0.0],
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 1..60 {
            cases.push(
                (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 11) as f64 / 3.0 - 1e15
                    })
                    .collect(),
            );
        }
        for values in &cases {
            let mut m = IncrementalMean::new(values[0]);
            for &v in &values[1..] {
                m.add(v);
            }
            let (ours, go) = (m.value(), go_avg_2(values));
            assert!(
                ours.to_bits() == go.to_bits() || (ours.is_nan() && go.is_nan()),
                "{values:?}: {ours} {go}"
            );
        }
        // Not the compensated mean: 2.x's last bits.
        let v = [1.1, 2.2, 3.3];
        let mut m = IncrementalMean::new(v[0]);
        let mut k = AvgAcc::new(v[0]);
        for &x in &v[1..] {
            m.add(x);
            k.add(x);
        }
        assert_eq!((m.value(), k.value()), (2.2, 2.1999999999999997));
    }

    #[test]
    fn min_max_steps() {
        assert_eq!(min_step(f64::NAN, 1.0), 1.0);
        assert_eq!(min_step(1.0, f64::NAN), 1.0);
        assert_eq!(min_step(2.0, 1.0), 1.0);
        assert_eq!(max_step(f64::NAN, 1.0), 1.0);
        assert_eq!(max_step(1.0, f64::NAN), 1.0);
        assert_eq!(max_step(1.0, 2.0), 2.0);
        assert!(max_step(f64::NAN, f64::NAN).is_nan());
    }

    #[test]
    // The ties below are written as their exact binary values, longer than shortest.
    #[allow(clippy::excessive_precision)]
    fn format_float_like_go() {
        let cases: &[(f64, &str)] = &[
            (6.0, "6"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (123456789.125, "123456789.125"),
            (0.30000000000000004, "0.30000000000000004"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (9.98846567431158e307, &format!("998846567431158{}", "0".repeat(293))),
            (5e-324, &format!("0.{}5", "0".repeat(323))),
            // Halfway between two shortest decimals: Go (and Ryu) take the even digit.
            // Each was checked against Prometheus 2.42's API.
            (1690060720831323.25, "1690060720831323.2"),
            (233115890514796.125, "233115890514796.12"),
            (-80268389491067.125, "-80268389491067.12"),
            (758560795102542.25, "758560795102542.2"),
            (1.2e-7, "0.00000012"),
            (1.5e16, "15000000000000000"),
            (1.2345678901234567e16, "12345678901234568"),
        ];
        for (v, want) in cases {
            assert_eq!(go_format_float(*v), *want, "{v}");
        }
    }

    /// `zmij` writes what Ryu writes (whose digits are Go's, ties included) but for a
    /// `+` before positive exponents, which [`shortest_digits`] reads: on random
    /// bit patterns, on zero and every normal power of two, on the smallest subnormal,
    /// and on values halfway between two shortest decimals.
    #[test]
    #[allow(clippy::excessive_precision)]
    fn zmij_writes_what_ryu_writes() {
        let mut values: Vec<f64> = (0..2047u64).map(|e| f64::from_bits(e << 52)).collect();
        values.extend([1690060720831323.25, 758560795102542.25, -80268389491067.125, 5e-324, f64::MAX]);
        values.extend([0.1, 0.3, 1e-7, 1.5e16, 77586721.83333333, 5.444310685350916e14]);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x));
            // Eighths of integers near 2^50: exact ties in the last digit; and thirds.
            values.push((x >> 14) as f64 / 8.0);
            values.push((x % 1_000_000_000) as f64 / 3.0);
        }
        for v in values.into_iter().filter(|v| v.is_finite()) {
            // Only the spelling of positive exponents differs: `1e+16` against `1e16`.
            let ours = zmij::Buffer::new().format_finite(v).replacen("e+", "e", 1);
            assert_eq!(ours, ryu::Buffer::new().format_finite(v), "{v:e}");
        }
    }

    /// [`ZMIJ_PLAIN`] holds only magnitudes that `zmij` writes without an exponent: on
    /// its edges and on values spread evenly over its decades, which would take in
    /// values written with one if its bounds were two decades wider.
    #[test]
    fn zmij_writes_no_exponent_within_its_plain_range() {
        let (low, high) = (ZMIJ_PLAIN.start, ZMIJ_PLAIN.end);
        let mut values = vec![low, f64::from_bits(low.to_bits() + 1), f64::from_bits(high.to_bits() - 1)];
        let decades = (high / low).log10();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A uniform exponent over the decades, a random mantissa: every decade alike.
            let v = low * 10f64.powf(decades * (x >> 11) as f64 / (1u64 << 53) as f64);
            values.push(v.clamp(low, f64::from_bits(high.to_bits() - 1)));
            values.push((x % 1_000_000_000) as f64 / 3.0 + low);
        }
        for v in values.into_iter().filter(|v| ZMIJ_PLAIN.contains(v)) {
            let text = zmij::Buffer::new().format_finite(v).to_owned();
            assert!(!text.contains('e'), "{v:e} written {text}");
            assert!(!zmij::Buffer::new().format_finite(-v).contains('e'), "{v:e}");
        }
        // Just beyond the bounds, zmij writes exponents.
        assert!(zmij::Buffer::new().format_finite(1e16).contains('e'));
        assert!(zmij::Buffer::new().format_finite(9.9e-6).contains('e'));
    }

    /// Whole numbers take the integer path below 1e15 and `zmij`'s from there: below the
    /// bound the same text as Ryu's with its `.0` removed, and on both sides of the bound
    /// and of zero text that reads back as the same float.
    #[test]
    fn whole_numbers_read_as_ryu_writes_them() {
        let ryu_text = |v: f64| {
            let mut buf = ryu::Buffer::new();
            let text = buf.format_finite(v).to_owned();
            text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
        };
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut values = vec![0.0, -0.0, 1.0, -1.0, 1e15 - 1.0, -(1e15 - 1.0), 1e15, 4503599627370496.0];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x % 1_000_000_000_000_000) as f64);
            values.push(-((x % 100_000) as f64));
            values.push((x >> 40) as f64);
        }
        for v in values {
            let mut ours = String::new();
            write_go_float(&mut ours, v);
            if v.abs() < 1e15 {
                assert_eq!(ours, ryu_text(v), "{v}");
            }
            assert_eq!(ours.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{ours}");
        }
        assert_eq!(go_format_float(-0.0), "-0");
    }

    /// Decimals of up to three places take their own path below 2^42 and `zmij`'s from
    /// there or when they do not read back: Ryu's text either way, on thousandths,
    /// eighths, twentieths and thirds of all sizes, and around the bound.
    #[test]
    fn decimals_of_three_places_read_as_ryu_writes_them() {
        let ryu_text = |v: f64| ryu::Buffer::new().format_finite(v).to_owned();
        let bound = (1u64 << 42) as f64;
        let mut values =
            vec![0.001, -0.001, 0.0005, 0.1 + 0.2, 1.5, -0.25, 999.999, bound - 0.5, bound + 0.5];
        values.extend([bound - 0.001, bound - 0.125, -(bound - 0.25), 77595931.25, 77586802.375]);
        // A float beside such a decimal whose thousandfold still rounds to a whole number.
        values.extend([1885.3029999999999, 77601.48300000001, 873329.1359999999, 450477472.13199997]);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x >> (x % 40)) as f64;
            values.extend([
                n / 1000.0,
                -n / 1000.0,
                n / 8.0,
                n / 20.0,
                n / 3.0,
                (x % 100_000) as f64 / 1000.0,
            ]);
        }
        let mut taken = 0;
        for v in values {
            let mut ours = String::new();
            write_go_float(&mut ours, v);
            taken += usize::from(thousandths(v).is_some());
            if v.abs() >= 1e-4 && v.abs() < 1e15 {
                let want = ryu_text(v);
                assert_eq!(ours, want.strip_suffix(".0").unwrap_or(&want), "{v}");
            }
            assert_eq!(ours.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{ours}");
        }
        assert!(taken > 200_000, "{taken}");
        assert_eq!(thousandths(bound + 0.5), None);
        assert_eq!(thousandths(0.1 + 0.2), None);
    }

    /// Shortest round trip on random bit patterns: the text reads back as the same
    /// float and has as many characters as `Display`'s (which differs only on ties).
    #[test]
    fn go_float_is_shortest_round_trip() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for v in [f64::from_bits(x), (x >> 11) as f64 / 1024.0, (x % 100_000) as f64 / 100.0] {
                if !v.is_finite() {
                    continue;
                }
                let ours = go_format_float(v);
                assert_eq!(ours.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{ours}");
                assert_eq!(ours.len(), v.to_string().len(), "{v}: {ours}");
            }
        }
    }

    #[test]
    // The ties below are written as their exact binary values, longer than shortest.
    #[allow(clippy::excessive_precision)]
    fn format_g_and_fixed_like_go() {
        let cases: &[(f64, &str)] = &[
            (-0.1, "-0.1"),
            (1.01, "1.01"),
            (2.0, "2"),
            (0.0, "0"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e-100, "1e-100"),
            (1.5e300, "1.5e+300"),
            // Halfway between two shortest decimals: the even digit, as Go.
            (1690060720831323.25, "1.6900607208313232e+15"),
            (-80268389491067.125, "-8.026838949106712e+13"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(go_format_g(*v), *want, "{v}");
        }
        assert_eq!(go_format_fixed(0.1, 6), "0.100000");
        assert_eq!(go_format_fixed(1e20, 6), "100000000000000000000.000000");
        assert_eq!(go_format_fixed(f64::NAN, 6), "NaN");
    }

    // --- classic histograms -------------------------------------------------------------

    /// Prometheus 3's `BucketQuantile`.
    fn bucket_quantile_3(phi: f64, buckets: &mut [Bucket]) -> (f64, bool, bool) {
        bucket_quantile(phi, buckets, Compat::Prometheus3)
    }

    fn bk(v: &[(f64, f64)]) -> Vec<Bucket> {
        v.iter().map(|&(upper, count)| Bucket { upper, count }).collect()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn bucket_quantile_testhistogram() {
        // testhistogram at 50m (counts ×10).
        let pos = || bk(&[(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]);
        let neg = || bk(&[(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)]);
        let cases =
            [(0.0, 0.0, -0.2), (1.0, 1.0, 0.3), (0.2, 0.048, -0.2), (0.5, 0.15, -0.15), (0.8, 0.72, 0.3)];
        for (phi, p, n) in cases {
            let (gp, f1, s1) = bucket_quantile_3(phi, &mut pos());
            let (gn, f2, s2) = bucket_quantile_3(phi, &mut neg());
            assert!(close(gp, p) && close(gn, n), "phi {phi}: {gp} {gn}");
            assert!(!f1 && !f2 && !s1 && !s2);
        }
        assert_eq!(bucket_quantile_3(-0.1, &mut pos()).0, f64::NEG_INFINITY);
        assert_eq!(bucket_quantile_3(1.01, &mut pos()).0, f64::INFINITY);
        assert!(bucket_quantile_3(f64::NAN, &mut pos()).0.is_nan());
    }

    #[test]
    fn bucket_quantile_testhistogram3_and_2() {
        let pos = || bk(&[(0.0, 0.0), (0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 110.0)]);
        let neg = || bk(&[(-0.25, 0.0), (-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 20.0)]);
        let cases = [
            (0.0, 0.0, -0.25),
            (0.25, 0.055, -0.225),
            (0.5, 0.125, -0.2),
            (0.75, 0.45, -0.15),
            (1.0, 1.0, -0.1),
        ];
        for (phi, p, n) in cases {
            assert!(close(bucket_quantile_3(phi, &mut pos()).0, p), "phi {phi}");
            assert!(close(bucket_quantile_3(phi, &mut neg()).0, n), "phi {phi}");
        }
        // testhistogram2 at 7m (one increment): 1/6, 1/2, 5/6 → 1, 3, 5.
        let h2 = || bk(&[(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)]);
        for (phi, want) in [(1.0 / 6.0, 1.0), (0.5, 3.0), (5.0 / 6.0, 5.0)] {
            assert!(close(bucket_quantile_3(phi, &mut h2()).0, want), "phi {phi}");
        }
    }

    #[test]
    fn monotonicity_fixes_of_2_and_3() {
        // The middle bucket's count is 1e-13 above the first's: noise in 3, a real
        // difference in 2.42, where the rank then falls inside that bucket.
        let buckets = || bk(&[(1.0, 1.0), (2.0, 1.0 + 1e-13), (INF, 2.0)]);
        let phi = (1.0 + 5e-14) / 2.0;
        assert_eq!(bucket_quantile(phi, &mut buckets(), Compat::Prometheus3).0, 2.0);
        let two = bucket_quantile(phi, &mut buckets(), Compat::Prometheus2).0;
        assert!((two - 1.5).abs() < 0.01, "{two}");
        // Around a NaN count 2.42 keeps the largest count before it; 3 starts over.
        let nan = || bk(&[(1.0, 5.0), (2.0, f64::NAN), (3.0, 3.0), (INF, 10.0)]);
        let mut two = nan();
        assert!(ensure_monotonic_2(&mut two).forced_monotonic);
        assert_eq!(two[2].count, 5.0);
        let mut three = nan();
        ensure_monotonic_and_ignore_small_deltas(&mut three, SMALL_DELTAS);
        assert_eq!(three[2].count, 3.0);
        // A NaN first count: 2.42 fixes nothing after it.
        let mut first = bk(&[(1.0, f64::NAN), (2.0, 4.0), (3.0, 2.0), (INF, 6.0)]);
        assert!(!ensure_monotonic_2(&mut first).forced_monotonic);
        assert_eq!(first[2].count, 2.0);
        assert!(bucket_quantile(0.5, &mut nan(), Compat::Prometheus2).0.is_nan());
        assert_eq!(bucket_quantile(0.5, &mut nan(), Compat::Prometheus3).0, 3.0);
    }

    #[test]
    fn bucket_quantile_nonmonotonic_and_edge_cases() {
        let non =
            || bk(&[(0.1, 20.0), (1.0, 10.0), (10.0, 50.0), (100.0, 40.0), (1000.0, 90.0), (INF, 80.0)]);
        for (phi, want) in [(0.01, 0.0045), (0.5, 8.5), (0.99, 979.75)] {
            let r = bucket_quantile_detailed(phi, &mut non(), Compat::Prometheus3);
            assert!(close(r.value, want), "phi {phi}: {}", r.value);
            assert!(r.forced_monotonic && !r.fixed_precision);
            assert_eq!((r.min_bucket, r.max_bucket, r.max_diff), (1.0, INF, 10.0));
        }
        // Unsorted input with duplicate bounds (le="0.2" and "2e-1") coalesces.
        let mut mixed = bk(&[(INF, 4.0), (0.2, 1.0), (0.1, 1.0), (0.2, 1.0), (0.2, 1.0)]);
        assert!(close(bucket_quantile_3(0.5, &mut mixed).0, 0.15));
        assert!(bucket_quantile_3(0.5, &mut bk(&[(INF, 0.0), (INF, 0.0)])).0.is_nan());
        // No +Inf bucket, a single bucket, no observations, empty.
        assert!(bucket_quantile_3(0.5, &mut bk(&[(1.0, 1.0), (2.0, 2.0)])).0.is_nan());
        assert!(bucket_quantile_3(0.5, &mut bk(&[(INF, 5.0)])).0.is_nan());
        assert!(bucket_quantile_3(0.5, &mut bk(&[(1.0, 0.0), (INF, 0.0)])).0.is_nan());
        assert!(bucket_quantile_3(0.5, &mut []).0.is_nan());
        // Quantile 0 with an empty first bucket above 0: 0·(0/0) = NaN.
        assert!(bucket_quantile_3(0.0, &mut bk(&[(1.0, 0.0), (2.0, 1.0), (INF, 1.0)])).0.is_nan());
        // Small deltas are ignored silently, in both directions.
        let (v, forced, fixed) =
            bucket_quantile_3(0.5, &mut bk(&[(1.0, 1e13), (2.0, 1e13 - 1.0), (4.0, 2e13), (INF, 2e13)]));
        assert!(!forced && fixed);
        assert_eq!(v, 1.0);
        let (v, forced, fixed) =
            bucket_quantile_3(0.75, &mut bk(&[(1.0, 1e13), (2.0, 1e13 + 1.0), (4.0, 2e13), (INF, 2e13)]));
        assert!(!forced && fixed);
        assert_eq!(v, 3.0);
        // Without the absorption the decrease would have been forced.
        let (_, forced, fixed) = bucket_quantile_3(0.5, &mut bk(&[(1.0, 10.0), (2.0, 9.0), (INF, 20.0)]));
        assert!(forced && !fixed);
    }

    #[test]
    fn bucket_fraction_histograms_test() {
        let p = || bk(&[(1.0, 1.0), (2.0, 3.0), (3.0, 6.0), (INF, 100.0)]);
        let n = || bk(&[(-3.0, 10.0), (-2.0, 12.0), (-1.0, 15.0), (INF, 100.0)]);
        let f = |lo, hi, mut b: Vec<Bucket>| bucket_fraction(lo, hi, &mut b);
        assert!(close(f(0.0, 1.5, p()), 0.02));
        assert!(close(f(-4.0, -2.0, n()), 0.02));
        assert!(close(f(f64::NEG_INFINITY, -1.5, n()), 0.135));
        assert!(close(f(f64::NEG_INFINITY, INF, p()), 1.0));
        assert!(close(f(f64::NEG_INFINITY, INF, n()), 1.0));
        assert_eq!(f(4.0, 5.0, p()), 0.0);
        assert_eq!(f(0.0, 1.0, n()), 0.0);
        assert!(close(f(2.0, 5.0, p()), 0.03));
        assert!(close(f(400.0, INF, p()), 0.94));
        assert_eq!(f(2.0, 2.0, p()), 0.0);
        assert_eq!(f(3.0, 2.0, p()), 0.0);
        assert_eq!(f(0.0, 1.0, bk(&[(INF, 100.0)])), 0.0);
        assert!(f(0.0, 5.0, bk(&[(1.0, 0.0), (2.0, 0.0), (INF, 0.0)])).is_nan());
        assert!(close(f(2.0, 3.5, p()), 0.03));
        assert!(close(f(0.5, 2.0, p()), 0.025));
        assert!(close(f(1.0, 3.0, p()), 0.05));
        assert!(close(f(0.1, 0.75, bk(&[(0.5, 2.5), (1.0, 7.5), (INF, 100.0)])), 0.045));
        let z = bk(&[(-2.0, 5.0), (-1.0, 10.0), (0.0, 15.0), (1.0, 20.0), (INF, 100.0)]);
        assert!(close(f(-1.0, 1.0, z), 0.1));
        assert!(f(f64::NAN, 1.0, bk(&[(1.0, 1.0), (INF, 100.0)])).is_nan());
        assert!(f(0.0, f64::NAN, bk(&[(1.0, 1.0), (INF, 100.0)])).is_nan());
        let r = || bk(&[(1.0, 1.0), (2.0, 3.0), (INF, 10.0)]);
        assert_eq!(f(-10.0, -5.0, r()), 0.0);
        assert_eq!(f(5.0, 10.0, r()), 0.0);
        // testhistogram2 (0, 4) and (0, 6) at 50m: counts 0,10,20,30,30.
        let h2 = || bk(&[(0.0, 0.0), (2.0, 10.0), (4.0, 20.0), (6.0, 30.0), (INF, 30.0)]);
        assert!(close(f(0.0, 4.0, h2()), 2.0 / 3.0));
        assert!(close(f(0.0, 6.0, h2()), 1.0));
        assert!(close(f(0.0, 3.5, h2()), 0.5833333333333334));
        assert!(f(0.0, 1.0, bk(&[(1.0, 1.0)])).is_nan());
        assert!(f(0.0, 1.0, Vec::new()).is_nan());
    }

    #[test]
    fn parse_le_like_go() {
        let ok: &[(&str, f64)] = &[
            ("0.1", 0.1),
            (".2", 0.2),
            ("1e0", 1.0),
            ("2e-1", 0.2),
            ("2.0e-1", 0.2),
            ("1.", 1.0),
            ("1.e1", 10.0),
            ("+5", 5.0),
            ("-0.1", -0.1),
            ("+Inf", INF),
            ("+inf", INF),
            ("inf", INF),
            ("INF", INF),
            ("-Inf", f64::NEG_INFINITY),
            ("Infinity", INF),
            ("-infinity", f64::NEG_INFINITY),
            ("0x1p-3", 0.125),
            ("0X1P-3", 0.125),
            ("0x1.8p1", 3.0),
            ("-0x10p0", -16.0),
            ("0x.8p1", 1.0),
            ("0x_1p0", 1.0),
            ("1_000", 1000.0),
            ("1_0.5_0e1_0", 10.5e10),
            ("1e-400", 0.0),
            ("0x1p-1074", 5e-324),
            ("0x1p-1080", 0.0),
            ("0x1.fffffffffffffp1023", f64::MAX),
            ("0x1.fffffffffffff7p1023", f64::MAX),
            ("1.7976931348623157e308", f64::MAX),
            ("00012", 12.0),
            ("+.5", 0.5),
            ("-.5e-1", -0.05),
            ("5.E-1", 0.5),
            ("1e+2", 100.0),
            ("0.1000000000000000055511151231257827021181583404541015625", 0.1),
            ("123456789012345678901234567890", 1.2345678901234568e29),
            ("0", 0.0),
        ];
        for (s, want) in ok {
            let got = parse_le(s);
            assert_eq!(got, Some(*want), "{s}");
        }
        assert_eq!(parse_le("-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(parse_le("NaN").map(f64::to_bits), Some(GO_NAN_BITS));
        assert_eq!(parse_le("nan").map(f64::to_bits), Some(GO_NAN_BITS));
        let bad = [
            "",
            "Hello World",
            " 1",
            "1 ",
            "+NaN",
            "-nan",
            "infx",
            "infin",
            "in",
            ".",
            "e5",
            ".e5",
            "1e",
            "1e+",
            "1e_5",
            "0x",
            "0x1",
            "0x10",
            "0xp1",
            "0x1p",
            "1__0",
            "_1",
            "1_",
            "1_.5",
            "1._5",
            "0x1_p0",
            "1e400",
            "-1e400",
            "0x1p2000",
            "0x1.fffffffffffffcp1023",
            "0x1.fffffffffffff8p1023",
            "1.5.5",
            "++1",
            "1f",
            "٣",
        ];
        for s in bad {
            assert_eq!(parse_le(s), None, "{s}");
        }
    }

    // --- elementwise math ---------------------------------------------------------------

    #[test]
    fn round_like_go() {
        let cases = [
            (2.5, 3.0),
            (2.0, 2.0),
            (-2.5, -2.0),
            (-2.0, -2.0),
            (0.0, 0.0),
            (INF, INF),
            (f64::NEG_INFINITY, f64::NEG_INFINITY),
        ];
        for (v, want) in cases {
            assert_eq!(go_round(v, 1.0), want, "{v}");
        }
        assert!(go_round(f64::NAN, 1.0).is_nan());
        assert_eq!(go_round(-0.0, 1.0), 0.0);
        assert_eq!(go_round(12.345, 0.1), 12.3);
        assert_eq!(go_round(17.0, 5.0), 15.0);
        assert_eq!(go_round(17.5, 5.0), 20.0);
    }

    #[test]
    fn clamp_like_go() {
        assert_eq!(clamp(-50.0, -25.0, 75.0), -25.0);
        assert_eq!(clamp(0.0, -25.0, 75.0), 0.0);
        assert_eq!(clamp(100.0, -25.0, 75.0), 75.0);
        assert_eq!(clamp(100.0, f64::NEG_INFINITY, 75.0), 75.0);
        assert_eq!(clamp(-50.0, -25.0, INF), -25.0);
        for v in [-50.0, 0.0, 100.0] {
            assert!(clamp(v, 0.0, f64::NAN).is_nan());
            assert!(clamp(v, f64::NAN, 0.0).is_nan());
        }
        assert!(clamp(f64::NAN, 0.0, 1.0).is_nan());
        // -Inf wins in Min, +Inf in Max, even against NaN.
        assert_eq!(clamp(f64::NEG_INFINITY, 0.0, f64::NAN), 0.0);
        assert_eq!(clamp(f64::NAN, INF, INF), INF);
        assert!(clamp(0.0, -0.0, 0.0).is_sign_positive());
        assert!(clamp(-0.0, -0.0, -0.0).is_sign_negative());
        assert!(go_max(-0.0, 0.0).is_sign_positive());
        assert!(go_min(0.0, -0.0).is_sign_negative());
    }

    #[test]
    fn sgn_deg_rad() {
        assert_eq!(sgn(f64::NEG_INFINITY), -1.0);
        assert_eq!(sgn(INF), 1.0);
        assert!(sgn(f64::NAN).is_nan());
        assert_eq!(sgn(-50.0), -1.0);
        assert_eq!(sgn(100.0), 1.0);
        assert!(sgn(-0.0).is_sign_negative() && sgn(-0.0) == 0.0);
        assert_eq!(deg(std::f64::consts::PI), 180.0);
        assert_eq!(rad(180.0), std::f64::consts::PI);
        assert_eq!(deg(1.0), 180.0 / std::f64::consts::PI);
    }

    // --- dates --------------------------------------------------------------------------

    #[test]
    fn date_functions_test() {
        let d = date_parts_from_step_ms(0);
        assert_eq!((d.year, d.month, d.day_of_month, d.day_of_year, d.day_of_week), (1970, 1, 1, 1, 4));
        assert_eq!((d.hour, d.minute, d.days_in_month), (0, 0, 31));
        let d = date_parts_from_value(1136239445.0);
        assert_eq!((d.year, d.month, d.day_of_month, d.day_of_year, d.day_of_week), (2006, 1, 2, 2, 1));
        assert_eq!((d.hour, d.minute), (22, 4));
        assert_eq!(date_parts_from_value(1230767999.0).year, 2008);
        assert_eq!(date_parts_from_value(1230768000.0).year, 2009);
        let d = date_parts_from_value(1456790399.0);
        assert_eq!((d.month, d.day_of_month), (2, 29));
        let d = date_parts_from_value(1456790400.0);
        assert_eq!((d.month, d.day_of_month), (3, 1));
        assert_eq!(date_parts_from_value(1483191420.0).day_of_year, 366);
        assert_eq!(date_parts_from_value(1672493820.0).day_of_year, 365);
        assert_eq!(date_parts_from_value(1454284800.0).days_in_month, 29);
        assert_eq!(date_parts_from_value(1485907200.0).days_in_month, 28);
        let names = ["year", "month", "day_of_month", "day_of_year", "day_of_week", "hour", "minute"];
        let want = [2006.0, 1.0, 2.0, 2.0, 1.0, 22.0, 4.0];
        for (n, w) in names.iter().zip(want) {
            assert_eq!(date_part(n, 1136239445.0), w, "{n}");
        }
        assert_eq!(date_part("days_in_month", 1454284800.0), 29.0);
        assert!(date_part("second", 0.0).is_nan());
        // Truncation toward zero, then floor-based calendar for negative times.
        let d = date_parts_from_value(-0.5);
        assert_eq!((d.year, d.hour), (1970, 0));
        let d = date_parts_from_value(-1.0);
        assert_eq!((d.year, d.month, d.day_of_month, d.hour, d.minute), (1969, 12, 31, 23, 59));
        assert_eq!(d.day_of_week, 3);
        assert_eq!(date_parts_from_step_ms(-1500), date_parts(-1));
        // 2000-02-29 and 1900-02-28 (1900 is not a leap year).
        let d = date_parts(951782400);
        assert_eq!((d.year, d.month, d.day_of_month, d.days_in_month), (2000, 2, 29, 29));
        let d = date_parts(-2203977600);
        assert_eq!((d.year, d.month, d.day_of_month, d.days_in_month), (1900, 2, 28, 28));
        // Amd64 conversion of NaN/Inf/out-of-range values.
        assert_eq!(go_f64_to_i64(f64::NAN), i64::MIN);
        assert_eq!(go_f64_to_i64(INF), i64::MIN);
        assert_eq!(go_f64_to_i64(1e19), i64::MIN);
        assert_eq!(go_f64_to_i64(-9_223_372_036_854_775_808.0), i64::MIN);
        assert_eq!(go_f64_to_i64(-2.9), -2);
        // Go: time.Unix(math.MaxInt64, 0) is 292277026596-12-04 15:30:07 UTC, and
        // math.MinInt64 wraps to one second later.
        let d = date_parts(i64::MAX);
        assert_eq!((d.year, d.month, d.day_of_month, d.hour, d.minute), (292277026596, 12, 4, 15, 30));
        let d = date_parts_from_value(f64::NAN);
        assert_eq!((d.year, d.month, d.day_of_month, d.hour, d.minute), (292277026596, 12, 4, 15, 30));
        assert_eq!(date_parts_from_value(f64::NEG_INFINITY), d);
        // Just above the wrap-around threshold the calendar is proleptic Gregorian.
        let d = date_parts(-9_223_372_028_715_321_600);
        assert_eq!((d.year, d.month, d.day_of_month), (-292277022399, 1, 1));
    }

    // --- natural sort -------------------------------------------------------------------

    #[test]
    fn natsort_like_facette() {
        let mut cpus = ["10", "2", "100", "0", "21", "1", "12", "3", "20", "11"];
        cpus.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(cpus, ["0", "1", "2", "3", "10", "11", "12", "20", "21", "100"]);
        let mut inst = ["4m1000", "4m600", "4m5"];
        inst.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(inst, ["4m5", "4m600", "4m1000"]);
        let mut rel = ["1.111.3", "1.11.3", "1.2.3"];
        rel.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(rel, ["1.2.3", "1.11.3", "1.111.3"]);
        assert_eq!(natural_cmp("api-server", "app-server"), Ordering::Less);
        assert_eq!(natural_cmp("canary", "production"), Ordering::Less);
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
        assert_eq!(natural_cmp("abc", "abcd"), Ordering::Less);
        assert_eq!(natural_cmp("a1", "a"), Ordering::Greater);
        assert_eq!(natural_cmp("a", "1"), Ordering::Greater);
        assert_eq!(natural_cmp("", "x"), Ordering::Greater);
        assert_eq!(natural_cmp("x", ""), Ordering::Less);
        assert_eq!(natural_cmp("01", "1"), Ordering::Equal);
        assert_eq!(natural_cmp("a2b", "a10"), Ordering::Less);
        assert_eq!(natural_cmp("99999999999999999999", "100000000000000000000"), Ordering::Less);
        assert_eq!(natural_cmp_go("", "x"), Ok(Ordering::Greater));
        assert_eq!(natural_cmp_go("x", ""), Err(NATSORT_PANIC_MESSAGE.to_string()));
        assert_eq!(natural_cmp_go("1", "01"), Ok(Ordering::Less));
        assert_eq!(natural_cmp_go("4m600", "4m1000"), Ok(Ordering::Less));
        // natural_cmp is a total order, also on the inputs where Go's is not.
        let tricky = [
            "",
            "01",
            "1",
            "a",
            "9",
            "99",
            "100",
            "99999999999999999999",
            "100000000000000000000",
            "a01b",
            "a1b",
        ];
        for x in tricky {
            for y in tricky {
                assert_eq!(natural_cmp(x, y), natural_cmp(y, x).reverse(), "{x} vs {y}");
                for z in tricky {
                    if natural_cmp(x, y).is_le() && natural_cmp(y, z).is_le() {
                        assert!(natural_cmp(x, z).is_le(), "{x} <= {y} <= {z}");
                    }
                }
            }
        }
        // natural_cmp agrees with Go's comparator on consistent inputs.
        let words = ["a", "b1", "b10", "b2", "b2c", "c", "10", "9", "-1", "x9y", "x10y", "1.2.3", "1.11.3"];
        for x in words {
            for y in words {
                let go = natural_cmp_go(x, y).unwrap();
                assert_eq!(natural_cmp(x, y), go, "{x} vs {y}");
            }
        }
        // Quirks of the pinned version.
        assert_eq!(natsort_less("01", "1"), Some(true));
        assert_eq!(natsort_less("1", "01"), Some(true));
        assert_eq!(natsort_less("a1b", "a01b"), Some(true));
        assert_eq!(natsort_less("99999999999999999999", "100000000000000000000"), Some(false));
        assert_eq!(natsort_less("9223372036854775807", "9223372036854775808"), Some(true));
        assert_eq!(natsort_less("x", "x"), Some(true));
        assert_eq!(natsort_less("", ""), Some(false));
        assert_eq!(natsort_chunks("ab12c3"), ["ab", "12", "c", "3"]);
        assert_eq!(natsort_chunks("é1"), ["é", "1"]);
    }

    // --- almost.Equal -------------------------------------------------------------------

    #[test]
    fn almost_equal_like_prometheus() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        assert!(almost_equal(stale, stale, 1e-6));
        assert!(!almost_equal(stale, f64::NAN, 1e-6));
        assert!(!almost_equal(f64::NAN, stale, 1e-6));
        assert!(almost_equal(f64::NAN, go_nan(), 1e-6));
        assert!(!almost_equal(f64::NAN, 1.0, 1e-6));
        assert!(almost_equal(INF, INF, 1e-6));
        assert!(!almost_equal(INF, f64::MAX, 1e-6));
        assert!(!almost_equal(INF, f64::NEG_INFINITY, 1e-6));
        assert!(almost_equal(0.0, -0.0, 1e-6));
        assert!(!almost_equal(0.0, 1e-300, 1e-6));
        assert!(almost_equal(1.0, 1.0 + 1e-7, 1e-6));
        assert!(!almost_equal(1.0, 1.00001, 1e-6));
        assert!(almost_equal(3.249615, 3.2496154055, 1e-6));
        assert!(almost_equal(1e-310, 1.0000001e-310, 1e6));
        assert!(!almost_equal(1e-310, 2e-310, 1e-6));
        assert!(almost_equal(f64::MAX, f64::MAX * (1.0 - 1e-12), 1e-6));
    }
}
