//! The `promql-cli` binary, run as users run it. One integration binary:
//! - parse: canonical output, errors with caret, exit codes;
//! - test: promqltest scripts, census lines, baselines, one case by FILE:LINE;
//! - query: fixtures and a real Prometheus, JSON golden files (`PROMQL_BLESS=1` rewrites);
//! - record: a recording replays to the same answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promql-cli")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn parse_prints_canonical_form_or_caret() {
    let o = cli(&["parse", "sum by(job)(rate(x[5m]))"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "sum by (job) (rate(x[5m]))\n");

    let o = cli(&["parse", "sum(rate(x[5m])"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "1:16: parse error: unclosed left parenthesis\nsum(rate(x[5m])\n               ^\n"
    );

    let o = cli(&["parse", "--json", "up"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["type"], "vector_selector");

    let o = cli(&["--enable-feature=nonsense", "parse", "up"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown feature \"nonsense\""), "{}", stderr(&o));
}

const SCRIPT: &str = "load 1m
  up{job=\"a\"} 1 2 3

# passes
eval instant at 2m sum(up)
  {} 3

# fails: the value is 3
eval instant at 2m up
  up{job=\"a\"} 4
";

#[test]
fn test_command_reports_per_file_and_total() {
    let dir = testkit::temp_dir("cli-test");
    let script = dir.join("mini.test");
    std::fs::write(&script, SCRIPT).unwrap();
    let path = script.to_str().unwrap();

    let o = cli(&["test", path]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), format!("{path}: 1 passed, 1 failed\n1 passed, 1 failed\n"));

    let baseline = dir.join("baseline.txt");
    std::fs::write(&baseline, "mini.test:9 wrong result\n").unwrap();
    let o = cli(&["test", "--baseline", baseline.to_str().unwrap(), path]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    let o = cli(&["test", &format!("{path}:9")]);
    let out = stdout(&o);
    assert!(out.contains("FAIL up") && out.contains("expected 4, got 3"), "{out}");
    let o = cli(&["test", &format!("{path}:5")]);
    assert!(stdout(&o).contains("PASS sum(up)"), "{}", stdout(&o));
    let o = cli(&["test", &format!("{path}:6")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Queries of the golden test, evaluated at 00:19 on the fixture's day.
const GOLDEN: [(&str, &str); 4] = [
    (
        "rps_by_workload",
        r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[1m]))"#,
    ),
    (
        "p99_by_workload",
        r#"histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[1m])))"#,
    ),
    (
        "error_ratio",
        r#"sum(rate(istio_requests_total{response_code=~"5.."}[5m])) / sum(rate(istio_requests_total[5m]))"#,
    ),
    ("memory", r#"max by (namespace) (max_over_time(process_resident_memory_bytes[10m]))"#),
];

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.json"))
}

fn check_golden(name: &str, got: &str) {
    let path = golden_path(name);
    if std::env::var_os("PROMQL_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PROMQL_BLESS=1 writes it)", path.display()));
    assert_eq!(got, want, "{name} differs from {} (PROMQL_BLESS=1 rewrites it)", path.display());
}

fn query_json(source: &[&str], query: &str) -> String {
    let mut args = vec!["query"];
    args.extend_from_slice(source);
    args.extend_from_slice(&["--time", "2024-01-01T00:19:00Z", "--format", "json", query]);
    let o = cli(&args);
    assert_eq!(o.status.code(), Some(0), "{query}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn query_over_fixture_matches_golden_files_and_prometheus() {
    let dir = testkit::temp_dir("cli-query");
    let data = testkit::istio_fixture(&dir, 4);
    let data_arg = data.to_str().unwrap();
    let prom = testkit::start_prometheus(&dir, &data);
    for (name, query) in GOLDEN {
        let local = query_json(&["--data", data_arg], query);
        check_golden(name, &local);
        // The same answer from samples fetched from Prometheus.
        assert_eq!(query_json(&["--prometheus", &prom.url], query), local, "{name}");
    }
    // Record the counters through the API and replay them offline.
    let recorded = dir.join("recorded.om");
    let o = cli(&[
        "record",
        "--prometheus",
        &prom.url,
        "--match",
        "istio_requests_total",
        "--start",
        "2024-01-01T00:00:00Z",
        "--end",
        "2024-01-01T00:20:00Z",
        "--out",
        recorded.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        query_json(&["--data", recorded.to_str().unwrap()], GOLDEN[0].1),
        query_json(&["--data", data_arg], GOLDEN[0].1)
    );
    bad_input(&dir);
}

/// Unreadable data and bad flags are errors with the file and line, never panics.
fn bad_input(dir: &Path) {
    let bad = dir.join("bad.prom");
    std::fs::write(&bad, "up{job=\"a\"} 1 1000\nup{job=\"b\" 2 2000\n").unwrap();
    let o = cli(&["query", "--data", bad.to_str().unwrap(), "up"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.prom: line 2"), "{}", stderr(&o));
    let o = cli(&["query", "--data", bad.to_str().unwrap(), "--time", "yesterday", "up"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad time \"yesterday\""), "{}", stderr(&o));
    let o = cli(&["query", "--prometheus", "http://127.0.0.1:1", "up"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
