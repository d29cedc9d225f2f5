//! Against a real Prometheus (Debian's 2.42, installed by `scripts/test`): an Istio-like
//! fixture is backfilled with `promtool`, Prometheus serves it on 127.0.0.1, and every
//! query evaluated here over samples fetched from its API must equal its own answer.
//! Without `prometheus`/`promtool` on the PATH the test fails; it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promql::eval::Engine;
use promql::source::prometheus::{HttpOptions, PrometheusSource};
use promql::value::Value;

use super::corpus::promqltest_dir;

/// `../shared` beside the checkout (`SHARED_DIR` overrides).
fn shared_dir() -> PathBuf {
    match std::env::var_os("SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => promqltest_dir().join(".."),
    }
}

/// A Prometheus process that is killed when dropped.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e} (is it installed? scripts/test installs it)"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates the fixture with the shared generator, backfills it and starts Prometheus.
pub fn start_prometheus(dir: &Path, workloads: u32) -> (Prometheus, PathBuf) {
    let data = dir.join("istio.om");
    let generator = shared_dir().join("tools/gen_istio.py");
    run(
        // No pod restarts: after a restart gap Prometheus 2.x and 3.x extrapolate `rate`
        // differently (2.x clamps to the zero point before the gap test), and the
        // reference here is 2.42 while this engine implements 3.x.
        Command::new("python3")
            .arg(&generator)
            .args(["-W", &workloads.to_string(), "-P", "2", "-M", "20", "-S", "15", "--seed", "1"])
            .args(["--restart-prob", "0", "-o"])
            .arg(&data),
        "gen_istio.py",
    );
    let tsdb = dir.join("tsdb");
    run(
        Command::new("promtool").args(["tsdb", "create-blocks-from", "openmetrics"]).arg(&data).arg(&tsdb),
        "promtool tsdb create-blocks-from openmetrics",
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start prometheus: {e} (scripts/test installs Debian's prometheus)")
        });
    let prom = Prometheus { child, url: format!("http://127.0.0.1:{port}") };
    wait_ready(&prom.url);
    (prom, data)
}

fn wait_ready(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let source = PrometheusSource::new(url, HttpOptions { retries: 0, ..HttpOptions::default() }).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if runtime.block_on(source.instant_query("1", 0)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("prometheus at {url} not ready after 60s");
}

/// The time range of the generated data, from its `.meta.json` sidecar (ms).
pub fn data_range(data: &Path) -> (i64, i64) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.with_extension("om.meta.json")).unwrap()).unwrap();
    let secs = |k: &str| meta[k].as_f64().unwrap_or_else(|| panic!("meta.json has no {k}: {meta}"));
    ((secs("start") * 1000.0) as i64, (secs("end") * 1000.0) as i64)
}

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
    let dir = std::env::temp_dir().join(format!("promql-prometheus-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (prom, data) = start_prometheus(&dir, 4);
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
