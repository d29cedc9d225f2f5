//! The extended range selectors of `promql-extended-range-selectors`: `anchored` and
//! `smoothed` (Prometheus 3.x, floats only).
//!
//! An anchored window `(start, end]` also sees the last sample at or before `start`
//! (within the lookback delta) and reports it at `start`; a smoothed window interpolates
//! linearly at both edges, using samples up to one lookback delta outside the window.

use super::{exec_error, EResult, Evaluator, Matrix, Points, M, S};
use crate::ast::{Call, Expr, MatrixSelector, RangeAnchoring, VectorSelector};
use crate::storage::partition_point_near;
use crate::value::{is_stale_marker, Point, Timestamp};

/// The functions `smoothed` may be used with, as Prometheus lists them.
const SMOOTHED_SAFE: &[&str] = &["delta", "increase", "rate"];
/// The functions `anchored` may be used with, as Prometheus lists them.
const ANCHORED_SAFE: &[&str] = &["changes", "delta", "increase", "rate", "resets"];

/// The matrix selector an argument is (through parentheses), if it is one.
pub(super) fn matrix_selector_of(e: &Expr) -> Option<&MatrixSelector> {
    match e {
        Expr::MatrixSelector(ms) => Some(ms),
        Expr::Paren(p) => matrix_selector_of(&p.expr),
        _ => None,
    }
}

/// The anchoring of a function's range-selector argument, if it has one.
pub(super) fn anchoring_of(e: &Expr) -> Option<RangeAnchoring> {
    matrix_selector_of(e).and_then(|ms| ms.selector.anchoring)
}

/// Prometheus' error for an anchored or smoothed range passed to a function that does
/// not support it.
pub(super) fn check_call(c: &Call) -> EResult<()> {
    if c.func.name == "timestamp" && c.args.iter().any(is_smoothed_instant) {
        return Err(super::EvalError::Unsupported("timestamp() of a smoothed selector".into()));
    }
    for a in &c.args {
        let (safe, which) = match anchoring_of(a) {
            Some(RangeAnchoring::Smoothed) => (SMOOTHED_SAFE, "smoothed"),
            Some(RangeAnchoring::Anchored) => (ANCHORED_SAFE, "anchored"),
            None => continue,
        };
        if !safe.contains(&c.func.name) {
            return exec_error(format!(
                "{which} modifier can only be used with: {} - not with {}",
                safe.join(", "),
                c.func.name
            ));
        }
    }
    Ok(())
}

fn is_smoothed_instant(e: &Expr) -> bool {
    match e {
        Expr::VectorSelector(vs) => vs.anchoring == Some(RangeAnchoring::Smoothed),
        Expr::Paren(p) => is_smoothed_instant(&p.expr),
        _ => false,
    }
}

/// Index of the first of `points[..n]` for which `f` holds, or `n` (Go's `sort.Search`).
fn search(points: &[Point], n: usize, f: impl Fn(&Point) -> bool) -> usize {
    points[..n].partition_point(|p| !f(p))
}

/// Linear interpolation at `t` between `p1` and `p2`; a counter that dropped is taken to
/// have restarted from 0.
fn interpolate(p1: Point, p2: Point, t: Timestamp, counter: bool) -> f64 {
    let y1 = if counter && p2.v < p1.v { 0.0 } else { p1.v };
    y1 + (p2.v - y1) * (t - p1.t) as f64 / (p2.t - p1.t) as f64
}

/// The boundary indices of a window `(start, end]` over widened points (Prometheus'
/// `firstSampleIndex`/`lastSampleIndex`), or `None` when the window is empty.
fn boundaries(f: &[Point], start: Timestamp, end: Timestamp, smoothed: bool) -> Option<(usize, usize)> {
    let mut last = f.len().checked_sub(1)?;
    let first = search(f, last, |p| p.t > start).saturating_sub(1);
    if smoothed {
        last = search(f, last, |p| p.t >= end);
    }
    if f[last].t <= start {
        return None;
    }
    Some((first, last))
}

fn left_value(f: &[Point], first: usize, start: Timestamp, smoothed: bool, counter: bool) -> f64 {
    match f.get(first + 1) {
        Some(&next) if smoothed && f[first].t < start => interpolate(f[first], next, start, counter),
        _ => f[first].v,
    }
}

fn right_value(f: &[Point], last: usize, end: Timestamp, smoothed: bool, counter: bool) -> f64 {
    if smoothed && last > 0 && f[last].t > end {
        interpolate(f[last - 1], f[last], end, counter)
    } else {
        f[last].v
    }
}

/// The window `(start, end]` as Prometheus' `extendFloats` presents an anchored or
/// smoothed range: a point at `start` (the sample before it, or interpolated), the
/// samples strictly inside, and a point at `end`. `f` are the non-stale samples of the
/// widened window.
pub(crate) fn extend_floats(f: &[Point], start: Timestamp, end: Timestamp, smoothed: bool) -> Vec<Point> {
    let Some((mut first, mut last)) = boundaries(f, start, end, smoothed) else {
        return Vec::new();
    };
    let left = left_value(f, first, start, smoothed, false);
    let right = right_value(f, last, end, smoothed, false);
    if f[first].t <= start {
        first += 1;
    }
    let inner_end = if f[last].t >= end { last } else { last + 1 };
    last = inner_end;
    let mut out = Vec::with_capacity(last.saturating_sub(first) + 2);
    out.push(Point { t: start, v: left });
    if first < last {
        out.extend_from_slice(&f[first..last]);
    }
    out.push(Point { t: end, v: right });
    out
}

/// `rate`/`increase`/`delta` over an anchored or smoothed window (Prometheus'
/// `extendedRate`): the difference of the boundary values, plus counter resets inside.
pub(crate) fn extended_rate(
    f: &[Point],
    start: Timestamp,
    end: Timestamp,
    smoothed: bool,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    let (mut first, mut last) = boundaries(f, start, end, smoothed)?;
    if smoothed && f[first].t > end {
        return None;
    }
    let left = left_value(f, first, start, smoothed, counter);
    let right = right_value(f, last, end, smoothed, counter);
    let mut result = right - left;
    if counter {
        if f[first].t <= start {
            first += 1;
        }
        let stop = if f[last].t >= end { last } else { last + 1 };
        last = stop;
        let inner = if first < last { &f[first..last] } else { &[][..] };
        let mut prev = left;
        for p in inner {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
        if right < prev {
            result += prev;
        }
    }
    if rate {
        result /= (end - start) as f64 / 1000.0;
    }
    Some(result)
}

impl Evaluator<'_> {
    /// An anchored or smoothed range selector at `t`. With `raw`, each series holds the
    /// non-stale samples of the widened window (for `extendedRate`); otherwise the
    /// window as [`extend_floats`] presents it.
    pub(super) fn extended_range(&mut self, ms: &MatrixSelector, t: Timestamp, raw: bool) -> EResult<Matrix> {
        let smoothed = ms.selector.anchoring == Some(RangeAnchoring::Smoothed);
        let range = self.positive_ms(&ms.range, "range")?;
        let offset = self.offset_ms(ms.selector.offset.as_ref())?;
        let end = self.at_ms(ms.selector.at).unwrap_or(t) - offset;
        let start = end - range;
        let lookback = self.opts.lookback_delta_ms;
        let (lo_t, hi_t) = (start - lookback, if smoothed { end + lookback } else { end });
        let series = self.selected(&ms.selector);
        let mut out = Vec::new();
        for s in series.iter() {
            let lo = partition_point_near(&s.points, lo_t, |t| t <= lo_t);
            let hi = partition_point_near(&s.points, hi_t, |t| t <= hi_t);
            let window: Vec<Point> =
                s.points[lo..hi.max(lo)].iter().copied().filter(|p| !is_stale_marker(p.v)).collect();
            let points = if raw { window } else { extend_floats(&window, start, end, smoothed) };
            if !points.is_empty() {
                out.push(M { labels: s.labels.clone(), points: Points::Owned(points), drop_name: false });
            }
        }
        Ok(Matrix { series: out, start, end, source: None })
    }

    /// A `smoothed` instant selector (Prometheus' `smoothSeries`). Among the non-stale
    /// samples of `(ref - lookback, ref + lookback]`: the one at the reference time, else
    /// the interpolation between the last one before it and the first one after it, else
    /// the last one before it carried forward. Nothing without a sample before.
    pub(super) fn smoothed_instant(&mut self, vs: &VectorSelector, t: Timestamp) -> EResult<Vec<S>> {
        let offset = self.offset_ms(vs.offset.as_ref())?;
        let reference = self.at_ms(vs.at).unwrap_or(t) - offset;
        let lookback = self.opts.lookback_delta_ms;
        let series = self.selected(vs);
        let mut out = Vec::new();
        for s in series.iter() {
            let i = partition_point_near(&s.points, reference, |t| t < reference);
            let next =
                s.points[i..].iter().find(|p| !is_stale_marker(p.v)).filter(|p| p.t <= reference + lookback);
            let prev = s.points[..i]
                .iter()
                .rev()
                .find(|p| !is_stale_marker(p.v))
                .filter(|p| p.t > reference - lookback);
            let v = match (prev, next) {
                (_, Some(n)) if n.t == reference => n.v,
                (None, _) => continue,
                (Some(&p), Some(&n)) => interpolate(p, n, reference, false),
                (Some(p), None) => p.v,
            };
            out.push(S { labels: s.labels.clone(), v, t: reference, drop_name: false });
        }
        Ok(out)
    }
}
