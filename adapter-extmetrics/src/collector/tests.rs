use super::*;
use crate::config::{FixtureTime, NamespaceMatch, Origin, Policies, PrometheusBackend};

const T: i64 = 1_700_000_000_000;

fn fixture() -> String {
    let dir = std::env::temp_dir().join(format!("extmetrics-collector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: tests run in parallel and must not read each other's writes.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = dir.join(format!("rps-{}.prom", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(
        &path,
        format!(
            "rps{{destination_workload=\"podinfo\",pod=\"a\"}} 3 {T}\n\
             rps{{destination_workload=\"podinfo\",pod=\"b\"}} 5.25 {T}\n\
             weird{{pod=\"a\"}} NaN {T}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn query(q: &str, reduce: Reduce, policies: Policies, backend: Backend) -> MetricQuery {
    MetricQuery {
        namespace: NamespaceMatch::Exact("test".into()),
        metric_name: "Prometheus-Query".into(),
        labels: BTreeMap::from([("query-name".to_owned(), q.to_owned())]),
        query: q.to_owned(),
        interval: Duration::from_secs(15),
        window: Some(Duration::from_secs(60)),
        backend_name: "b".into(),
        backend,
        policies,
        reduce,
        origin: Origin::ConfigFile { file: "c.yaml".into(), line: 1 },
    }
}

fn fixture_backend() -> Backend {
    Backend::Fixture { file: fixture(), at: FixtureTime::End }
}

fn entry(q: MetricQuery) -> Entry {
    let backend = Runtime::build(&q.backend, &BackendDefaults::default()).map(Arc::new);
    Entry {
        id: next_entry_id(),
        origin: RwLock::new(q.origin.clone()),
        query: q,
        backend,
        state: RwLock::default(),
    }
}

async fn collected(q: &str, reduce: Reduce, policies: Policies) -> Entry {
    let e = entry(query(q, reduce, policies, fixture_backend()));
    e.collect().await;
    e
}

fn values(items: &[ExternalMetricValue]) -> Vec<String> {
    items.iter().map(|i| i.value.to_string()).collect()
}

#[tokio::test]
async fn reduce_modes() {
    let p = Policies::default();
    let e = collected("rps", Reduce::Sum, p).await;
    let items = e.answer().unwrap();
    assert_eq!(values(&items), ["8250m"]);
    assert_eq!(items[0].metric_name, "prometheus-query");
    assert_eq!(items[0].metric_labels, BTreeMap::from([("query-name".to_owned(), "rps".to_owned())]));
    assert_eq!(items[0].timestamp.timestamp_millis(), T);
    assert_eq!(items[0].window, Some(60));
    assert_eq!(values(&collected("rps", Reduce::Max, p).await.answer().unwrap()), ["5250m"]);
    // A NaN among the series is NaN whatever its position.
    for q in ["rps or weird", "weird or rps"] {
        for r in [Reduce::Max, Reduce::Min] {
            let err = collected(q, r, p).await.answer().unwrap_err();
            assert!(err.message.contains("returned NaN"), "{q} {r:?}: {}", err.message);
        }
    }
    assert_eq!(values(&collected("rps", Reduce::Min, p).await.answer().unwrap()), ["3"]);
    assert_eq!(values(&collected("rps", Reduce::Avg, p).await.answer().unwrap()), ["4125m"]);
    let each = collected("rps", Reduce::Each, p).await.answer().unwrap();
    assert_eq!(values(&each), ["3", "5250m"]);
    assert_eq!(each[1].metric_labels["pod"], "b");
    assert_eq!(each[1].metric_labels["query-name"], "rps");
    assert!(!each[1].metric_labels.contains_key("__name__"));
    let err = collected("rps", Reduce::Error, p).await.answer().unwrap_err();
    assert_eq!(err.code, 503);
    assert!(err.message.contains("returned 2 series and the metric's reduce is `error`"), "{}", err.message);
    assert_eq!(values(&collected("scalar(sum(rps))", Reduce::Error, p).await.answer().unwrap()), ["8250m"]);
}

#[tokio::test]
async fn problems_are_told_apart() {
    let p = Policies::default();
    let empty = collected("rps{pod=\"zzz\"}", Reduce::Sum, p).await.answer().unwrap_err();
    assert!(empty.message.ends_with("the query returned no series"), "{}", empty.message);
    let nan = collected("weird", Reduce::Sum, p).await.answer().unwrap_err();
    assert!(nan.message.contains("returned NaN, which is not a number"), "{}", nan.message);
    let inf = collected("sum(rps) / 0", Reduce::Sum, p).await.answer().unwrap_err();
    assert!(inf.message.contains("returned +Inf"), "{}", inf.message);
    let shape = collected("rps[1m]", Reduce::Sum, p).await.answer().unwrap_err();
    assert!(shape.message.contains("range vector"), "{}", shape.message);
    let down = Backend::Prometheus(PrometheusBackend {
        url: Some("http://127.0.0.1:1".into()),
        bearer_token_file: None,
        basic_auth: None,
        ca_file: None,
        timeout: Duration::from_secs(2),
    });
    let e = entry(query("up", Reduce::Sum, p, down));
    let err = e.answer().unwrap_err();
    assert_eq!(err.details.and_then(|d| d.retry_after_seconds), Some(1), "not collected yet");
    e.collect().await;
    let err = e.answer().unwrap_err();
    assert_eq!((err.code, err.reason), (503, crate::api::StatusReason::ServiceUnavailable));
    assert!(
        err.message.starts_with("metric Prometheus-Query {query-name=up}: backend failed: "),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn policies() {
    let zero = Policies { on_empty: Fallback::Zero, ..Policies::default() };
    assert_eq!(values(&collected("rps{pod=\"zzz\"}", Reduce::Sum, zero).await.answer().unwrap()), ["0"]);
    // Zero applies to no data only: NaN still fails.
    assert!(collected("weird", Reduce::Sum, zero).await.answer().is_err());

    let last_good = Fallback::LastGood { max_age: Duration::from_secs(60) };
    let p = Policies { on_error: last_good, on_nan: last_good, on_empty: last_good };
    let e = collected("rps", Reduce::Sum, p).await;
    let set = |latest| e.state.write().unwrap().latest = Some(latest);
    set(Err(Problem::Backend("connection refused".into())));
    assert_eq!(values(&e.answer().unwrap()), ["8250m"]);
    e.state.write().unwrap().last_good.as_mut().unwrap().collected -= Duration::from_secs(61);
    let err = e.answer().unwrap_err();
    assert!(err.message.contains("connection refused; the last good value is 61s old"), "{}", err.message);
    let fresh = collected("rps{pod=\"zzz\"}", Reduce::Sum, p).await.answer().unwrap_err();
    assert!(fresh.message.ends_with("no series; there is no last good value yet"), "{}", fresh.message);
}

#[tokio::test]
async fn routing() {
    let c = Collector::new(BackendDefaults::default());
    assert!(c
        .set_queries(vec![
            query("rps", Reduce::Sum, Policies::default(), fixture_backend()),
            query("scalar(sum(rps) * 2)", Reduce::Sum, Policies::default(), fixture_backend()),
        ])
        .is_empty());
    while !c.ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sel = |s: &str| Selector::parse(s).unwrap();
    let one = c.answer("test", "PROMETHEUS-query", &sel("query-name=rps")).unwrap();
    assert_eq!(values(&one), ["8250m"]);
    // Two queries match: refused, not summed.
    let both = c.answer("test", "prometheus-query", &sel("")).unwrap_err();
    assert_eq!((both.code, both.reason), (400, crate::api::StatusReason::BadRequest));
    assert!(
        both.message.contains("matches 2 queries of metric prometheus-query in namespace test"),
        "{}",
        both.message
    );
    assert_eq!(c.answer("test", "nope", &sel("")).unwrap_err().code, 404);
    let other_ns = c.answer("prod", "prometheus-query", &sel("")).unwrap_err();
    assert_eq!(other_ns.code, 404);
    assert!(other_ns.message.contains("serves namespace prod"), "{}", other_ns.message);
    assert_eq!(c.metric_names().into_iter().collect::<Vec<_>>(), ["prometheus-query"]);
    let debug = c.entries()[0].debug();
    assert_eq!(debug.attempts, 1);
    assert_eq!(debug.answer[0]["value"], "8250m");
}

#[test]
fn unusable_backend_is_reported() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = Collector::new(BackendDefaults::default());
        let missing = Backend::Fixture { file: "/nonexistent/x.om".into(), at: FixtureTime::Now };
        let errors = c.set_queries(vec![query("up", Reduce::Sum, Policies::default(), missing.clone())]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.to_string().contains("/nonexistent/x.om"), "{}", errors[0].1);
        while !c.ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = c.answer("test", "prometheus-query", &Selector::everything()).unwrap_err();
        assert_eq!(err.code, 503);
        // A failed backend is not cached: the next apply tries (and reports) it again.
        let again = c.set_queries(vec![query("up", Reduce::Sum, Policies::default(), missing.clone())]);
        assert_eq!(again.len(), 1);
    });
}

#[tokio::test]
async fn unchanged_queries_keep_their_cache() {
    let c = Collector::new(BackendDefaults::default());
    let a = query("rps", Reduce::Sum, Policies::default(), fixture_backend());
    let b = query("scalar(sum(rps) * 2)", Reduce::Sum, Policies::default(), a.backend.clone());
    c.set_queries(vec![a.clone()]);
    while !c.ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = c.entries()[0].clone();
    // Moved in its file: same work, same entry, new origin.
    let moved = MetricQuery { origin: Origin::ConfigFile { file: "c.yaml".into(), line: 9 }, ..a.clone() };
    c.set_queries(vec![b, moved]);
    let entries = c.entries();
    assert_eq!(entries.len(), 2);
    assert!(Arc::ptr_eq(&entries[1], &first), "the unchanged query kept its entry");
    assert!(entries[1].collected());
    assert_eq!(entries[1].debug().origin, "c.yaml:9");
    assert!(c.ready(), "a new query does not make a ready adapter unready");
    // Same backend configuration: the fixture was not loaded again.
    assert!(Arc::ptr_eq(entries[0].backend.as_ref().unwrap(), first.backend.as_ref().unwrap()));
    c.set_queries(vec![]);
    assert!(c.entries().is_empty());
}
