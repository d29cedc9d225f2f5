//! A range query is its instant queries, one per step: Prometheus evaluates both the
//! same way, bit for bit. This engine does not: range queries take sliding windows,
//! per-series cursors, fused aggregations and memos kept across steps, instant queries
//! one-pass windows and in-place paths. Generated queries over a small store with
//! resets, gaps, stale markers, NaN and an info metric must agree at every step.
//!
//! `PROMQL_STEP_CASES` sets the number of generated queries (default 300).

use promql::eval::Offload;
use promql::eval::{Compat, Engine, EngineOptions};
use promql::storage::{load_reader, FixtureFormat, MemoryStore};
use promql::value::Value;
use promql::Features;
use promql::Labels;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const DATA: &str = r#"
load 15s
  a_total{job="x",inst="1"} 0+10x40 5+10x20 _ _ _ 100+1x20
  a_total{job="x",inst="2"} 1+2x30 stale 3+3x40
  a_total{job="y",inst="1"} 0+0.3x80
  a_total{job="y",inst="3"} _x20 7+1.5x30 0+2x10
  g{job="x",inst="1"} 5-1x30 Inf -Inf 2 NaN 1+0.25x40
  g{job="y",inst="2"} 1e10+3x20 _x10 -3+0.1x40 stale 4x10
  g{job="y",inst="3"} 0.1x90
  h_bucket{job="x",le="0.1"} 0+1x90
  h_bucket{job="x",le="1"} 0+3x90
  h_bucket{job="x",le="+Inf"} 0+4x90
  h_bucket{job="y",le="0.5"} 0+2x45 0+1x45
  h_bucket{job="y",le="+Inf"} 0+5x45 0+2x45
  info{job="x",version="1"} 1x40
  info{job="x",version="2"} _x40 1x50
  info{job="y",version="1"} 1x90

load 7s
  u_total{job="x",inst="1"} 0+3x100 1+1x90
  u_total{job="y",inst="9"} _x50 2+7x140
"#;

/// The store's samples run from 0 to about 22 minutes.
const END_MS: i64 = 1_330_000;

fn store() -> MemoryStore {
    let mut store = MemoryStore::new();
    load_reader(DATA.as_bytes(), FixtureFormat::PromqlTest, &mut store, 1_000_000).unwrap();
    store
}

// ---- generators of well-typed queries over the store ----

pub(crate) fn pick(items: &[&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(items.to_vec()).prop_map(str::to_owned).boxed()
}

fn selector() -> BoxedStrategy<String> {
    let name = pick(&[
        "a_total",
        r#"a_total{job="x"}"#,
        r#"a_total{inst!="2"}"#,
        "g",
        r#"g{inst=~"1|3"}"#,
        r#"{__name__=~"a_total|u_total"}"#,
        "u_total",
        "h_bucket",
        r#"info{job="x"}"#,
    ]);
    let modifier = pick(&["", "", "", " offset 1m", " offset -45s", " @ 600", " @ 601.5 offset 30s"]);
    (name, modifier).prop_map(|(n, m)| format!("{n}{m}")).boxed()
}

fn range() -> BoxedStrategy<String> {
    pick(&["30s", "1m", "47s", "2m30s", "5m", "1m1ms"])
}

/// Range functions that Prometheus 2.42 and 3 both have and compute alike.
pub(crate) const RANGE_FUNCTIONS: [&str; 16] = [
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "count_over_time",
    "last_over_time",
    "present_over_time",
    "changes",
    "resets",
    "absent_over_time",
];

fn range_function() -> BoxedStrategy<String> {
    let more = [
        "stddev_over_time",
        "stdvar_over_time",
        // Experimental (the engine with all features only).
        "mad_over_time",
        "first_over_time",
        "ts_of_max_over_time",
        "ts_of_last_over_time",
    ];
    let f = pick(&[&RANGE_FUNCTIONS[..], &more[..]].concat());
    // `anchored` and `smoothed` (experimental) take `rate`, `increase`, `delta` only.
    let modifier = pick(&["", "", "", " offset 1m", " @ 900", " anchored", " smoothed"]);
    prop_oneof![
        6 => (f, selector(), range(), modifier).prop_map(|(f, s, r, m)| {
            // A selector's own `offset`/`@` go after the range.
            match s.find(' ') {
                Some(at) => format!("{f}({}[{r}]{})", &s[..at], &s[at..]),
                None => format!("{f}({s}[{r}]{m})"),
            }
        }),
        1 => (selector(), range()).prop_map(|(s, r)| match s.find(' ') {
            Some(at) => format!("quantile_over_time(0.75, {}[{r}]{})", &s[..at], &s[at..]),
            None => format!("quantile_over_time(0.75, {s}[{r}])"),
        }),
        1 => (selector(), range()).prop_map(|(s, r)| match s.find(' ') {
            Some(at) => format!("predict_linear({}[{r}]{}, 60)", &s[..at], &s[at..]),
            None => format!("predict_linear({s}[{r}], 120)"),
        }),
        // Experimental; factors out of range are an error at a step with series.
        1 => (selector(), range(), pick(&["0.5, 0.5", "0.1, 0.9", "0.3, 1"])).prop_map(|(s, r, f)| match s.find(' ') {
            Some(at) => format!("double_exponential_smoothing({}[{r}]{}, {f})", &s[..at], &s[at..]),
            None => format!("double_exponential_smoothing({s}[{r}], {f})"),
        }),
    ]
    .boxed()
}

fn scalar_leaf() -> BoxedStrategy<String> {
    pick(&["2", "0.5", "-1", "0", "time()", "NaN", "Inf", "1e-300"])
}

fn grouping() -> BoxedStrategy<String> {
    pick(&["", " by (job)", " without (inst)", " by (le)", " by (job, le)", " without ()", " by ()"])
}

fn matching() -> BoxedStrategy<String> {
    // The empty lists keep a parenthesised right operand from reading as one.
    pick(&[
        "",
        "",
        " on (job)",
        " ignoring (inst)",
        " on (job) group_left ()",
        " on (job, inst) group_right ()",
        // Experimental.
        " fill(0)",
        " on (job, inst) fill_left(-1) fill_right(NaN)",
        " ignoring (inst) group_left () fill_right(2)",
    ])
}

fn vector() -> BoxedStrategy<String> {
    let leaf = prop_oneof![3 => range_function(), 2 => selector()];
    leaf.prop_recursive(4, 24, 3, |inner| {
        let scalar = prop_oneof![
            3 => scalar_leaf(),
            1 => inner.clone().prop_map(|v| format!("scalar({v})")),
        ];
        prop_oneof![
            // Aggregations.
            (
                pick(&["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"]),
                grouping(),
                inner.clone()
            )
                .prop_map(|(a, g, v)| format!("{a}{g} ({v})")),
            (
                pick(&[
                    "topk(2, ",
                    "bottomk(1, ",
                    "quantile(0.9, ",
                    "count_values(\"value\", ",
                    "limitk(2, ",
                    "limit_ratio(0.5, "
                ]),
                grouping(),
                inner.clone()
            )
                .prop_map(|(a, g, v)| {
                    let (name, param) = a.split_once('(').unwrap_or((&a, ""));
                    format!("{name}{g} ({param}{v})")
                }),
            // Binary operators between vectors and with scalars.
            (
                inner.clone(),
                pick(&["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<=", "> bool", "and", "or", "unless"]),
                matching(),
                inner.clone()
            )
                .prop_map(|(a, op, m, b)| {
                    // Set operators take no grouping or fill modifier.
                    let m = if ["and", "or", "unless"].contains(&op.as_str()) {
                        m.split(" group")
                            .next()
                            .unwrap_or_default()
                            .split(" fill")
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    } else {
                        m
                    };
                    format!("({a}) {op}{m} ({b})")
                }),
            (inner.clone(), pick(&["+", "*", "/", ">", "< bool", "atan2", "^"]), scalar.clone())
                .prop_map(|(v, op, s)| format!("({v}) {op} ({s})")),
            (scalar.clone(), pick(&["-", "/", ">=", "== bool"]), inner.clone())
                .prop_map(|(s, op, v)| format!("({s}) {op} ({v})")),
            // Functions of a vector.
            (
                pick(&[
                    "abs",
                    "ceil",
                    "floor",
                    "round",
                    "sqrt",
                    "exp",
                    "ln",
                    "sgn",
                    "timestamp",
                    "sort",
                    "sort_desc",
                    "absent",
                    "-",
                    "sin",
                    "tanh",
                    "asinh",
                    "log10"
                ]),
                inner.clone()
            )
                .prop_map(|(f, v)| format!("{f}({v})")),
            inner.clone().prop_map(|v| format!("clamp({v}, -1, 50)")),
            inner.clone().prop_map(|v| format!(r#"label_replace({v}, "dst", "<$1>", "job", "(.*)")"#)),
            inner.clone().prop_map(|v| format!(r#"label_join({v}, "job", "-", "job", "inst")"#)),
            inner.clone().prop_map(|v| format!(r#"sort_by_label_desc({v}, "inst")"#)),
            scalar.clone().prop_map(|s| format!("vector({s})")),
            // Subqueries of the inner expression.
            (
                pick(&["max_over_time", "avg_over_time", "rate", "count_over_time"]),
                inner.clone(),
                // Shared inner steps, offsets, a fixed `@`, windows shorter than the step.
                pick(&[
                    "[5m:1m]",
                    "[2m:15s]",
                    "[3m:]",
                    "[1m:7s]",
                    "[4m:30s] offset 1m",
                    "[3m:20s] @ 400",
                    "[20s:1m]"
                ])
            )
                .prop_map(|(f, v, r)| format!("{f}(({v}){r})")),
        ]
    })
    .boxed()
}

fn query() -> BoxedStrategy<String> {
    prop_oneof![
        8 => vector(),
        1 => pick(&[
            "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
            "histogram_quantile(0.5, sum by (job, le) (rate(h_bucket[1m])))",
            "histogram_quantile(0.99, h_bucket)",
        ]),
        1 => vector().prop_map(|v| format!("scalar({v}) * 2")),
    ]
    .boxed()
}

// ---- the comparison ----

/// One step's answer: label set to value, as text.
fn step_answer(value: &Value, t: i64) -> BTreeMap<String, String> {
    // Rust's shortest text tells every float apart (and -0 from 0); NaNs are all alike.
    let key = |v: f64| format!("{v:?}");
    match value {
        Value::Scalar { v, .. } => BTreeMap::from([("{}".to_owned(), key(*v))]),
        Value::Vector(samples) => samples.iter().map(|s| (s.labels.to_string(), key(s.v))).collect(),
        Value::Matrix(series) => series
            .iter()
            .filter_map(|s| s.points.iter().find(|p| p.t == t).map(|p| (s.labels.to_string(), key(p.v))))
            .collect(),
        Value::String { .. } => panic!("no string queries are generated"),
    }
}

/// Whether the range query of `q` succeeded (and then agreed at every step).
fn agree(
    engine: &Engine,
    store: &MemoryStore,
    q: &str,
    start: i64,
    step: i64,
    steps: i64,
) -> Result<bool, TestCaseError> {
    let end = start + step * (steps - 1);
    // A range query fails as a whole where one of its steps fails: nothing to compare.
    let Ok(range) = engine.range_query(store, q, start, end, step) else { return Ok(false) };
    let Value::Matrix(series) = &range.value else {
        return Err(TestCaseError::fail(format!("{q}: a range query answered {:?}", range.value)));
    };
    for s in series {
        if let Some(p) = s.points.iter().find(|p| (p.t - start) % step != 0 || p.t < start || p.t > end) {
            return Err(TestCaseError::fail(format!("{q}: point at {} off the steps in {}", p.t, s.labels)));
        }
    }
    for i in 0..steps {
        let t = start + i * step;
        let instant = engine.instant_query(store, q, t).map_err(|e| {
            TestCaseError::fail(format!(
                "{q}: the range query succeeded, the instant query at {t} failed: {e}"
            ))
        })?;
        let (want, got) = (step_answer(&instant.value, t), step_answer(&range.value, t));
        if want != got {
            return Err(TestCaseError::fail(format!(
                "{q}\nrange {start}..{end} step {step}, at {t}:\n instant {want:?}\n range   {got:?}"
            )));
        }
    }
    Ok(true)
}

#[test]
fn range_queries_are_their_instant_queries() {
    let store = store();
    let engines = [
        Engine::new(EngineOptions::default()),
        Engine::new(EngineOptions { compat: Compat::Prometheus2, ..EngineOptions::default() }),
        Engine::new(EngineOptions { features: Features::all(), ..EngineOptions::default() }),
    ];
    let cases = std::env::var("PROMQL_STEP_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let shape = (
        query(),
        // Steps on sample times, where windows' ends meet samples, as often as not.
        prop_oneof![
            0..END_MS,
            (0..END_MS / 15_000).prop_map(|k| k * 15_000),
            (0..END_MS / 7_000).prop_map(|k| k * 7_000)
        ],
        prop::sample::select(vec![1_000i64, 7_000, 15_000, 60_000, 61_500, 300_000]),
        1..40i64,
        0..3usize,
    );
    let (generated, compared) = (Cell::new(0), Cell::new(0));
    let result = runner.run(&shape, |(q, start, step, steps, engine)| {
        generated.set(generated.get() + 1);
        let ok = agree(&engines[engine], &store, &q, start, step, steps)?;
        compared.set(compared.get() + usize::from(ok));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (generated, compared) = (generated.get(), compared.get());
    println!(
        "{generated} generated queries, {compared} compared at every step (the rest failed as range queries)"
    );
    // Most generated queries are valid: a generator gone wrong would compare nothing.
    assert!(compared * 2 > generated, "only {compared} of {generated} range queries succeeded");
}

/// Past the sizes at which work splits over the cores, fused aggregations take their
/// steps in blocks and queries stop being light (`promql::eval`'s `PARALLEL_SERIES`,
/// `SPLIT_WINDOWS`, `FUSED_BLOCK_CELLS`, `LIGHT_LOOKS`): 17,000 series of a counter
/// and a gauge, some steps of each query compared.
#[test]
fn large_range_queries_are_their_instant_queries() {
    let mut store = MemoryStore::new();
    for i in 0..17_000u32 {
        let (pod, ns) = (format!("p{i}"), format!("n{}", i % 7));
        let counter = Labels::from_pairs([("__name__", "c_total"), ("pod", &pod), ("ns", &ns)]);
        let gauge = Labels::from_pairs([("__name__", "m"), ("pod", &pod), ("ns", &ns)]);
        // Scrapes 15 s apart but offset per pod; a reset in some; pods that end early.
        let (offset, end) = (i64::from(i % 15) * 1000, if i % 11 == 0 { 300_000 } else { 600_000 });
        for k in 0..=(end - offset) / 15_000 {
            let t = offset + k * 15_000;
            let v = if i % 13 == 0 && k >= 20 { (k - 20) as f64 } else { (k * i64::from(i % 5 + 1)) as f64 };
            store.append(&counter, t, v);
            store.append(&gauge, t, f64::from(i % 100) + (k % 4) as f64 * 0.25);
        }
    }
    let offloaded = Arc::new(AtomicUsize::new(0));
    let counter = offloaded.clone();
    let offload = Offload::new(move |work| {
        counter.fetch_add(1, Ordering::Relaxed);
        work();
    });
    let engine = Engine::new(EngineOptions { offload: Some(offload), ..EngineOptions::default() });
    let (start, step, steps) = (120_000, 15_000, 34);
    for q in [
        "c_total",
        "rate(c_total[1m])",
        "sum by (ns) (rate(c_total[1m]))",
        "sum by (pod) (increase(c_total[2m]))",
        "avg_over_time(m[1m])",
        "sum by (ns) (m)",
        "count(m)",
        "m * 2",
        "c_total / on (pod, ns) m",
        "topk(3, rate(c_total[5m]))",
        "max by (ns) (m) - on (ns) group_right () min by (ns, pod) (m)",
    ] {
        let end = start + step * (steps - 1);
        let range = engine.range_query(&store, q, start, end, step).unwrap();
        // The first and last steps and those around a block of 32.
        for i in [0, 1, 30, 31, 32, 33] {
            let t = start + i * step;
            let instant = engine.instant_query(&store, q, t).unwrap();
            let (want, got) = (step_answer(&instant.value, t), step_answer(&range.value, t));
            assert!(!want.is_empty(), "{q} at {t}: nothing");
            if want != got {
                let differ: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(3).collect();
                panic!(
                    "{q} at {t}: {} instant answers, {} range answers; first differences {differ:?}",
                    want.len(),
                    got.len()
                );
            }
        }
    }
    assert!(offloaded.load(Ordering::Relaxed) > 0, "no query was heavy enough to offload");
}
