//! Test support: the shared fixture generator and a real Prometheus on 127.0.0.1.
//!
//! Tests fail, never skip, when a component is missing: `scripts/test` installs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `../shared` beside the checkout (`SHARED_DIR` overrides; `PROMQLTEST_DIR/..` too).
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHARED_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("PROMQLTEST_DIR") {
        return PathBuf::from(d).join("..");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// A fresh, empty temporary directory for one test, removed when the test passes
/// (kept for a look when it fails).
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("promql-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// See [`temp_dir`]. Declared before what runs in it, it is dropped after.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
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

/// Writes an Istio-like OpenMetrics fixture with the shared generator: `workloads`
/// workloads of 2 pods, 20 minutes at 15 s, seed 1. Without pod restarts: after a
/// restart gap Prometheus 2.x and 3.x extrapolate `rate` differently (2.x clamps to the
/// zero point before the gap test), and the reference server here is 2.42.
pub fn istio_fixture(dir: &Path, workloads: u32) -> PathBuf {
    generate(dir, workloads, "0")
}

/// Like [`istio_fixture`], with the generator's default pod restarts (counter resets and
/// gaps): compare with 2.42 using `Compat::Prometheus2` (`--compat 2`).
pub fn istio_fixture_with_restarts(dir: &Path, workloads: u32) -> PathBuf {
    generate(dir, workloads, "0.1")
}

/// Like [`istio_fixture`], but the 20 minutes end two minutes from now: for servers
/// queried at the wall clock, as an autoscaler queries. Not reproducible.
pub fn istio_fixture_recent(dir: &Path, workloads: u32) -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    generate_from(dir, workloads, "0", &(now - 18 * 60).to_string())
}

fn generate(dir: &Path, workloads: u32, restart_prob: &str) -> PathBuf {
    generate_from(dir, workloads, restart_prob, "2024-01-01T00:00:00Z")
}

fn generate_from(dir: &Path, workloads: u32, restart_prob: &str, start: &str) -> PathBuf {
    let data = dir.join("istio.om");
    let generator = shared_dir().join("tools/gen_istio.py");
    run(
        Command::new("python3")
            .arg(&generator)
            .args(["-W", &workloads.to_string(), "-P", "2", "-M", "20", "-S", "15", "--seed", "1"])
            .args(["--restart-prob", restart_prob, "--start", start, "-o"])
            .arg(&data),
        "gen_istio.py",
    );
    data
}

/// The time range of a generated fixture, from its `.meta.json` sidecar (ms).
pub fn data_range(data: &Path) -> (i64, i64) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.with_extension("om.meta.json")).unwrap()).unwrap();
    let secs = |k: &str| meta[k].as_f64().unwrap_or_else(|| panic!("meta.json has no {k}: {meta}"));
    ((secs("start") * 1000.0) as i64, (secs("end") * 1000.0) as i64)
}

/// A Prometheus process, killed when dropped.
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

/// Backfills `data` with promtool into `dir/tsdb` and starts Debian's Prometheus on it,
/// on a free port of 127.0.0.1, with no scrape jobs. Waits until it answers queries.
pub fn start_prometheus(dir: &Path, data: &Path) -> Prometheus {
    let tsdb = dir.join("tsdb");
    run(
        Command::new("promtool").args(["tsdb", "create-blocks-from", "openmetrics"]).arg(data).arg(&tsdb),
        "promtool tsdb create-blocks-from openmetrics",
    );
    launch(dir, &tsdb)
}

/// Runs Prometheus on `tsdb` with no scrape jobs and waits until it answers queries.
fn launch(dir: &Path, tsdb: &Path) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
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
    wait_ready(&prom, port);
    prom
}

/// Waits until `promtool query instant` gets an answer: a real client, and no HTTP
/// written by hand.
fn wait_ready(prom: &Prometheus, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ok = Command::new("promtool")
            .args(["query", "instant", &format!("http://127.0.0.1:{port}"), "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("prometheus at {} not ready after 60s", prom.url);
}

/// Starts Debian's Prometheus with an empty TSDB in `dir/tsdb` and no scrape jobs, on
/// a free port of 127.0.0.1: an exporter of its own `/metrics`. Waits until it answers
/// queries.
pub fn start_prometheus_empty(dir: &Path) -> Prometheus {
    let tsdb = dir.join("tsdb");
    std::fs::create_dir_all(&tsdb).unwrap();
    launch(dir, &tsdb)
}
