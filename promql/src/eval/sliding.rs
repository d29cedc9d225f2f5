//! Range queries: a range function of a plain range selector (`rate(x[5m])`,
//! `max_over_time(x[1h])`, …) is computed for all of an evaluator's steps at once, with
//! windows that slide forward over each series instead of a search and a window per
//! step. The results are taken by the steps as they are evaluated.

use super::{kernels, Compat, EResult, Evaluator, S};
use crate::ast::{Call, Expr, MatrixSelector};
use crate::value::{is_stale_marker, Point, Timestamp};

/// How a function turns a window into a value.
#[derive(Clone, Copy)]
enum Kind {
    /// `rate`, `increase`, `delta`.
    Extrapolated { counter: bool, rate: bool },
    /// A function of the window's points alone.
    Window(fn(&[Point]) -> Option<f64>),
}

/// The functions computed here, and whether they keep the metric name.
fn kind(name: &str) -> Option<(Kind, bool)> {
    Some(match name {
        "rate" => (Kind::Extrapolated { counter: true, rate: true }, false),
        "increase" => (Kind::Extrapolated { counter: true, rate: false }, false),
        "delta" => (Kind::Extrapolated { counter: false, rate: false }, false),
        "irate" => (Kind::Window(|p| kernels::instant_value(p, true)), false),
        "idelta" => (Kind::Window(|p| kernels::instant_value(p, false)), false),
        "deriv" => (Kind::Window(kernels::deriv), false),
        "resets" => (Kind::Window(|p| Some(kernels::resets(p))), false),
        "changes" => (Kind::Window(|p| Some(kernels::changes(p))), false),
        "sum_over_time" => (Kind::Window(|p| Some(kernels::sum_over_time(p))), false),
        "avg_over_time" => (Kind::Window(|p| Some(kernels::avg_over_time(p))), false),
        "min_over_time" => (Kind::Window(|p| Some(kernels::min_over_time(p))), false),
        "max_over_time" => (Kind::Window(|p| Some(kernels::max_over_time(p))), false),
        "count_over_time" => (Kind::Window(|p| Some(p.len() as f64)), false),
        "stddev_over_time" => (Kind::Window(|p| Some(kernels::stddev_over_time(p))), false),
        "stdvar_over_time" => (Kind::Window(|p| Some(kernels::stdvar_over_time(p))), false),
        "present_over_time" => (Kind::Window(|_| Some(1.0)), false),
        "last_over_time" => (Kind::Window(|p| p.last().map(|p| p.v)), true),
        "first_over_time" => (Kind::Window(|p| p.first().map(|p| p.v)), true),
        _ => return None,
    })
}

/// Per step (from the first step of the evaluator), the samples of one call.
pub(super) type StepResults = Vec<Option<Vec<S>>>;

/// The call's range selector when it can be computed here: a single, plain argument
/// (no `@`, no anchoring).
fn plain_range_arg(c: &Call) -> Option<&MatrixSelector> {
    match c.args.as_slice() {
        [arg] => match arg.unparen() {
            Expr::MatrixSelector(ms) if ms.selector.at.is_none() && ms.selector.anchoring.is_none() => {
                Some(ms)
            }
            _ => None,
        },
        _ => None,
    }
}

impl Evaluator<'_> {
    /// Computes every eligible call of `expr` for `steps` (not inside subqueries, whose
    /// inner steps are other times).
    pub(super) fn precompute(&mut self, expr: &Expr, steps: &[Timestamp]) -> EResult<()> {
        let mut calls = Vec::new();
        collect_calls(expr, &mut calls);
        for c in calls {
            if let Some(results) = self.slide(c, steps)? {
                self.precomputed.insert(c as *const Call as usize, (steps[0], results));
            }
        }
        Ok(())
    }

    /// The precomputed result of `c` at step `t`, if there is one (taken: each step is
    /// evaluated once).
    pub(super) fn take_precomputed(&mut self, c: &Call, t: Timestamp) -> Option<Vec<S>> {
        let step = self.grid_step;
        let (first, results) = self.precomputed.get_mut(&(c as *const Call as usize))?;
        if step <= 0 || t < *first || (t - *first) % step != 0 {
            return None;
        }
        results.get_mut(usize::try_from((t - *first) / step).ok()?)?.take()
    }

    fn slide(&mut self, c: &Call, steps: &[Timestamp]) -> EResult<Option<StepResults>> {
        let (Some((kind, keep_name)), Some(ms)) = (kind(c.func.name), plain_range_arg(c)) else {
            return Ok(None);
        };
        let range = self.positive_ms(&ms.range, "range")?;
        let offset = self.offset_ms(ms.selector.offset.as_ref())?;
        let series = self.selected(&ms.selector);
        // Stale markers must be skipped inside windows: leave such selections to the
        // step-by-step path.
        if series.iter().any(|s| s.points.iter().any(|p| is_stale_marker(p.v))) {
            return Ok(None);
        }
        let closed = self.opts.compat == Compat::Prometheus2;
        let zero_clamp_first = closed;
        let mut results: Vec<Vec<S>> = vec![Vec::new(); steps.len()];
        let mut not_counters: Vec<String> = Vec::new();
        for s in series.iter() {
            let labels =
                if keep_name || self.delayed { s.labels.clone() } else { s.labels.without_metric_name() };
            let drop_name = !keep_name && self.delayed;
            let points: &[Point] = &s.points;
            // Start the windows at the first step's, then slide.
            let first_end = steps[0] - offset;
            let mut hi = points.partition_point(|p| p.t <= first_end);
            let mut lo = points[..hi].partition_point(|p| p.t < first_end - range);
            let mut seen = false;
            for (i, &t) in steps.iter().enumerate() {
                let end = t - offset;
                let start = end - range;
                while hi < points.len() && points[hi].t <= end {
                    hi += 1;
                }
                while lo < hi && (points[lo].t < start || (!closed && points[lo].t == start)) {
                    lo += 1;
                }
                let window = &points[lo..hi];
                if window.is_empty() {
                    continue;
                }
                seen = true;
                let value = match kind {
                    Kind::Extrapolated { counter, rate } => {
                        kernels::extrapolated_rate(window, start, end, range, counter, rate, zero_clamp_first)
                    }
                    Kind::Window(f) => f(window),
                };
                if let Some(v) = value {
                    results[i].push(S { labels: labels.clone(), v, t, drop_name });
                }
            }
            if seen && matches!(kind, Kind::Extrapolated { counter: true, .. }) {
                if let Some(n) = s.labels.metric_name() {
                    let counter_like = ["_total", "_sum", "_count", "_bucket"].iter().any(|x| n.ends_with(x));
                    if !counter_like && !not_counters.iter().any(|x| x == n) {
                        not_counters.push(n.to_owned());
                    }
                }
            }
        }
        for n in not_counters {
            self.counter_info_for(&n, &c.args[0]);
        }
        Ok(Some(results.into_iter().map(Some).collect()))
    }
}

fn collect_calls<'e>(e: &'e Expr, out: &mut Vec<&'e Call>) {
    match e {
        Expr::Call(c) => {
            out.push(c);
            c.args.iter().for_each(|a| collect_calls(a, out));
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                collect_calls(p, out);
            }
            collect_calls(&a.expr, out);
        }
        Expr::Binary(b) => {
            collect_calls(&b.lhs, out);
            collect_calls(&b.rhs, out);
        }
        Expr::Paren(p) => collect_calls(&p.expr, out),
        Expr::Unary(u) => collect_calls(&u.expr, out),
        // Inner steps of a subquery are other times than the query's steps.
        Expr::Subquery(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Number(_)
        | Expr::String(_) => {}
    }
}
