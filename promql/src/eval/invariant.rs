//! Step-invariant parts of a query: those whose value is the same at every step
//! because every selection in them is pinned by `@`. Prometheus evaluates them once
//! and copies the value to every step (its `StepInvariantExpr`); evaluated at each
//! step, `sum(rate(x[5m] @ end()))` over an hour at 15 s steps costs 241 instant
//! queries where Prometheus' costs one.
//!
//! Here such a part is kept once evaluated and given again at later steps, if it reads
//! samples (a literal or `vector(0)` costs less than looking it up). Which parts
//! qualify follows Prometheus' rules but for two. An aggregation is step invariant only
//! if its parameter is too: Prometheus looks at the input alone, so that in a range
//! query `topk(scalar(y), x @ 300)` takes `y` at the first step only (2.42, measured);
//! here each step takes its own, as an instant query at that step does. And `info` is
//! taken as time dependent (below). Keeping a value thus never changes a result: the
//! node-by-node reference, which keeps nothing, gives the same.

use std::sync::Arc;

use super::{EResult, Evaluator, NodeMap, V};
use crate::ast::Expr;
use crate::value::Timestamp;

/// Functions whose value depends on the time they are evaluated at even when their
/// arguments do not: Prometheus' `AtModifierUnsafeFunctions` (the calendar functions
/// without an argument and `time` read the step's time, `predict_linear` extrapolates
/// to it, `timestamp` of anything but a selector returns it), and `info`, whose info
/// series are read at the step's time when its first argument selects nothing.
const TIME_DEPENDENT: &[&str] = &[
    "time",
    "timestamp",
    "predict_linear",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
    "info",
];

/// The key of `e` in [`Evaluator::invariant`]: its address, stable while the query's
/// tree is evaluated.
fn key(e: &Expr) -> usize {
    e as *const Expr as usize
}

/// Whether `e` is a range vector (not kept: its windows are read once a step anyway).
fn yields_range(e: &Expr) -> bool {
    matches!(e.unparen(), Expr::MatrixSelector(_) | Expr::Subquery(_))
}

/// Marks the largest step-invariant parts of `e` (outside range vectors and literals)
/// in `keep`, where `e` is evaluated at many steps (`many`); inside a subquery always.
/// Returns whether `e` itself is step invariant.
fn mark(e: &Expr, many: bool, keep: &mut NodeMap<Option<Arc<V>>>) -> bool {
    match e {
        Expr::Number(_) | Expr::String(_) => true,
        Expr::VectorSelector(vs) => vs.at.is_some(),
        Expr::MatrixSelector(ms) => ms.selector.at.is_some(),
        Expr::Subquery(sq) => {
            // Its expression is evaluated at each of its inner steps; the subquery
            // itself is pinned only by its own `@`.
            if mark(&sq.expr, true, keep) {
                mark_part(&sq.expr, keep);
            }
            sq.at.is_some()
        }
        Expr::Paren(p) => mark(&p.expr, many, keep),
        Expr::Unary(u) => mark(&u.expr, many, keep),
        Expr::Binary(b) => all_or_parts([&*b.lhs, &*b.rhs].into_iter(), many, keep),
        Expr::Aggregate(a) => all_or_parts(a.param.as_deref().into_iter().chain([&*a.expr]), many, keep),
        Expr::Call(c) => {
            let args = all_or_parts(c.args.iter(), many, keep);
            let timed = TIME_DEPENDENT.contains(&c.func.name);
            if args && timed && many {
                // Not invariant itself, so its arguments are the largest parts.
                c.args.iter().for_each(|a| mark_part(a, keep));
            }
            args && !timed
        }
    }
}

/// Whether all of `children` are step invariant; if not, those that are get marked.
fn all_or_parts<'e>(
    children: impl Iterator<Item = &'e Expr>,
    many: bool,
    keep: &mut NodeMap<Option<Arc<V>>>,
) -> bool {
    let marks: Vec<(&Expr, bool)> = children.map(|c| (c, mark(c, many, keep))).collect();
    let all = marks.iter().all(|&(_, invariant)| invariant);
    if !all && many {
        for (c, invariant) in marks {
            if invariant {
                mark_part(c, keep);
            }
        }
    }
    all
}

/// Marks the step-invariant `e` to be kept, if it reads samples and is not a range
/// vector.
fn mark_part(e: &Expr, keep: &mut NodeMap<Option<Arc<V>>>) {
    if reads_samples(e) && !yields_range(e) {
        keep.insert(key(e), None);
    }
}

/// Whether `e` holds a selector or a subquery.
fn reads_samples(e: &Expr) -> bool {
    matches!(e, Expr::VectorSelector(_) | Expr::MatrixSelector(_) | Expr::Subquery(_))
        || e.children().any(reads_samples)
}

impl<'a> Evaluator<'a> {
    /// Finds the step-invariant parts of the query `expr` to keep ([`invariant`]).
    ///
    /// [`invariant`]: Evaluator::invariant
    pub(super) fn plan_invariant(&mut self, expr: &Expr) {
        let many = self.step != 0;
        if mark(expr, many, &mut self.invariant) && many {
            mark_part(expr, &mut self.invariant);
        }
    }

    /// `e` at `t` if it is a step-invariant part to keep: the value kept from an
    /// earlier step, else evaluated now and kept. `None` for other nodes.
    pub(super) fn kept_invariant(&mut self, e: &Expr, t: Timestamp) -> Option<EResult<V>> {
        let k = key(e);
        match self.invariant.get(&k)? {
            Some(v) => Some(Ok(V::clone(v))),
            None => {
                #[cfg(test)]
                self.kept_evaluations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(self.eval_uncached(e, t).inspect(|v| {
                    self.invariant.insert(k, Some(Arc::new(v.clone())));
                }))
            }
        }
    }

    /// Keeps the values that an evaluator forked from this one found (in a part of the
    /// steps, or in a subquery's inner steps), so that later steps need not find them
    /// again. Sound because a fork evaluates the same query over the same `start`,
    /// `end` and `step` (a subquery's steps change only `grid_step`): a part's value is
    /// the same in every fork.
    pub(super) fn keep_invariant_values(&mut self, found: NodeMap<Option<Arc<V>>>) {
        for (k, v) in found {
            if let (Some(slot @ None), Some(v)) = (self.invariant.get_mut(&k), v) {
                *slot = Some(v);
            }
        }
    }

    /// Evaluates at `t` the kept parts of `e` (outside subqueries) that are not yet,
    /// before its steps are split over the cores: each core would evaluate them again.
    pub(super) fn evaluate_kept_parts(&mut self, e: &Expr, t: Timestamp) -> EResult<()> {
        match self.invariant.get(&key(e)) {
            Some(Some(_)) => Ok(()),
            Some(None) => self.kept_invariant(e, t).map_or(Ok(()), |v| v.map(drop)),
            None if matches!(e, Expr::Subquery(_)) => Ok(()),
            None => e.children().try_for_each(|c| self.evaluate_kept_parts(c, t)),
        }
    }

    /// Whether `e` is kept whole once evaluated: a step-invariant query, which need not
    /// be split over the cores.
    pub(super) fn is_kept_invariant(&self, e: &Expr) -> bool {
        self.invariant.contains_key(&key(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::{Engine, EngineOptions, QueryResult};
    use crate::labels::Labels;
    use crate::storage::MemoryStore;
    use crate::value::Value;

    /// The parts of `q` that are kept, as written, in query order.
    fn kept(q: &str, range: bool) -> Vec<String> {
        let expr = crate::parse(q).unwrap();
        let engine = Engine::default();
        let mut ev = engine.evaluator(0, 600_000, if range { 60_000 } else { 0 });
        ev.plan_invariant(&expr);
        let mut out = Vec::new();
        let mut stack = vec![&expr];
        while let Some(e) = stack.pop() {
            if ev.is_kept_invariant(e) {
                out.push(e.to_string());
            }
            stack.extend(e.children().collect::<Vec<_>>().into_iter().rev());
        }
        out
    }

    #[test]
    fn the_largest_pinned_parts_are_kept() {
        let cases: &[(&str, &[&str])] = &[
            ("sum(rate(x[5m] @ 300))", &["sum(rate(x[5m] @ 300))"]),
            ("x / on(s) group_left sum by (s) (x @ 300)", &["sum by (s) (x @ 300)"]),
            ("x @ end() * 2 + x", &["x @ end() * 2"]),
            ("(x @ 300) - time()", &["(x @ 300)"]),
            // Literals and plain selections are evaluated at each step as they are.
            ("x * 2", &[]),
            ("rate(x[5m]) > 1", &[]),
            // Parts that read no samples cost less than looking them up.
            ("vector(1) + scalar(sum(y))", &[]),
            ("sum(rate(x[5m])) or vector(0)", &[]),
            // Functions of the step's time: only their arguments.
            ("timestamp(sum(x @ 300))", &["sum(x @ 300)"]),
            ("hour(x @ 300)", &["x @ 300"]),
            ("predict_linear(x[5m] @ 300, 60)", &[]),
            ("time()", &[]),
            // An aggregation's parameter must be pinned too.
            ("topk(scalar(y), x @ 300)", &["x @ 300"]),
            ("topk(2, x @ 300)", &["topk(2, x @ 300)"]),
            // A subquery's inner steps are many even in an instant query; a pinned
            // subquery is kept whole by its caller.
            ("max_over_time((x @ 300)[5m:1m])", &["(x @ 300)"]),
            ("max_over_time(rate(x[1m])[5m:1m] @ 600)", &["max_over_time(rate(x[1m])[5m:1m] @ 600)"]),
        ];
        for &(q, want) in cases {
            assert_eq!(kept(q, true), want, "{q}");
        }
        // An instant query is one step: only parts inside subqueries are kept.
        assert_eq!(kept("sum(rate(x[5m] @ 300))", false), Vec::<String>::new());
        assert_eq!(kept("max_over_time((x @ 300)[5m:1m])", false), ["(x @ 300)"]);
    }

    fn store() -> MemoryStore {
        let mut st = MemoryStore::new();
        for (s, slope) in [("a", 1.0), ("b", 3.0), ("c", 0.5)] {
            let x = Labels::from_pairs([("__name__", "x"), ("s", s)]);
            let y = Labels::from_pairs([("__name__", "y"), ("s", s)]);
            for t in (0..=1_800_000i64).step_by(15_000) {
                // A reset in `b` halfway, and `c` ends early: pinned times see both.
                let v = if s == "b" && t > 900_000 { (t - 900_000) as f64 } else { t as f64 * slope };
                if s != "c" || t < 1_200_000 {
                    st.append(&x, t, v / 1000.0);
                }
                st.append(&y, t, (t / 60_000 % 3) as f64);
            }
        }
        st
    }

    fn matrix(r: Result<QueryResult, crate::eval::EvalError>, q: &str) -> Vec<(String, Vec<(i64, u64)>)> {
        let Value::Matrix(m) = r.unwrap_or_else(|e| panic!("{q}: {e}")).value else {
            panic!("{q}: not a matrix")
        };
        m.iter()
            .map(|s| (s.labels.to_string(), s.points.iter().map(|p| (p.t, p.v.to_bits())).collect()))
            .collect()
    }

    /// Kept parts give what evaluating them at each step gives, bit for bit: the
    /// node-by-node reference, which keeps nothing, and each step's instant query.
    /// Among the queries, some whose parts look pinned but are not (`timestamp` of an
    /// aggregation is the step's time; an aggregation's parameter may change).
    #[test]
    fn kept_parts_equal_each_step_evaluated() {
        let st = store();
        let engine = Engine::new(EngineOptions::default());
        let queries = [
            "sum(rate(x[5m] @ 900))",
            "x / on(s) group_left sum by (s) (x @ 1200)",
            "x @ 1500 * 2 + x",
            "timestamp(sum(x @ 300))",
            "timestamp(x @ 1300)",
            "hour(x @ 300) + minute(x @ 300)",
            "minute() + on() group_left sum(x @ 300)",
            "predict_linear(x[5m] @ 600, 60)",
            "topk(scalar(max(y)), x @ 1000)",
            "quantile(0.5, x @ 1000) - x",
            "max_over_time((x @ 300)[5m:1m])",
            "max_over_time(rate(x[1m])[5m:1m] @ 1000)",
            "label_replace(x @ 300, \"t\", \"$1\", \"s\", \"(.*)\")",
            "count_values(\"v\", y @ 600) or vector(1)",
            "absent(nothing @ 300) + scalar(sum(y))",
            "-(x @ 300) > bool -1000",
            "sum by (s) (x @ 1300) unless y",
        ];
        let (start, end, step) = (300_000, 1_500_000, 60_000);
        for q in queries {
            let expr = crate::parse(q).unwrap();
            let fast = matrix(engine.eval(&st, &expr, start, end, step), q);
            let reference = matrix(engine.eval_with(&st, &expr, (start, end, step), false), q);
            assert_eq!(fast, reference, "{q}");
            for t in (start..=end).step_by(step as usize) {
                let Value::Vector(want) = engine.instant_query(&st, q, t).unwrap().value else {
                    panic!("{q}: not a vector")
                };
                let mut want: Vec<(String, u64)> =
                    want.iter().map(|s| (s.labels.to_string(), s.v.to_bits())).collect();
                want.sort();
                let mut got: Vec<(String, u64)> = fast
                    .iter()
                    .filter_map(|(l, pts)| pts.iter().find(|p| p.0 == t).map(|p| (l.clone(), p.1)))
                    .collect();
                got.sort();
                assert_eq!(got, want, "{q} at {t}");
            }
        }
    }

    /// Every kept part is evaluated once over a range query, also inside subqueries
    /// (whose inner steps run in evaluators of their own) and when the steps are split
    /// over the cores.
    #[test]
    fn kept_parts_are_evaluated_once() {
        let small = store();
        let mut large = MemoryStore::new();
        for i in 0..40 {
            let x = Labels::from_pairs([("__name__", "x"), ("s", &i.to_string())]);
            for t in (0..=3_600_000i64).step_by(15_000) {
                large.append(&x, t, (t / 1000 + i) as f64);
            }
        }
        let engine = Engine::new(EngineOptions { parallel: true, ..EngineOptions::default() });
        let cases = [
            (
                &small,
                "sum(rate(x[5m] @ 900)) + on() group_left count(y) - timestamp(sum(x @ 300)) \
                 + on() group_left max(max_over_time((x @ 600)[5m:1m]))",
                (300_000, 1_500_000, 60_000),
                3,
            ),
            (
                &large,
                "x / on() group_left sum(x @ 1800) + on() group_left count(x @ 600)",
                (0, 3_600_000, 5_000),
                2,
            ),
        ];
        for (st, q, (start, end, step), parts) in cases {
            let expr = crate::parse(q).unwrap();
            let mut ev = engine.evaluator(start, end, step);
            let mut planned = Vec::new();
            ev.plan(&expr, start, end, &mut planned).unwrap();
            ev.select_all(st, planned).unwrap();
            ev.plan_invariant(&expr);
            assert_eq!(ev.invariant.len(), parts, "{q}");
            ev.range(&expr).unwrap();
            assert!(ev.invariant.values().all(Option::is_some), "{q}");
            let evaluated = ev.kept_evaluations.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(evaluated, parts, "{q}");
        }
    }
}
