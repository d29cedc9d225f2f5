//! A scraper of `/metrics` endpoints as a sample source: Prometheus' scrape loop in
//! miniature, keeping a bounded window of samples in memory that queries read while
//! scraping goes on.
//!
//! The rules are those of Prometheus' `scrape` package:
//!
//! - every scrape has one timestamp, taken when it starts, and every sample gets it,
//!   unless the exposition gives its own and [`ScrapeConfig::honor_timestamps`] is set
//!   (the default). A scrape within 2 ms of its schedule is put exactly on it;
//! - after a scrape, a series of the previous scrape that is missing now gets a
//!   staleness marker at the new scrape's time (series with their own timestamps are
//!   not tracked);
//! - a failed scrape (connection, timeout, HTTP status, unparsable body, too many
//!   series) stores none of its samples, marks every series of the previous scrape
//!   stale, and records `up` 0;
//! - each scrape adds `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling` and `scrape_series_added`, labelled with
//!   the target's `job` and `instance`;
//! - `job` and `instance` are added to every scraped series; an exposed label of the
//!   same name is renamed `exported_<name>` (`honor_labels: false`, the default).
//!
//! Samples older than [`ScrapeConfig::retention`] are dropped as scraping goes on, and
//! a series without samples left is forgotten.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::ast::MatchOp;
use crate::labels::{Label, Labels, METRIC_NAME};
use crate::storage::exposition::{Dialect, ExpositionParser, LoadError};
use crate::storage::{SampleSource, Selection, SourceError};
use crate::value::{stale_marker, Point, Series, Timestamp};

/// What Prometheus 2.x asks a target for: OpenMetrics first, then the classic text
/// format.
const ACCEPT: &str = concat!(
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,",
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
);
/// How far from its schedule a scrape's timestamp may be and still be aligned to it.
const TIMESTAMP_TOLERANCE_MS: i64 = 2;

/// How to reach the targets: authentication and TLS.
#[derive(Debug, Clone, Default)]
pub struct ScrapeHttpOptions {
    /// File with a bearer token, read for every scrape (tokens rotate).
    pub bearer_token_file: Option<PathBuf>,
    /// User and password for basic authentication.
    pub basic_auth: Option<(String, String)>,
    /// Extra headers sent with every scrape.
    pub headers: Vec<(String, String)>,
    /// PEM file of certificate authorities to trust besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only.
    pub insecure_skip_verify: bool,
}

/// One scrape job: targets scraped at one interval, with the same limits.
///
/// ```
/// use std::time::Duration;
/// use promql::source::scrape::ScrapeConfig;
/// let config = ScrapeConfig {
///     interval: Duration::from_secs(5),
///     timeout: Duration::from_secs(2),
///     ..ScrapeConfig::new("node", ["http://127.0.0.1:9100/metrics"])
/// };
/// assert_eq!(config.retention, Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// The `job` label of every series scraped. Must not be empty.
    pub job: String,
    /// The URLs scraped (`http://host:port/metrics`). The `instance` label of a target is
    /// its `host:port`, with the scheme's default port when the URL has none.
    pub targets: Vec<String>,
    /// Time between two scrapes of a target (default 15 s).
    pub interval: Duration,
    /// Limit of one scrape, at most `interval` (default 10 s).
    pub timeout: Duration,
    /// How much history is kept: samples older than the newest scrape minus this are
    /// dropped (default 1 h).
    pub retention: Duration,
    /// The most series one scrape of a target may expose; a scrape with more fails, like
    /// one over Prometheus' `sample_limit`. 0: no limit (the default).
    pub max_series: usize,
    /// The largest body accepted, in bytes; 0: no limit (the default).
    pub body_size_limit: usize,
    /// Keep the timestamps an exposition gives (default true).
    pub honor_timestamps: bool,
    /// On a clash between an exposed label and `job` or `instance`, keep the exposed
    /// one (default false: the target's wins, the exposed one becomes `exported_…`).
    pub honor_labels: bool,
    /// Authentication and TLS.
    pub http: ScrapeHttpOptions,
}

impl ScrapeConfig {
    /// A job with the default settings.
    pub fn new<S: Into<String>>(job: impl Into<String>, targets: impl IntoIterator<Item = S>) -> Self {
        ScrapeConfig {
            job: job.into(),
            targets: targets.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            job: String::new(),
            targets: Vec::new(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
            max_series: 0,
            body_size_limit: 0,
            honor_timestamps: true,
            honor_labels: false,
            http: ScrapeHttpOptions::default(),
        }
    }
}

/// Why a scrape, or the scraper itself, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScrapeError {
    /// The configuration cannot be used.
    #[error("invalid scrape config: {0}")]
    Config(String),
    /// A target is not a usable URL.
    #[error("invalid scrape target {url:?}: {message}")]
    InvalidTarget {
        /// The target as configured.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// [`Scraper::start`] was called outside a tokio runtime.
    #[error("Scraper::start must be called within a tokio runtime")]
    NoRuntime,
    /// The request failed: connection refused, TLS, DNS, an unreadable token file…
    #[error("scraping {url}: {message}")]
    Request {
        /// The target.
        url: String,
        /// The cause, with its chain of causes.
        message: String,
    },
    /// No complete answer within the timeout.
    #[error("scraping {url}: no complete response within the scrape timeout of {timeout:?}")]
    Timeout {
        /// The target.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The target answered with another status than 200.
    #[error("scraping {url}: server returned HTTP status {status}")]
    Status {
        /// The target.
        url: String,
        /// The status, e.g. `404 Not Found`.
        status: String,
    },
    /// The body is larger than [`ScrapeConfig::body_size_limit`].
    #[error("scraping {url}: body size limit of {limit} bytes exceeded")]
    BodyTooLarge {
        /// The target.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The body is not a valid exposition.
    #[error("scraping {url}: {error}")]
    Parse {
        /// The target.
        url: String,
        /// Where and why parsing failed.
        error: LoadError,
    },
    /// The target exposes more series than [`ScrapeConfig::max_series`].
    #[error("scraping {url}: series limit exceeded: {found} series exposed, the limit is {limit}")]
    SeriesLimit {
        /// The target.
        url: String,
        /// The limit.
        limit: usize,
        /// How many series the scrape had.
        found: usize,
    },
    /// The scraper has been stopped.
    #[error("the scraper has been stopped")]
    Stopped,
}

/// A target's health, as Prometheus reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHealth {
    /// Not scraped yet.
    Unknown,
    /// The last scrape succeeded.
    Up,
    /// The last scrape failed.
    Down,
}

/// The state of one target after its last scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    /// The URL scraped.
    pub url: String,
    /// The target's labels: `job` and `instance`.
    pub labels: Labels,
    /// Whether the last scrape succeeded.
    pub health: TargetHealth,
    /// Why the last scrape failed.
    pub last_error: Option<ScrapeError>,
    /// The timestamp of the last scrape (ms since the epoch).
    pub last_scrape: Option<Timestamp>,
    /// How long the last scrape's request took.
    pub last_scrape_duration: Duration,
    /// How many samples the last scrape exposed.
    pub last_samples_scraped: usize,
}

/// A body as fetched.
#[derive(Debug)]
struct Fetched {
    body: Vec<u8>,
    content_type: String,
}

/// A scrape ready to be stored: its samples with their final labels and times, or its
/// error with the number of samples it exposed.
struct Prepared {
    /// Final labels, time, value, and whether the series is tracked for staleness.
    samples: Vec<(Labels, Timestamp, f64, bool)>,
    /// How many samples the body had, duplicates included.
    total: usize,
}

type Outcome = Result<Prepared, (ScrapeError, usize)>;

/// Exposed label set to final label set, for the series of the last scrape.
type LabelCache = HashMap<Labels, Labels>;

/// A configured target.
struct Target {
    url: reqwest::Url,
    url_text: String,
    /// `job` and `instance`.
    labels: Labels,
    /// `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
    /// `scrape_samples_post_metric_relabeling`, `scrape_series_added`.
    report: [Labels; 5],
    /// Held during a scrape, so that scrapes of one target never overlap.
    cache: tokio::sync::Mutex<LabelCache>,
}

/// The samples of one series, oldest first.
#[derive(Debug, Default)]
struct Column {
    ts: VecDeque<Timestamp>,
    vs: VecDeque<f64>,
}

/// Columnar series grouped by metric name, with a bounded window.
#[derive(Debug, Default)]
struct Store {
    by_name: HashMap<Arc<str>, HashMap<Labels, Column>>,
    samples: usize,
}

impl Store {
    /// Appends a sample after the series' last one; older or equal times are dropped
    /// (out of order, or a duplicate), as Prometheus' head does. Whether it was kept.
    fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) -> bool {
        let name = labels
            .iter()
            .find(|l| &*l.name == METRIC_NAME)
            .map_or_else(|| Arc::from(""), |l| l.value.clone());
        let column = self.by_name.entry(name).or_default().entry(labels.clone()).or_default();
        if column.ts.back().is_some_and(|&last| t <= last) {
            return false;
        }
        column.ts.push_back(t);
        column.vs.push_back(v);
        self.samples += 1;
        true
    }

    /// Drops the samples before `cutoff`, and the series left without any.
    fn truncate(&mut self, cutoff: Timestamp) {
        let samples = &mut self.samples;
        self.by_name.retain(|_, group| {
            group.retain(|_, column| {
                while column.ts.front().is_some_and(|&t| t < cutoff) {
                    column.ts.pop_front();
                    column.vs.pop_front();
                    *samples -= 1;
                }
                !column.ts.is_empty()
            });
            !group.is_empty()
        });
    }

    fn series_count(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }

    fn select(&self, sel: &Selection<'_>) -> Vec<Series> {
        let name = sel.matchers.iter().find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal);
        let groups: Vec<&HashMap<Labels, Column>> = match name {
            Some(m) => self.by_name.get(m.value.as_str()).into_iter().collect(),
            None => self.by_name.values().collect(),
        };
        let mut out = Vec::new();
        for (labels, column) in groups.into_iter().flatten() {
            if !sel.matchers.iter().all(|m| m.matches(labels.get(&m.name).unwrap_or(""))) {
                continue;
            }
            let lo = column.ts.partition_point(|&t| t < sel.start);
            let hi = column.ts.partition_point(|&t| t <= sel.end).max(lo);
            let points =
                column.ts.range(lo..hi).zip(column.vs.range(lo..hi)).map(|(&t, &v)| Point { t, v }).collect();
            out.push(Series { labels: labels.clone(), points });
        }
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

/// What is known of a target between scrapes.
struct Book {
    /// The series of the last scrape that get staleness markers when they disappear.
    seen: HashSet<Labels>,
    status: TargetStatus,
}

/// Everything behind the lock.
struct Db {
    store: Store,
    books: Vec<Book>,
    stopped: bool,
    last_truncation: Option<Timestamp>,
}

struct Inner {
    config: ScrapeConfig,
    client: reqwest::Client,
    targets: Vec<Target>,
    db: RwLock<Db>,
}

/// Scrapes a job's targets into memory, and serves what it scraped as a
/// [`SampleSource`].
///
/// [`Scraper::start`] scrapes every target at the configured interval in the
/// background (one task per target on the current tokio runtime) until
/// [`ScrapeHandle::stop`]; [`Scraper::new`] gives a scraper that scrapes only when
/// [`Scraper::scrape_once`] is called. Clones share the same targets and samples, so a
/// clone can be queried while another scrapes.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use promql::eval::Engine;
/// use promql::source::scrape::{ScrapeConfig, Scraper};
///
/// let config = ScrapeConfig {
///     interval: Duration::from_secs(5),
///     timeout: Duration::from_secs(4),
///     retention: Duration::from_secs(600),
///     max_series: 50_000,
///     ..ScrapeConfig::new("node", ["http://127.0.0.1:9100/metrics"])
/// };
/// let handle = Scraper::start(config)?;
/// tokio::time::sleep(Duration::from_secs(60)).await;
/// for target in handle.targets_status() {
///     println!("{}: {:?} {:?}", target.url, target.health, target.last_error);
/// }
/// let now = handle.targets_status()[0].last_scrape.unwrap_or_default();
/// let engine = Engine::default();
/// let busy = engine.instant_query(&handle, "sum(rate(node_cpu_seconds_total{mode!=\"idle\"}[1m]))", now)?;
/// println!("{:?}", busy.value);
/// handle.stop();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Scraper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("job", &self.inner.config.job)
            .field("targets", &self.inner.config.targets)
            .finish_non_exhaustive()
    }
}

/// The milliseconds since the epoch now.
fn now_ms() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An error and the errors that caused it, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

/// The label set of a scraped series: the exposed labels with the target's added.
/// Without `honor_labels`, the target's labels win, and a clashing exposed label moves
/// to `exported_<name>` (`exported_exported_<name>` if that is taken too, …).
fn with_target_labels(exposed: &Labels, target: &Labels, honor_labels: bool) -> Labels {
    let mut map: BTreeMap<Arc<str>, Arc<str>> =
        exposed.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
    if honor_labels {
        for l in target.iter() {
            map.entry(l.name.clone()).or_insert_with(|| l.value.clone());
        }
    } else {
        let mut conflicts = Vec::new();
        for l in target.iter() {
            if let Some(exposed_value) = map.insert(l.name.clone(), l.value.clone()) {
                conflicts.push((l.name.clone(), exposed_value));
            }
        }
        // As Prometheus: shorter names first, so that `exported_` chains resolve alike.
        conflicts.sort_by_key(|(name, _)| name.len());
        for (name, value) in conflicts {
            let mut new_name = name.to_string();
            loop {
                new_name.insert_str(0, "exported_");
                if !map.contains_key(new_name.as_str()) {
                    map.insert(Arc::from(new_name.as_str()), value);
                    break;
                }
            }
        }
    }
    Labels::from_interned(map.into_iter().map(|(name, value)| Label { name, value }).collect())
}

/// A target URL, its text and its labels.
fn parse_target(job: &str, url: &str) -> Result<(reqwest::Url, Labels), ScrapeError> {
    let invalid = |message: String| ScrapeError::InvalidTarget { url: url.to_owned(), message };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("scheme must be http or https, not {:?}", parsed.scheme())));
    }
    let host = parsed.host_str().ok_or_else(|| invalid("no host".into()))?;
    let port = parsed.port_or_known_default().ok_or_else(|| invalid("no port".into()))?;
    let instance = format!("{host}:{port}");
    Ok((parsed, Labels::from_pairs([("job", job), ("instance", instance.as_str())])))
}

fn build_client(http: &ScrapeHttpOptions) -> Result<reqwest::Client, ScrapeError> {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .user_agent(concat!("promql-rs/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &http.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| ScrapeError::Config(format!("reading CA file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ScrapeError::Config(format!("CA file {}: {e}", ca.display())))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if http.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| ScrapeError::Config(format!("HTTP client: {}", error_chain(&e))))
}

impl Scraper {
    /// A scraper of `config`'s targets that scrapes only when asked
    /// ([`scrape_once`](Self::scrape_once)). Checks the configuration: a job name,
    /// non-zero interval and retention, a timeout within the interval, distinct
    /// `http(s)://` targets.
    pub fn new(config: ScrapeConfig) -> Result<Scraper, ScrapeError> {
        if config.job.is_empty() {
            return Err(ScrapeError::Config("the job name must not be empty".into()));
        }
        if config.interval.is_zero() || config.timeout.is_zero() || config.retention.is_zero() {
            return Err(ScrapeError::Config(format!(
                "job {:?}: interval, timeout and retention must be positive",
                config.job
            )));
        }
        if config.timeout > config.interval {
            return Err(ScrapeError::Config(format!(
                "job {:?}: scrape timeout {:?} greater than scrape interval {:?}",
                config.job, config.timeout, config.interval
            )));
        }
        let mut targets = Vec::with_capacity(config.targets.len());
        let mut instances = HashSet::new();
        for url in &config.targets {
            let (parsed, labels) = parse_target(&config.job, url)?;
            if !instances.insert(labels.clone()) {
                return Err(ScrapeError::Config(format!(
                    "job {:?}: two targets with the same labels {labels}",
                    config.job
                )));
            }
            let report = ["up", "scrape_duration_seconds", "scrape_samples_scraped"]
                .into_iter()
                .chain(["scrape_samples_post_metric_relabeling", "scrape_series_added"])
                .map(|name| labels.with(METRIC_NAME, name));
            let report: Vec<Labels> = report.collect();
            let report: [Labels; 5] =
                report.try_into().map_err(|_| ScrapeError::Config("internal: report series".into()))?;
            targets.push(Target {
                url: parsed,
                url_text: url.clone(),
                labels,
                report,
                cache: tokio::sync::Mutex::new(LabelCache::new()),
            });
        }
        let books = targets
            .iter()
            .map(|t| Book {
                seen: HashSet::new(),
                status: TargetStatus {
                    url: t.url_text.clone(),
                    labels: t.labels.clone(),
                    health: TargetHealth::Unknown,
                    last_error: None,
                    last_scrape: None,
                    last_scrape_duration: Duration::ZERO,
                    last_samples_scraped: 0,
                },
            })
            .collect();
        let client = build_client(&config.http)?;
        let db = Db { store: Store::default(), books, stopped: false, last_truncation: None };
        Ok(Scraper { inner: Arc::new(Inner { config, client, targets, db: RwLock::new(db) }) })
    }

    /// Starts scraping `config`'s targets on the current tokio runtime: one task per
    /// target, scraping at once and then every [`ScrapeConfig::interval`] (a scrape
    /// that overruns skips the ticks it missed). Must be called within a runtime.
    pub fn start(config: ScrapeConfig) -> Result<ScrapeHandle, ScrapeError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ScrapeError::NoRuntime)?;
        let scraper = Scraper::new(config)?;
        let tasks = (0..scraper.inner.targets.len()).map(|i| runtime.spawn(scraper.clone().run(i))).collect();
        Ok(ScrapeHandle { scraper, tasks })
    }

    /// The configuration.
    pub fn config(&self) -> &ScrapeConfig {
        &self.inner.config
    }

    /// Scrapes every target once, concurrently, and stores the outcome. Every target
    /// is scraped and recorded; the first failure, if any, is returned.
    pub async fn scrape_once(&self) -> Result<(), ScrapeError> {
        let results =
            futures_util::future::join_all((0..self.inner.targets.len()).map(|i| self.scrape_target(i)))
                .await;
        results.into_iter().collect()
    }

    /// Every target's status, in the configured order.
    pub fn targets_status(&self) -> Vec<TargetStatus> {
        self.read().books.iter().map(|b| b.status.clone()).collect()
    }

    /// How many series are held.
    pub fn series_count(&self) -> usize {
        self.read().store.series_count()
    }

    /// How many samples are held, staleness markers included.
    pub fn sample_count(&self) -> usize {
        self.read().store.samples
    }

    /// Stops storing scrapes: every series of every target's last scrape, and the
    /// targets' `up` and `scrape_*` series, get a staleness marker now, as Prometheus
    /// does for a target that goes away. Later scrapes fail with
    /// [`ScrapeError::Stopped`]; the samples stay queryable. Does not stop background
    /// tasks: [`ScrapeHandle::stop`] does.
    pub fn stop(&self) {
        let mut db = self.write();
        if db.stopped {
            return;
        }
        db.stopped = true;
        let Db { store, books, .. } = &mut *db;
        for (book, target) in books.iter_mut().zip(&self.inner.targets) {
            let Some(last) = book.status.last_scrape else { continue };
            let t = now_ms().max(last + 1);
            for labels in book.seen.drain() {
                store.append(&labels, t, stale_marker());
            }
            for labels in &target.report {
                store.append(labels, t, stale_marker());
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Db> {
        self.inner.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Db> {
        self.inner.db.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The loop of one target.
    async fn run(self, idx: usize) {
        let mut ticker = tokio::time::interval(self.inner.config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            if let Err(ScrapeError::Stopped) = self.scrape_target(idx).await {
                return;
            }
        }
    }

    /// One scrape of one target, stored.
    async fn scrape_target(&self, idx: usize) -> Result<(), ScrapeError> {
        let target = &self.inner.targets[idx];
        let mut cache = target.cache.lock().await;
        let t = self.scrape_time(idx, now_ms());
        let started = Instant::now();
        let fetched = self.fetch(target).await;
        let duration = started.elapsed();
        self.process(idx, fetched, &mut cache, t, duration)
    }

    /// The timestamp of a scrape starting at `now`: on the schedule when within 2 ms
    /// of it (as Prometheus aligns them), and always after the target's last scrape.
    fn scrape_time(&self, idx: usize, now: Timestamp) -> Timestamp {
        let interval = millis(self.inner.config.interval);
        match self.read().books[idx].status.last_scrape {
            Some(last) => {
                let scheduled = last.saturating_add(interval);
                if interval > 100 * TIMESTAMP_TOLERANCE_MS
                    && (now - scheduled).abs() <= TIMESTAMP_TOLERANCE_MS
                {
                    scheduled
                } else {
                    now.max(last + 1)
                }
            }
            None => now,
        }
    }

    /// Fetches a target's body.
    async fn fetch(&self, target: &Target) -> Result<Fetched, ScrapeError> {
        let url = &target.url_text;
        let timeout = self.inner.config.timeout;
        let request_error = |e: reqwest::Error| {
            if e.is_timeout() {
                ScrapeError::Timeout { url: url.clone(), timeout }
            } else {
                ScrapeError::Request { url: url.clone(), message: error_chain(&e.without_url()) }
            }
        };
        let http = &self.inner.config.http;
        let mut req = self
            .inner
            .client
            .get(target.url.clone())
            .timeout(timeout)
            .header("Accept", ACCEPT)
            .header("X-Prometheus-Scrape-Timeout-Seconds", timeout.as_secs_f64().to_string());
        if let Some(path) = &http.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|e| ScrapeError::Request {
                url: url.clone(),
                message: format!("reading bearer token file {}: {e}", path.display()),
            })?;
            req = req.bearer_auth(token.trim());
        }
        if let Some((user, password)) = &http.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        for (name, value) in &http.headers {
            req = req.header(name, value);
        }
        let mut resp = req.send().await.map_err(request_error)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status { url: url.clone(), status: resp.status().to_string() });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let limit = self.inner.config.body_size_limit;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            if limit > 0 && body.len() + chunk.len() > limit {
                return Err(ScrapeError::BodyTooLarge { url: url.clone(), limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, content_type })
    }

    /// Parses a fetched body and stores the outcome at `t`.
    fn process(
        &self,
        idx: usize,
        fetched: Result<Fetched, ScrapeError>,
        cache: &mut LabelCache,
        t: Timestamp,
        duration: Duration,
    ) -> Result<(), ScrapeError> {
        let outcome = fetched.map_err(|e| (e, 0)).and_then(|f| self.prepare(idx, &f, cache, t));
        self.commit(idx, outcome, t, duration)
    }

    /// The samples of a body with their final labels and times, or why the scrape
    /// fails. Keeps the label cache to this scrape's series.
    fn prepare(&self, idx: usize, fetched: &Fetched, cache: &mut LabelCache, t: Timestamp) -> Outcome {
        let config = &self.inner.config;
        let target = &self.inner.targets[idx];
        let url = &target.url_text;
        let dialect = Dialect::from_content_type(&fetched.content_type);
        let mut next = LabelCache::with_capacity(cache.len());
        let mut samples = Vec::new();
        let mut series = HashSet::new();
        let mut total = 0;
        for parsed in ExpositionParser::new(fetched.body.as_slice(), dialect) {
            let parsed = parsed.map_err(|error| (ScrapeError::Parse { url: url.clone(), error }, 0))?;
            total += 1;
            let labels = match next.get(&parsed.labels).or_else(|| cache.get(&parsed.labels)) {
                Some(l) => l.clone(),
                None => with_target_labels(&parsed.labels, &target.labels, config.honor_labels),
            };
            next.insert(parsed.labels, labels.clone());
            if !series.insert(labels.clone()) {
                continue; // A duplicate: the first sample wins.
            }
            let (time, tracked) = match parsed.timestamp_ms {
                Some(own) if config.honor_timestamps => (own, false),
                _ => (t, true),
            };
            samples.push((labels, time, parsed.value, tracked));
        }
        *cache = next;
        if config.max_series > 0 && series.len() > config.max_series {
            let error =
                ScrapeError::SeriesLimit { url: url.clone(), limit: config.max_series, found: series.len() };
            return Err((error, total));
        }
        Ok(Prepared { samples, total })
    }

    /// Stores a scrape's outcome at `t`: its samples, staleness markers for the series
    /// gone since the last scrape (all of them on failure), and the report series.
    fn commit(
        &self,
        idx: usize,
        outcome: Outcome,
        t: Timestamp,
        duration: Duration,
    ) -> Result<(), ScrapeError> {
        let target = &self.inner.targets[idx];
        let mut db = self.write();
        if db.stopped {
            return Err(ScrapeError::Stopped);
        }
        let Db { store, books, last_truncation, .. } = &mut *db;
        let book = &mut books[idx];
        let (result, scraped, added) = match outcome {
            Ok(prepared) => {
                let total = prepared.total;
                let mut seen = HashSet::with_capacity(book.seen.len());
                for (labels, time, v, tracked) in prepared.samples {
                    store.append(&labels, time, v);
                    if tracked {
                        seen.insert(labels);
                    }
                }
                let added = seen.iter().filter(|l| !book.seen.contains(*l)).count();
                for gone in book.seen.difference(&seen) {
                    store.append(gone, t, stale_marker());
                }
                book.seen = seen;
                (Ok(()), total, added)
            }
            Err((error, total)) => {
                for gone in book.seen.drain() {
                    store.append(&gone, t, stale_marker());
                }
                (Err(error), total, 0)
            }
        };
        let up = if result.is_ok() { 1.0 } else { 0.0 };
        let post_relabeling = if result.is_ok() { scraped } else { 0 };
        let report = [up, duration.as_secs_f64(), scraped as f64, post_relabeling as f64, added as f64];
        for (labels, v) in target.report.iter().zip(report) {
            store.append(labels, t, v);
        }
        book.status.health = if result.is_ok() { TargetHealth::Up } else { TargetHealth::Down };
        book.status.last_error = result.as_ref().err().cloned();
        book.status.last_scrape = Some(t);
        book.status.last_scrape_duration = duration;
        book.status.last_samples_scraped = scraped;
        let interval = millis(self.inner.config.interval);
        if last_truncation.is_none_or(|last| t - last >= interval) {
            store.truncate(t.saturating_sub(millis(self.inner.config.retention)));
            *last_truncation = Some(t);
        }
        result
    }
}

impl SampleSource for Scraper {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError> {
        Ok(self.read().store.select(sel))
    }
}

/// A running [`Scraper`]: its background tasks end on [`stop`](Self::stop) or when
/// the handle is dropped. Queries read it as a [`SampleSource`] while it scrapes.
#[derive(Debug)]
pub struct ScrapeHandle {
    scraper: Scraper,
    tasks: Vec<JoinHandle<()>>,
}

impl ScrapeHandle {
    /// The scraper, to share (clones query the same samples).
    pub fn scraper(&self) -> &Scraper {
        &self.scraper
    }

    /// Scrapes every target once now, besides the regular scrapes; see
    /// [`Scraper::scrape_once`].
    pub async fn scrape_once(&self) -> Result<(), ScrapeError> {
        self.scraper.scrape_once().await
    }

    /// Every target's status.
    pub fn targets_status(&self) -> Vec<TargetStatus> {
        self.scraper.targets_status()
    }

    /// Ends the background tasks and marks every scraped series stale now (see
    /// [`Scraper::stop`]). The samples stay queryable.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.scraper.stop();
    }
}

impl Drop for ScrapeHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SampleSource for ScrapeHandle {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError> {
        self.scraper.select(sel)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::eval::Engine;
    use crate::storage::LabelMatcher;
    use crate::value::{is_stale_marker, Value};

    const URL: &str = "http://node-1:9100/metrics";

    fn scraper(config: ScrapeConfig) -> Scraper {
        Scraper::new(ScrapeConfig { targets: vec![URL.into()], ..config }).unwrap()
    }

    fn default_scraper() -> Scraper {
        scraper(ScrapeConfig::new("node", [URL]))
    }

    /// Stores `text` as target 0's scrape at `t`.
    fn ingest(s: &Scraper, text: &str, t: Timestamp) -> Result<(), ScrapeError> {
        let fetched =
            Fetched { body: text.as_bytes().to_vec(), content_type: "text/plain; version=0.0.4".into() };
        ingest_outcome(s, Ok(fetched), t)
    }

    fn ingest_outcome(
        s: &Scraper,
        fetched: Result<Fetched, ScrapeError>,
        t: Timestamp,
    ) -> Result<(), ScrapeError> {
        let mut cache = s.inner.targets[0].cache.try_lock().unwrap();
        s.process(0, fetched, &mut cache, t, Duration::from_millis(3))
    }

    fn refused() -> ScrapeError {
        ScrapeError::Request { url: URL.into(), message: "connection refused".into() }
    }

    /// Every series whose name is `name`, with its points.
    fn raw(s: &Scraper, name: &str) -> Vec<Series> {
        let m = [LabelMatcher::new(METRIC_NAME, MatchOp::Equal, name).unwrap()];
        s.select(&Selection { matchers: &m, start: i64::MIN, end: i64::MAX }).unwrap()
    }

    fn values(series: &Series) -> Vec<(Timestamp, String)> {
        series
            .points
            .iter()
            .map(|p| (p.t, if is_stale_marker(p.v) { "stale".to_owned() } else { p.v.to_string() }))
            .collect()
    }

    fn instant(s: &Scraper, query: &str, t: Timestamp) -> Vec<(String, f64)> {
        let Value::Vector(v) = Engine::default().instant_query(s, query, t).unwrap().value else {
            panic!("{query}: not a vector")
        };
        v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect()
    }

    #[test]
    fn samples_get_the_scrape_time_and_target_labels() {
        let s = default_scraper();
        ingest(&s, "# TYPE a counter\na_total{x=\"1\"} 5\nb 2.5\n", 10_000).unwrap();
        let a = raw(&s, "a_total");
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].labels.to_string(),
            r#"{__name__="a_total", instance="node-1:9100", job="node", x="1"}"#
        );
        assert_eq!(values(&a[0]), [(10_000, "5".to_owned())]);
        assert_eq!(
            instant(&s, "up", 10_000),
            [(r#"{__name__="up", instance="node-1:9100", job="node"}"#.to_owned(), 1.0)]
        );
        assert_eq!(instant(&s, "scrape_samples_scraped", 10_000)[0].1, 2.0);
        assert_eq!(instant(&s, "scrape_samples_post_metric_relabeling", 10_000)[0].1, 2.0);
        assert_eq!(instant(&s, "scrape_series_added", 10_000)[0].1, 2.0);
        assert_eq!(instant(&s, "scrape_duration_seconds", 10_000)[0].1, 0.003);
        let status = &s.targets_status()[0];
        assert_eq!(
            (status.health, status.last_scrape, status.last_samples_scraped),
            (TargetHealth::Up, Some(10_000), 2)
        );
        assert_eq!(status.last_error, None);
        ingest(&s, "# TYPE a counter\na_total{x=\"1\"} 6\nb 2.5\n", 25_000).unwrap();
        assert_eq!(instant(&s, "scrape_series_added", 25_000)[0].1, 0.0);
    }

    #[test]
    fn disappearing_series_get_a_staleness_marker() {
        let s = default_scraper();
        ingest(&s, "a 1\nb 1\n", 1_000).unwrap();
        ingest(&s, "a 2\n", 2_000).unwrap();
        assert_eq!(values(&raw(&s, "a")[0]), [(1_000, "1".to_owned()), (2_000, "2".to_owned())]);
        assert_eq!(values(&raw(&s, "b")[0]), [(1_000, "1".to_owned()), (2_000, "stale".to_owned())]);
        // The marker is written once, and the series comes back when exposed again.
        ingest(&s, "a 3\n", 3_000).unwrap();
        ingest(&s, "a 4\nb 7\n", 4_000).unwrap();
        assert_eq!(
            values(&raw(&s, "b")[0]),
            [(1_000, "1".to_owned()), (2_000, "stale".to_owned()), (4_000, "7".to_owned())]
        );
        assert_eq!(instant(&s, "b", 3_000), []);
        assert_eq!(instant(&s, "b", 1_500).len(), 1);
        assert_eq!(instant(&s, "scrape_series_added", 4_000)[0].1, 1.0);
    }

    #[test]
    fn a_failing_target_is_down_and_its_series_stale() {
        let s = default_scraper();
        ingest(&s, "a 1\nb 1\n", 1_000).unwrap();
        let err = ingest_outcome(&s, Err(refused()), 2_000).unwrap_err();
        assert_eq!(err.to_string(), format!("scraping {URL}: connection refused"));
        for name in ["a", "b"] {
            assert_eq!(values(&raw(&s, name)[0]).last(), Some(&(2_000, "stale".to_owned())), "{name}");
        }
        assert_eq!(values(&raw(&s, "up")[0]), [(1_000, "1".to_owned()), (2_000, "0".to_owned())]);
        assert_eq!(instant(&s, "scrape_samples_scraped", 2_000)[0].1, 0.0);
        let status = &s.targets_status()[0];
        assert_eq!(status.health, TargetHealth::Down);
        assert_eq!(status.last_error, Some(refused()));
        // A second failure adds no markers; recovery brings the series back.
        ingest_outcome(&s, Err(refused()), 3_000).unwrap_err();
        assert_eq!(raw(&s, "a")[0].points.len(), 2);
        ingest(&s, "a 5\n", 4_000).unwrap();
        assert_eq!(instant(&s, "up", 4_000)[0].1, 1.0);
        assert_eq!(instant(&s, "a", 4_000)[0].1, 5.0);
        assert_eq!(s.targets_status()[0].last_error, None);
    }

    #[test]
    fn an_unparsable_body_fails_the_scrape() {
        let s = default_scraper();
        ingest(&s, "a 1\n", 1_000).unwrap();
        let err = ingest(&s, "a 2\nb{x=\"1} 3\n", 2_000).unwrap_err();
        assert!(matches!(err, ScrapeError::Parse { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("scraping {URL}: line 2: ")), "{err}");
        // Nothing of the failed scrape is stored.
        assert_eq!(values(&raw(&s, "a")[0]), [(1_000, "1".to_owned()), (2_000, "stale".to_owned())]);
        assert_eq!(instant(&s, "up", 2_000)[0].1, 0.0);
    }

    #[test]
    fn conflicting_labels_are_exported() {
        let target = Labels::from_pairs([("job", "node"), ("instance", "h:1")]);
        let exposed = Labels::from_pairs([
            ("__name__", "m"),
            ("job", "app"),
            ("exported_instance", "x"),
            ("instance", "y"),
        ]);
        assert_eq!(
            with_target_labels(&exposed, &target, false).to_string(),
            r#"{__name__="m", exported_exported_instance="y", exported_instance="x", exported_job="app", instance="h:1", job="node"}"#
        );
        assert_eq!(
            with_target_labels(&exposed, &target, true).to_string(),
            r#"{__name__="m", exported_instance="x", instance="y", job="app"}"#
        );
        // Through a scrape, and with the same value too (Prometheus renames it anyway).
        let s = default_scraper();
        ingest(&s, "m{job=\"node\"} 1\n", 1_000).unwrap();
        assert_eq!(
            raw(&s, "m")[0].labels.to_string(),
            r#"{__name__="m", exported_job="node", instance="node-1:9100", job="node"}"#
        );
        let s = scraper(ScrapeConfig { honor_labels: true, ..ScrapeConfig::new("node", [URL]) });
        ingest(&s, "m{job=\"other\"} 1\n", 1_000).unwrap();
        assert_eq!(
            raw(&s, "m")[0].labels.to_string(),
            r#"{__name__="m", instance="node-1:9100", job="other"}"#
        );
    }

    #[test]
    fn too_many_series_fail_the_scrape() {
        let s = scraper(ScrapeConfig { max_series: 2, ..ScrapeConfig::new("node", [URL]) });
        ingest(&s, "a 1\nb 1\n", 1_000).unwrap();
        let err = ingest(&s, "a 2\nb 2\nc 2\n", 2_000).unwrap_err();
        assert_eq!(err, ScrapeError::SeriesLimit { url: URL.into(), limit: 2, found: 3 }, "{err}");
        assert_eq!(
            err.to_string(),
            format!("scraping {URL}: series limit exceeded: 3 series exposed, the limit is 2")
        );
        assert!(raw(&s, "c").is_empty());
        assert_eq!(values(&raw(&s, "a")[0]), [(1_000, "1".to_owned()), (2_000, "stale".to_owned())]);
        assert_eq!(instant(&s, "up", 2_000)[0].1, 0.0);
        assert_eq!(instant(&s, "scrape_samples_scraped", 2_000)[0].1, 3.0);
        assert_eq!(instant(&s, "scrape_samples_post_metric_relabeling", 2_000)[0].1, 0.0);
        assert_eq!(s.targets_status()[0].last_error, Some(err));
        ingest(&s, "a 3\nb 3\n", 3_000).unwrap();
        assert_eq!(instant(&s, "up", 3_000)[0].1, 1.0);
    }

    #[test]
    fn old_samples_and_gone_series_are_dropped() {
        let s = scraper(ScrapeConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retention: Duration::from_secs(5),
            ..ScrapeConfig::new("node", [URL])
        });
        ingest(&s, "a 0\ngone 1\n", 0).unwrap();
        for i in 1..=20 {
            ingest(&s, &format!("a {i}\n"), i * 1000).unwrap();
        }
        // a and the five report series, 6 samples each (t ≥ 15 s); `gone` is forgotten.
        assert_eq!(raw(&s, "a")[0].points.first().map(|p| p.t), Some(15_000));
        assert!(raw(&s, "gone").is_empty());
        assert_eq!(s.series_count(), 6);
        assert_eq!(s.sample_count(), 36);
        assert_eq!(instant(&s, "a", 20_000)[0].1, 20.0);
    }

    #[test]
    fn own_timestamps_are_honored_and_not_tracked() {
        let s = default_scraper();
        ingest(&s, "a 1 500\nb 1\n", 1_000).unwrap();
        ingest(&s, "c 1\n", 2_000).unwrap();
        assert_eq!(values(&raw(&s, "a")[0]), [(500, "1".to_owned())]);
        assert_eq!(values(&raw(&s, "b")[0]), [(1_000, "1".to_owned()), (2_000, "stale".to_owned())]);

        let s = scraper(ScrapeConfig { honor_timestamps: false, ..ScrapeConfig::new("node", [URL]) });
        ingest(&s, "a 1 500\n", 1_000).unwrap();
        ingest(&s, "c 1\n", 2_000).unwrap();
        assert_eq!(values(&raw(&s, "a")[0]), [(1_000, "1".to_owned()), (2_000, "stale".to_owned())]);
    }

    #[test]
    fn openmetrics_bodies_and_duplicates() {
        let s = default_scraper();
        let body = "# TYPE a counter\na_total 3 1.5\na_total 4 1.5\n# EOF\n";
        let fetched = Fetched {
            body: body.as_bytes().to_vec(),
            content_type: "application/openmetrics-text; version=1.0.0".into(),
        };
        ingest_outcome(&s, Ok(fetched), 2_000).unwrap();
        assert_eq!(values(&raw(&s, "a_total")[0]), [(1_500, "3".to_owned())]);
        // Without `# EOF`, OpenMetrics is refused.
        let fetched =
            Fetched { body: b"a_total 3\n".to_vec(), content_type: "application/openmetrics-text".into() };
        assert!(matches!(ingest_outcome(&s, Ok(fetched), 3_000), Err(ScrapeError::Parse { .. })));
    }

    #[test]
    fn scrape_times_are_aligned_and_increasing() {
        let s = scraper(ScrapeConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ..ScrapeConfig::new("node", [URL])
        });
        assert_eq!(s.scrape_time(0, 10_003), 10_003);
        ingest(&s, "a 1\n", 10_003).unwrap();
        assert_eq!(s.scrape_time(0, 11_001), 11_003);
        assert_eq!(s.scrape_time(0, 11_005), 11_003);
        assert_eq!(s.scrape_time(0, 11_006), 11_006);
        assert_eq!(s.scrape_time(0, 9_000), 10_004);
    }

    #[test]
    fn stop_marks_everything_stale_and_refuses_scrapes() {
        let s = default_scraper();
        ingest(&s, "a 1\n", 1_000).unwrap();
        s.stop();
        for name in ["a", "up", "scrape_duration_seconds", "scrape_series_added"] {
            let v = values(&raw(&s, name)[0]);
            assert_eq!(v.len(), 2, "{name}");
            assert_eq!(v[1].1, "stale", "{name}");
        }
        assert_eq!(ingest(&s, "a 2\n", 2_000_000_000_000), Err(ScrapeError::Stopped));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |config: ScrapeConfig| Scraper::new(config).unwrap_err().to_string();
        assert_eq!(
            bad(ScrapeConfig::new("", [URL])),
            "invalid scrape config: the job name must not be empty"
        );
        let slow = ScrapeConfig { timeout: Duration::from_secs(20), ..ScrapeConfig::new("j", [URL]) };
        assert_eq!(
            bad(slow),
            "invalid scrape config: job \"j\": scrape timeout 20s greater than scrape interval 15s"
        );
        assert!(bad(ScrapeConfig::new("j", ["ftp://h/metrics"]))
            .starts_with("invalid scrape target \"ftp://h/metrics\""));
        let not_url = bad(ScrapeConfig::new("j", ["not a url"]));
        assert!(not_url.starts_with("invalid scrape target \"not a url\""), "{not_url}");
        assert!(bad(ScrapeConfig::new("j", [URL, URL])).contains("two targets with the same labels"));
        let https = Scraper::new(ScrapeConfig::new("j", ["https://h/metrics", "http://h/m"])).unwrap();
        let instances: Vec<_> =
            https.targets_status().iter().map(|t| t.labels.get("instance").unwrap().to_owned()).collect();
        assert_eq!(instances, ["h:443", "h:80"]);
        assert_eq!(Scraper::start(ScrapeConfig::new("j", [URL])).unwrap_err(), ScrapeError::NoRuntime);
    }
}
