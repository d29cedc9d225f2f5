//! Against a real Prometheus (Debian's 2.42, installed by `scripts/test`): an Istio-like
//! fixture is backfilled with `promtool`, Prometheus serves it on 127.0.0.1, and every
//! query evaluated here over samples fetched from its API must equal its own answer.
//! Without `prometheus`/`promtool` on the PATH the test fails; it never skips.

use promql::eval::Engine;
use promql::source::prometheus::{HttpOptions, PrometheusSource};
use promql::value::Value;
use proptest::prelude::*;
use testkit::{data_range, istio_fixture, start_prometheus, temp_dir};

use super::steps::{pick, RANGE_FUNCTIONS};

/// The Istio autoscaling queries, per workload and summed.
pub const ISTIO_QUERIES: [&str; 8] = [
    r#"sum(rate(istio_requests_total{destination_workload="svc-0000",destination_workload_namespace="test",reporter="destination"}[1m]))"#,
    r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{destination_workload="svc-0000",destination_workload_namespace="test",reporter="destination"}[1m])) by (le))"#,
    r#"sum(rate(istio_requests_total{destination_workload="svc-0000",destination_workload_namespace="test",reporter="destination",response_code=~"5.."}[1m]))"#,
    r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[1m]))"#,
    r#"histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[1m])))"#,
    r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination",response_code=~"5.."}[1m]))"#,
    r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination",response_code=~"5.."}[5m])) / sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[5m]))"#,
    r#"topk(3, sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[5m])))"#,
];

/// Same label sets and values within 1e-9 relative (NaN equals NaN).
pub fn assert_same(query: &str, ours: &Value, theirs: &Value) {
    if let Some(difference) = difference(ours, theirs) {
        panic!("{query}: {difference}");
    }
}

/// How `ours` differs from `theirs` beyond 1e-9 relative, if it does: label sets in
/// order (vectors sorted), then values.
pub fn difference(ours: &Value, theirs: &Value) -> Option<String> {
    difference_within(ours, theirs, 1e-9)
}

/// [`difference`] beyond `rtol` relative (0: values equal, NaN equal to NaN).
pub fn difference_within(ours: &Value, theirs: &Value, rtol: f64) -> Option<String> {
    let close =
        |a: f64, b: f64| (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= rtol * a.abs().max(b.abs());
    let sorted = |v: &[promql::value::Sample]| {
        let mut v: Vec<_> = v.iter().map(|s| (s.labels.clone(), s.v)).collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    match (ours, theirs) {
        (Value::Vector(a), Value::Vector(b)) => {
            let (a, b) = (sorted(a), sorted(b));
            if a.len() != b.len() {
                return Some(format!("{} series, theirs {}: ours {a:?}\ntheirs {b:?}", a.len(), b.len()));
            }
            a.iter().zip(&b).find_map(|((la, va), (lb, vb))| {
                (la != lb || !close(*va, *vb)).then(|| format!("ours {la} {va}, theirs {lb} {vb}"))
            })
        }
        (Value::Matrix(a), Value::Matrix(b)) => {
            if a.len() != b.len() {
                let labels =
                    |m: &[promql::value::Series]| m.iter().map(|s| s.labels.to_string()).collect::<Vec<_>>();
                return Some(format!(
                    "{} series, theirs {}: ours {:?}\ntheirs {:?}",
                    a.len(),
                    b.len(),
                    labels(a),
                    labels(b)
                ));
            }
            a.iter().zip(b).find_map(|(sa, sb)| {
                if sa.labels != sb.labels || sa.points.len() != sb.points.len() {
                    return Some(format!(
                        "ours {} ({} points), theirs {} ({} points)",
                        sa.labels,
                        sa.points.len(),
                        sb.labels,
                        sb.points.len()
                    ));
                }
                sa.points.iter().zip(&sb.points).find_map(|(pa, pb)| {
                    (pa.t != pb.t || !close(pa.v, pb.v)).then(|| {
                        format!("{}: ours {} at {}, theirs {} at {}", sa.labels, pa.v, pa.t, pb.v, pb.t)
                    })
                })
            })
        }
        (Value::Scalar { v: a, .. }, Value::Scalar { v: b, .. }) => {
            (!close(*a, *b)).then(|| format!("ours {a}, theirs {b}"))
        }
        _ => Some(format!("different result types: ours {ours:?}, theirs {theirs:?}")),
    }
}

#[test]
fn local_evaluation_over_fetched_samples_equals_prometheus() {
    let dir = temp_dir("prometheus-test");
    let data = istio_fixture(&dir, 4);
    let prom = start_prometheus(&dir, &data);
    let (_, end) = data_range(&data);
    // Whole seconds, as the generator's invariant wants, so 2.42's closed windows agree.
    let end = end / 1000 * 1000 - 60_000;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let source = PrometheusSource::new(&prom.url, HttpOptions::default()).unwrap();
    let engine = Engine::default();
    let mut compared = 0;
    for query in ISTIO_QUERIES {
        let expr = promql::parse(query).unwrap();
        for (start, stop, step) in [(end, end, 0), (end - 600_000, end, 15_000)] {
            let plan = engine.plan(&expr, start, stop, step).unwrap();
            let store = runtime.block_on(source.fetch(&plan)).unwrap();
            let ours = engine.eval(&store, &expr, start, stop, step).unwrap().value;
            let theirs = if step == 0 {
                runtime.block_on(source.instant_query(query, end)).unwrap()
            } else {
                runtime.block_on(source.range_query(query, start, stop, step)).unwrap()
            };
            if let Value::Vector(v) = &ours {
                assert!(!v.is_empty() || query.contains("5.."), "{query}: empty result");
            }
            assert_same(query, &ours, &theirs);
            compared += 1;
        }
    }
    println!("compared {compared} query results with Prometheus 2.42");
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same file loaded here gives Prometheus' answers; so does a recording of it made
/// through the API (record → write OpenMetrics → load → evaluate).
#[test]
fn fixture_and_recording_round_trip() {
    use promql::storage::{load_fixture, write_openmetrics, MemoryStore};
    let dir = temp_dir("record-test");
    let data = istio_fixture(&dir, 3);
    let prom = start_prometheus(&dir, &data);
    let (start, end) = data_range(&data);
    let at = end / 1000 * 1000 - 60_000;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let source = PrometheusSource::new(&prom.url, HttpOptions::default()).unwrap();

    let mut fixture = MemoryStore::new();
    load_fixture(&data, None, &mut fixture, 50_000_000).unwrap();

    let selectors =
        ["istio_requests_total".to_owned(), "istio_request_duration_milliseconds_bucket".to_owned()];
    let recorded = runtime.block_on(source.record(&selectors, start, end)).unwrap();
    let out = dir.join("recorded.om");
    write_openmetrics(&recorded, &mut std::fs::File::create(&out).unwrap()).unwrap();
    let mut replayed = MemoryStore::new();
    load_fixture(&out, None, &mut replayed, 50_000_000).unwrap();
    assert_eq!(replayed.sample_count(), recorded.sample_count());

    let engine = Engine::default();
    for query in ISTIO_QUERIES {
        let theirs = runtime.block_on(source.instant_query(query, at)).unwrap();
        for store in [&fixture, &replayed] {
            let ours = engine.instant_query(store, query, at).unwrap().value;
            assert_same(query, &ours, &theirs);
        }
    }
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- generated queries against Prometheus ----

/// Queries over the Istio fixture, built from its metrics; `end` (ms) anchors `@`.
/// Left out are `predict_linear` with `@` (Prometheus issue 11708, README, "Comparing
/// with Prometheus 2"); `topk`/`bottomk` too, whose ties either may break; and, as 2.42
/// may add an aggregation's values in a Go map's order where it evaluates over steps,
/// `count_values` (labels of sums) and `sin`, which can turn the last bits that order
/// changes into large differences (`stddev`, `stdvar` and `%` are generated, and their
/// values compared where 2.42 keeps the order).
fn istio_query(end: i64) -> BoxedStrategy<String> {
    let at = format!(" @ {}", end / 1000 - 300);
    let selector = pick(&[
        r#"istio_requests_total{destination_workload="svc-0000"}"#,
        r#"istio_requests_total{destination_workload="svc-0003",response_code=~"5.."}"#,
        r#"istio_requests_total{reporter="source"}"#,
        "process_resident_memory_bytes",
        r#"process_resident_memory_bytes{namespace="test"}"#,
        r#"istio_request_duration_milliseconds_sum{destination_workload="svc-0002"}"#,
        r#"istio_request_duration_milliseconds_bucket{destination_workload="svc-0001",reporter="destination"}"#,
    ]);
    let modifier = prop_oneof![
        3 => Just(String::new()),
        1 => pick(&[" offset 5m", " offset -1m", " @ start()", " @ end()", " offset 90s"]),
        1 => Just(at),
    ];
    let range = pick(&["30s", "1m", "47s", "2m30s", "5m"]);
    let function = pick(&RANGE_FUNCTIONS);
    let windows = prop_oneof![
        5 => (function, selector.clone(), range.clone(), modifier.clone())
            .prop_map(|(f, s, r, m)| format!("{f}({s}[{r}]{m})")),
        1 => (selector.clone(), range.clone()).prop_map(|(s, r)| format!("predict_linear({s}[{r}], 60)")),
        1 => (selector.clone(), range, modifier.clone())
            .prop_map(|(s, r, m)| format!("quantile_over_time(0.75, {s}[{r}]{m})")),
    ];
    let leaf = prop_oneof![3 => windows, 1 => (selector, modifier).prop_map(|(s, m)| format!("{s}{m}"))];
    leaf.prop_recursive(3, 16, 2, |inner| {
        let scalar = prop_oneof![
            3 => pick(&["2", "0.5", "-1", "0", "time()"]),
            1 => inner.clone().prop_map(|v| format!("scalar({v})")),
        ];
        let grouping = pick(&["", " by (destination_workload)", " without (pod)", " by (le)", " by ()"]);
        let matching =
            pick(&["", " on (destination_workload)", " ignoring (pod)", " on (pod) group_left ()"]);
        prop_oneof![
            (
                pick(&["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"]),
                grouping.clone(),
                inner.clone()
            )
                .prop_map(|(a, g, v)| format!("{a}{g} ({v})")),
            (grouping, inner.clone()).prop_map(|(g, v)| format!("quantile{g} (0.9, {v})")),
            (
                inner.clone(),
                pick(&["+", "-", "*", "/", "%", "^", "atan2", ">", "<= bool", "and", "or", "unless"]),
                matching,
                inner.clone()
            )
                .prop_map(|(a, op, m, b)| {
                    let m = if ["and", "or", "unless"].contains(&op.as_str()) {
                        m.replace(" group_left ()", "")
                    } else {
                        m
                    };
                    format!("({a}) {op}{m} ({b})")
                }),
            (inner.clone(), pick(&["+", "*", "/", ">", "< bool", "atan2"]), scalar)
                .prop_map(|(v, op, s)| format!("({v}) {op} ({s})")),
            (
                pick(&[
                    "abs",
                    "ceil",
                    "sqrt",
                    "exp",
                    "ln",
                    "log10",
                    "sgn",
                    "timestamp",
                    "absent",
                    "-",
                    "tanh",
                    "hour",
                    "deg"
                ]),
                inner.clone()
            )
                .prop_map(|(f, v)| format!("{f}({v})")),
            inner.clone().prop_map(|v| format!(r#"label_replace({v}, "dst", "<$1>", "pod", "(.*)-.*")"#)),
            inner.clone().prop_map(|v| format!("clamp({v}, -1, 5e6)")),
            (
                pick(&["max_over_time", "avg_over_time", "rate", "count_over_time"]),
                inner.clone(),
                // Windows shorter than their step hold no inner step at some times.
                pick(&["[5m:1m]", "[2m:15s]", "[3m:]", "[20s:1m]", "[4m:30s] offset 1m"])
            )
                .prop_map(|(f, v, r)| format!("{f}(({v}){r})")),
            pick(&["0.5", "0.99"]).prop_map(|q| format!(
                "histogram_quantile({q}, sum by (le) (rate(istio_request_duration_milliseconds_bucket[1m])))"
            )),
        ]
    })
    .boxed()
}

/// Whether `e` holds a subquery.
fn has_subquery(e: &promql::Expr) -> bool {
    matches!(e, promql::Expr::Subquery(_)) || e.children().any(has_subquery)
}

/// Whether `e` holds a `stddev`/`stdvar` aggregation or a `%` over a sum or mean: where
/// their inputs' order changes, their last bits can grow into large differences.
fn magnifies_order(e: &promql::Expr) -> bool {
    use promql::ast::{AggregateOp, BinaryOp};
    use promql::Expr;
    fn sums(e: &Expr) -> bool {
        matches!(e, Expr::Aggregate(a) if matches!(a.op, AggregateOp::Sum | AggregateOp::Avg | AggregateOp::Stddev | AggregateOp::Stdvar))
            || e.children().any(sums)
    }
    let here = match e {
        Expr::Aggregate(a) => matches!(a.op, AggregateOp::Stddev | AggregateOp::Stdvar),
        Expr::Binary(b) => b.op == BinaryOp::Mod && sums(e),
        _ => false,
    };
    here || e.children().any(magnifies_order)
}

/// Generated queries (aggregations, joins, subqueries, `@`, offsets, functions; instant
/// and range, at times off the scrape grid) over the Istio fixture with pod restarts:
/// the engine under `Compat::Prometheus2` answers as Prometheus 2.42 does (instant
/// queries without subqueries bit for bit; where 2.42 may add in a Go map's order, within
/// 1e-9, or in series, times and NaNs only under `stddev`, `stdvar` or a `%` of sums), or
/// fails where it fails.
/// `PROMQL_PROMETHEUS_CASES` (default 300) and `PROMQL_PROMETHEUS_SEED` (default 1)
/// explore further; `scripts/differential` does the same through `serve`.
#[test]
fn generated_queries_equal_prometheus() {
    use promql::eval::{Compat, EngineOptions};
    use promql::storage::{load_fixture, MemoryStore};
    use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
    use std::cell::Cell;

    let dir = temp_dir("prometheus-generated");
    let data = testkit::istio_fixture_with_restarts(&dir, 4);
    let prom = start_prometheus(&dir, &data);
    let (start, end) = data_range(&data);
    let mut store = MemoryStore::new();
    load_fixture(&data, None, &mut store, usize::MAX).unwrap();
    let engine = Engine::new(EngineOptions { compat: Compat::Prometheus2, ..EngineOptions::default() });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let source = PrometheusSource::new(&prom.url, HttpOptions::default()).unwrap();

    let env =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let config = Config {
        cases: env("PROMQL_PROMETHEUS_CASES", 300) as u32,
        rng_seed: RngSeed::Fixed(env("PROMQL_PROMETHEUS_SEED", 1)),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let shape = (
        istio_query(end),
        prop::sample::select(vec![0i64, 1_000, 7_500, 60_000, 333_333, 601_001]),
        prop::sample::select(vec![7_000i64, 15_000, 61_500]),
        any::<bool>(),
        any::<bool>(),
    );
    // Times on one series' scrapes, 15 s apart: windows of whole multiples of 15 s then
    // start and end on samples, where closed and open window ends part.
    let scrape = store.series().map(|(_, points)| points[points.len() / 2].t).next().unwrap();
    let (compared, failed, loose) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let result = TestRunner::new(config).run(&shape, |(query, back, step, range, on_scrapes)| {
        let (from, to, step) = match (range, on_scrapes) {
            (true, false) => (start + 300_000, end - back, step),
            (true, true) => (scrape - 300_000, scrape + 150_000, 15_000),
            (false, false) => (end - back, end - back, 0),
            (false, true) => (scrape + 60_000, scrape + 60_000, 0),
        };
        let parsed = promql::parse(&query).map_err(|e| TestCaseError::fail(format!("{query}: {e}")))?;
        let ours = engine.eval(&store, &parsed, from, to, step);
        let theirs = if step == 0 {
            runtime.block_on(source.instant_query(&query, to))
        } else {
            runtime.block_on(source.range_query(&query, from, to, step))
        };
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => {
                // An instant query's aggregations add in 2.42's order, as 2.x adds:
                // the same bits. Where 2.42 evaluates over steps (a range query, a
                // subquery) it may add in a Go map's order (`scripts/differential`
                // asks it again to show that).
                let in_order = step == 0 && !has_subquery(&parsed);
                // `stddev`/`stdvar` aggregations and a `%` over a sum or mean can turn a
                // last bit that order changes into a large difference: where the order
                // may be a Go map's, only the series, times and NaNs are compared.
                let rtol = match (in_order, magnifies_order(&parsed)) {
                    (true, _) => 0.0,
                    (false, false) => 1e-9,
                    (false, true) => {
                        loose.set(loose.get() + 1);
                        f64::INFINITY
                    }
                };
                if let Some(difference) = difference_within(&ours.value, &theirs, rtol) {
                    return Err(TestCaseError::fail(format!(
                        "{query} ({from}..{to} step {step}): {difference}"
                    )));
                }
                compared.set(compared.get() + 1);
            }
            (Err(_), Err(_)) => failed.set(failed.get() + 1),
            (ours, theirs) => {
                return Err(TestCaseError::fail(format!(
                    "{query} ({from}..{to} step {step}): ours {:?}, theirs {:?}",
                    ours.map(|r| r.value),
                    theirs
                )))
            }
        }
        Ok(())
    });
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "{} generated queries equal Prometheus 2.42's answers ({} of them in series, times and \
         NaNs only); {} failed on both sides",
        compared.get(),
        loose.get(),
        failed.get()
    );
    assert!(loose.get() * 4 < compared.get(), "too many answers compared loosely");
    // Most generated queries are valid: a generator gone wrong would compare nothing.
    assert!(compared.get() > failed.get(), "too few queries succeeded to compare");
}
