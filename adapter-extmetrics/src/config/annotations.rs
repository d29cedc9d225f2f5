//! kube-metrics-adapter HPA annotations, compiled into [`MetricQuery`] entries.
//!
//! Keys have the form `metric-config.<metricType>.<metricName>.<collector>/<configKey>`. Both
//! Prometheus forms of kube-metrics-adapter are understood:
//!
//! * legacy: HPA metric `prometheus-query` with selector `query-name: <q>` and the query in
//!   `metric-config.external.prometheus-query.prometheus/<q>`;
//! * current: HPA metric `<name>` with selector `type: prometheus` and the query in
//!   `metric-config.external.<name>.prometheus/query`.
//!
//! Per metric, `interval` (Go duration) and `prometheus-server` (URL) are honoured, as is
//! `prometheus-server-alias` (a named backend). Extensions of this adapter, same prefix:
//! `on-empty`, `on-nan`, `on-error` (`error`/`zero`/`last-good`), `last-good-max-age`,
//! `reduce` and `window`. As in kube-metrics-adapter, annotation values override selector
//! labels with the same key when looking up the query name.
//!
//! Unlike kube-metrics-adapter, nothing is dropped silently: malformed keys (such as metric
//! names containing dots), annotations no HPA metric uses, missing or invalid queries and
//! bad values are returned as [`AnnotationProblem`]s.
//!
//! ```
//! use std::collections::BTreeMap;
//! use adapter_extmetrics::config::annotations::{from_hpa, ExternalMetricRef, Hpa};
//! use adapter_extmetrics::config::Defaults;
//!
//! let hpa = Hpa {
//!     namespace: "test".into(),
//!     name: "podinfo".into(),
//!     annotations: BTreeMap::from([(
//!         "metric-config.external.prometheus-query.prometheus/processed-requests-per-second".into(),
//!         "scalar(sum(rate(istio_requests_total[1m])))".into(),
//!     )]),
//!     external_metrics: vec![ExternalMetricRef {
//!         name: "prometheus-query".into(),
//!         match_labels: BTreeMap::from([("query-name".into(), "processed-requests-per-second".into())]),
//!     }],
//! };
//! let out = from_hpa(&hpa, &Defaults::default(), &BTreeMap::new());
//! assert!(out.problems.is_empty());
//! assert_eq!(out.queries[0].query, "scalar(sum(rate(istio_requests_total[1m])))");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{
    check_query, parse_duration, parse_fallback, Backend, Defaults, Fallback, MetricQuery, NamespaceMatch,
    Origin, Reduce, DEFAULT_LAST_GOOD_MAX_AGE,
};

/// The annotation prefix.
pub const PREFIX: &str = "metric-config.";
/// The legacy metric name.
pub const LEGACY_METRIC: &str = "prometheus-query";
/// The legacy selector label naming the query.
pub const QUERY_NAME_LABEL: &str = "query-name";

/// What the adapter needs of a HorizontalPodAutoscaler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hpa {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.metrics[*].external.metric` entries.
    pub external_metrics: Vec<ExternalMetricRef>,
}

/// One `type: External` metric of an HPA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalMetricRef {
    /// `metric.name`.
    pub name: String,
    /// `metric.selector.matchLabels`.
    pub match_labels: BTreeMap<String, String>,
}

/// A problem with an HPA's annotations, to log and show on the debug endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationProblem {
    /// `namespace/name` of the HPA.
    pub hpa: String,
    /// The annotation key or HPA metric concerned.
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// For an invalid query, the parser's error.
    pub query_error: Option<promql::ParseError>,
}

impl AnnotationProblem {
    /// The problem without the HPA: `subject: message`, and the query's caret lines.
    pub fn detail(&self) -> String {
        let mut out = format!("{}: {}", self.subject, self.message);
        // Writing into a String cannot fail.
        let _ = super::write_query_error(&mut out, self.query_error.as_ref());
        out
    }
}

impl fmt::Display for AnnotationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HPA {}: {}", self.hpa, self.detail())
    }
}

/// The queries and problems found on one HPA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HpaQueries {
    /// One entry per usable external Prometheus metric.
    pub queries: Vec<MetricQuery>,
    /// Everything that was not usable.
    pub problems: Vec<AnnotationProblem>,
}

struct Parsed {
    collector: String,
    key: String,
    full_key: String,
    value: String,
}

/// Compiles an HPA's annotations. `backends` resolves `prometheus-server-alias`.
pub fn from_hpa(hpa: &Hpa, defaults: &Defaults, backends: &BTreeMap<String, Backend>) -> HpaQueries {
    let hpa_id = format!("{}/{}", hpa.namespace, hpa.name);
    let mut out = HpaQueries::default();
    let problem = |out: &mut HpaQueries, subject: &str, message: String, query_error| {
        out.problems.push(AnnotationProblem {
            hpa: hpa_id.clone(),
            subject: subject.to_owned(),
            message,
            query_error,
        })
    };

    // (metricType, metricName) -> configs
    let mut external: BTreeMap<String, Vec<Parsed>> = BTreeMap::new();
    for (key, value) in &hpa.annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else { continue };
        let Some((head, config_key)) =
            rest.split_once('/').filter(|(_, k)| !k.is_empty() && !k.contains('/'))
        else {
            problem(
                &mut out,
                key,
                "ignored: expected metric-config.<type>.<metric>.<collector>/<key>".into(),
                None,
            );
            continue;
        };
        let parts: Vec<&str> = head.split('.').collect();
        let [metric_type, metric_name, collector] = parts.as_slice() else {
            problem(
                &mut out,
                key,
                format!(
                    "ignored: expected metric-config.<type>.<metric>.<collector>/<key> with exactly 4 dot-separated \
                     parts, found {} (metric names containing dots cannot be configured by annotation)",
                    parts.len() + 1
                ),
                None,
            );
            continue;
        };
        if matches!(*metric_type, "pods" | "object") {
            problem(
                &mut out,
                key,
                format!("ignored: {metric_type} metrics are not served by this adapter (External only)"),
                None,
            );
            continue;
        }
        external.entry((*metric_name).to_owned()).or_default().push(Parsed {
            collector: (*collector).to_owned(),
            key: config_key.to_owned(),
            full_key: key.clone(),
            value: value.clone(),
        });
    }

    let used: std::collections::BTreeSet<&str> =
        hpa.external_metrics.iter().map(|m| m.name.as_str()).collect();
    for (name, entries) in &external {
        if !used.contains(name.as_str()) {
            for e in entries {
                problem(
                    &mut out,
                    &e.full_key,
                    format!("ignored: the HPA has no External metric named {name:?}"),
                    None,
                );
            }
        }
    }

    for metric in &hpa.external_metrics {
        let subject = format!("metric {:?}", metric.name);
        let entries = external.get(&metric.name).map(Vec::as_slice).unwrap_or(&[]);
        let collector = metric.match_labels.get("type").cloned().unwrap_or_else(|| metric.name.clone());
        if collector != "prometheus" && collector != LEGACY_METRIC {
            problem(
                &mut out,
                &subject,
                format!("ignored: collector {collector:?} is not supported (only prometheus)"),
                None,
            );
            continue;
        }
        // selector labels, overridden by annotation values with the same key
        let mut config: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for (k, v) in &metric.match_labels {
            config.insert(k, (v, ""));
        }
        for e in entries {
            if e.collector != "prometheus" {
                problem(
                    &mut out,
                    &e.full_key,
                    format!("collector {:?} differs from the metric's collector \"prometheus\"", e.collector),
                    None,
                );
            }
            config.insert(&e.key, (&e.value, &e.full_key));
        }
        let (query_key, query_source) = match config.get(QUERY_NAME_LABEL) {
            Some((q, _)) => (*q, format!("{PREFIX}external.{}.prometheus/{q}", metric.name)),
            None => ("query", format!("{PREFIX}external.{}.prometheus/query", metric.name)),
        };
        let Some((query, _)) = config.get(query_key) else {
            problem(
                &mut out,
                &subject,
                format!("no prometheus query defined: annotation {query_source} is missing"),
                None,
            );
            continue;
        };
        let query = (*query).to_owned();
        let before = out.problems.len();
        if let Err(e) = check_query(query.trim_end()) {
            problem(&mut out, &query_source, "invalid PromQL query".into(), Some(e));
        }

        let mut interval = defaults.interval;
        let mut window = None;
        let mut policies = defaults.policies;
        let mut reduce = defaults.reduce;
        let mut backend_name = defaults.backend.clone();
        let mut backend =
            backends.get(&defaults.backend).cloned().unwrap_or_else(Backend::default_prometheus);
        let mut max_age = DEFAULT_LAST_GOOD_MAX_AGE;
        let dur = |out: &mut HpaQueries, key: &str, v: &str| -> Option<Duration> {
            match parse_duration(v) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    out.problems.push(AnnotationProblem {
                        hpa: hpa_id.clone(),
                        subject: key.to_owned(),
                        message: "duration must be positive".into(),
                        query_error: None,
                    });
                    None
                }
                Err(m) => {
                    out.problems.push(AnnotationProblem {
                        hpa: hpa_id.clone(),
                        subject: key.to_owned(),
                        message: m,
                        query_error: None,
                    });
                    None
                }
            }
        };
        if let Some((v, k)) = config.get("last-good-max-age") {
            max_age = dur(&mut out, k, v).unwrap_or(max_age);
        }
        let mut unknown_keys: Vec<(&str, &str)> = Vec::new();
        for (name, (v, k)) in &config {
            match *name {
                "interval" => match dur(&mut out, k, v) {
                    Some(d) if super::INTERVAL_BOUNDS.contains(&d) => interval = d,
                    Some(_) => problem(&mut out, k, super::interval_bounds_message("interval"), None),
                    None => {}
                },
                "window" => match dur(&mut out, k, v) {
                    Some(d) if d.subsec_nanos() == 0 => window = Some(d),
                    Some(_) => problem(&mut out, k, "window must be a whole number of seconds".into(), None),
                    None => {}
                },
                "prometheus-server" => {
                    if super::valid_url(v) {
                        backend = Backend::prometheus_url(v);
                        backend_name = (*v).to_owned();
                    } else {
                        problem(
                            &mut out,
                            k,
                            format!("prometheus-server {v:?} must be an http:// or https:// URL"),
                            None,
                        );
                    }
                }
                "prometheus-server-alias" => match backends.get(*v) {
                    Some(b) => {
                        backend = b.clone();
                        backend_name = (*v).to_owned();
                    }
                    None => problem(&mut out, k, format!("unknown prometheus-server-alias {v:?}"), None),
                },
                "on-empty" | "on-nan" | "on-error" => match parse_fallback(v, max_age) {
                    Some(f) => match *name {
                        "on-empty" => policies.on_empty = f,
                        "on-nan" => policies.on_nan = f,
                        _ => policies.on_error = f,
                    },
                    None => problem(
                        &mut out,
                        k,
                        format!("unknown policy {v:?} (expected error, zero or last-good)"),
                        None,
                    ),
                },
                "reduce" => match Reduce::parse(v) {
                    Some(r) => reduce = r,
                    None => problem(
                        &mut out,
                        k,
                        format!("unknown reduce {v:?} (expected sum, max, min, avg, error or each)"),
                        None,
                    ),
                },
                "last-good-max-age" | "query" => {}
                // In the current form every key of the metric is its own, so an unknown
                // one is a typo; in the legacy form other keys are other queries, which
                // the unused-annotation check above reports.
                other if query_key == "query" && !k.is_empty() => unknown_keys.push((*k, other)),
                _ => {}
            }
        }
        for f in [&mut policies.on_empty, &mut policies.on_nan, &mut policies.on_error] {
            if let Fallback::LastGood { .. } = f {
                if config.contains_key("last-good-max-age") {
                    *f = Fallback::LastGood { max_age };
                }
            }
        }
        if out.problems.len() > before {
            continue;
        }
        // Reported, but the query is served: the key changes nothing.
        for (key, name) in unknown_keys {
            problem(
                &mut out,
                key,
                format!(
                    "unknown key {name:?}, ignored (known: query, interval, window, prometheus-server, \
                     prometheus-server-alias, on-empty, on-nan, on-error, last-good-max-age, reduce)"
                ),
                None,
            );
        }
        out.queries.push(MetricQuery {
            namespace: NamespaceMatch::Exact(hpa.namespace.clone()),
            metric_name: metric.name.clone(),
            labels: metric.match_labels.clone(),
            query,
            interval,
            window,
            backend_name,
            backend,
            policies,
            reduce,
            origin: Origin::Annotation {
                namespace: hpa.namespace.clone(),
                hpa: hpa.name.clone(),
                key: query_source,
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Selector;

    fn hpa(annotations: &[(&str, &str)], metrics: &[(&str, &[(&str, &str)])]) -> Hpa {
        Hpa {
            namespace: "test".into(),
            name: "podinfo".into(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            external_metrics: metrics
                .iter()
                .map(|(n, l)| ExternalMetricRef {
                    name: n.to_string(),
                    match_labels: l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                })
                .collect(),
        }
    }

    fn run(h: &Hpa) -> HpaQueries {
        from_hpa(h, &Defaults::default(), &BTreeMap::new())
    }

    #[test]
    fn legacy_form_with_interval_and_server() {
        let h = hpa(
            &[
                ("metric-config.external.prometheus-query.prometheus/rps", "sum(rate(x[1m]))"),
                (
                    "metric-config.external.prometheus-query.prometheus/p99",
                    "histogram_quantile(0.99, rate(h[1m]))",
                ),
                ("metric-config.external.prometheus-query.prometheus/interval", "30s"),
                ("metric-config.external.prometheus-query.prometheus/prometheus-server", "http://prom:9090"),
                ("unrelated/annotation", "x"),
            ],
            &[("prometheus-query", &[("query-name", "rps")]), ("prometheus-query", &[("query-name", "p99")])],
        );
        let out = run(&h);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.queries.len(), 2);
        let q = &out.queries[0];
        assert_eq!(q.query, "sum(rate(x[1m]))");
        assert_eq!(q.interval, Duration::from_secs(30));
        assert_eq!(q.backend, Backend::prometheus_url("http://prom:9090"));
        assert_eq!(q.labels.get("query-name").map(String::as_str), Some("rps"));
        assert_eq!(q.namespace, NamespaceMatch::Exact("test".into()));
        assert!(q.serves("test", "Prometheus-Query", &Selector::parse("query-name=rps").unwrap()));
        assert!(!q.serves("other", "prometheus-query", &Selector::everything()));
        assert_eq!(out.queries[1].query, "histogram_quantile(0.99, rate(h[1m]))");
        assert_eq!(
            q.origin,
            Origin::Annotation {
                namespace: "test".into(),
                hpa: "podinfo".into(),
                key: "metric-config.external.prometheus-query.prometheus/rps".into()
            }
        );
    }

    #[test]
    fn current_form_and_extensions() {
        let h = hpa(
            &[
                ("metric-config.external.istio-rps.prometheus/query", "sum(rate(x[1m]))"),
                ("metric-config.external.istio-rps.prometheus/on-error", "last-good"),
                ("metric-config.external.istio-rps.prometheus/last-good-max-age", "5m"),
                ("metric-config.external.istio-rps.prometheus/on-empty", "zero"),
                ("metric-config.external.istio-rps.prometheus/reduce", "max"),
                ("metric-config.external.istio-rps.prometheus/window", "1m"),
            ],
            &[("istio-rps", &[("type", "prometheus")])],
        );
        let out = run(&h);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let q = &out.queries[0];
        assert_eq!(q.interval, Duration::from_secs(15));
        assert_eq!(q.policies.on_error, Fallback::LastGood { max_age: Duration::from_secs(300) });
        assert_eq!(q.policies.on_empty, Fallback::Zero);
        assert_eq!(q.policies.on_nan, Fallback::Error);
        assert_eq!(q.reduce, Reduce::Max);
        assert_eq!(q.window, Some(Duration::from_secs(60)));
        assert_eq!(q.backend, Backend::default_prometheus());
    }

    #[test]
    fn alias_resolves_named_backend() {
        let h = hpa(
            &[
                ("metric-config.external.m.prometheus/query", "up"),
                ("metric-config.external.m.prometheus/prometheus-server-alias", "mesh"),
            ],
            &[("m", &[("type", "prometheus")])],
        );
        let backends = BTreeMap::from([("mesh".to_string(), Backend::prometheus_url("http://mesh:9090"))]);
        let out = from_hpa(&h, &Defaults::default(), &backends);
        assert_eq!(out.queries[0].backend_name, "mesh");
        let out = run(&h);
        assert!(out.queries.is_empty());
        assert!(out.problems[0].message.contains("unknown prometheus-server-alias"));
    }

    #[test]
    fn problems_are_reported_not_dropped() {
        let h = hpa(
            &[
                ("metric-config.external.my.dotted.name.prometheus/query", "up"),
                ("metric-config.external.unused.prometheus/query", "up"),
                ("metric-config.external.bad.prometheus/query", "sum(rate(x[5m])) by (job"),
                ("metric-config.external.slow.prometheus/query", "up"),
                ("metric-config.external.slow.prometheus/interval", "soon"),
                ("metric-config.external.huge.prometheus/query", "up"),
                ("metric-config.external.huge.prometheus/interval", "9300000000000000000s"),
                ("metric-config.pods.rps.json-path/json-key", "$.rps"),
                ("metric-config.noslash", "x"),
            ],
            &[
                ("bad", &[("type", "prometheus")]),
                ("slow", &[("type", "prometheus")]),
                ("huge", &[("type", "prometheus")]),
                ("missing", &[("type", "prometheus")]),
                ("prometheus-query", &[("query-name", "nothing")]),
                ("queue", &[("type", "sqs-queue-length")]),
            ],
        );
        let out = run(&h);
        assert!(out.queries.is_empty(), "{:?}", out.queries);
        let text: Vec<String> = out.problems.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        assert!(all.contains("metric names containing dots"), "{all}");
        assert!(all.contains("no External metric named \"unused\""), "{all}");
        assert!(all.contains("invalid PromQL query: 1:25: parse error: unclosed left parenthesis\n    sum(rate(x[5m])) by (job\n"), "{all}");
        assert!(all.contains("invalid duration \"soon\""), "{all}");
        assert!(all.contains("huge.prometheus/interval: interval must be between 100ms and 24h"), "{all}");
        assert!(all.contains("pods metrics are not served"), "{all}");
        assert!(all.contains("metric-config.noslash: ignored"), "{all}");
        assert!(
            all.contains("annotation metric-config.external.missing.prometheus/query is missing"),
            "{all}"
        );
        assert!(
            all.contains("metric-config.external.prometheus-query.prometheus/nothing is missing"),
            "{all}"
        );
        assert!(all.contains("collector \"sqs-queue-length\" is not supported"), "{all}");
        assert!(text.iter().all(|t| t.starts_with("HPA test/podinfo: ")));
    }

    #[test]
    fn unknown_keys_are_reported_and_the_query_still_served() {
        let h = hpa(
            &[
                ("metric-config.external.rps.prometheus/query", "sum(up)"),
                ("metric-config.external.rps.prometheus/intervall", "30s"),
            ],
            &[("rps", &[("type", "prometheus")])],
        );
        let out = run(&h);
        assert_eq!(out.queries.len(), 1);
        assert_eq!(out.problems.len(), 1);
        let p = out.problems[0].to_string();
        assert!(p.starts_with("HPA test/podinfo: metric-config.external.rps.prometheus/intervall: unknown key \"intervall\", ignored"), "{p}");
    }

    #[test]
    fn annotation_overrides_selector_label() {
        // kube-metrics-adapter: annotation values override matchLabels with the same key.
        let h = hpa(
            &[
                ("metric-config.external.prometheus-query.prometheus/query-name", "b"),
                ("metric-config.external.prometheus-query.prometheus/b", "up"),
            ],
            &[("prometheus-query", &[("query-name", "a")])],
        );
        let out = run(&h);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.queries[0].query, "up");
        assert_eq!(out.queries[0].labels.get("query-name").map(String::as_str), Some("a"));
    }
}
