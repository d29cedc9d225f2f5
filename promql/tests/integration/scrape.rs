//! The scrape source against live targets on 127.0.0.1: an axum server whose counter
//! grows at a known rate, Prometheus' own `/metrics` (Debian's `prometheus`, installed
//! by `scripts/test`), and targets that refuse connections or answer 404.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use promql::ast::MatchOp;
use promql::eval::Engine;
use promql::source::scrape::{ScrapeConfig, ScrapeError, Scraper, TargetHealth};
use promql::storage::{LabelMatcher, SampleSource, Selection};
use promql::value::{is_stale_marker, Series, Value};
use promql::Labels;

/// The test counter's increase per wall-clock second.
const SLOPE: f64 = 7.5;

/// Serves `app` on a free port of 127.0.0.1; the URL of its `/metrics`.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/metrics")
}

fn vector(source: &dyn SampleSource, query: &str, t: i64) -> Vec<(Labels, f64)> {
    let result = Engine::default().instant_query(source, query, t).unwrap();
    let Value::Vector(v) = result.value else { panic!("{query}: not a vector: {:?}", result.value) };
    v.into_iter().map(|s| (s.labels, s.v)).collect()
}

fn raw(source: &dyn SampleSource, name: &str) -> Vec<Series> {
    let m = [LabelMatcher::new("__name__", MatchOp::Equal, name).unwrap()];
    source.select(&Selection { matchers: &m, start: i64::MIN, end: i64::MAX }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counter_gives_its_rate_up_and_staleness() {
    let started = Instant::now();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            // Far from zero, so that `rate` extrapolates to the window's edges.
            let value = 1000.0 + SLOPE * started.elapsed().as_secs_f64();
            let mut body =
                format!("# TYPE test_requests_total counter\ntest_requests_total{{path=\"/\"}} {value}\n");
            if n <= 3 {
                body.push_str("# TYPE test_flappy gauge\ntest_flappy 1\n");
            }
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
        }),
    );
    let url = serve(app).await;
    let config = ScrapeConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(900),
        retention: Duration::from_secs(60),
        ..ScrapeConfig::new("test", [url.clone()])
    };
    let handle = Scraper::start(config).unwrap();
    tokio::time::sleep(Duration::from_millis(5_500)).await;

    let status = handle.targets_status().remove(0);
    assert_eq!(status.health, TargetHealth::Up, "{:?}", status.last_error);
    assert_eq!(status.url, url);
    let t = status.last_scrape.unwrap();
    let scrapes = served.load(Ordering::SeqCst);
    assert!((5..=7).contains(&scrapes), "{scrapes} scrapes in 5.5 s");

    // Regular scrape times, one a second.
    let up = raw(&handle, "up");
    assert_eq!(up.len(), 1);
    for pair in up[0].points.windows(2) {
        let gap = pair[1].t - pair[0].t;
        assert!((750..=1250).contains(&gap), "scrapes {gap} ms apart: {:?}", up[0].points);
    }

    let rate = vector(&handle, "rate(test_requests_total[5s])", t);
    assert_eq!(rate.len(), 1, "{rate:?}");
    let instance = url.trim_start_matches("http://").trim_end_matches("/metrics");
    assert_eq!(rate[0].0, Labels::from_pairs([("instance", instance), ("job", "test"), ("path", "/")]));
    assert!((rate[0].1 - SLOPE).abs() <= 0.01 * SLOPE, "rate {} instead of {SLOPE}", rate[0].1);

    let up = vector(&handle, "up", t);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0);
    assert_eq!(up[0].0.get("instance"), Some(instance));

    // The series that went away after three scrapes is stale: an instant selector
    // finds nothing although its last sample is within the lookback window.
    assert_eq!(vector(&handle, "test_flappy", t), []);
    assert_eq!(vector(&handle, "count_over_time(test_flappy[1m])", t)[0].1, 3.0);
    let flappy = raw(&handle, "test_flappy");
    let points = &flappy[0].points;
    assert_eq!(points.len(), 4, "{points:?}");
    assert!(points[..3].iter().all(|p| p.v == 1.0) && is_stale_marker(points[3].v), "{points:?}");

    handle.stop();
    assert_eq!(handle.scrape_once().await, Err(ScrapeError::Stopped));
    assert!(raw(&handle, "test_requests_total")[0].points.last().is_some_and(|p| is_stale_marker(p.v)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_prometheus_own_metrics() {
    let dir = testkit::temp_dir("scrape-prometheus");
    let prom = tokio::task::spawn_blocking(move || testkit::start_prometheus_empty(&dir)).await.unwrap();
    let url = format!("{}/metrics", prom.url);
    let scraper = Scraper::new(ScrapeConfig::new("prometheus", [url.clone()])).unwrap();
    scraper.scrape_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    scraper.scrape_once().await.unwrap();

    let status = scraper.targets_status().remove(0);
    assert_eq!(status.health, TargetHealth::Up, "{:?}", status.last_error);
    assert!(status.last_samples_scraped > 100, "{} samples", status.last_samples_scraped);
    let t = status.last_scrape.unwrap();
    let instance = prom.url.trim_start_matches("http://");

    let up = vector(&scraper, r#"up{job="prometheus"}"#, t);
    assert_eq!(up.len(), 1);
    assert_eq!((up[0].0.get("instance"), up[0].1), (Some(instance), 1.0));

    // The first scrape is counted by the time of the second.
    let scrapes = vector(&scraper, r#"prometheus_http_requests_total{handler="/metrics"}"#, t);
    assert_eq!(scrapes.len(), 1, "{scrapes:?}");
    assert!(scrapes[0].1 >= 1.0, "{scrapes:?}");
    assert_eq!(scrapes[0].0.get("job"), Some("prometheus"));
    assert_eq!(scrapes[0].0.get("instance"), Some(instance));
    assert_eq!(raw(&scraper, "prometheus_http_requests_total")[0].points.len(), 2);
    assert!(!vector(&scraper, "prometheus_build_info", t).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failing_targets_are_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = format!("http://127.0.0.1:{port}/metrics");
    let missing = serve(Router::new()).await;
    let config = ScrapeConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        ..ScrapeConfig::new("dead", [refused.clone(), missing.clone()])
    };
    let handle = Scraper::start(config).unwrap();
    let err = handle.scrape_once().await.unwrap_err();
    assert!(matches!(err, ScrapeError::Request { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("scraping {refused}: ")), "{message}");
    assert!(message.to_lowercase().contains("connection refused"), "{message}");

    let status = handle.targets_status();
    assert_eq!(status[0].health, TargetHealth::Down);
    assert!(matches!(&status[0].last_error, Some(ScrapeError::Request { url, .. }) if *url == refused));
    assert_eq!(status[1].health, TargetHealth::Down);
    assert_eq!(
        status[1].last_error.as_ref().map(ToString::to_string),
        Some(format!("scraping {missing}: server returned HTTP status 404 Not Found"))
    );

    let t = status.iter().filter_map(|s| s.last_scrape).max().unwrap();
    let up = vector(&handle, "up", t);
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.iter().all(|(_, v)| *v == 0.0), "{up:?}");
    handle.stop();
}
