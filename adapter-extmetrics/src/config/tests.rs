use super::*;

const GOOD: &str = r#"# seed queries
defaults:
  interval: 30s
  onError: last-good
  lastGoodMaxAge: 1m
backends:
  mesh:
    prometheus:
      url: http://prometheus.istio-system:9090
      bearerTokenFile: /var/run/token
      basicAuth: {username: hpa, passwordFile: /etc/prom/password}
      timeout: 3s
  pods:
    local: {}
metrics:
  - namespace: test
    name: prometheus-query
    selector:
      query-name: processed-requests-per-second
    query: |
      scalar(sum(rate(istio_requests_total{destination_workload="podinfo"}[1m])))
    window: 1m
  - namespace: "*"
    name: Latency-P99
    query: histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[1m])))
    backend: mesh
    onEmpty: zero
    onNaN: last-good
    reduce: each
    interval: 500ms
  - namespace: test
    name: errors
    selector: {query-name: five-xx}
    query: sum(rate(istio_requests_total{response_code=~"5.."}[1m]))
    backend: pods
    onError: error
"#;

#[test]
fn loads_a_full_file() {
    let cfg = Config::from_yaml_str("good.yaml", GOOD).unwrap();
    assert_eq!(cfg.defaults.interval, Duration::from_secs(30));
    assert_eq!(cfg.metrics.len(), 3);
    let a = &cfg.metrics[0];
    assert_eq!(a.interval, Duration::from_secs(30));
    assert_eq!(a.window, Some(Duration::from_secs(60)));
    assert_eq!(a.backend_name, "default");
    assert_eq!(a.backend, Backend::default_prometheus());
    assert_eq!(a.policies.on_error, Fallback::LastGood { max_age: Duration::from_secs(60) });
    assert_eq!(a.policies.on_empty, Fallback::Error);
    assert_eq!(a.reduce, Reduce::Sum);
    assert_eq!(a.origin, Origin::ConfigFile { file: "good.yaml".into(), line: 16 });
    assert!(a.query.starts_with("scalar(sum("));

    let b = &cfg.metrics[1];
    assert_eq!(b.namespace, NamespaceMatch::Any);
    assert_eq!(b.interval, Duration::from_millis(500));
    assert_eq!(b.policies.on_empty, Fallback::Zero);
    assert_eq!(b.policies.on_nan, Fallback::LastGood { max_age: Duration::from_secs(60) });
    assert_eq!(b.reduce, Reduce::Each);
    match &b.backend {
        Backend::Prometheus(p) => {
            assert_eq!(p.url.as_deref(), Some("http://prometheus.istio-system:9090"));
            assert_eq!(p.bearer_token_file.as_deref(), Some("/var/run/token"));
            let auth = p.basic_auth.as_ref().unwrap();
            assert_eq!((auth.username.as_str(), auth.password_file.as_str()), ("hpa", "/etc/prom/password"));
            assert_eq!(p.timeout, Duration::from_secs(3));
        }
        other => panic!("{other:?}"),
    }
    let c = &cfg.metrics[2];
    assert_eq!(
        c.backend,
        Backend::Local { api: None, scrape_interval: DEFAULT_SCRAPE_INTERVAL, retention: DEFAULT_RETENTION }
    );
    assert_eq!(c.policies.on_error, Fallback::Error);
}

#[test]
fn registry_lookup() {
    let reg = Config::from_yaml_str("good.yaml", GOOD).unwrap().registry();
    assert_eq!(
        reg.metric_names().into_iter().collect::<Vec<_>>(),
        ["errors", "latency-p99", "prometheus-query"]
    );
    let sel = Selector::parse("query-name=processed-requests-per-second").unwrap();
    assert_eq!(reg.find("test", "prometheus-query", &sel).len(), 1);
    assert_eq!(reg.find("other", "prometheus-query", &sel).len(), 0);
    assert_eq!(reg.find("test", "prometheus-query", &Selector::parse("query-name=x").unwrap()).len(), 0);
    assert_eq!(reg.find("test", "prometheus-query", &Selector::everything()).len(), 1);
    // lowercased by client-go; any namespace for "*"
    assert_eq!(reg.find("anywhere", "latency-p99", &Selector::everything()).len(), 1);
    assert!(reg.knows_metric("LATENCY-P99"));
    assert!(!reg.knows_metric("nope"));
    assert_eq!(reg.entries().len(), 3);
}

#[test]
fn empty_file_is_an_empty_config() {
    let cfg = Config::from_yaml_str("e.yaml", "").unwrap();
    assert!(cfg.metrics.is_empty());
    assert_eq!(cfg.defaults, Defaults::default());
    assert!(cfg.backends.contains_key("default"));
}

fn issues(text: &str) -> Vec<String> {
    Config::from_yaml_str("c.yaml", text).unwrap_err().issues().iter().map(ToString::to_string).collect()
}

#[test]
fn yaml_and_schema_errors_name_the_line() {
    let e = issues("metrics:\n  - namespace: test\n    name: m\n    query: up\n    colour: red\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("c.yaml:5:5: metrics[0]: unknown field `colour`"), "{}", e[0]);
    let e = issues("metrics:\n  - namespace: test\n    query: up\n");
    assert!(e[0].starts_with("c.yaml:2:5: metrics[0]: missing field `name`"), "{}", e[0]);
    let e = issues("metrics: [\n");
    assert!(e[0].starts_with("c.yaml:2:1: "), "{}", e[0]);
    let e = issues("backends:\n  x:\n    remote: {}\n");
    assert!(e[0].starts_with("c.yaml:3:5: backends.x: unknown field `remote`"), "{}", e[0]);
    let e = issues("backends:\n  x: {}\n");
    assert!(e[0].starts_with("c.yaml:2:6: backends.x: a backend needs exactly one of"), "{}", e[0]);
    let e = issues("backends:\n  x:\n    fixture: {file: a.om, at: start}\n");
    assert!(e[0].contains("backends.x: fixture `at` must be `now` or `end`, not \"start\""), "{}", e[0]);
    let e = issues("metrics:\n  - namespace: test\n    name: m\n    query: up\n    selector: [a]\n");
    assert!(e[0].starts_with("c.yaml:5:15: "), "{}", e[0]);
}

#[test]
fn invalid_query_shows_caret_under_config_line() {
    let text = "metrics:\n  - namespace: test\n    name: m\n    query: |\n      sum(rate(x[5m])) by (job\n";
    let err = Config::from_yaml_str("c.yaml", text).unwrap_err();
    let issue = &err.issues()[0];
    // The block scalar starts on line 4; the culprit is line 5, column 7 + 24.
    assert_eq!((issue.line, issue.column), (5, 31));
    assert_eq!(issue.path, "metrics[0].query");
    assert_eq!(
        issue.to_string(),
        "c.yaml:5:31: metrics[0].query: invalid PromQL query: 1:25: parse error: unclosed left parenthesis\n    \
         sum(rate(x[5m])) by (job\n                            ^"
    );
    let text = "metrics:\n  - namespace: test\n    name: m\n    query: |\n      sum(x)\n      + rate(y)\n";
    let issue = &Config::from_yaml_str("c.yaml", text).unwrap_err().issues()[0].clone();
    assert_eq!((issue.line, issue.column), (6, 14), "{issue}");
    // A plain scalar: the position of the value.
    let e = issues("metrics:\n  - namespace: test\n    name: m\n    query: sum(x\n");
    assert!(
        e[0].starts_with("c.yaml:4:12: metrics[0].query: invalid PromQL query: 1:6: parse error"),
        "{}",
        e[0]
    );
    let e = issues("metrics:\n  - namespace: test\n    name: m\n    query: rate(x)\n");
    assert!(e[0].contains("expected type range vector in call to function \"rate\""), "{}", e[0]);
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = r#"defaults:
  interval: soon
  backend: nowhere
backends:
  bad:
    prometheus: {url: "prometheus:9090", timeout: 0s}
metrics:
  - namespace: Test_NS
    name: "a/b"
    selector: {"-bad": ok, good: "bad value"}
    query: up
    window: 1500ms
    onEmpty: ignore
    reduce: median
    lastGoodMaxAge: 0s
  - namespace: test
    name: m
    query: up
    backend: missing
  - namespace: test
    name: M
    query: up
"#;
    let e = issues(text);
    let all = e.join("\n");
    for want in [
        "c.yaml:2:13: defaults.interval: invalid duration \"soon\"",
        "c.yaml:3:12: defaults.backend: unknown backend \"nowhere\"",
        "c.yaml:6:5: backends.bad: prometheus url \"prometheus:9090\" must be an http:// or https:// URL",
        "backends.bad: timeout must be positive",
        "c.yaml:8:16: metrics[0].namespace: namespace \"Test_NS\"",
        "c.yaml:9:11: metrics[0].name: metric name \"a/b\" must not contain '/'",
        "metrics[0].selector.-bad: invalid label key \"-bad\"",
        "metrics[0].selector.good: invalid label value \"bad value\"",
        "c.yaml:12:13: metrics[0].window: window must be a positive whole number of seconds",
        "metrics[0].onEmpty: unknown policy \"ignore\"",
        "metrics[0].reduce: unknown reduce \"median\"",
        "metrics[0].lastGoodMaxAge: lastGoodMaxAge must be positive",
        "c.yaml:19:14: metrics[1].backend: unknown backend \"missing\"",
        "c.yaml:20:5: metrics[2]: duplicate metric: namespace \"test\", name \"M\"",
        "already defined at line 16",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
    assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
    assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    for bad in ["", "15", "s", "-1s", "1d", "1.2.3s", "1 s", "+"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn load_reads_files() {
    let dir = testkit::temp_dir("extmetrics-cfg");
    let path = dir.join("c.yaml");
    std::fs::write(&path, GOOD).unwrap();
    assert_eq!(Config::load(&path).unwrap().metrics.len(), 3);
    let missing = dir.join("missing.yaml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("cannot read config file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fixture_backend() {
    let cfg = Config::from_yaml_str(
        "f.yaml",
        "backends:\n  demo:\n    fixture: {file: examples/istio.om, at: end}\nmetrics:\n  - namespace: test\n    name: m\n    query: up\n    backend: demo\n",
    )
    .unwrap();
    assert_eq!(
        cfg.metrics[0].backend,
        Backend::Fixture { file: "examples/istio.om".into(), at: FixtureTime::End }
    );
}

#[test]
fn local_backend_with_credentials() {
    let cfg = Config::from_yaml_str(
        "l.yaml",
        "backends:\n  m:\n    local: {url: 'https://prom:9090', bearerTokenFile: /t, caFile: /ca, timeout: 3s}\n",
    )
    .unwrap();
    match &cfg.backends["m"] {
        Backend::Local { api: Some(p), .. } => {
            assert_eq!(p.url.as_deref(), Some("https://prom:9090"));
            assert_eq!((p.bearer_token_file.as_deref(), p.ca_file.as_deref()), (Some("/t"), Some("/ca")));
            assert_eq!(p.timeout, Duration::from_secs(3));
        }
        other => panic!("{other:?}"),
    }
    let e = issues("backends:\n  m:\n    local: {bearerTokenFile: /t}\n");
    assert!(
        e[0].contains("backends.m: bearerTokenFile, basicAuth, caFile and timeout need a url"),
        "{}",
        e[0]
    );
}
