//! Against a real Prometheus (Debian's 2.42, installed by `scripts/test`): an Istio-like
//! fixture is backfilled with `promtool`, Prometheus serves it on 127.0.0.1, and every
//! query evaluated here over samples fetched from its API must equal its own answer.
//! Without `prometheus`/`promtool` on the PATH the test fails; it never skips.

use promql::eval::Engine;
use promql::source::prometheus::{HttpOptions, PrometheusSource};
use promql::value::Value;
use testkit::{data_range, istio_fixture, start_prometheus, temp_dir};

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
    let close =
        |a: f64, b: f64| (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    match (ours, theirs) {
        (Value::Vector(a), Value::Vector(b)) => {
            let mut a: Vec<_> = a.iter().map(|s| (s.labels.clone(), s.v)).collect();
            let mut b: Vec<_> = b.iter().map(|s| (s.labels.clone(), s.v)).collect();
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(a.len(), b.len(), "{query}: ours {a:?}\ntheirs {b:?}");
            for ((la, va), (lb, vb)) in a.iter().zip(&b) {
                assert_eq!(la, lb, "{query}");
                assert!(close(*va, *vb), "{query}: {la}: ours {va}, theirs {vb}");
            }
        }
        (Value::Matrix(a), Value::Matrix(b)) => {
            assert_eq!(a.len(), b.len(), "{query}: series count");
            for (sa, sb) in a.iter().zip(b) {
                assert_eq!(sa.labels, sb.labels, "{query}");
                assert_eq!(sa.points.len(), sb.points.len(), "{query}: {} points", sa.labels);
                for (pa, pb) in sa.points.iter().zip(&sb.points) {
                    assert_eq!(pa.t, pb.t, "{query}: {}", sa.labels);
                    assert!(
                        close(pa.v, pb.v),
                        "{query}: {} at {}: ours {}, theirs {}",
                        sa.labels,
                        pa.t,
                        pa.v,
                        pb.v
                    );
                }
            }
        }
        (Value::Scalar { v: a, .. }, Value::Scalar { v: b, .. }) => {
            assert!(close(*a, *b), "{query}: {a} vs {b}")
        }
        _ => panic!("{query}: different result types: ours {ours:?}, theirs {theirs:?}"),
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
