//! Runs promqltest scripts against the engine, the way Prometheus' own runner does:
//! every instant `eval` is also checked with `@` pinned at other times and as a range
//! query around its time.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::script::{
    parse_script, AnnotationExpectation, AnnotationKindExpect, Command, Eval, EvalKind, ExpectedResult,
    ExpectedSeries, MessageMatch, Script,
};
use crate::ast::{AtModifier, Expr, MatchOp};
use crate::eval::{kernels::almost_equal, AnnotationKind, Engine, EngineOptions, EvalError, QueryResult};
use crate::features::Features;
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::{LabelMatcher, MemoryStore, SampleSource, Selection};
use crate::value::{Sample, Series, Timestamp, Value};

/// The engine settings of Prometheus' test engine.
pub fn test_engine_options() -> EngineOptions {
    EngineOptions {
        lookback_delta_ms: 5 * 60_000,
        max_samples: 10_000,
        timeout: Some(std::time::Duration::from_secs(100)),
        features: Features::all(),
        default_subquery_step_ms: 60_000,
        compat: crate::eval::Compat::Prometheus3,
        cancel: None,
        parallel: true,
        offload: None,
    }
}

/// How one `eval` came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Pass,
    /// A check failed; the text says which and shows expected against got.
    Fail(String),
}

/// One `eval` of a script and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Line of the `eval` command.
    pub line: usize,
    /// The query.
    pub query: String,
    /// Pass or why not.
    pub outcome: Outcome,
    /// A short reason for a failure, for baselines: `native histogram`, `unsupported: …`,
    /// `wrong result`, `error`, ….
    pub reason: Option<String>,
}

/// Runs every command of a script; `only_line` restricts the evals run to the one at
/// that line (loads and clears still run).
pub fn run_script(text: &str, only_line: Option<usize>) -> Result<Vec<CaseResult>, String> {
    let script: Script = parse_script(text).map_err(|e| e.to_string())?;
    let engine = Engine::new(test_engine_options());
    let mut store = MemoryStore::new();
    // The series that have native histogram samples, which this engine does not store:
    // failures of evals that read them are attributed to native histograms.
    let mut histograms = MemoryStore::new();
    let mut results = Vec::new();
    for cmd in &script.commands {
        match cmd {
            Command::Clear { .. } => {
                store.clear();
                histograms.clear();
            }
            Command::Load { series, with_nhcb, .. } => {
                for s in series {
                    if s.has_histograms {
                        histograms.append(&s.labels, 0, 0.0);
                    }
                    // `load_with_nhcb` also makes a native histogram of each classic one,
                    // named without `_bucket`.
                    if let (true, Some(name)) = (*with_nhcb, s.labels.metric_name()) {
                        if let Some(base) = name.strip_suffix("_bucket") {
                            histograms.append(&s.labels.without(&["le"]).with(METRIC_NAME, base), 0, 0.0);
                        }
                    }
                    for p in &s.points {
                        store.append(&s.labels, p.t, p.v);
                    }
                }
            }
            Command::Eval(eval) => {
                if only_line.is_some_and(|l| l != eval.line) {
                    continue;
                }
                let outcome = match run_eval(&engine, &store, eval) {
                    Ok(()) => Outcome::Pass,
                    Err(msg) => Outcome::Fail(msg),
                };
                let reason = match &outcome {
                    Outcome::Pass => None,
                    Outcome::Fail(msg) => Some(classify(eval, msg, &histograms)),
                };
                results.push(CaseResult { line: eval.line, query: eval.query.clone(), outcome, reason });
            }
        }
    }
    Ok(results)
}

/// A short reason for a failure, used by baselines.
fn classify(eval: &Eval, msg: &str, histograms: &MemoryStore) -> String {
    if eval.has_histograms() || reads_any(&eval.query, histograms) {
        return "native histogram".into();
    }
    if let Some(i) = msg.find("not supported yet: ") {
        let rest = &msg[i + "not supported yet: ".len()..];
        return format!("unsupported: {}", rest.lines().next().unwrap_or(rest));
    }
    if msg.contains("unexpected error") || msg.contains("range query failed") {
        return "error".into();
    }
    if msg.contains("annotation") {
        return "annotations".into();
    }
    if msg.contains("expected error") {
        return "missing error".into();
    }
    "wrong result".into()
}

/// Whether any selector of `query` matches a series of `store`.
fn reads_any(query: &str, store: &MemoryStore) -> bool {
    fn walk(e: &Expr, store: &MemoryStore) -> bool {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.selector,
            _ => return e.children().any(|c| walk(c, store)),
        };
        let mut matchers = Vec::new();
        if let Some(name) = &vs.name {
            matchers.extend(LabelMatcher::new(METRIC_NAME, MatchOp::Equal, name));
        }
        matchers.extend(vs.matchers.iter().filter_map(|m| LabelMatcher::from_ast(m).ok()));
        let sel = Selection { matchers: &matchers, start: i64::MIN, end: i64::MAX };
        store.select(&sel).is_ok_and(|s| !s.is_empty())
    }
    store.series_count() > 0 && crate::parse_with(query, Features::all()).is_ok_and(|e| walk(&e, store))
}

/// Functions whose result depends on the evaluation time even with `@` on every selector.
const AT_UNSAFE: [&str; 16] = [
    "time",
    "timestamp",
    "predict_linear",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "start",
    "end",
    "range",
    "step",
    "info",
];

fn run_eval(engine: &Engine, store: &MemoryStore, eval: &Eval) -> Result<(), String> {
    match eval.kind {
        EvalKind::Instant { at } => {
            let mut cases = vec![(eval.query.clone(), at)];
            cases.extend(at_variants(&eval.query, at));
            for (query, time) in cases {
                run_instant(engine, store, eval, &query, time)?;
            }
            Ok(())
        }
        EvalKind::Range { start, end, step } => {
            let result = engine.range_query(store, &eval.query, start, end, step);
            check_outcome(eval, &eval.query, result, |value| compare(eval, value, Some((start, step))))
        }
    }
}

/// The query with `@ T` on every selector and subquery that has none (not inside a
/// subquery), evaluated at other times: it must give the same answer.
fn at_variants(query: &str, at: Timestamp) -> Vec<(String, Timestamp)> {
    let Ok(mut expr) = crate::parse_with(query, Features::all()) else { return Vec::new() };
    if calls_any(&expr, &AT_UNSAFE) {
        return Vec::new();
    }
    pin_at(&mut expr, at);
    let pinned = expr.to_string();
    let times: Vec<Timestamp> =
        if at == 0 { vec![-1000, 0, 1000] } else { vec![-10 * at, 0, at / 5, at, 10 * at] };
    times.into_iter().map(|t| (pinned.clone(), t)).collect()
}

fn calls_any(e: &Expr, names: &[&str]) -> bool {
    match e {
        Expr::Call(c) => names.contains(&c.func.name) || c.args.iter().any(|a| calls_any(a, names)),
        Expr::Aggregate(a) => {
            a.param.as_deref().is_some_and(|p| calls_any(p, names)) || calls_any(&a.expr, names)
        }
        Expr::Binary(b) => calls_any(&b.lhs, names) || calls_any(&b.rhs, names),
        Expr::Paren(p) => calls_any(&p.expr, names),
        Expr::Unary(u) => calls_any(&u.expr, names),
        Expr::Subquery(s) => calls_any(&s.expr, names),
        _ => false,
    }
}

fn pin_at(e: &mut Expr, at: Timestamp) {
    match e {
        Expr::VectorSelector(vs) => {
            vs.at.get_or_insert(AtModifier::Timestamp(at));
        }
        Expr::MatrixSelector(ms) => {
            ms.selector.at.get_or_insert(AtModifier::Timestamp(at));
        }
        // Selectors inside a subquery keep their own times.
        Expr::Subquery(sq) => {
            sq.at.get_or_insert(AtModifier::Timestamp(at));
        }
        Expr::Call(c) => c.args.iter_mut().for_each(|a| pin_at(a, at)),
        Expr::Aggregate(a) => {
            if let Some(p) = a.param.as_deref_mut() {
                pin_at(p, at);
            }
            pin_at(&mut a.expr, at);
        }
        Expr::Binary(b) => {
            pin_at(&mut b.lhs, at);
            pin_at(&mut b.rhs, at);
        }
        Expr::Paren(p) => pin_at(&mut p.expr, at),
        Expr::Unary(u) => pin_at(&mut u.expr, at),
        Expr::Number(_) | Expr::String(_) => {}
    }
}

fn run_instant(
    engine: &Engine,
    store: &MemoryStore,
    eval: &Eval,
    query: &str,
    time: Timestamp,
) -> Result<(), String> {
    let result = engine.instant_query(store, query, time);
    let instant_ok = result.is_ok();
    check_outcome(eval, query, result, |value| compare(eval, value, None))?;
    let range_result_expected =
        matches!(eval.result, ExpectedResult::Matrix { .. } | ExpectedResult::String(_));
    // These resolve differently in a range query.
    let uses_bounds = crate::parse_with(query, Features::all())
        .is_ok_and(|e| calls_any(&e, &["start", "end", "range", "step"]))
        // Also as durations (`offset range()`), which are not calls.
        || query.contains("range()")
        || query.contains("step()");
    if eval.expect_fail.is_some() || !instant_ok || range_result_expected || uses_bounds {
        return Ok(());
    }
    // The same query as a range query around `time`: its middle step must agree.
    let ranged = engine
        .range_query(store, query, time - 60_000, time + 60_000, 60_000)
        .map_err(|e| format!("range query failed: {query} at {time}ms: {e}"))?;
    if eval.ordered {
        return Ok(());
    }
    let Value::Matrix(m) = ranged.value else { return Err("range query did not return a matrix".into()) };
    if m.windows(2).any(|w| w[0].labels > w[1].labels) {
        return Err(format!("range query result is not sorted by labels: {query}"));
    }
    let mid: Vec<Sample> = m
        .iter()
        .filter_map(|s| {
            s.points.iter().find(|p| p.t == time).map(|p| Sample {
                labels: s.labels.clone(),
                t: time,
                v: p.v,
            })
        })
        .collect();
    let value = match eval.result {
        ExpectedResult::Scalar(_) => match mid.first() {
            Some(s) => Value::Scalar { t: time, v: s.v },
            None => Value::Vector(mid),
        },
        _ => Value::Vector(mid),
    };
    compare(eval, &value, None).map_err(|e| format!("in range mode at {time}ms: {query}\n{e}"))
}

/// Checks errors and annotations, then the value with `compare`.
fn check_outcome(
    eval: &Eval,
    query: &str,
    result: Result<QueryResult, EvalError>,
    compare: impl FnOnce(&Value) -> Result<(), String>,
) -> Result<(), String> {
    let result = match (result, &eval.expect_fail) {
        (Err(e), Some(m)) => {
            return if message_matches(m, &e.to_string()) {
                Ok(())
            } else {
                Err(format!("expected error matching {m:?}, got: {e}"))
            }
        }
        (Err(e), None) => return Err(format!("unexpected error: {query}: {e}")),
        (Ok(_), Some(m)) => return Err(format!("expected error {m:?} but got none: {query}")),
        (Ok(r), None) => r,
    };
    check_annotations(eval, query, &result)?;
    compare(&result.value)
}

fn message_matches(m: &MessageMatch, msg: &str) -> bool {
    match m {
        MessageMatch::Any => true,
        MessageMatch::Exact(s) => s.trim() == msg.trim(),
        MessageMatch::Regex(re) => regex::Regex::new(re).map(|re| re.is_match(msg)).unwrap_or(false),
    }
}

/// Annotations are checked only when the eval has expectations about them.
fn check_annotations(eval: &Eval, query: &str, result: &QueryResult) -> Result<(), String> {
    if eval.annotations.is_empty() {
        return Ok(());
    }
    let rendered: Vec<(AnnotationKind, String)> =
        result.annotations.iter().map(|a| (a.kind, a.render(query))).collect();
    for kind in [AnnotationKind::Warning, AnnotationKind::Info] {
        let (want_kind, none_kind) = match kind {
            AnnotationKind::Warning => (AnnotationKindExpect::Warn, AnnotationKindExpect::NoWarn),
            AnnotationKind::Info => (AnnotationKindExpect::Info, AnnotationKindExpect::NoInfo),
        };
        let expectations: Vec<&AnnotationExpectation> =
            eval.annotations.iter().filter(|a| a.kind == want_kind).collect();
        let got: Vec<&String> = rendered.iter().filter(|(k, _)| *k == kind).map(|(_, m)| m).collect();
        if eval.annotations.iter().any(|a| a.kind == none_kind) && !got.is_empty() {
            return Err(format!("annotation: expected no {want_kind:?} annotations, got {got:?}"));
        }
        for exp in &expectations {
            if !got.iter().any(|m| message_matches(&exp.message, m)) {
                return Err(format!(
                    "annotation: expected {want_kind:?} matching {:?}, got {got:?}",
                    exp.message
                ));
            }
        }
        if !expectations.is_empty() {
            if let Some(extra) =
                got.iter().find(|m| !expectations.iter().any(|e| message_matches(&e.message, m)))
            {
                return Err(format!("annotation: unexpected {want_kind:?} annotation {extra:?}"));
            }
        }
    }
    Ok(())
}

/// Compares a value with the eval's expected result; `range` is `(start, step)` of a
/// range eval.
fn compare(eval: &Eval, value: &Value, range: Option<(Timestamp, i64)>) -> Result<(), String> {
    match (&eval.result, value) {
        (ExpectedResult::Scalar(want), Value::Scalar { v, .. }) => {
            if almost_equal(*want, *v, 1e-6) {
                Ok(())
            } else {
                Err(format!("expected scalar {want} but got {v}"))
            }
        }
        (ExpectedResult::String(want), Value::String { v, .. }) => {
            if want == v {
                Ok(())
            } else {
                Err(format!("expected string {want:?} but got {v:?}"))
            }
        }
        (ExpectedResult::Empty, Value::Vector(v)) if v.is_empty() => Ok(()),
        (ExpectedResult::Empty, Value::Matrix(m)) if m.is_empty() => Ok(()),
        (ExpectedResult::Empty | ExpectedResult::Vector(_), Value::Vector(got)) if range.is_none() => {
            let want: &[ExpectedSeries] = match &eval.result {
                ExpectedResult::Vector(w) => w,
                _ => &[],
            };
            compare_vector(want, got, eval.ordered)
        }
        (ExpectedResult::Empty | ExpectedResult::Matrix { .. }, Value::Matrix(got)) => {
            let (want, start, step) = match (&eval.result, range) {
                (ExpectedResult::Matrix { series, start, step, .. }, _) => (series.as_slice(), *start, *step),
                (_, Some((start, step))) => (&[][..], start, step),
                _ => (&[][..], 0, 0),
            };
            compare_matrix(want, got, start, step)
        }
        (want, got) => Err(format!("expected {}, got {}", describe_expected(want), describe_value(got))),
    }
}

fn describe_expected(e: &ExpectedResult) -> &'static str {
    match e {
        ExpectedResult::Empty => "an empty result",
        ExpectedResult::Scalar(_) => "a scalar",
        ExpectedResult::String(_) => "a string",
        ExpectedResult::Vector(_) => "an instant vector",
        ExpectedResult::Matrix { .. } => "a range vector",
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Scalar { v, .. } => format!("scalar {v}"),
        Value::String { v, .. } => format!("string {v:?}"),
        Value::Vector(s) => format!("instant vector of {} series:\n{}", s.len(), format_vector(s)),
        Value::Matrix(m) => format!("range vector of {} series:\n{}", m.len(), format_matrix(m)),
    }
}

fn format_vector(v: &[Sample]) -> String {
    let mut out = String::new();
    for s in v {
        let _ = writeln!(out, "  {} {}", s.labels, s.v);
    }
    out
}

fn format_matrix(m: &[Series]) -> String {
    let mut out = String::new();
    for s in m {
        let points: Vec<String> = s.points.iter().map(|p| format!("{}@{}", p.v, p.t)).collect();
        let _ = writeln!(out, "  {} {}", s.labels, points.join(" "));
    }
    out
}

fn compare_vector(want: &[ExpectedSeries], got: &[Sample], ordered: bool) -> Result<(), String> {
    let fail = |why: String| {
        let expected: Vec<String> = want
            .iter()
            .map(|w| format!("  {} {:?}", w.labels, w.values.first().copied().flatten()))
            .collect();
        Err(format!("{why}\nexpected:\n{}\ngot:\n{}", expected.join("\n"), format_vector(got)))
    };
    if want.len() != got.len() {
        return fail(format!("expected {} samples, got {}", want.len(), got.len()));
    }
    let by_labels: HashMap<&Labels, (usize, &Sample)> =
        got.iter().enumerate().map(|(i, s)| (&s.labels, (i, s))).collect();
    for (i, w) in want.iter().enumerate() {
        let Some(&(pos, s)) = by_labels.get(&w.labels) else {
            return fail(format!("missing series {}", w.labels));
        };
        if ordered && pos != i {
            return fail(format!("series {} at position {pos}, expected {i}", w.labels));
        }
        match w.values.first().copied().flatten() {
            Some(v) if almost_equal(v, s.v, 1e-6) => {}
            Some(v) => return fail(format!("series {}: expected {v}, got {}", w.labels, s.v)),
            None => return fail(format!("series {}: expected no value", w.labels)),
        }
    }
    Ok(())
}

fn compare_matrix(
    want: &[ExpectedSeries],
    got: &[Series],
    start: Timestamp,
    step: i64,
) -> Result<(), String> {
    let fail = |why: String| {
        let expected: Vec<String> = want.iter().map(|w| format!("  {} {:?}", w.labels, w.values)).collect();
        Err(format!("{why}\nexpected:\n{}\ngot:\n{}", expected.join("\n"), format_matrix(got)))
    };
    if got.windows(2).any(|w| w[0].labels > w[1].labels) {
        return fail("result is not sorted by labels".into());
    }
    if want.len() != got.len() {
        return fail(format!("expected {} series, got {}", want.len(), got.len()));
    }
    let by_labels: HashMap<&Labels, &Series> = got.iter().map(|s| (&s.labels, s)).collect();
    for w in want {
        let Some(s) = by_labels.get(&w.labels) else {
            return fail(format!("missing series {}", w.labels));
        };
        let expected: Vec<(Timestamp, f64)> = w
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (start + i as i64 * step, v)))
            .collect();
        if expected.len() != s.points.len() {
            return fail(format!(
                "series {}: expected {} points, got {}",
                w.labels,
                expected.len(),
                s.points.len()
            ));
        }
        for ((t, v), p) in expected.iter().zip(&s.points) {
            if *t != p.t || !almost_equal(*v, p.v, 1e-6) {
                return fail(format!("series {}: expected {v}@{t}, got {}@{}", w.labels, p.v, p.t));
            }
        }
    }
    Ok(())
}
