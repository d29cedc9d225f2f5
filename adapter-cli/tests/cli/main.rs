//! The `promql-cli` binary, run as users run it. One integration binary:
//! - parse: canonical output, errors with caret, exit codes;
//! - test: promqltest scripts, census lines, baselines, one case by FILE:LINE;
//! - query: fixtures and a real Prometheus, JSON golden files (`PROMQL_BLESS=1` rewrites);
//! - record: a recording replays to the same answers;
//! - serve: promtool and qbench.py against `serve` and a real Prometheus on the same data.

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

/// `promql-cli serve` as a child process; SIGTERM on drop.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    /// Serves `data` with Prometheus 2 semantics (`--compat 2`), to compare with 2.42.
    fn start(data: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_promql-cli"))
            .args(["serve", "--compat", "2", "--data", data.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Made before waiting, so that a failure below kills the child on drop.
        let server = Server { child, url: format!("http://127.0.0.1:{port}") };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("serve did not listen on {}", server.url);
    }

    /// SIGTERM, then the exit status and what it wrote to stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn promtool(args: &[&str]) -> String {
    let o = Command::new("promtool").args(args).output().expect("promtool (scripts/test installs it)");
    assert!(o.status.success(), "promtool {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// The same promtool output up to the last bits of floats: 3.x sums with Kahan
/// compensation, 2.42 naively. Numbers within 1e-9 relative count as equal.
fn same_numbers(ours: &str, theirs: &str) {
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| c.is_whitespace() || c == '@' || c == '[' || c == ']').map(str::to_owned).collect()
    };
    let (a, b) = (split(ours), split(theirs));
    assert_eq!(a.len(), b.len(), "ours:\n{ours}\ntheirs:\n{theirs}");
    for (x, y) in a.iter().zip(&b) {
        match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => {
                assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()), "ours:\n{ours}\ntheirs:\n{theirs}")
            }
            _ => assert_eq!(x, y, "ours:\n{ours}\ntheirs:\n{theirs}"),
        }
    }
}

/// The body of `/api/v1/query` as sent.
fn api_text(base: &str, query: &str, time: &str) -> String {
    let params = [("query", query), ("time", time)];
    http_get(&format!("{base}/api/v1/query?{}", serde_urlencoded::to_string(params).unwrap()))
}

/// A GET's body, fetched by Python's standard library (the shared tools need Python
/// already).
fn http_get(url: &str) -> String {
    let fetch = "import sys, urllib.request\n\
        sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())";
    let o = Command::new("python3").args(["-c", fetch, url]).output().unwrap();
    assert!(o.status.success(), "{url}: {}", stderr(&o));
    stdout(&o)
}

/// The bodies of many GETs, in order, fetched by one Python process; error statuses'
/// bodies too (Prometheus answers a bad query with 400 and a JSON error).
fn http_get_all(urls: &[String]) -> Vec<String> {
    let fetch = "import sys, json, urllib.request, urllib.error\n\
        def get(u):\n\
        \x20   try:\n\
        \x20       return urllib.request.urlopen(u).read().decode()\n\
        \x20   except urllib.error.HTTPError as e:\n\
        \x20       return e.read().decode()\n\
        sys.stdout.write(json.dumps([get(u) for u in sys.argv[1:]]))";
    let o = Command::new("python3").args(["-c", fetch]).args(urls).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// Regexes as Go reads them, which Prometheus compiles: in `label_replace` (writing the
/// first group's capture) and in matchers, valid or not, against the answers of the
/// Prometheus beside `server`.
fn regexes_read_as_go_reads_them(prom: &str, server: &str) {
    let text = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut queries = Vec::new();
    for (pattern, subject) in [
        ("a\\Q.*\\E(b)", "a.*b"),
        ("a\\Q.*\\E(b)", "axxb"),
        ("a\\Q+", "a+"),
        (">)\\Q", "x"),
        ("a\\101(b)", "aAb"),
        ("a\\012(b)", "a\nb"),
        ("a\\1(b)", "a1b"),
        ("(a{,3})", "a{,3}"),
        ("{x}", "{x}"),
        ("a{2,}x{1,2}", "aaax"),
        ("a**", "aa"),
        ("a*?", "aa"),
        ("a*??", "aa"),
        ("a(?i)*b", "aaB"),
        ("[a[]", "["),
        ("[a&&b]", "&"),
        ("[]a]", "]"),
        ("[\\Q]\\E]", "]"),
        ("x\\<y\\>", "x<y>"),
        ("\\x{e9}|\\p{Greek}", "é"),
        ("a)|(b", "b"),
        ("\\d\\w\\s", "1a "),
        ("\\d", "٣"),
        ("(a(?U)+)(a*)", "aaa"),
        ("(?U)(a(?-U)+?)(a*)", "aaa"),
        ("(a(?i)(?m)*)b", "aab"),
        ("(a{2}){500}", "aa"),
        ("(a{2}){600}", "aa"),
        ("(a{2}|b){2}(c{4}){300}", "aa"),
    ] {
        let (pattern, subject) = (text(pattern), text(subject));
        queries.push(format!(
            r#"label_replace(label_replace(vector(1), "y", "{subject}", "", ""), "x", "[$1]", "y", "{pattern}")"#
        ));
    }
    // Prometheus 3 parses a matcher alone (as here): a `\Q` without `\E` quotes to the
    // pattern's end; 2.x quotes its wrapping too and refuses it. So the pattern of
    // the second column is asked of Prometheus.
    let mut theirs_for = Vec::new();
    for (pattern, as_3) in [
        ("50[0-3]", None),
        ("5..|2\\d\\d", None),
        ("\\Q503\\E", None),
        ("50\\063", None),
        ("5|)(", None),
        ("(?i)5{2}", None),
        ("5**", None),
        ("200|404|nope", None),
        ("\\Q503", Some("503")),
        ("\\Q50.", Some("50\\.")),
        ("(5{2}){501}", None),
    ] {
        for op in ["=~", "!~"] {
            let matcher = |p: &str| {
                format!(
                    r#"count by (response_code) (istio_requests_total{{response_code{op}"{}"}})"#,
                    text(p)
                )
            };
            theirs_for.push((queries.len(), matcher(as_3.unwrap_or(pattern))));
            queries.push(matcher(pattern));
        }
    }
    let url = |base: &str, q: &str| {
        let params = [("query", q), ("time", "1704067800")];
        format!("{base}/api/v1/query?{}", serde_urlencoded::to_string(params).unwrap())
    };
    let answers = |base: &str, queries: &[String]| -> Vec<serde_json::Value> {
        let urls: Vec<String> = queries.iter().map(|q| url(base, q)).collect();
        http_get_all(&urls).iter().map(|body| serde_json::from_str(body).unwrap()).collect()
    };
    let mut asked = queries.clone();
    for (i, query) in theirs_for {
        asked[i] = query;
    }
    let (ours, theirs) = (answers(server, &queries), answers(prom, &asked));
    for ((q, ours), theirs) in queries.iter().zip(ours).zip(theirs) {
        // Errors alike, in kind (their messages are each engine's own); answers equal.
        assert_eq!(ours["status"], theirs["status"], "{q}: {ours} against {theirs}");
        assert_eq!(ours["errorType"], theirs["errorType"], "{q}: {ours} against {theirs}");
        assert_eq!(ours["data"], theirs["data"], "{q}");
    }
}

/// Two long queries run, each offloaded by the engine through `block_in_place` on the
/// runtime worker that read it: the first alone, split over rayon's pool, the second
/// beside it, single-threaded. The small query runs in place.
/// Health checks answer while the first runs alone, and health checks and a small query
/// while the second runs.
#[test]
fn serve_answers_health_checks_while_long_queries_run() {
    use std::time::{Duration, Instant};
    let dir = testkit::temp_dir("cli-serve-busy");
    let data = testkit::istio_fixture(&dir, 4);
    let server = Server::start(&data);
    // About 1.1 million steps: a second in a release build, six in a debug one.
    let long = "count_over_time(sum(rate(istio_requests_total[1m]))[19m:1ms])";
    let start_long = || {
        let url = server.url.clone();
        let query = std::thread::spawn(move || {
            let body = api_text(&url, long, "2024-01-01T00:19:00Z");
            (Instant::now(), body)
        });
        // Time for it to be under way.
        std::thread::sleep(Duration::from_millis(200));
        query
    };
    let healthy = || {
        assert_eq!(http_get(&format!("{}/-/ready", server.url)), "Ready.\n");
        assert_eq!(http_get(&format!("{}/-/healthy", server.url)), "Healthy.\n");
    };
    let first = start_long();
    healthy();
    let answered_alone = Instant::now();
    let second = start_long();
    healthy();
    assert!(api_text(&server.url, "vector(1)", "0").contains(r#""value":[0,"1"]"#));
    let answered_beside = Instant::now();
    // Each phase is checked against the long query it ran beside: on a loaded machine
    // the first, split over the pool, may end before the second phase does.
    for (q, answered, what) in
        [(first, answered_alone, "the first, alone"), (second, answered_beside, "the second, beside it")]
    {
        let (done, body) = q.join().unwrap();
        assert!(body.contains(r#""value":[1704068340,"1122155"]"#), "{body}");
        assert!(done > answered, "{what} ended before the health checks it ran beside were answered");
    }
    let (status, err) = server.stop();
    assert!(status.success() && err.contains("shut down"), "{status}: {err}");
}

#[test]
fn serve_answers_like_prometheus() {
    let dir = testkit::temp_dir("cli-serve");
    // Pod restarts included: `--compat 2` must reproduce 2.42's extrapolation after gaps.
    let data = testkit::istio_fixture_with_restarts(&dir, 8);
    let prom = testkit::start_prometheus(&dir, &data);
    let server = Server::start(&data);
    let q = r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[1m]))"#;
    for url in [&prom.url, &server.url] {
        assert!(!promtool(&["query", "instant", "--time", "2024-01-01T00:19:00Z", url, q]).is_empty());
    }
    same_numbers(
        &promtool(&["query", "instant", "--time", "2024-01-01T00:19:00Z", &server.url, q]),
        &promtool(&["query", "instant", "--time", "2024-01-01T00:19:00Z", &prom.url, q]),
    );
    let range = [
        "query",
        "range",
        "--start",
        "2024-01-01T00:10:00Z",
        "--end",
        "2024-01-01T00:19:00Z",
        "--step",
        "1m",
    ];
    let ours: Vec<&str> = range.iter().copied().chain([server.url.as_str(), q]).collect();
    let theirs: Vec<&str> = range.iter().copied().chain([prom.url.as_str(), q]).collect();
    same_numbers(&promtool(&ours), &promtool(&theirs));

    // A large answer: evaluated and written after
    // the worker is handed over, each step's time text copied at every point.
    let big = "rate(istio_requests_total[1m])";
    let range = [
        "query",
        "range",
        "--start",
        "2024-01-01T00:05:00Z",
        "--end",
        "2024-01-01T00:19:00Z",
        "--step",
        "5s",
    ];
    let ours = promtool(&range.iter().copied().chain([server.url.as_str(), big]).collect::<Vec<_>>());
    let theirs = promtool(&range.iter().copied().chain([prom.url.as_str(), big]).collect::<Vec<_>>());
    // Over the 16,384 values `serve` writes without handing over.
    assert!(ours.matches('@').count() > 16_384, "{} values", ours.matches('@').count());
    same_numbers(&ours, &theirs);

    // Byte for byte where floats are halfway between two shortest decimals and where
    // times have milliseconds.
    for (query, time) in [
        ("vector(1690060720831323.25)", "1704070800.5"),
        (r#"count_values("v", vector(-80268389491067.125))"#, "1704070800"),
        ("233115890514796.125", "-0.05"),
        ("time()", "1704070800.25"),
    ] {
        assert_eq!(api_text(&server.url, query, time), api_text(&prom.url, query, time), "{query}");
    }

    // The metadata endpoints Grafana asks for variables and the query editor.
    for path in [
        "/api/v1/labels",
        "/api/v1/label/pod/values",
        "/api/v1/label/destination_workload/values?match[]=istio_requests_total%7Breporter%3D%22source%22%7D",
        "/api/v1/series?match[]=istio_requests_total%7Bdestination_workload%3D%22svc-0001%22%7D&match[]=up",
    ] {
        let json = |base: &str| -> serde_json::Value {
            serde_json::from_str(&http_get(&format!("{base}{path}"))).unwrap()
        };
        let (ours, theirs) = (json(&server.url), json(&prom.url));
        assert!(theirs["data"].as_array().is_some_and(|d| !d.is_empty()), "{path}: {theirs}");
        assert_eq!(ours, theirs, "{path}");
    }

    regexes_read_as_go_reads_them(&prom.url, &server.url);

    // Times far apart: their span must not wrap around and pass the points check.
    let far = [
        "start=-9000000000000000&end=9000000000000000&step=1000000",
        "start=-292273086-05-16T16:47:06Z&end=292277025-08-18T07:12:54.999999999Z&step=1000000000",
    ];
    let urls: Vec<String> =
        far.iter().map(|p| format!("{}/api/v1/query_range?query=vector(1)&{p}", server.url)).collect();
    for (body, params) in http_get_all(&urls).iter().zip(far) {
        assert!(
            body.contains("exceeded maximum resolution of 11,000 points"),
            "{params}: {}",
            &body[..body.len().min(200)]
        );
    }

    // The shared side-by-side tool: every query of the Istio set must match.
    let tools = testkit::shared_dir().join("tools");
    let o = Command::new("python3")
        .arg(tools.join("qbench.py"))
        .args(["--a", &prom.url, "--b", &server.url, "-n", "1", "--warmup", "0", "-q"])
        .arg(tools.join("queries/istio.txt"))
        .arg("--meta")
        .arg(data.with_extension("om.meta.json"))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success() && out.contains(" 0 mismatches"), "qbench: {out}\n{}", stderr(&o));

    let (status, err) = server.stop();
    assert!(status.success() && err.contains("shut down"), "{status}: {err}");
}
