//! `extmetrics-adapter` end to end: a real Prometheus 2.42 (Debian's, installed by
//! `scripts/test`), the adapter binary over HTTPS with front-proxy client certificates,
//! and `kubectl get --raw` as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_extmetrics::quantity::Quantity;
use promql::source::prometheus::{HttpOptions, PrometheusSource};
use promql::value::Value;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_extmetrics-adapter");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A CA and what it signed, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Serving CA + server certificate for 127.0.0.1; front-proxy CA + clients
    /// `front-proxy-client` (allowed) and `intruder` (not allowed); a rogue CA's client.
    fn new(dir: &Path) -> Pki {
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        let (serving_ca, serving_key) = ca("serving-ca");
        let (proxy_ca, proxy_key) = ca("front-proxy-ca");
        let (rogue_ca, rogue_key) = ca("rogue-ca");
        write("serving-ca.crt", serving_ca.pem());
        write("front-proxy-ca.crt", proxy_ca.pem());

        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "extmetrics-adapter");
        write("server.crt", p.signed_by(&key, &serving_ca, &serving_key).unwrap().pem());
        write("server.key", key.serialize_pem());

        for (name, cn, issuer, issuer_key) in [
            ("client", "front-proxy-client", &proxy_ca, &proxy_key),
            ("intruder", "intruder", &proxy_ca, &proxy_key),
            ("rogue", "front-proxy-client", &rogue_ca, &rogue_key),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            write(&format!("{name}.crt"), p.signed_by(&key, issuer, issuer_key).unwrap().pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir: dir.to_owned() }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A kubeconfig for `https://127.0.0.1:port`, with client `user`'s certificate.
    fn kubeconfig(&self, port: u16, user: Option<&str>) -> String {
        let file = self.dir.join(format!("kubeconfig-{}", user.unwrap_or("anonymous")));
        let creds = match user {
            Some(u) => format!(
                "    client-certificate: {}\n    client-key: {}\n",
                self.path(&format!("{u}.crt")),
                self.path(&format!("{u}.key"))
            ),
            // A bearer token is no identity here; without any credentials kubectl would
            // prompt for a user name.
            None => "    token: not-a-client-certificate\n".to_owned(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: adapter\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
             certificate-authority: {}\nusers:\n- name: u\n  user:\n{creds}contexts:\n- name: c\n  context:\n    \
             cluster: adapter\n    user: u\ncurrent-context: c\n",
            self.path("serving-ca.crt")
        );
        std::fs::write(&file, text).unwrap();
        file.display().to_string()
    }

    /// An HTTPS client trusting the serving CA, presenting `user`'s certificate.
    fn client(&self, user: Option<&str>) -> reqwest::blocking::Client {
        let ca = std::fs::read(self.dir.join("serving-ca.crt")).unwrap();
        let mut b = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(10));
        if let Some(u) = user {
            let mut pem = std::fs::read(self.dir.join(format!("{u}.crt"))).unwrap();
            pem.extend(std::fs::read(self.dir.join(format!("{u}.key"))).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }
}

/// The adapter process, killed when dropped; its log is shown if a test fails.
struct Adapter {
    child: Child,
    port: u16,
    metrics_port: u16,
    log: PathBuf,
}

impl Adapter {
    fn start(pki: &Pki, dir: &Path, args: &[&str]) -> Adapter {
        let ca = pki.path("front-proxy-ca.crt");
        let mut all = vec!["--requestheader-client-ca-file", &ca];
        all.extend(["--requestheader-allowed-names", "front-proxy-client,aggregator"]);
        all.extend(args);
        let adapter = Adapter::spawn(pki, dir, &all);
        adapter.wait_ready(pki);
        adapter
    }

    /// Starts the adapter with its ports, serving pair and `args`, and waits until it
    /// listens (not until it is ready). A port found free can be taken before the
    /// adapter binds it, by another test's connection: then it starts again on others.
    fn spawn(pki: &Pki, dir: &Path, args: &[&str]) -> Adapter {
        for _ in 0..4 {
            let mut adapter = Adapter::spawn_once(pki, dir, args);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let log = adapter.log();
                if log.contains("serving external.metrics.k8s.io/v1beta1") {
                    return adapter;
                }
                if adapter.child.try_wait().is_ok_and(|status| status.is_some()) {
                    if log.contains("Address already in use") {
                        break;
                    }
                    return adapter;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if Instant::now() >= deadline {
                return adapter;
            }
        }
        panic!("no free ports for the adapter after four tries");
    }

    fn spawn_once(pki: &Pki, dir: &Path, args: &[&str]) -> Adapter {
        let port = free_port();
        let metrics_port = free_port();
        let log = dir.join(format!("adapter-{port}.log"));
        let child = Command::new(BIN)
            .args(["--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
            .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
            .args([
                "--tls-cert-file",
                &pki.path("server.crt"),
                "--tls-private-key-file",
                &pki.path("server.key"),
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Adapter { child, port, metrics_port, log }
    }

    fn wait_ready(&self, pki: &Pki) {
        let client = pki.client(None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let url = format!("https://127.0.0.1:{}/readyz", self.port);
            if client.get(&url).send().is_ok_and(|r| r.status() == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("adapter not ready after 30 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn debug(&self) -> Json {
        let url = format!("http://127.0.0.1:{}/debug/queries", self.metrics_port);
        reqwest::blocking::get(url).unwrap().json().unwrap()
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- adapter log ---\n{}", self.log());
        }
    }
}

/// `kubectl get --raw PATH`: the JSON, or kubectl's error output.
fn kubectl_raw(kubeconfig: &str, path: &str) -> Result<Json, String> {
    let out = Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig, "get", "--raw", path])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubectl: {e} (scripts/test installs Debian's kubernetes-client)")
        });
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn metric_path(ns: &str, metric: &str, selector: &str) -> String {
    let selector: String = selector.replace('=', "%3D").replace(' ', "+").replace(',', "%2C");
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector={selector}")
}

/// The seed's queries, on the generated mesh's first workload.
const QUERIES: [(&str, &str); 3] = [
    (
        "processed-requests-per-second",
        r#"sum(rate(istio_requests_total{destination_workload="svc-0000",reporter="destination"}[1m]))"#,
    ),
    (
        "p99-latency",
        r#"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_workload="svc-0000",reporter="destination"}[1m])))"#,
    ),
    (
        "errors-per-second",
        r#"sum(rate(istio_requests_total{destination_workload="svc-0000",reporter="destination",response_code=~"5.."}[1m]))"#,
    ),
];

fn seed_config(dir: &Path, prometheus: &str) -> String {
    let mut text = format!(
        "defaults:\n  interval: 1s\nbackends:\n  mirror:\n    local:\n      url: {prometheus}\nmetrics:\n"
    );
    for (ns, backend) in [("test", "default"), ("test-local", "mirror")] {
        for (name, q) in QUERIES {
            text += &format!(
                "  - namespace: {ns}\n    name: prometheus-query\n    selector: {{query-name: {name}}}\n    \
                 backend: {backend}\n    query: '{q}'\n"
            );
        }
    }
    let file = dir.join("config.yaml");
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

/// Prometheus' own answer at `t` (ms).
fn prometheus_value(prom: &str, query: &str, t: i64) -> f64 {
    let source = PrometheusSource::new(prom, HttpOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match rt.block_on(source.instant_query(query, t)).unwrap() {
        Value::Vector(v) if v.len() == 1 => v[0].v,
        other => panic!("{query} at {t}: {other:?}"),
    }
}

#[test]
fn kubectl_gets_prometheus_answers_through_both_backends() {
    let dir = testkit::temp_dir("extmetrics-e2e");
    let data = testkit::istio_fixture_recent(&dir, 2);
    let prom = testkit::start_prometheus(&dir, &data);
    let pki = Pki::new(&dir);
    let config = seed_config(&dir, &prom.url);
    let adapter = Adapter::start(&pki, &dir, &["--config", &config, "--prometheus-server", &prom.url]);
    let kubeconfig = pki.kubeconfig(adapter.port, Some("client"));

    let discovery = kubectl_raw(&kubeconfig, "/apis/external.metrics.k8s.io/v1beta1").unwrap();
    assert_eq!(discovery["resources"][0]["name"], "prometheus-query", "{discovery}");

    for ns in ["test", "test-local"] {
        for (name, query) in QUERIES {
            // The local backend evaluates with Prometheus 3 semantics (left-open windows)
            // and Prometheus 2.42 includes a sample lying exactly on the window's start;
            // with millisecond scrape jitter that happens about once in a hundred
            // collections, so a mismatch there is retried at the next collection.
            let attempts = if ns == "test" { 1 } else { 3 };
            let mut last = String::new();
            let matched = (0..attempts).any(|i| {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(1100));
                }
                let list = kubectl_raw(
                    &kubeconfig,
                    &metric_path(ns, "prometheus-query", &format!("query-name={name}")),
                )
                .unwrap_or_else(|e| panic!("{ns} {name}: {e}\n{}", adapter.log()));
                assert_eq!(list["kind"], "ExternalMetricValueList");
                let item = &list["items"][0];
                assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
                assert_eq!(item["metricName"], "prometheus-query");
                assert_eq!(item["metricLabels"]["query-name"], name);
                let ts = chrono::DateTime::parse_from_rfc3339(item["timestamp"].as_str().unwrap()).unwrap();
                let want = prometheus_value(&prom.url, query, ts.timestamp_millis());
                let want = Quantity::from_f64(want).unwrap().to_string();
                last = format!("{ns} {name} at {ts}: adapter {} vs prometheus {want}", item["value"]);
                item["value"] == want.as_str()
            });
            assert!(matched, "{last}");
        }
    }

    // Without a client certificate: 401, as kubectl reports it.
    let anonymous = pki.kubeconfig(adapter.port, None);
    let err = kubectl_raw(&anonymous, &metric_path("test", "prometheus-query", "query-name=p99-latency"))
        .unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
}

/// A config file with backend `f` over a fixture holding `samples`, then `rest`.
fn fixture_config(dir: &Path, samples: &str, rest: &str) -> String {
    let fixture = dir.join("up.prom");
    std::fs::write(&fixture, samples).unwrap();
    let config = dir.join("c.yaml");
    let text = format!("backends:\n  f:\n    fixture: {{file: {}, at: end}}\n{rest}", fixture.display());
    std::fs::write(&config, text).unwrap();
    config.display().to_string()
}

#[test]
fn authentication() {
    let dir = testkit::temp_dir("extmetrics-auth");
    let pki = Pki::new(&dir);
    let config = fixture_config(
        &dir,
        "up{job=\"a\"} 1 1700000000000\n",
        "metrics:\n  - {namespace: '*', name: up, query: 'sum(up)', backend: f}\n",
    );
    let adapter = Adapter::start(&pki, &dir, &["--config", &config]);
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/any/up";

    let ok = pki.client(Some("client")).get(adapter.url(path)).send().unwrap();
    assert_eq!(ok.status(), 200);
    let body: Json = ok.json().unwrap();
    assert_eq!(body["items"][0]["value"], "1");
    assert_eq!(body["items"][0]["timestamp"], "2023-11-14T22:13:20Z");

    // The front proxy names the user in headers; trusted on its connection only.
    let proxied = pki
        .client(Some("client"))
        .get(adapter.url(path))
        .header("X-Remote-User", "system:hpa")
        .send()
        .unwrap();
    assert_eq!(proxied.status(), 200);

    for (user, want) in [
        (None, "a client certificate signed by the front-proxy CA ("),
        (Some("intruder"), "common name \"intruder\" is not in --requestheader-allowed-names"),
    ] {
        let r = pki.client(user).get(adapter.url(path)).header("X-Remote-User", "admin").send().unwrap();
        assert_eq!(r.status(), 401, "{user:?}");
        let status: Json = r.json().unwrap();
        assert_eq!(status["reason"], "Unauthorized");
        assert!(status["message"].as_str().unwrap().contains(want), "{status}");
    }
    // A certificate from another CA fails the handshake.
    assert!(pki.client(Some("rogue")).get(adapter.url(path)).send().is_err());
    // Health endpoints are open.
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(pki.client(None).get(adapter.url(p)).send().unwrap().status(), 200, "{p}");
    }
    // The aggregator's discovery documents.
    let c = pki.client(Some("client"));
    let apis: Json = c.get(adapter.url("/apis")).send().unwrap().json().unwrap();
    assert_eq!(apis["groups"][0]["name"], "external.metrics.k8s.io");
    let group: Json = c.get(adapter.url("/apis/external.metrics.k8s.io")).send().unwrap().json().unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1beta1");
    // Errors are metav1.Status with the right codes.
    let status_of =
        |r: reqwest::blocking::Response| -> (u16, Json) { (r.status().as_u16(), r.json().unwrap()) };
    let (code, bad) =
        status_of(c.get(adapter.url(&format!("{path}?labelSelector=a%20in%20(b"))).send().unwrap());
    assert_eq!((code, &bad["reason"]), (400, &Json::from("BadRequest")), "{bad}");
    assert!(bad["message"].as_str().unwrap().starts_with("unable to parse labelSelector: "), "{bad}");
    let (code, unknown) = status_of(
        c.get(adapter.url("/apis/external.metrics.k8s.io/v1beta1/namespaces/any/down")).send().unwrap(),
    );
    assert_eq!((code, &unknown["reason"]), (404, &Json::from("NotFound")), "{unknown}");
    assert_eq!(unknown["message"], "the server could not find the metric down for external.metrics.k8s.io");
    let (code, bad_path) = status_of(
        c.get(adapter.url("/apis/external.metrics.k8s.io/v1beta1/namespaces/%FF/up")).send().unwrap(),
    );
    assert_eq!((code, &bad_path["reason"]), (400, &Json::from("BadRequest")), "{bad_path}");
    let (code, bad_query) =
        status_of(c.get(adapter.url(&format!("{path}?labelSelector=%FF"))).send().unwrap());
    assert_eq!((code, &bad_query["reason"]), (400, &Json::from("BadRequest")), "{bad_query}");
    let (code, post) = status_of(c.post(adapter.url(path)).send().unwrap());
    assert_eq!((code, &post["reason"]), (405, &Json::from("MethodNotAllowed")), "{post}");
    let metrics =
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", adapter.metrics_port)).unwrap();
    let text = metrics.text().unwrap();
    assert!(text.contains("extmetrics_requests_total{route=\"metric\",code=\"401\"} 2"), "{text}");
    assert!(
        text.contains(
            "extmetrics_collections_total{namespace=\"*\",metric=\"up\",selector=\"\",outcome=\"ok\"}"
        ),
        "{text}"
    );
}

/// How the fake network between the adapter and Prometheus behaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Forward,
    Slow,
    Garbage,
}

/// A proxy to Prometheus that can be slow, answer garbage, or be stopped.
struct FaultProxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    upstream: String,
    rt: tokio::runtime::Runtime,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl FaultProxy {
    fn new(upstream: &str) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut p = FaultProxy {
            port: free_port(),
            mode: Arc::new(Mutex::new(Mode::Forward)),
            upstream: upstream.to_owned(),
            rt,
            server: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let (mode, upstream) = (self.mode.clone(), self.upstream.clone());
        let listener = self.rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port))).unwrap();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (mode, upstream) = (mode.clone(), upstream.clone());
            async move {
                let m = *mode.lock().unwrap();
                match m {
                    Mode::Garbage => (axum::http::StatusCode::OK, "<html>proxy error</html>".to_owned()),
                    Mode::Slow | Mode::Forward => {
                        if m == Mode::Slow {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        let url = format!("{upstream}{}", uri.path_and_query().map_or("", |p| p.as_str()));
                        let r = reqwest::get(url).await.unwrap();
                        let code = axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
                        (code, r.text().await.unwrap())
                    }
                }
            }
        });
        self.server = Some(self.rt.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        }));
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = self.rt.block_on(s);
        }
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
}

#[test]
fn faults_follow_the_policy_and_recover() {
    let dir = testkit::temp_dir("extmetrics-faults");
    let data = testkit::istio_fixture_recent(&dir, 1);
    let prom = testkit::start_prometheus(&dir, &data);
    let mut proxy = FaultProxy::new(&prom.url);
    let pki = Pki::new(&dir);
    let q = QUERIES[0].1;
    let config = dir.join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{interval: 1s}}\nbackends:\n  flaky:\n    prometheus: {{url: 'http://127.0.0.1:{}', timeout: 1s}}\n\
             metrics:\n\
             - {{namespace: test, name: rps, query: '{q}', backend: flaky}}\n\
             - {{namespace: test, name: rps-zero, query: '{q}', backend: flaky, onError: zero}}\n\
             - {{namespace: test, name: rps-last, query: '{q}', backend: flaky, onError: last-good, lastGoodMaxAge: 1h}}\n",
            proxy.port
        ),
    )
    .unwrap();
    let adapter = Adapter::start(&pki, &dir, &["--config", &config.display().to_string()]);
    let client = pki.client(Some("client"));
    let get = |metric: &str| -> (u16, Json) {
        let r = client
            .get(adapter.url(&format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/test/{metric}")))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    // Waits until `rps` answers `code` (collections run every second).
    let wait_for = |code: u16| -> Json {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (c, body) = get("rps");
            if c == code {
                return body;
            }
            assert!(Instant::now() < deadline, "rps still answers {c} {body}\n{}", adapter.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let good = wait_for(200);
    let value = good["items"][0]["value"].clone();
    assert_ne!(value, Json::Null);

    for (fault, want) in
        [("stopped", "backend failed"), ("slow", "backend failed"), ("garbage", "backend failed")]
    {
        match fault {
            "stopped" => proxy.stop(),
            "slow" => proxy.set(Mode::Slow),
            _ => proxy.set(Mode::Garbage),
        }
        let status = wait_for(503);
        assert_eq!(status["reason"], "ServiceUnavailable", "{fault}: {status}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(want), "{fault}: {message}");
        let (c, zero) = get("rps-zero");
        assert_eq!((c, &zero["items"][0]["value"]), (200, &Json::from("0")), "{fault}");
        let (c, last) = get("rps-last");
        assert_eq!(c, 200, "{fault}: {last}");
        assert_ne!(last["items"][0]["value"], Json::Null);
        // The adapter itself stays healthy.
        assert_eq!(pki.client(None).get(adapter.url("/healthz")).send().unwrap().status(), 200);
        let debug = adapter.debug();
        assert!(debug["queries"][0]["lastError"].as_str().unwrap().contains("backend failed"), "{debug}");
        if fault == "stopped" {
            proxy.start();
        }
        proxy.set(Mode::Forward);
        wait_for(200);
    }
}

#[test]
fn bad_input_is_named() {
    let dir = testkit::temp_dir("extmetrics-bad");
    let config = dir.join("bad.yaml");
    std::fs::write(&config, "metrics:\n  - namespace: test\n    name: m\n    query: sum(rate(x[1m])\n")
        .unwrap();
    let out = Command::new(BIN).args(["--config", &config.display().to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:4:12: metrics[0].query: invalid PromQL query"), "{err}");

    let hpa = dir.join("hpa.yaml");
    std::fs::write(&hpa, "kind: HorizontalPodAutoscaler\nmetadata: [\n").unwrap();
    let out = Command::new(BIN).args(["--hpa-file", &hpa.display().to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hpa.yaml:3:"), "{err}");

    // The tutorial's HPA works unchanged; --check shows what it defines.
    let tutorial = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/podinfo-hpa.yaml");
    let out =
        Command::new(BIN).args(["--check", "--hpa-file", &tutorial.display().to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("test/prometheus-query{query-name=processed-requests-per-second}: "), "{text}");
    assert!(
        text.contains("HPA test/podinfo annotation metric-config.external.prometheus-query.prometheus/"),
        "{text}"
    );

    let mut log = String::new();
    let mut child = Command::new(BIN)
        .args(["--tls-cert-file", "/nonexistent.crt", "--tls-private-key-file", "/nonexistent.key"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(log.contains("/nonexistent.crt"), "{log}");
}

#[test]
fn deploy_manifests_render_and_validate() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = testkit::temp_dir("extmetrics-deploy");
    let out = Command::new("kubectl").args(["kustomize"]).arg(repo.join("deploy")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "APIService",
    ] {
        assert!(rendered.contains(&format!("\nkind: {kind}\n")), "no {kind} in\n{rendered}");
    }
    for needed in [
        "name: system:auth-delegator",
        "name: extension-apiserver-authentication-reader",
        "name: horizontal-pod-autoscaler",
        "name: v1beta1.external.metrics.k8s.io",
    ] {
        assert!(rendered.contains(needed), "{needed} missing");
    }
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let validate = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(&file)
        .arg(repo.join("examples/podinfo-hpa.yaml"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubernetes-validate: {e} (scripts/test installs it from PyPI)")
        });
    assert!(
        validate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    // The shipped config is valid for the adapter itself.
    let check = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(repo.join("deploy/config.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}{}", String::from_utf8_lossy(&check.stderr));
    assert!(text.contains("3 queries, 0 problems"), "{text}");
}

/// A stand-in for the kube-apiserver: lists and watches HorizontalPodAutoscalers from a
/// script of events, and serves the front proxy's CA ConfigMap.
struct FakeApiServer {
    port: u16,
    /// Watch events after the initial list, in order: (resourceVersion, JSON line).
    events: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

fn hpa_object(name: &str, rv: u64, annotations: Json, metric: &str, labels: Json) -> Json {
    serde_json::json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": "test", "resourceVersion": rv.to_string(), "annotations": annotations},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "maxReplicas": 10,
            "metrics": [{"type": "External", "external": {
                "metric": {"name": metric, "selector": {"matchLabels": labels}},
                "target": {"type": "AverageValue", "averageValue": "10"}}}]
        }
    })
}

impl FakeApiServer {
    fn start(initial: Vec<Json>, front_proxy_ca: String) -> FakeApiServer {
        FakeApiServer::with_pods(initial, Vec::new(), front_proxy_ca)
    }

    /// Also lists `pods` (which never change: their watch stays open and quiet).
    fn with_pods(initial: Vec<Json>, pods: Vec<Json>, front_proxy_ca: String) -> FakeApiServer {
        use axum::extract::Query;
        use std::collections::HashMap;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let list = serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
            "metadata": {"resourceVersion": "1"}, "items": initial
        });
        let ev = events.clone();
        let hpas = move |Query(q): Query<HashMap<String, String>>| {
            let (list, ev) = (list.clone(), ev.clone());
            async move {
                if q.get("watch").map(String::as_str) != Some("true") {
                    return axum::Json(list).into_response();
                }
                // Events newer than the watch's resourceVersion; event i has version i + 2.
                let from: usize = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(1);
                let stream = futures_util::stream::unfold(from.saturating_sub(1), move |i| {
                    let ev = ev.clone();
                    async move {
                        loop {
                            if let Some(line) = ev.lock().unwrap().get(i).cloned() {
                                return Some((
                                    Ok::<_, std::io::Error>(axum::body::Bytes::from(line + "\n")),
                                    i + 1,
                                ));
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                });
                axum::body::Body::from_stream(stream).into_response()
            }
        };
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": {
                "requestheader-client-ca-file": front_proxy_ca,
                "requestheader-allowed-names": "[\"front-proxy-client\"]",
                "requestheader-username-headers": "[\"X-Remote-User\"]",
                "requestheader-group-headers": "[\"X-Remote-Group\"]"
            }
        });
        use axum::response::IntoResponse;
        // Everyone but mallory may read metrics.
        let review = |axum::Json(mut sar): axum::Json<Json>| async move {
            let user = sar["spec"]["user"].as_str().unwrap_or_default().to_owned();
            let allowed = user != "mallory";
            sar["status"] = serde_json::json!({"allowed": allowed, "reason": if allowed { "" } else { "mallory is not welcome" }});
            (axum::http::StatusCode::CREATED, axum::Json(sar))
        };
        let pod_list = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": pods
        });
        let pods = move |Query(q): Query<HashMap<String, String>>| {
            let pod_list = pod_list.clone();
            async move {
                if q.get("watch").map(String::as_str) != Some("true") {
                    return axum::Json(pod_list).into_response();
                }
                let quiet = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
                axum::body::Body::from_stream(quiet).into_response()
            }
        };
        let app = axum::Router::new()
            .route("/api/v1/pods", axum::routing::get(pods))
            .route("/apis/autoscaling/v2/horizontalpodautoscalers", axum::routing::get(hpas))
            .route("/apis/authorization.k8s.io/v1/subjectaccessreviews", axum::routing::post(review))
            .route(
                "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
                axum::routing::get(move || async move { axum::Json(cm) }),
            );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeApiServer { port, events, _rt: rt }
    }

    /// Appends a watch event; its resourceVersion is its position + 2.
    fn push(&self, kind: &str, mut object: Json) {
        let mut ev = self.events.lock().unwrap();
        object["metadata"]["resourceVersion"] = Json::from((ev.len() + 2).to_string());
        ev.push(serde_json::json!({"type": kind, "object": object}).to_string());
    }

    fn kubeconfig(&self, dir: &Path) -> String {
        let file = dir.join("fake-apiserver.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u}}\ncurrent-context: c\n",
            self.port
        );
        std::fs::write(&file, text).unwrap();
        file.display().to_string()
    }
}

#[test]
fn hpas_are_watched_through_the_kubernetes_api() {
    let dir = testkit::temp_dir("extmetrics-watch");
    let pki = Pki::new(&dir);
    let legacy = |q: &str| serde_json::json!({"metric-config.external.prometheus-query.prometheus/rps": q});
    let rps = serde_json::json!({"query-name": "rps"});
    let api = FakeApiServer::start(
        vec![
            hpa_object("podinfo", 1, legacy("sum(up)"), "prometheus-query", rps.clone()),
            hpa_object(
                "broken",
                1,
                serde_json::json!({"metric-config.external.prometheus-query.prometheus/bad": "sum(up"}),
                "prometheus-query",
                serde_json::json!({"query-name": "bad"}),
            ),
        ],
        std::fs::read_to_string(dir.join("front-proxy-ca.crt")).unwrap(),
    );
    let config = fixture_config(
        &dir,
        "up{job=\"a\"} 1 1700000000000\nup{job=\"b\"} 2 1700000000000\n",
        "defaults: {backend: f, interval: 1s}\n",
    );
    // No --requestheader-client-ca-file: the CA comes from the (fake) cluster.
    let kubeconfig = api.kubeconfig(&dir);
    let adapter = Adapter::spawn(&pki, &dir, &["--config", &config, "--kubeconfig", &kubeconfig]);
    let client = pki.client(Some("client"));
    let path = |metric: &str, sel: &str| {
        adapter.url(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/test/{metric}?labelSelector={sel}"
        ))
    };
    let wait_for = |url: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = match client.get(url).send() {
                Ok(r) if r.status() == 200 => r.json::<Json>().unwrap()["items"][0]["value"].to_string(),
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => e.to_string(),
            };
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{url}: {got}, not {want}\n{}", adapter.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let rps_url = path("prometheus-query", "query-name%3Drps");
    wait_for(&rps_url, "\"3\"");
    let debug = adapter.debug();
    let problem = &debug["problems"][0];
    assert_eq!(problem["type"], "Warning", "{debug}");
    assert_eq!(problem["reason"], "InvalidAnnotation");
    assert_eq!(problem["object"], "HorizontalPodAutoscaler test/broken");
    assert_eq!(problem["source"], "cluster");
    assert!(
        problem["message"].as_str().unwrap().contains("invalid PromQL query: 1:7: parse error"),
        "{problem}"
    );
    assert!(problem["count"].as_u64().unwrap() >= 1);
    // The intruder's name is not in the cluster's allowed names.
    assert_eq!(pki.client(Some("intruder")).get(&rps_url).send().unwrap().status(), 401);

    api.push("MODIFIED", hpa_object("podinfo", 0, legacy("sum(up) * 10"), "prometheus-query", rps.clone()));
    wait_for(&rps_url, "\"30\"");
    api.push("DELETED", hpa_object("podinfo", 0, legacy("sum(up) * 10"), "prometheus-query", rps));
    wait_for(&rps_url, "404");
    let current = serde_json::json!({"metric-config.external.late-rps.prometheus/query": "max(up)"});
    api.push("ADDED", hpa_object("late", 0, current, "late-rps", serde_json::json!({"type": "prometheus"})));
    wait_for(&path("late-rps", "type%3Dprometheus"), "\"2\"");

    // Delegated authorization: the front proxy's user is reviewed by the API server.
    let authorized = Adapter::spawn(
        &pki,
        &dir,
        &["--config", &config, "--kubeconfig", &kubeconfig, "--authorization-subject-access-review"],
    );
    authorized.wait_ready(&pki);
    let url = authorized.url("/apis/external.metrics.k8s.io/v1beta1/namespaces/test/late-rps");
    let deadline = Instant::now() + Duration::from_secs(20);
    let as_user = |user: &str| client.get(&url).header("X-Remote-User", user).send().unwrap();
    while as_user("system:serviceaccount:kube-system:horizontal-pod-autoscaler").status() != 200 {
        assert!(Instant::now() < deadline, "{}", authorized.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // system:masters needs no review (mallory is not welcome otherwise).
    let master =
        client.get(&url).header("X-Remote-User", "mallory").header("X-Remote-Group", "system:masters");
    assert_eq!(master.send().unwrap().status(), 200);
    let denied = as_user("mallory");
    assert_eq!(denied.status(), 403);
    let status: Json = denied.json().unwrap();
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "User \"mallory\" cannot list resource \"late-rps\" in API group \"external.metrics.k8s.io\" in the namespace \"test\": mallory is not welcome"
    );
}

/// An exporter whose `requests_total` grows by `per_second` per second.
fn counter_exporter(rt: &tokio::runtime::Runtime, per_second: f64) -> u16 {
    let started = Instant::now();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            let v = per_second * started.elapsed().as_secs_f64();
            format!("# TYPE requests_total counter\nrequests_total{{code=\"200\"}} {v}\n")
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn pod(name: &str, annotations: Json, phase: &str) -> Json {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "test", "resourceVersion": "1", "annotations": annotations},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": phase, "podIP": "127.0.0.1"}
    })
}

#[test]
fn local_backend_scrapes_annotated_pods() {
    let dir = testkit::temp_dir("extmetrics-pods");
    let pki = Pki::new(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let scrape = |port: u16| serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": port.to_string()});
    let (a, b, c) = (counter_exporter(&rt, 10.0), counter_exporter(&rt, 10.0), counter_exporter(&rt, 1000.0));
    let pods = vec![
        pod("podinfo-a", scrape(a), "Running"),
        pod("podinfo-b", scrape(b), "Running"),
        // Not scraped: not annotated, or not running.
        pod("other", serde_json::json!({"prometheus.io/port": c.to_string()}), "Running"),
        pod("starting", scrape(c), "Pending"),
    ];
    let api = FakeApiServer::with_pods(
        Vec::new(),
        pods,
        std::fs::read_to_string(dir.join("front-proxy-ca.crt")).unwrap(),
    );
    let config = dir.join("c.yaml");
    std::fs::write(
        &config,
        "defaults: {interval: 1s}\nbackends:\n  pods:\n    local: {scrapeInterval: 1s, retention: 1m}\nmetrics:\n\
         - {namespace: test, name: rps, query: 'sum(rate(requests_total[5s]))', backend: pods}\n\
         - {namespace: test, name: up, query: 'count(up == 1)', backend: pods}\n",
    )
    .unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let adapter =
        Adapter::spawn(&pki, &dir, &["--config", &config.display().to_string(), "--kubeconfig", &kubeconfig]);
    let client = pki.client(Some("client"));
    let value = |metric: &str| -> Option<f64> {
        let url = adapter.url(&format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/test/{metric}"));
        let r = client.get(url).send().ok()?;
        let body: Json = r.json().ok()?;
        Some(Quantity::parse(body["items"][0]["value"].as_str()?).ok()?.to_f64())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (up, rps) = (value("up"), value("rps"));
        if up == Some(2.0) && rps.is_some_and(|r| (r - 20.0).abs() < 2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "up {up:?}, rps {rps:?}\n{}", adapter.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    let debug = adapter.debug();
    assert!(
        debug["queries"][0]["backend"].as_str().unwrap().contains("local over 2 scraped pods"),
        "{debug}"
    );
}
