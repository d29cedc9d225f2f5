//! Collection: each query runs on its interval and its outcome is cached; requests are
//! answered from the cache, through the metric's policies.
//!
//! An outcome is either values or a [`Problem`]. The three kinds of problem are kept
//! apart all the way to the answer (no data, a value that is not a number, a backend
//! that failed), because each has its own policy and its own message: an HPA owner
//! must be able to tell "no traffic" from "Prometheus is down".

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use promql::value::Value;
use serde::Serialize;

use crate::api::{ExternalMetricValue, Status};
use crate::backend::{BackendDefaults, BackendError, Runtime};
use crate::config::{Backend, Fallback, MetricQuery, Reduce};
use crate::quantity::Quantity;
use crate::selector::Selector;
use crate::sources::SourceProblem;

/// Why a collection gave no usable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The backend failed (policy `onError`).
    Backend(String),
    /// The result had no series (policy `onEmpty`).
    Empty,
    /// A value was NaN or infinite (policy `onNaN`).
    NotFinite(String),
    /// The result cannot be a metric: several series under `reduce: error`, a range
    /// vector or a string (policy `onError`).
    Shape(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Backend(e) => write!(f, "backend failed: {e}"),
            Problem::Empty => f.write_str("the query returned no series"),
            Problem::NotFinite(v) => {
                write!(f, "the query returned {v}, which is not a number an HPA can use")
            }
            Problem::Shape(e) => f.write_str(e),
        }
    }
}

impl Problem {
    fn kind(&self) -> &'static str {
        match self {
            Problem::Backend(_) => "backend_error",
            Problem::Empty => "empty",
            Problem::NotFinite(_) => "not_finite",
            Problem::Shape(_) => "bad_result",
        }
    }
}

/// `(metricLabels, value)` pairs.
pub type Items = Vec<(BTreeMap<String, String>, f64)>;

/// Values of one successful collection.
#[derive(Debug, Clone)]
pub struct Good {
    /// One `(metricLabels, value)` per item.
    pub items: Items,
    /// The time the data is for (the evaluation time).
    pub data_time: DateTime<Utc>,
    /// When it was collected.
    pub collected: Instant,
}

#[derive(Debug, Default)]
struct State {
    attempts: u64,
    /// Collections by outcome kind, for the self-metrics.
    outcomes: BTreeMap<&'static str, u64>,
    last_attempt: Option<DateTime<Utc>>,
    last_duration: Option<Duration>,
    latest: Option<Result<Good, Problem>>,
    last_good: Option<Good>,
}

/// One query with its backend and cached state.
#[derive(Debug)]
pub struct Entry {
    /// Unique for the process: entries come and go with HPAs and reloads.
    id: u64,
    query: MetricQuery,
    /// Where it is defined now (the config file may move it).
    origin: RwLock<crate::config::Origin>,
    backend: Result<Arc<Runtime>, BackendError>,
    state: RwLock<State>,
}

impl Entry {
    /// This entry's identity.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The configured query.
    pub fn query(&self) -> &MetricQuery {
        &self.query
    }

    /// Runs the query once and stores the outcome.
    pub async fn collect(&self) {
        let started = Instant::now();
        // Whole seconds: the API's timestamps have no fraction, and whoever debugs a
        // value can ask Prometheus at exactly the time it shows.
        let now = Utc.timestamp_opt(Utc::now().timestamp(), 0).single().unwrap_or_else(Utc::now);
        let outcome = match &self.backend {
            Err(e) => Err(Problem::Backend(e.to_string())),
            Ok(rt) => {
                let t = rt.eval_time(now.timestamp_millis());
                // Backends have their own timeouts; this one bounds the engine too.
                let limit = self.query.interval.max(Duration::from_secs(1)).saturating_mul(2);
                match tokio::time::timeout(limit, rt.instant(&self.query.query, t, limit)).await {
                    Err(_) => Err(Problem::Backend(format!("no answer within {limit:?}"))),
                    Ok(Err(e)) => Err(Problem::Backend(e.to_string())),
                    Ok(Ok(value)) => reduce(&self.query, value, started),
                }
            }
        };
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.attempts += 1;
        st.last_attempt = Some(now);
        st.last_duration = Some(started.elapsed());
        let kind = match &outcome {
            Ok(_) => "ok",
            Err(p) => p.kind(),
        };
        *st.outcomes.entry(kind).or_insert(0) += 1;
        if let Ok(good) = &outcome {
            st.last_good = Some(good.clone());
        }
        st.latest = Some(outcome);
    }

    /// Whether a collection has finished at least once.
    pub fn collected(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).latest.is_some()
    }

    /// How many collections ended in each outcome kind (`ok`, `empty`, `not_finite`,
    /// `backend_error`, `bad_result`).
    pub fn outcome_counts(&self) -> Vec<(&'static str, u64)> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.outcomes.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Seconds since the last good value was collected.
    pub fn value_age(&self) -> Option<f64> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.last_good.as_ref().map(|g| g.collected.elapsed().as_secs_f64())
    }

    /// The answer to a request, through the policies.
    pub fn answer(&self) -> Result<Vec<ExternalMetricValue>, Box<Status>> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let problem = match &st.latest {
            None => {
                return Err(unavailable(
                    format!("{}: not collected yet; the first collection is running", self.describe()),
                    Some(1),
                ))
            }
            Some(Ok(good)) => return Ok(self.values(good)),
            Some(Err(p)) => p,
        };
        let policies = &self.query.policies;
        let fallback = match problem {
            Problem::Backend(_) | Problem::Shape(_) => policies.on_error,
            Problem::Empty => policies.on_empty,
            Problem::NotFinite(_) => policies.on_nan,
        };
        match fallback {
            Fallback::Error => Err(unavailable(format!("{}: {problem}", self.describe()), None)),
            Fallback::Zero => Ok(self.values(&Good {
                items: vec![(self.query.labels.clone(), 0.0)],
                data_time: st.last_attempt.unwrap_or_else(Utc::now),
                collected: Instant::now(),
            })),
            Fallback::LastGood { max_age } => match &st.last_good {
                Some(good) if good.collected.elapsed() <= max_age => Ok(self.values(good)),
                Some(good) => Err(unavailable(
                    format!(
                        "{}: {problem}; the last good value is {}s old, older than lastGoodMaxAge {}s",
                        self.describe(),
                        good.collected.elapsed().as_secs(),
                        max_age.as_secs()
                    ),
                    None,
                )),
                None => Err(unavailable(
                    format!("{}: {problem}; there is no last good value yet", self.describe()),
                    None,
                )),
            },
        }
    }

    fn values(&self, good: &Good) -> Vec<ExternalMetricValue> {
        good.items
            .iter()
            .filter_map(|(labels, v)| {
                // `reduce` refused non-finite values already; a failure here is a bug,
                // and dropping the item is safer than serialising garbage.
                let value = Quantity::from_f64(*v).ok()?;
                Some(ExternalMetricValue {
                    metric_name: self.query.metric_name.to_ascii_lowercase(),
                    metric_labels: labels.clone(),
                    timestamp: good.data_time,
                    window: self.query.window.map(|w| w.as_secs() as i64),
                    value,
                })
            })
            .collect()
    }

    /// `metric {labels}`, for messages.
    pub fn describe(&self) -> String {
        let q = &self.query;
        format!("metric {} {{{}}}", q.metric_name, q.labels_text())
    }

    /// The entry as the debug endpoint shows it.
    pub fn debug(&self) -> DebugEntry {
        // Before taking the lock: `answer` takes it too, and a second read behind a
        // waiting writer (a collection finishing) would deadlock.
        let answer = match self.answer() {
            Ok(items) => serde_json::to_value(items).unwrap_or_default(),
            Err(status) => serde_json::to_value(status).unwrap_or_default(),
        };
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let q = &self.query;
        let (last_value, data_time, last_error) = match &st.latest {
            None => (None, None, None),
            Some(Ok(g)) => (Some(debug_items(g)), Some(g.data_time), None),
            Some(Err(p)) => (None, None, Some(p.to_string())),
        };
        DebugEntry {
            namespace: q.namespace.as_str().to_owned(),
            metric: q.metric_name.clone(),
            labels: q.labels.clone(),
            query: q.query.clone(),
            backend: match &self.backend {
                Ok(rt) => format!("{} ({})", q.backend_name, rt.describe()),
                Err(e) => format!("{} (unusable: {e})", q.backend_name),
            },
            interval_seconds: q.interval.as_secs_f64(),
            origin: self.origin.read().unwrap_or_else(|p| p.into_inner()).to_string(),
            attempts: st.attempts,
            last_attempt: st.last_attempt.map(|t| t.to_rfc3339()),
            last_duration_seconds: st.last_duration.map(|d| d.as_secs_f64()),
            last_value,
            data_timestamp: data_time.map(|t| t.to_rfc3339()),
            last_good_age_seconds: st.last_good.as_ref().map(|g| g.collected.elapsed().as_secs_f64()),
            last_error,
            answer,
        }
    }
}

fn unavailable(message: String, retry_after_seconds: Option<i32>) -> Box<Status> {
    Box::new(Status::service_unavailable(message, retry_after_seconds))
}

fn debug_items(g: &Good) -> Vec<DebugItem> {
    g.items.iter().map(|(labels, v)| DebugItem { labels: labels.clone(), value: *v }).collect()
}

/// One query on the debug endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugEntry {
    /// Namespace served (`*` for any).
    pub namespace: String,
    /// Metric name.
    pub metric: String,
    /// Selector labels.
    pub labels: BTreeMap<String, String>,
    /// PromQL.
    pub query: String,
    /// Backend name and what it is.
    pub backend: String,
    /// Collection interval.
    pub interval_seconds: f64,
    /// Where the query was defined.
    pub origin: String,
    /// Collections so far.
    pub attempts: u64,
    /// When the last collection started.
    pub last_attempt: Option<String>,
    /// How long it took.
    pub last_duration_seconds: Option<f64>,
    /// Its values, when it succeeded.
    pub last_value: Option<Vec<DebugItem>>,
    /// The time those values are for.
    pub data_timestamp: Option<String>,
    /// Age of the last good value.
    pub last_good_age_seconds: Option<f64>,
    /// Its problem, when it failed.
    pub last_error: Option<String>,
    /// What a request gets now: the items, or the `Status`.
    pub answer: serde_json::Value,
}

/// One value of a collection.
#[derive(Debug, Clone, Serialize)]
pub struct DebugItem {
    /// `metricLabels`.
    pub labels: BTreeMap<String, String>,
    /// The float (may be NaN: shown as JSON null).
    pub value: f64,
}

/// Turns a query result into items, applying `reduce`.
fn reduce(q: &MetricQuery, value: Value, started: Instant) -> Result<Good, Problem> {
    let (t, samples): (i64, Items) = match value {
        Value::Scalar { t, v } => (t, vec![(BTreeMap::new(), v)]),
        Value::Vector(samples) => {
            let t = samples.first().map_or(0, |s| s.t);
            let items = samples
                .into_iter()
                .map(|s| {
                    let labels = s
                        .labels
                        .iter()
                        .filter(|l| &*l.name != promql::METRIC_NAME)
                        .map(|l| (l.name.to_string(), l.value.to_string()))
                        .collect();
                    (labels, s.v)
                })
                .collect();
            (t, items)
        }
        Value::Matrix(_) => {
            return Err(Problem::Shape(
                "the query returned a range vector; use an instant vector or a scalar".into(),
            ))
        }
        Value::String { .. } => return Err(Problem::Shape("the query returned a string".into())),
    };
    if samples.is_empty() {
        return Err(Problem::Empty);
    }
    let values = || samples.iter().map(|(_, v)| *v);
    let one = |v: f64| vec![(q.labels.clone(), v)];
    let items = match q.reduce {
        Reduce::Sum => one(values().sum()),
        // Any NaN makes the answer NaN (policy onNaN), whatever the series order:
        // skipping or keeping it depending on its position would make the value flap.
        Reduce::Max if values().any(f64::is_nan) => one(f64::NAN),
        Reduce::Min if values().any(f64::is_nan) => one(f64::NAN),
        Reduce::Max => one(values().fold(f64::NEG_INFINITY, f64::max)),
        Reduce::Min => one(values().fold(f64::INFINITY, f64::min)),
        Reduce::Avg => one(values().sum::<f64>() / samples.len() as f64),
        Reduce::Error if samples.len() > 1 => {
            return Err(Problem::Shape(format!(
                "the query returned {} series and the metric's reduce is `error`",
                samples.len()
            )))
        }
        Reduce::Error => one(samples[0].1),
        Reduce::Each => samples
            .into_iter()
            .map(|(labels, v)| {
                let mut all = q.labels.clone();
                all.extend(labels);
                (all, v)
            })
            .collect(),
    };
    if let Some((_, v)) = items.iter().find(|(_, v)| !v.is_finite()) {
        let shown = if v.is_nan() {
            "NaN".to_owned()
        } else if *v > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
        return Err(Problem::NotFinite(shown));
    }
    let data_time = Utc.timestamp_millis_opt(t).single().unwrap_or_else(Utc::now);
    Ok(Good { items, data_time, collected: started })
}

/// A query source's problem as the debug endpoint shows it, like a Kubernetes Event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProblemEvent {
    /// Always `Warning`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Reason, source, object and message.
    #[serde(flatten)]
    pub problem: SourceProblem,
    /// How many times the sources were (re)read with this problem.
    pub count: u64,
    /// When it was first seen.
    pub first_seen: DateTime<Utc>,
    /// When it was last seen.
    pub last_seen: DateTime<Utc>,
}

fn next_entry_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// An entry and the task collecting it.
type Task = (Arc<Entry>, tokio::task::JoinHandle<()>);

/// Collects `e` on its interval, the first time at once.
async fn collect_forever(e: Arc<Entry>) {
    let mut tick = tokio::time::interval(e.query.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        e.collect().await;
        if let Some(Err(p)) = e.state.read().unwrap_or_else(|p| p.into_inner()).latest.as_ref() {
            tracing::warn!(metric = %e.query.metric_name, labels = ?e.query.labels, "{p}");
        }
    }
}

/// The queries being collected.
#[derive(Debug, Default)]
pub struct Collector {
    entries: RwLock<Vec<Arc<Entry>>>,
    /// Problems of the sources of the queries (bad annotations, conflicts), for the
    /// debug endpoint.
    problems: RwLock<Vec<ProblemEvent>>,
    /// Set once every query was collected: queries added later (a new HPA, a config
    /// edit) must not take the whole adapter out of its Service.
    was_ready: std::sync::atomic::AtomicBool,
    tasks: std::sync::Mutex<Vec<Task>>,
    defaults: BackendDefaults,
}

impl Collector {
    /// A collector without queries.
    pub fn new(defaults: BackendDefaults) -> Self {
        Collector {
            entries: RwLock::default(),
            problems: RwLock::default(),
            was_ready: Default::default(),
            tasks: std::sync::Mutex::default(),
            defaults,
        }
    }

    /// Replaces the queries and collects each on its interval. A query equal to one
    /// already collected keeps its entry, cache and schedule (HPA changes and config
    /// reloads must not blank the other metrics). Backends are built once per distinct
    /// configuration and reused across calls; one that cannot be built makes its
    /// queries fail with its reason, returned here, while the others are served.
    pub fn set_queries(&self, queries: Vec<MetricQuery>) -> Vec<(String, BackendError)> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut old: Vec<Option<Task>> = std::mem::take(&mut *tasks).into_iter().map(Some).collect();
        // Working backends are reused; a failed one is built again (a password file
        // mounted late, a fixture fixed), and its failure reported again.
        let mut runtimes: Vec<(Backend, Result<Arc<Runtime>, BackendError>)> = old
            .iter()
            .flatten()
            .filter(|(e, _)| e.backend.is_ok())
            .map(|(e, _)| (e.query.backend.clone(), e.backend.clone()))
            .collect();
        let mut setup_errors = Vec::new();
        for query in queries {
            // Where a query is defined does not change what it collects: an edit
            // elsewhere in the file must not blank its cache.
            let kept = old.iter().position(|o| {
                o.as_ref().is_some_and(|(e, _)| e.backend.is_ok() && e.query.same_work(&query))
            });
            if let Some((entry, handle)) = kept.and_then(|i| old[i].take()) {
                *entry.origin.write().unwrap_or_else(|p| p.into_inner()) = query.origin;
                tasks.push((entry, handle));
                continue;
            }
            let backend = match runtimes.iter().find(|(b, _)| *b == query.backend) {
                Some((_, rt)) => rt.clone(),
                None => {
                    let rt = Runtime::build(&query.backend, &self.defaults).map(Arc::new);
                    if let Err(e) = &rt {
                        setup_errors.push((query.backend_name.clone(), e.clone()));
                    }
                    runtimes.push((query.backend.clone(), rt.clone()));
                    rt
                }
            };
            let origin = RwLock::new(query.origin.clone());
            let entry =
                Arc::new(Entry { id: next_entry_id(), query, origin, backend, state: RwLock::default() });
            tasks.push((entry.clone(), tokio::spawn(collect_forever(entry))));
        }
        for (_, handle) in old.into_iter().flatten() {
            handle.abort();
        }
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) =
            tasks.iter().map(|(e, _)| e.clone()).collect();
        setup_errors
    }

    /// Replaces the problems shown on the debug endpoint, counting recurrences as
    /// Kubernetes counts a repeated Event. Returns the problems not seen before.
    pub fn set_problems(&self, problems: Vec<SourceProblem>) -> Vec<SourceProblem> {
        let now = Utc::now();
        let mut current = self.problems.write().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Vec::new();
        let next: Vec<ProblemEvent> = problems
            .into_iter()
            .map(|p| match current.iter().find(|e| e.problem == p) {
                Some(old) => ProblemEvent { count: old.count + 1, last_seen: now, ..old.clone() },
                None => {
                    fresh.push(p.clone());
                    ProblemEvent { kind: "Warning", problem: p, count: 1, first_seen: now, last_seen: now }
                }
            })
            .collect();
        *current = next;
        fresh
    }

    /// The problems shown on the debug endpoint.
    pub fn problems(&self) -> Vec<ProblemEvent> {
        self.problems.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// All entries.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lowercased metric names, for discovery.
    pub fn metric_names(&self) -> std::collections::BTreeSet<String> {
        self.entries().iter().map(|e| e.query.metric_name.to_ascii_lowercase()).collect()
    }

    /// Whether every query has been collected once.
    pub fn ready(&self) -> bool {
        if self.was_ready.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let ready = self.entries().iter().all(|e| e.collected());
        self.was_ready.fetch_or(ready, std::sync::atomic::Ordering::Relaxed);
        ready
    }

    /// The answer to `GET .../namespaces/{namespace}/{metric}?labelSelector=…`: the
    /// items of the one query that serves it. A selector matching several queries is
    /// refused: the HPA would add up values of different queries (say a rate and a
    /// latency).
    pub fn answer(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Result<Vec<ExternalMetricValue>, Box<Status>> {
        let entries = self.entries();
        let serving: Vec<&Arc<Entry>> =
            entries.iter().filter(|e| e.query.serves(namespace, metric, selector)).collect();
        if serving.is_empty() {
            if !entries.iter().any(|e| e.query.metric_name.eq_ignore_ascii_case(metric)) {
                return Err(Box::new(Status::metric_not_found(metric)));
            }
            return Err(Box::new(Status::failure(
                crate::api::StatusReason::NotFound,
                format!(
                    "no query of metric {metric} serves namespace {namespace} with labelSelector {:?}",
                    selector.to_string()
                ),
            )));
        }
        if let [one] = serving.as_slice() {
            return one.answer();
        }
        let candidates: Vec<String> = serving.iter().map(|e| e.describe()).collect();
        Err(Box::new(Status::bad_request(format!(
            "labelSelector {:?} matches {} queries of metric {metric} in namespace {namespace} ({}); \
             select one, e.g. by its labels",
            selector.to_string(),
            serving.len(),
            candidates.join("; ")
        ))))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        for (_, t) in self.tasks.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests;
