//! The evaluator: instant and range queries over a [`SampleSource`], with Prometheus
//! 3.x float semantics.
//!
//! Evaluation is pure and synchronous. A query first selects, once per selector, the
//! samples of the whole time span it can touch (the plan); then every step is evaluated
//! on those samples, but for parts pinned by `@`, which are evaluated once (`invariant`).

mod aggregate;
mod binary;
mod each_value;
mod extended;
mod functions;
mod gomath;
mod info;
mod invariant;
pub(crate) mod kernels;
mod sliding;
mod subquery;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ast::*;
use crate::error::ParseError;
use crate::features::{Feature, Features};
use crate::labels::{Labels, LabelsHashing, LabelsMap};
use crate::storage::{
    partition_point_near, LabelMatcher, SampleSource, SelectedSeries, Selection, SourceError,
};
use crate::value::{is_stale_marker, Point, Sample, Series, Timestamp, Value};

/// Settings of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// The most samples a query may hold at once (Prometheus: 50,000,000).
    pub max_samples: usize,
    /// Wall-clock limit of one query.
    pub timeout: Option<Duration>,
    /// Enabled features; evaluation looks at `promql-delayed-name-removal`.
    pub features: Features,
    /// Step of a subquery written without one (`[30m:]`): the global evaluation
    /// interval on a server (1m by default).
    pub default_subquery_step_ms: i64,
    /// Which Prometheus to agree with where 2.x and 3.x differ.
    pub compat: Compat,
    /// Set to `true` (from any thread) to stop queries in progress: they end with
    /// [`EvalError::Cancelled`] at their next step.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Whether a large query may split its work over rayon's pool (the default). A
    /// server running queries side by side on threads of their own turns it off, so
    /// that they do not queue for the pool's threads.
    pub parallel: bool,
    /// What runs the queries that are not light, if anything. Light: a query whose
    /// selections the source bounds at [`LIGHT_SERIES`] series and label values looked
    /// at in all ([`SampleSource::series_bound`], without selecting) and whose
    /// evaluation then looks at most [`LIGHT_LOOKS`] times at a selected series or
    /// sample or a node of the query (at every inner step of its subqueries, which
    /// multiply); it runs where it was called, as
    /// do parsing and planning. Any other query's selection, or its
    /// evaluation once the samples are known to be many, runs through the offload. A
    /// server on a multi-thread tokio runtime passes `tokio::task::block_in_place`
    /// (which panics on a current-thread one), whose hand-over of the worker's other
    /// tasks costs more than a light query.
    pub offload: Option<Offload>,
}

/// Runs the work it is given, at once, on this thread or another: see
/// [`EngineOptions::offload`].
///
/// ```
/// use promql::eval::{Engine, EngineOptions, Offload};
/// use promql::storage::MemoryStore;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let offloaded = Arc::new(AtomicUsize::new(0));
/// let counter = offloaded.clone();
/// let offload = Offload::new(move |work| {
///     counter.fetch_add(1, Ordering::Relaxed);
///     work()
/// });
/// let engine = Engine::new(EngineOptions { offload: Some(offload), ..EngineOptions::default() });
/// let store = MemoryStore::new();
/// engine.range_query(&store, "up", 0, 60_000, 15_000).unwrap(); // light: runs in place
/// // 3.6 million inner steps: offloaded.
/// engine.instant_query(&store, "max_over_time(up[1h:1ms])", 0).unwrap();
/// assert_eq!(offloaded.load(Ordering::Relaxed), 1);
/// ```
#[derive(Clone)]
pub struct Offload(Arc<OffloadFn>);

/// What an [`Offload`] calls, with the work to run.
type OffloadFn = dyn Fn(&mut dyn FnMut()) + Send + Sync;

impl Offload {
    /// An offload that calls `run` with the work, which `run` must call once.
    pub fn new(run: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> Self {
        Offload(Arc::new(run))
    }

    /// `work` run through the offload; an error if the offload did not run it.
    fn run<T>(&self, work: impl FnOnce() -> EResult<T>) -> EResult<T> {
        let mut work = Some(work);
        let mut out = None;
        (self.0)(&mut || {
            if let Some(work) = work.take() {
                out = Some(work());
            }
        });
        out.unwrap_or_else(|| exec_error("the engine's offload returned without running the query"))
    }
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Offload")
    }
}

/// Most series and label values the selections of a light query may look at
/// ([`EngineOptions::offload`]).
pub const LIGHT_SERIES: usize = 4_096;

/// Most looks at selected series, samples and query nodes a light query may take
/// ([`EngineOptions::offload`]): an instant query looks at each once (once an inner
/// step of its subqueries), a range query at each series and node once a step and at
/// each sample once per window that holds it.
/// About a millisecond of work for the functions linear in their samples (those that
/// sort them, as `quantile_over_time`, take a few); the one-workload dashboard query of
/// an hour at 15 s steps takes about 50,000.
pub const LIGHT_LOOKS: usize = 65_536;

/// The Prometheus whose semantics to follow where major versions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compat {
    /// Prometheus 3: left-open windows, `rate` extrapolation tested against the gap
    /// before clamping to the counter's zero point.
    #[default]
    Prometheus3,
    /// Prometheus 2 (as 2.42, Debian's): windows closed on the left (a sample exactly
    /// `range` or the lookback delta old counts, subqueries step at the window's
    /// start), `rate` clamps to the zero point before the gap test, `avg_over_time`
    /// takes an incremental mean, compensated sums keep the compensation of one that
    /// overflowed, the `sum` and `avg` aggregations add without compensation (`avg` as
    /// an incremental mean), `stddev`/`stdvar` of a lone NaN or infinity is 0,
    /// `histogram_quantile` makes the counts monotonic as 2.42 did (every difference
    /// counts; the largest count before a NaN one is kept; after a NaN first count
    /// nothing is fixed), and `topk`/`bottomk` keep 2.x's choice among equal values;
    /// `atan2` keeps the metric name, and a comparison filters a matched pair out
    /// (one-to-one or grouped) before it counts against the uniqueness of matches. For comparing with an older server: an
    /// instant query's floats come out as 2.42's, bit for bit, where it has no subquery
    /// (2.42 adds the values of steps' series in a Go map's order).
    Prometheus2,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60_000,
            max_samples: 50_000_000,
            timeout: Some(Duration::from_secs(120)),
            features: Features::none(),
            default_subquery_step_ms: 60_000,
            compat: Compat::Prometheus3,
            cancel: None,
            parallel: true,
            offload: None,
        }
    }
}

/// What went wrong while evaluating.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The query does not parse or check.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The query is valid but cannot be evaluated on this data, with Prometheus'
    /// message (e.g. `vector cannot contain metrics with the same labelset`).
    #[error("{0}")]
    Execution(String),
    /// The query would hold more samples than `max_samples`.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query ran longer than its timeout.
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// The query was cancelled through [`EngineOptions::cancel`].
    #[error("query was canceled in expression evaluation")]
    Cancelled,
    /// The sample source failed.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// A feature this engine does not implement yet. Never a silent wrong answer.
    #[error("not supported yet: {0}")]
    Unsupported(String),
}

/// Severity of an [`Annotation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    /// `PromQL warning: …`
    Warning,
    /// `PromQL info: …`
    Info,
}

/// A warning or info note about a query's result, with the position of the
/// sub-expression that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Warning or info.
    pub kind: AnnotationKind,
    /// The message without prefix.
    pub message: String,
    /// The sub-expression.
    pub span: Span,
}

impl Annotation {
    /// Prometheus' rendering: `PromQL warning: message (line:col)`.
    pub fn render(&self, query: &str) -> String {
        let kind = match self.kind {
            AnnotationKind::Warning => "warning",
            AnnotationKind::Info => "info",
        };
        let pos = ParseError::new(crate::ErrorKind::Empty, self.span).with_query(query).line_col();
        format!("PromQL {kind}: {} ({}:{})", self.message, pos.0, pos.1)
    }
}

/// The value of a query and the notes about it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The result.
    pub value: Value,
    /// Warnings and info notes, in the order they arose.
    pub annotations: Vec<Annotation>,
}

/// Evaluates PromQL over a [`SampleSource`].
///
/// ```
/// use promql::{eval::Engine, storage::MemoryStore, value::Value, Labels};
/// let mut store = MemoryStore::new();
/// let labels = Labels::from_pairs([("__name__", "requests_total"), ("pod", "a")]);
/// for i in 0..=20 {
///     store.append(&labels, i * 15_000, (i * 150) as f64); // 10 requests per second
/// }
/// let engine = Engine::default();
/// let result = engine.instant_query(&store, "sum(rate(requests_total[1m]))", 300_000).unwrap();
/// let Value::Vector(v) = result.value else { panic!() };
/// assert!((v[0].v - 10.0).abs() < 1e-9, "{}", v[0].v);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    parsed: ParseCache,
}

/// A query parsed and checked, and its type.
struct Parsed {
    expr: Expr,
    ty: ValueType,
}

/// The queries an engine parsed: a dashboard or an autoscaler sends the same queries
/// again and again, and on a server that idles between them the parser's code is out of
/// the caches each time (a quarter of a one-workload query's time served,
/// benches/README.md). Shared by the engines made from one with the same features,
/// which alone decide what parses. Up to 256 KiB of query text, each query up to
/// 16 KiB: a parsed query takes ten to a hundred times its text, so whatever clients
/// send, the cache stays within tens of megabytes.
#[derive(Clone)]
struct ParseCache(Arc<crate::memo::Memo<Arc<Parsed>>>);

impl Default for ParseCache {
    fn default() -> Self {
        ParseCache(Arc::new(crate::memo::Memo::new(256 << 10, 16 << 10)))
    }
}

impl std::fmt::Debug for ParseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParseCache")
    }
}

impl Engine {
    /// An engine with these options.
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts, parsed: ParseCache::default() }
    }

    /// An engine with other options that keeps this one's parsed queries when the
    /// features are the same (a clone shares them too): a server that makes an engine
    /// per request to set its timeout still parses each query once.
    ///
    /// ```
    /// use promql::eval::{Engine, EngineOptions};
    /// let engine = Engine::default();
    /// let serial = engine.with_options(EngineOptions { parallel: false, ..engine.options().clone() });
    /// assert!(!serial.options().parallel);
    /// ```
    pub fn with_options(&self, opts: EngineOptions) -> Engine {
        let parsed =
            if opts.features == self.opts.features { self.parsed.clone() } else { ParseCache::default() };
        Engine { opts, parsed }
    }

    /// `query` parsed and checked, from the cache when it was before.
    fn parse(&self, query: &str) -> Result<Arc<Parsed>, ParseError> {
        self.parsed.0.get_or_try(query, |query| {
            let (expr, ty) = crate::parse_typed(query, self.opts.features)?;
            Ok(Arc::new(Parsed { expr, ty }))
        })
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Parses, checks and evaluates `query` at `time` (ms).
    pub fn instant_query(
        &self,
        source: &dyn SampleSource,
        query: &str,
        time: Timestamp,
    ) -> Result<QueryResult, EvalError> {
        let parsed = self.parse(query)?;
        self.eval(source, &parsed.expr, time, time, 0)
    }

    /// Parses, checks and evaluates `query` at every `step` from `start` to `end` (ms).
    pub fn range_query(
        &self,
        source: &dyn SampleSource,
        query: &str,
        start: Timestamp,
        end: Timestamp,
        step: i64,
    ) -> Result<QueryResult, EvalError> {
        let parsed = self.parse(query)?;
        if step <= 0 {
            return Err(EvalError::Execution(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
                    .into(),
            ));
        }
        if end < start {
            return Err(EvalError::Execution("end timestamp must not be before start time".into()));
        }
        match parsed.ty {
            ValueType::Scalar | ValueType::Vector => {}
            t => {
                return Err(EvalError::Execution(format!(
                    "invalid expression type \"{t}\" for range query, must be Scalar or instant Vector"
                )))
            }
        }
        self.eval(source, &parsed.expr, start, end, step)
    }

    /// The selections evaluating `expr` over `[start, end]` will make: what a source
    /// behind a network must fetch before evaluation.
    ///
    /// ```
    /// use promql::eval::Engine;
    /// let expr = promql::parse("sum(rate(http_requests_total[5m])) / sum(up offset 1h)").unwrap();
    /// let plan = Engine::default().plan(&expr, 3_600_000, 3_600_000, 0).unwrap();
    /// assert_eq!(plan.selections.len(), 2);
    /// assert_eq!((plan.selections[0].start, plan.selections[0].end), (3_300_000, 3_600_000));
    /// assert_eq!((plan.selections[1].start, plan.selections[1].end), (-300_000, 0));
    /// assert_eq!(plan.selections[1].selector(), r#"{__name__="up"}"#);
    /// ```
    pub fn plan(&self, expr: &Expr, start: Timestamp, end: Timestamp, step: i64) -> Result<Plan, EvalError> {
        let ev = self.evaluator(start, end, step);
        let mut planned = Vec::new();
        ev.plan(expr, start, end, &mut planned)?;
        Ok(Plan { selections: planned.into_iter().map(|p| p.selection).collect() })
    }

    fn evaluator(&self, start: Timestamp, end: Timestamp, step: i64) -> Evaluator<'_> {
        Evaluator::new(&self.opts, start, end, step)
    }

    /// Evaluates a checked expression. `step == 0` means an instant query at `start`.
    pub fn eval(
        &self,
        source: &dyn SampleSource,
        expr: &Expr,
        start: Timestamp,
        end: Timestamp,
        step: i64,
    ) -> Result<QueryResult, EvalError> {
        self.eval_with(source, expr, (start, end, step), true)
    }

    /// [`eval`](Self::eval) node by node at each step, without the fast paths: the
    /// reference that the fuzz target `eval` holds them to. In fuzzing builds only.
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn eval_reference(
        &self,
        source: &dyn SampleSource,
        expr: &Expr,
        start: Timestamp,
        end: Timestamp,
        step: i64,
    ) -> Result<QueryResult, EvalError> {
        self.eval_with(source, expr, (start, end, step), false)
    }

    /// [`eval`](Self::eval), with or without the fast paths (range functions and their
    /// aggregations over all steps at once, an instant query's range functions straight
    /// from the samples); without, node by node at each step through range vectors: the
    /// reference the fast paths are tested against.
    fn eval_with(
        &self,
        source: &dyn SampleSource,
        expr: &Expr,
        (start, end, step): (Timestamp, Timestamp, i64),
        fast_paths: bool,
    ) -> Result<QueryResult, EvalError> {
        let mut ev = self.evaluator(start, end, step);
        ev.fast_paths = fast_paths;
        let mut planned = Vec::new();
        ev.plan(expr, start, end, &mut planned)?;
        let Some(offload) = &self.opts.offload else {
            ev.select_all(source, planned)?;
            return ev.evaluate(expr);
        };
        let few_series = || {
            planned
                .iter()
                .try_fold(0usize, |all, p| all.checked_add(source.series_bound(&p.selection.matchers)?))
                .is_some_and(|n| n <= LIGHT_SERIES)
        };
        if !few_series() {
            return offload.run(|| {
                ev.select_all(source, planned)?;
                ev.evaluate(expr)
            });
        }
        ev.select_all(source, planned)?;
        if !ev.light(expr) {
            return offload.run(|| ev.evaluate(expr));
        }
        ev.evaluate(expr)
    }
}

impl Evaluator<'_> {
    /// Whether `expr`, its samples selected, is light ([`EngineOptions::offload`]).
    fn light(&self, expr: &Expr) -> bool {
        // Every selected series and every node of the query is looked at once a step
        // (the step-by-step path's bound: once an inner step of each outer step's
        // subquery windows), and each sample once per window that holds it.
        let steps = if self.step == 0 {
            1
        } else {
            self.end
                .checked_sub(self.start)
                .and_then(|span| usize::try_from(span / self.step).ok())
                .map_or(usize::MAX, |n| n.saturating_add(1))
        };
        let (Ok(windows), Ok(inner)) =
            (self.windows_per_sample(expr, self.step, steps), self.inner_steps_bound(expr))
        else {
            return false;
        };
        let series: usize = self.selected.values().map(|s| s.len()).sum();
        let per_step = series.saturating_add(node_count(expr));
        let looks = self
            .samples_selected
            .saturating_mul(windows)
            .saturating_add(steps.saturating_mul(inner).saturating_mul(per_step));
        looks <= LIGHT_LOOKS
    }

    /// The most windows one sample can fall in over the `steps` evaluations, `step`
    /// apart (0: one), of `e`: per range selector at most range / step + 1, or every
    /// evaluation's when it is pinned by `@`; inside a subquery, its inner steps' at
    /// each of the outer windows that hold them (1 without any range selector). An
    /// upper bound: a pinned selector in a subquery is counted once more per window.
    fn windows_per_sample(&self, e: &Expr, step: i64, steps: usize) -> EResult<usize> {
        let per = |range: i64| usize::try_from(range.checked_div(step).unwrap_or(0)).unwrap_or(usize::MAX);
        let own = match e {
            Expr::MatrixSelector(ms) if ms.selector.at.is_some() => steps,
            Expr::MatrixSelector(ms) => {
                // Anchored windows reach a lookback delta further back, smoothed ones
                // also one forward.
                let reach = match ms.selector.anchoring {
                    Some(RangeAnchoring::Smoothed) => self.opts.lookback_delta_ms.saturating_mul(2),
                    Some(RangeAnchoring::Anchored) => self.opts.lookback_delta_ms,
                    None => 0,
                };
                per(self.positive_ms(&ms.range, "range")?.saturating_add(reach)).saturating_add(1)
            }
            Expr::Subquery(sq) => {
                let (range, inner_step) = self.subquery_range_step(sq)?;
                let inner_steps = subquery_steps(range, inner_step);
                let outer = if sq.at.is_some() { steps } else { per(range).saturating_add(1).min(steps) };
                // Its expression is evaluated at each inner step of each step's window
                // (a selector pinned by `@` reads its whole window each time).
                let evaluations = steps.saturating_mul(inner_steps);
                let inside = self.windows_per_sample(&sq.expr, inner_step, evaluations)?;
                return Ok(outer.saturating_mul(inside));
            }
            _ => 1,
        };
        e.children().try_fold(own, |most, c| Ok(most.max(self.windows_per_sample(c, step, steps)?)))
    }

    /// The most inner steps a step of `e` evaluates through nested subqueries (1
    /// without any).
    fn inner_steps_bound(&self, e: &Expr) -> EResult<usize> {
        let own = match e {
            Expr::Subquery(sq) => {
                let (range, step) = self.subquery_range_step(sq)?;
                subquery_steps(range, step)
            }
            _ => 1,
        };
        let deepest =
            e.children().try_fold(1, |most: usize, c| self.inner_steps_bound(c).map(|n| most.max(n)))?;
        Ok(own.saturating_mul(deepest))
    }
}

/// How many inner steps a subquery window of `range` at `step` holds at most.
fn subquery_steps(range: i64, step: i64) -> usize {
    usize::try_from(range / step.max(1)).unwrap_or(usize::MAX).saturating_add(1)
}

/// How many nodes `e` has, itself included.
fn node_count(e: &Expr) -> usize {
    e.children().fold(1, |n, c| n.saturating_add(node_count(c)))
}

/// A sample during evaluation: `drop_name` marks a `__name__` to remove at the end
/// (delayed name removal).
#[derive(Debug, Clone)]
pub(crate) struct S {
    pub labels: Labels,
    pub v: f64,
    /// The stored sample's own time, for `timestamp()` of a selector.
    pub t: Timestamp,
    pub drop_name: bool,
}

/// A series of a range vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct M {
    pub labels: Labels,
    pub points: Points,
    pub drop_name: bool,
}

/// The points of a window: a slice of the matrix's selected samples (no copy), or
/// computed ones.
#[derive(Debug, Clone)]
pub(crate) enum Points {
    /// `source[series].points[range]` of the [`Matrix`].
    Selected { series: usize, range: std::ops::Range<usize> },
    /// Points made by evaluation (subqueries) or filtered (stale markers removed).
    Owned(Vec<Point>),
}

/// A range vector with its window `(start, end]`.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    pub series: Vec<M>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The selected samples that [`Points::Selected`] windows point into. One reference
    /// for the whole matrix: per-window references would make threads fight over one
    /// reference count.
    pub source: Option<Arc<Vec<SelectedSeries>>>,
}

/// A value during evaluation of one step.
#[derive(Debug, Clone)]
pub(crate) enum V {
    Scalar(f64),
    String(String),
    Vector(Vec<S>),
    Matrix(Matrix),
}

pub(crate) type EResult<T> = Result<T, EvalError>;

/// How many steps of selected series ([`Evaluator::worth_splitting`]) make a range
/// query's steps worth splitting over the cores.
const SPLIT_STEP_WORK: usize = 20_000;

/// How many series an instant selection needs before its windows and functions are
/// computed on two threads or more ([`Evaluator::map_series`]).
const PARALLEL_SERIES: usize = 16_384;

/// The cores work is split over (at most 8), looked up once: the lookup is a system
/// call and cgroup reads, and splits are weighed at every range query and subquery.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
}

/// How many steps of a range query the sliding range functions compute at once.
const PRECOMPUTE_STEPS: usize = 32;

/// The samples one selector needs: its matchers (the metric name as a `__name__`
/// matcher) and an inclusive window in milliseconds.
#[derive(Debug, Clone)]
pub struct PlannedSelection {
    /// All matchers, compiled.
    pub matchers: Vec<LabelMatcher>,
    /// First timestamp needed.
    pub start: Timestamp,
    /// Last timestamp needed.
    pub end: Timestamp,
}

impl PlannedSelection {
    /// The samples of `vs` (metric name and matchers; modifiers ignored) in `[start, end]`.
    pub fn from_selector(vs: &VectorSelector, start: Timestamp, end: Timestamp) -> Result<Self, EvalError> {
        let mut matchers = Vec::with_capacity(vs.matchers.len() + 1);
        if let Some(name) = &vs.name {
            matchers.push(LabelMatcher::new(crate::METRIC_NAME, MatchOp::Equal, name).map_err(regex_error)?);
        }
        for m in &vs.matchers {
            matchers.push(LabelMatcher::from_ast(m).map_err(regex_error)?);
        }
        Ok(PlannedSelection { matchers, start, end })
    }

    /// The selector in PromQL (`{__name__="up",job="api"}`), for asking a remote API.
    pub fn selector(&self) -> String {
        let mut out = String::from("{");
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if crate::lexer::is_label_name(&m.name) {
                out.push_str(&m.name);
            } else {
                let _ = crate::printer::write_quoted(&mut out, &m.name);
            }
            out.push_str(m.op.as_str());
            let _ = crate::printer::write_quoted(&mut out, &m.value);
        }
        out.push('}');
        out
    }
}

/// What a query will select, before evaluating it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One entry per selector of the query, in query order.
    pub selections: Vec<PlannedSelection>,
}

/// A planned selection and the selector it is for.
struct Planned {
    key: *const VectorSelector,
    selection: PlannedSelection,
}

impl Planned {
    fn new(vs: &VectorSelector, start: Timestamp, end: Timestamp) -> EResult<Self> {
        Ok(Planned { key: vs as *const _, selection: PlannedSelection::from_selector(vs, start, end)? })
    }
}

pub(crate) fn exec_error<T>(msg: impl Into<String>) -> EResult<T> {
    Err(EvalError::Execution(msg.into()))
}

/// What the evaluator keeps per query node, keyed by the node's address
/// ([`sliding::node_key`]): looked up at every node at every step of a range query.
/// With SipHash, hashing was 7% of the profile of `vector(1) + scalar(sum(up))` over
/// 3,601 steps, which evaluates in 0.80 ms instead of 0.91 without it.
type NodeMap<V> = HashMap<usize, V, binary::AddrHashing>;

struct Evaluator<'a> {
    opts: &'a EngineOptions,
    start: Timestamp,
    end: Timestamp,
    step: i64,
    delayed: bool,
    /// The samples of every selector over the whole span it can touch.
    selected: NodeMap<Arc<Vec<SelectedSeries>>>,
    /// Range functions computed for all steps at once, by call node.
    precomputed: NodeMap<(Timestamp, sliding::StepResults)>,
    /// Per selector (by [`sliding::node_key`]), what the whole-step paths need to know
    /// of its selection; learnt once per query (forked evaluators start with what their
    /// parent learnt).
    facts: NodeMap<sliding::SelectionFacts>,
    /// Per sliding call: the last step it was slid to, and where each series' window
    /// ended there (`lo..hi` in its selection) with how many counter resets it held.
    cursors: NodeMap<(Timestamp, Vec<sliding::Cursor>)>,
    /// Per aggregation of a sliding call, the groups its series fell into so far.
    fused_groups: NodeMap<aggregate::FusedGroups>,
    /// Each aggregation's grouping of its last input, by node: the next step usually
    /// has the same series in the same order and reuses it instead of hashing.
    group_plans: NodeMap<aggregate::GroupPlan>,
    /// The same for the bucket grouping of `histogram_quantile` and
    /// `histogram_fraction`, by argument node.
    bucket_plans: NodeMap<functions::BucketPlan>,
    /// Per vector-vector operation, the labels it derived at earlier steps.
    join_labels: NodeMap<binary::JoinLabels>,
    /// Per `label_replace`/`label_join` node, each input label set's result (`None`:
    /// unchanged), kept over the steps of a range query as `join_labels` is.
    relabels: NodeMap<binary::LabelsByAddr<Option<Labels>>>,
    /// Per subquery node, its inner steps evaluated for the current run of steps.
    inner_steps: NodeMap<subquery::InnerSteps>,
    /// The step-invariant parts of the query ([`invariant`]), by the address of their
    /// node: each one's value once evaluated at a step.
    invariant: NodeMap<Option<Arc<V>>>,
    /// How many kept parts were evaluated, over this evaluator and its forks.
    #[cfg(test)]
    kept_evaluations: Arc<std::sync::atomic::AtomicUsize>,
    /// Per node (`usize::MAX`: the query's result), the label sets of its output last
    /// found distinct, with whether each name goes at the end ([`check_distinct`]).
    ///
    /// [`check_distinct`]: Evaluator::check_distinct
    distinct: NodeMap<Vec<(Labels, bool)>>,
    annotations: Vec<Annotation>,
    deadline: Option<Instant>,
    samples_selected: usize,
    /// Spacing of the steps whose range functions are precomputed: the query's step,
    /// or a subquery's.
    grid_step: i64,
    /// Whether evaluation may spread over threads (not inside a worker already).
    parallel: bool,
    /// Whether range functions and their aggregations may be computed for all steps at
    /// once ([`sliding`]), and an instant query's range functions straight from a plain
    /// selector's samples (`over_windows`); off only to test those paths against the
    /// step-by-step one and range vectors.
    fast_paths: bool,
}

impl<'a> Evaluator<'a> {
    // ---- planning ----

    /// Seconds of a duration expression, with `step()` and `range()` of this query.
    fn duration_secs(&self, d: &DurationExpr) -> EResult<f64> {
        Ok(match d {
            DurationExpr::Number(n) => n.value,
            DurationExpr::Step { .. } => self.step as f64 / 1000.0,
            DurationExpr::Range { .. } => self.end.saturating_sub(self.start) as f64 / 1000.0,
            DurationExpr::Paren { expr, .. } => self.duration_secs(expr)?,
            DurationExpr::Unary { op, expr, .. } => {
                let v = self.duration_secs(expr)?;
                if *op == UnaryOp::Neg {
                    -v
                } else {
                    v
                }
            }
            DurationExpr::Binary { op, lhs, rhs, .. } => {
                let (l, r) = (self.duration_secs(lhs)?, self.duration_secs(rhs)?);
                match op {
                    BinaryOp::Div if r == 0.0 => return exec_error("division by zero"),
                    BinaryOp::Mod if r == 0.0 => return exec_error("modulo by zero"),
                    _ => binary::arith(*op, l, r),
                }
            }
            DurationExpr::Call { func, args, .. } => {
                let (a, b) = (self.duration_secs(&args[0])?, self.duration_secs(&args[1])?);
                match func {
                    DurationFunc::MinOf => kernels::go_min(a, b),
                    DurationFunc::MaxOf => kernels::go_max(a, b),
                }
            }
        })
    }

    /// Milliseconds of a duration, as Prometheus converts seconds (to nanoseconds,
    /// rounded, then truncated to milliseconds).
    fn duration_ms(&self, d: &DurationExpr) -> EResult<i64> {
        let secs = self.duration_secs(d)?;
        let ns = (secs * 1e9).round();
        if !ns.is_finite() || ns.abs() >= 9.2e18 {
            return exec_error("duration out of range");
        }
        Ok(ns as i64 / 1_000_000)
    }

    fn positive_ms(&self, d: &DurationExpr, what: &str) -> EResult<i64> {
        let ms = self.duration_ms(d)?;
        if ms <= 0 {
            return exec_error(format!("{what} must be greater than 0, got {}", crate::format_duration(ms)));
        }
        Ok(ms)
    }

    fn offset_ms(&self, d: Option<&DurationExpr>) -> EResult<i64> {
        d.map_or(Ok(0), |d| self.duration_ms(d))
    }

    fn at_ms(&self, at: Option<AtModifier>) -> Option<Timestamp> {
        at.map(|a| match a {
            AtModifier::Timestamp(t) => t,
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
        })
    }

    /// Plans, for every selector, the samples of the span of evaluation times
    /// `[tmin, tmax]` it is evaluated at.
    fn plan(&self, e: &Expr, tmin: Timestamp, tmax: Timestamp, out: &mut Vec<Planned>) -> EResult<()> {
        match e {
            Expr::VectorSelector(vs) => {
                if vs.anchoring == Some(RangeAnchoring::Anchored) {
                    return Err(EvalError::Unsupported("anchored instant vector selectors".into()));
                }
                let (lo, hi) = self.reference_span(vs, tmin, tmax)?;
                out.push(Planned::new(vs, lo - self.opts.lookback_delta_ms, hi + self.after_window(vs))?);
            }
            Expr::MatrixSelector(ms) => {
                let range = self.positive_ms(&ms.range, "range")?;
                let (lo, hi) = self.reference_span(&ms.selector, tmin, tmax)?;
                // Anchored and smoothed windows also see one lookback delta before them.
                let before = if ms.selector.anchoring.is_some() { self.opts.lookback_delta_ms } else { 0 };
                out.push(Planned::new(
                    &ms.selector,
                    lo - range - before,
                    hi + self.after_window(&ms.selector),
                )?);
            }
            Expr::Subquery(sq) => {
                let range = self.positive_ms(&sq.range, "subquery range")?;
                let offset = self.offset_ms(sq.offset.as_ref())?;
                let (lo, hi) = match self.at_ms(sq.at) {
                    Some(a) => (a - offset, a - offset),
                    None => (tmin - offset, tmax - offset),
                };
                self.plan(&sq.expr, lo - range, hi, out)?;
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, tmin, tmax, out)?;
                }
                self.plan(&a.expr, tmin, tmax, out)?;
            }
            Expr::Binary(b) => {
                self.plan(&b.lhs, tmin, tmax, out)?;
                self.plan(&b.rhs, tmin, tmax, out)?;
            }
            Expr::Call(c) if c.func.name == "info" => self.plan_info(c, tmin, tmax, out)?,
            Expr::Call(c) => c.args.iter().try_for_each(|a| self.plan(a, tmin, tmax, out))?,
            Expr::Paren(p) => self.plan(&p.expr, tmin, tmax, out)?,
            Expr::Unary(u) => self.plan(&u.expr, tmin, tmax, out)?,
            Expr::Number(_) | Expr::String(_) => {}
        }
        Ok(())
    }

    /// The value of the planned and selected `expr`: at `start` for an instant query,
    /// else at every step.
    fn evaluate(mut self, expr: &Expr) -> EResult<QueryResult> {
        if self.fast_paths {
            self.plan_invariant(expr);
        }
        let value = if self.step == 0 {
            match self.eval(expr, self.start)? {
                V::Scalar(v) => Value::Scalar { t: self.start, v },
                V::String(s) => Value::String { t: self.start, v: s },
                V::Vector(v) => Value::Vector(self.finish_vector(v, self.start)?),
                V::Matrix(m) => Value::Matrix(self.finish_matrix(m)?),
            }
        } else {
            self.range(expr)?
        };
        Ok(QueryResult { value, annotations: self.annotations })
    }

    /// Selects the samples of every planned selection from `source`.
    fn select_all(&mut self, source: &dyn SampleSource, planned: Vec<Planned>) -> EResult<()> {
        for p in planned {
            let sel = &p.selection;
            let series = source.select_shared(&Selection {
                matchers: &sel.matchers,
                start: sel.start,
                end: sel.end,
            })?;
            self.samples_selected += series.iter().map(|s| s.points.len()).sum::<usize>();
            if self.samples_selected > self.opts.max_samples {
                return Err(EvalError::TooManySamples);
            }
            self.selected.insert(p.key as usize, Arc::new(series));
        }
        Ok(())
    }

    /// The reference times (`T - offset`, or `@ - offset`) a selector is read at.
    fn reference_span(
        &self,
        vs: &VectorSelector,
        tmin: Timestamp,
        tmax: Timestamp,
    ) -> EResult<(Timestamp, Timestamp)> {
        let offset = self.offset_ms(vs.offset.as_ref())?;
        Ok(match self.at_ms(vs.at) {
            Some(a) => (a - offset, a - offset),
            None => (tmin - offset, tmax - offset),
        })
    }

    /// How far after its reference times a selector reads: one lookback delta when
    /// `smoothed` (to interpolate towards the next sample).
    fn after_window(&self, vs: &VectorSelector) -> i64 {
        if vs.anchoring == Some(RangeAnchoring::Smoothed) {
            self.opts.lookback_delta_ms
        } else {
            0
        }
    }

    fn selected(&self, vs: &VectorSelector) -> Arc<Vec<SelectedSeries>> {
        self.selected.get(&(vs as *const VectorSelector as usize)).cloned().unwrap_or_default()
    }

    fn check_deadline(&self) -> EResult<()> {
        if self.opts.cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(EvalError::Cancelled);
        }
        match self.deadline {
            Some(d) if Instant::now() > d => Err(EvalError::Timeout),
            _ => Ok(()),
        }
    }

    // ---- steps ----

    /// Evaluates every step and gathers the series. Steps are independent, so they run
    /// on several threads when the query is big enough to pay for them.
    fn range(&mut self, expr: &Expr) -> EResult<Value> {
        // Checked: a step past the end of time ends the steps instead of wrapping round
        // to times before the start (the API takes times up to Prometheus' latest).
        let steps: Vec<Timestamp> = (0..)
            .map_while(|i: i64| i.checked_mul(self.step).and_then(|d| self.start.checked_add(d)))
            .take_while(|&t| t <= self.end)
            .collect();
        if let Some(values) = self.scalar_steps(expr, &steps)? {
            return Ok(Value::Matrix(sliding::scalar_series(&steps, values).into_iter().collect()));
        }
        if let Some(series) = self.whole_range_result(expr, &steps)? {
            return Ok(Value::Matrix(series));
        }
        let results = self.eval_steps(expr, &steps, self.step, &|ev: &mut Evaluator<'a>, t, v| match v {
            V::Scalar(v) => Ok(vec![Sample { labels: Labels::empty(), t, v }]),
            V::Vector(v) => ev.finish_vector(v, t),
            _ => exec_error("range query must evaluate to a scalar or an instant vector"),
        })?;
        let mut index: LabelsMap<usize> = LabelsMap::default();
        let mut out: Vec<Series> = Vec::new();
        // Steps mostly give the same label sets in the same order: the series at the
        // same position of the previous step is tried before the map.
        let mut previous: Vec<usize> = Vec::new();
        for (t, samples) in results {
            for (j, s) in samples.into_iter().enumerate() {
                let i = match previous.get(j) {
                    Some(&i) if out[i].labels.ptr_eq(&s.labels) => i,
                    _ => {
                        let i = *index.entry(s.labels.clone()).or_insert_with(|| {
                            out.push(Series { labels: s.labels.clone(), points: Vec::new() });
                            out.len() - 1
                        });
                        if j < previous.len() {
                            previous[j] = i;
                        } else {
                            previous.push(i);
                        }
                        i
                    }
                };
                out[i].points.push(Point { t, v: s.v });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Matrix(out))
    }

    /// `f` of each of `items` (with its position) that gives something, in order; on
    /// rayon's pool when there are enough of them to pay for it and this evaluator is not
    /// already one of several threads. Over a large selection every series costs a few
    /// cache misses, which two cores take in half the time.
    pub(crate) fn map_series<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(usize, &T) -> Option<R> + Sync + Send,
    ) -> Vec<R> {
        if self.parallel && items.len() >= PARALLEL_SERIES {
            use rayon::prelude::*;
            items.par_iter().enumerate().filter_map(|(i, x)| f(i, x)).collect()
        } else {
            items.iter().enumerate().filter_map(|(i, x)| f(i, x)).collect()
        }
    }

    /// [`map_series`](Self::map_series) over owned items, each dropped as soon as `f`
    /// is done with it: a second pass to drop them would miss the cache on every one.
    pub(crate) fn map_series_owned<T: Send, R: Send>(
        &self,
        items: Vec<T>,
        f: impl Fn(T) -> Option<R> + Sync + Send,
    ) -> Vec<R> {
        if self.parallel && items.len() >= PARALLEL_SERIES {
            use rayon::prelude::*;
            items.into_par_iter().filter_map(f).collect()
        } else {
            let mut out = Vec::with_capacity(items.len());
            out.extend(items.into_iter().filter_map(f));
            out
        }
    }

    /// A fresh evaluator of a query over `start..=end` every `step` (0: an instant query).
    fn new(opts: &'a EngineOptions, start: Timestamp, end: Timestamp, step: i64) -> Self {
        Evaluator {
            opts,
            start,
            end,
            step,
            delayed: opts.features.is_enabled(Feature::DelayedNameRemoval),
            selected: NodeMap::default(),
            precomputed: NodeMap::default(),
            facts: NodeMap::default(),
            cursors: NodeMap::default(),
            fused_groups: NodeMap::default(),
            group_plans: NodeMap::default(),
            bucket_plans: NodeMap::default(),
            distinct: NodeMap::default(),
            join_labels: NodeMap::default(),
            relabels: NodeMap::default(),
            inner_steps: NodeMap::default(),
            invariant: NodeMap::default(),
            #[cfg(test)]
            kept_evaluations: Arc::default(),
            annotations: Vec::new(),
            deadline: opts.timeout.map(|t| Instant::now() + t),
            samples_selected: 0,
            grid_step: step,
            parallel: opts.parallel,
            fast_paths: true,
        }
    }

    /// An evaluator for another thread: the same query and selected samples, its own
    /// caches and annotations.
    fn fork(&self) -> Evaluator<'a> {
        Evaluator {
            selected: self.selected.clone(),
            facts: self.facts.clone(),
            invariant: self.invariant.clone(),
            #[cfg(test)]
            kept_evaluations: self.kept_evaluations.clone(),
            deadline: self.deadline,
            samples_selected: self.samples_selected,
            grid_step: self.grid_step,
            parallel: self.parallel,
            fast_paths: self.fast_paths,
            ..Evaluator::new(self.opts, self.start, self.end, self.step)
        }
    }

    /// Applies delayed name removal and rejects duplicate label sets.
    fn finish_vector(&mut self, v: Vec<S>, t: Timestamp) -> EResult<Vec<Sample>> {
        let out: Vec<Sample> = v
            .into_iter()
            .map(|s| Sample {
                labels: if s.drop_name { s.labels.without_metric_name() } else { s.labels },
                t,
                v: s.v,
            })
            .collect();
        self.check_distinct_sets(usize::MAX, out.iter().map(|s| (&s.labels, false)))?;
        Ok(out)
    }

    /// [`check_duplicates`] of the output `v` of the node with key `node`, remembering
    /// the label sets it found distinct: over the steps of a range query a node mostly
    /// outputs the very same label sets (the same shared sets, in the same order), which
    /// need no second look. Hashing each step's label sets twice (the product's and the
    /// result's) was a sixth of `m * 2` over an hour's steps.
    pub(crate) fn check_distinct(&mut self, node: usize, v: &[S]) -> EResult<()> {
        let delayed = self.delayed;
        self.check_distinct_sets(node, v.iter().map(|s| (&s.labels, delayed && s.drop_name)))
    }

    /// [`check_distinct`](Self::check_distinct) of label sets, each with whether its
    /// name goes at the end.
    fn check_distinct_sets<'s, I>(&mut self, node: usize, sets: I) -> EResult<()>
    where
        I: ExactSizeIterator<Item = (&'s Labels, bool)> + Clone,
    {
        if sets.len() < 2 {
            return Ok(());
        }
        let seen_before = |seen: &Vec<(Labels, bool)>| {
            seen.len() == sets.len()
                && seen.iter().zip(sets.clone()).all(|((l, d), (s, e))| l.ptr_eq(s) && *d == e)
        };
        if self.distinct.get(&node).is_some_and(seen_before) {
            return Ok(());
        }
        check_sets(sets.clone())?;
        if self.grid_step != 0 {
            self.distinct.insert(node, sets.map(|(l, d)| (l.clone(), d)).collect());
        }
        Ok(())
    }

    fn finish_matrix(&self, m: Matrix) -> EResult<Vec<Series>> {
        let source = m.source;
        let mut out: Vec<Series> = m
            .series
            .into_iter()
            .map(|s| Series {
                points: points_of(source.as_ref(), &s.points).to_vec(),
                labels: if s.drop_name { s.labels.without_metric_name() } else { s.labels },
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        if out.windows(2).any(|w| w[0].labels == w[1].labels) {
            return exec_error("vector cannot contain metrics with the same labelset");
        }
        Ok(out)
    }

    /// Removes `__name__` now, or marks it for removal at the end in delayed mode.
    pub(crate) fn drop_name(&self, mut s: S) -> S {
        if self.delayed {
            s.drop_name = true;
        } else {
            s.labels = s.labels.without_metric_name();
        }
        s
    }

    pub(crate) fn eval(&mut self, e: &Expr, t: Timestamp) -> EResult<V> {
        if !self.invariant.is_empty() {
            if let Some(v) = self.kept_invariant(e, t) {
                return v;
            }
        }
        self.eval_uncached(e, t)
    }

    /// [`eval`](Self::eval) without looking for a kept step-invariant value.
    fn eval_uncached(&mut self, e: &Expr, t: Timestamp) -> EResult<V> {
        crate::parser::grow_stack(|| self.eval_inner(e, t))
    }

    fn eval_inner(&mut self, e: &Expr, t: Timestamp) -> EResult<V> {
        match e {
            Expr::Number(n) => Ok(V::Scalar(n.value)),
            Expr::String(s) => Ok(V::String(s.value.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => match self.take_precomputed(sliding::node_key(vs), t) {
                Some(v) => Ok(V::Vector(v)),
                None => Ok(V::Vector(self.instant_selector(vs, t)?)),
            },
            Expr::MatrixSelector(ms) => Ok(V::Matrix(self.range_selector(ms, t)?)),
            Expr::Subquery(sq) => Ok(V::Matrix(self.subquery(sq, t)?)),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                V::Scalar(v) if u.op == UnaryOp::Neg => Ok(V::Scalar(-v)),
                V::Vector(v) if u.op == UnaryOp::Neg => {
                    let out: Vec<S> = v.into_iter().map(|s| self.drop_name(S { v: -s.v, ..s })).collect();
                    self.check_distinct(sliding::node_key(u), &out)?;
                    Ok(V::Vector(out))
                }
                v => Ok(v),
            },
            Expr::Binary(b) => self.binary(b, t),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Call(c) => self.call(c, t),
        }
    }

    fn instant_selector(&mut self, vs: &VectorSelector, t: Timestamp) -> EResult<Vec<S>> {
        match vs.anchoring {
            Some(RangeAnchoring::Smoothed) => return self.smoothed_instant(vs, t),
            Some(RangeAnchoring::Anchored) => {
                return Err(EvalError::Unsupported("anchored instant vector selectors".into()))
            }
            None => {}
        }
        let offset = self.offset_ms(vs.offset.as_ref())?;
        let reference = self.at_ms(vs.at).unwrap_or(t) - offset;
        let series = self.selected(vs);
        let mut out = Vec::new();
        for s in series.iter() {
            let i = partition_point_near(&s.points, reference, |t| t <= reference);
            if i == 0 {
                continue;
            }
            let p = s.points[i - 1];
            let too_old = match self.opts.compat {
                Compat::Prometheus3 => p.t <= reference - self.opts.lookback_delta_ms,
                Compat::Prometheus2 => p.t < reference - self.opts.lookback_delta_ms,
            };
            if too_old || is_stale_marker(p.v) {
                continue;
            }
            out.push(S { labels: s.labels.clone(), v: p.v, t: p.t, drop_name: false });
        }
        Ok(out)
    }

    fn range_selector(&mut self, ms: &MatrixSelector, t: Timestamp) -> EResult<Matrix> {
        if ms.selector.anchoring.is_some() {
            return self.extended_range(ms, t, false);
        }
        let (start, end) = self.range_window(ms, t)?;
        let series = self.selected(&ms.selector);
        let out = self.map_series(&series, |i, s| {
            let (lo, hi) = self.window_in(&s.points, start, end);
            // Stale markers are left out of range vectors; a window without one is shared.
            let points = if s.points.stale_markers_in(lo..hi) {
                let kept: Vec<Point> =
                    s.points[lo..hi].iter().copied().filter(|p| !is_stale_marker(p.v)).collect();
                (!kept.is_empty()).then_some(Points::Owned(kept))?
            } else {
                (lo < hi).then_some(Points::Selected { series: i, range: lo..hi })?
            };
            Some(M { labels: s.labels.clone(), points, drop_name: false })
        });
        Ok(Matrix { series: out, start, end, source: Some(series) })
    }

    /// The window `(start, end]` of a range selector without anchoring at `t`.
    pub(crate) fn range_window(&self, ms: &MatrixSelector, t: Timestamp) -> EResult<(Timestamp, Timestamp)> {
        let range = self.positive_ms(&ms.range, "range")?;
        let offset = self.offset_ms(ms.selector.offset.as_ref())?;
        let end = self.at_ms(ms.selector.at).unwrap_or(t) - offset;
        Ok((end - range, end))
    }

    /// Where the window `(start, end]` lies in `points` (`[start, end]` for Prometheus 2).
    pub(crate) fn window_in(&self, points: &[Point], start: Timestamp, end: Timestamp) -> (usize, usize) {
        let lo = match self.opts.compat {
            Compat::Prometheus3 => partition_point_near(points, start, |t| t <= start),
            Compat::Prometheus2 => partition_point_near(points, start, |t| t < start),
        };
        (lo, partition_point_near(points, end, |t| t <= end))
    }

    /// `expr` at each of `steps` (`grid` apart: a range query's or a subquery's), each
    /// value passed through `finish`. Range functions slide over the steps; a long
    /// list is split over the cores (steps are independent).
    fn eval_steps<R: Send>(
        &mut self,
        expr: &Expr,
        steps: &[Timestamp],
        grid: i64,
        finish: &(dyn Fn(&mut Evaluator<'a>, Timestamp, V) -> EResult<R> + Sync),
    ) -> EResult<Vec<(Timestamp, R)>> {
        // A step-invariant expression is evaluated once: split, it would be once a core;
        // so are its kept parts, before the split.
        let split = self.splits(steps, self.worth_splitting(steps) && !self.is_kept_invariant(expr));
        if let (true, Some(&first)) = (split, steps.first()) {
            self.evaluate_kept_parts(expr, first)?;
        }
        let parts = self.over_step_parts(steps, grid, split, &|ev, part| ev.steps(expr, part, finish))?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// Whether the steps of an expression of this evaluator's selections make enough
    /// work to split over the cores: a step of each selected series counts one.
    pub(super) fn worth_splitting(&self, steps: &[Timestamp]) -> bool {
        steps.len() * self.selected.values().map(|s| s.len()).sum::<usize>() >= SPLIT_STEP_WORK
    }

    /// Whether [`over_step_parts`](Self::over_step_parts) splits `steps` that are
    /// `worth` splitting over the cores.
    fn splits(&self, steps: &[Timestamp], worth: bool) -> bool {
        let threads = cores();
        worth && self.parallel && threads > 1 && steps.len() >= 2 * threads
    }

    /// `f` over consecutive parts of `steps` (`grid` apart), each part with an evaluator
    /// of its own: one part per core when `split` and this evaluator is not already one
    /// of several threads, else one part. The parts' annotations are kept.
    pub(super) fn over_step_parts<R: Send>(
        &mut self,
        steps: &[Timestamp],
        grid: i64,
        split: bool,
        f: &(dyn Fn(&mut Evaluator<'a>, &[Timestamp]) -> EResult<R> + Sync),
    ) -> EResult<Vec<R>> {
        let split = self.splits(steps, split);
        let chunk = if split { steps.len().div_ceil(cores()) } else { steps.len().max(1) };
        let parts: Vec<(Evaluator<'a>, &[Timestamp])> = steps
            .chunks(chunk)
            .map(|part| {
                let mut ev = self.fork();
                ev.grid_step = grid;
                ev.parallel = self.parallel && !split;
                (ev, part)
            })
            .collect();
        let run = |(mut ev, part): (Evaluator<'a>, &[Timestamp])| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f(&mut ev, part)
                    .map(|r| (r, std::mem::take(&mut ev.annotations), std::mem::take(&mut ev.invariant)))
            }))
            .unwrap_or_else(|_| Err(EvalError::Execution("evaluation panicked; please report a bug".into())))
        };
        // Parts run on rayon's pool, whose threads outlive the query: threads spawned per
        // query would each leave their allocator heap behind (15 MB more peak RSS over the
        // Istio query set of benches/README.md) and cost a spawn per query.
        let outcomes: Vec<_> = if split {
            use rayon::prelude::*;
            parts.into_par_iter().map(run).collect()
        } else {
            parts.into_iter().map(run).collect()
        };
        let mut all = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (part, annotations, invariant) = outcome?;
            all.push(part);
            for a in annotations {
                self.annotate(a.kind, a.message, a.span);
            }
            self.keep_invariant_values(invariant);
        }
        Ok(all)
    }

    /// `expr` at each of `steps`, range functions computed a few dozen steps ahead
    /// (enough to slide, little enough to hold).
    fn steps<R>(
        &mut self,
        expr: &Expr,
        steps: &[Timestamp],
        finish: &(dyn Fn(&mut Evaluator<'a>, Timestamp, V) -> EResult<R> + Sync),
    ) -> EResult<Vec<(Timestamp, R)>> {
        let mut out = Vec::with_capacity(steps.len());
        for (i, &t) in steps.iter().enumerate() {
            if i % PRECOMPUTE_STEPS == 0 {
                self.precomputed.clear();
                self.inner_steps.clear();
                self.precompute(expr, &steps[i..steps.len().min(i + PRECOMPUTE_STEPS)])?;
            }
            self.check_deadline()?;
            let value = self.eval(expr, t)?;
            out.push((t, finish(self, t, value)?));
        }
        Ok(out)
    }

    pub(crate) fn annotate(&mut self, kind: AnnotationKind, message: String, span: Span) {
        let a = Annotation { kind, message, span };
        if !self.annotations.contains(&a) {
            self.annotations.push(a);
        }
    }

    /// An evaluated argument that must be a scalar.
    pub(crate) fn scalar_arg(&mut self, e: &Expr, t: Timestamp) -> EResult<f64> {
        match self.eval(e, t)? {
            V::Scalar(v) => Ok(v),
            _ => exec_error("expected a scalar argument"),
        }
    }

    pub(crate) fn vector_arg(&mut self, e: &Expr, t: Timestamp) -> EResult<Vec<S>> {
        match self.eval(e, t)? {
            V::Vector(v) => Ok(v),
            _ => exec_error("expected an instant vector argument"),
        }
    }

    pub(crate) fn matrix_arg(&mut self, e: &Expr, t: Timestamp) -> EResult<Matrix> {
        match self.eval(e, t)? {
            V::Matrix(m) => Ok(m),
            _ => exec_error("expected a range vector argument"),
        }
    }
}

/// The points of a window of a matrix whose selected samples are `source`.
pub(crate) fn points_of<'a>(source: Option<&'a Arc<Vec<SelectedSeries>>>, p: &'a Points) -> &'a [Point] {
    match (p, source) {
        (Points::Selected { series, range }, Some(all)) => &all[*series].points[range.clone()],
        (Points::Owned(v), _) => v,
        (Points::Selected { .. }, None) => &[],
    }
}

/// How many values of a window fall below the one before them, when the store knows
/// without a scan ([`SharedPoints::decreases_in`](crate::storage::SharedPoints::decreases_in)).
pub(crate) fn decreases_of(source: Option<&Arc<Vec<SelectedSeries>>>, p: &Points) -> Option<usize> {
    match (p, source) {
        (Points::Selected { series, range }, Some(all)) => all[*series].points.decreases_in(range.clone()),
        _ => None,
    }
}

/// In non-delayed mode, two samples with the same labels in one step's output is an
/// error; in delayed mode the check waits until names are removed at the end.
pub(crate) fn check_duplicates(v: &[S], delayed: bool) -> EResult<()> {
    check_sets(v.iter().map(|s| (&s.labels, delayed && s.drop_name)))
}

/// An error when two of `sets` (label sets, each with whether its name goes at the end)
/// are the same.
fn check_sets<'s>(sets: impl ExactSizeIterator<Item = (&'s Labels, bool)>) -> EResult<()> {
    if sets.len() < 2 {
        return Ok(());
    }
    let mut seen: std::collections::HashSet<_, LabelsHashing> =
        std::collections::HashSet::with_capacity_and_hasher(sets.len(), Default::default());
    for set in sets {
        if !seen.insert(set) {
            return exec_error("vector cannot contain metrics with the same labelset");
        }
    }
    Ok(())
}

fn regex_error(e: regex::Error) -> EvalError {
    EvalError::Execution(format!("invalid regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    /// A range result's samples at step `t`, by labels, values by bit pattern.
    fn range_step(m: &[Series], t: Timestamp) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = m
            .iter()
            .filter_map(|s| s.points.iter().find(|p| p.t == t).map(|p| (s.labels.to_string(), p.v.to_bits())))
            .collect();
        out.sort();
        out
    }

    /// An instant result's samples, as [`range_step`] gives a step's.
    fn instant_step(v: &[Sample]) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = v.iter().map(|s| (s.labels.to_string(), s.v.to_bits())).collect();
        out.sort();
        out
    }

    /// Vector matching keeps each label set's signature and each pair's result labels
    /// over a range query's steps; each step must still equal the instant query at its
    /// time, with series that start, stop and come back, and with errors (a duplicate
    /// match group that exists only at some steps) at the same steps.
    #[test]
    fn vector_matching_over_steps_equals_instant_queries() {
        let mut st = MemoryStore::new();
        for (name, pods, from, to) in
            [("req", 3, 0, 40), ("lim", 2, 5, 30), ("lim", 3, 32, 40), ("info", 2, 0, 40), ("dup", 1, 20, 25)]
        {
            for pod in 0..pods {
                let pod = pod.to_string();
                for code in ["200", "500"] {
                    let labels = Labels::from_pairs([("__name__", name), ("pod", &pod), ("code", code)]);
                    for i in from..=to {
                        if (i + pod.len() as i64 * 3) % 7 == 0 {
                            continue;
                        }
                        st.append(&labels, i * 15_000, (i * 3 + 1) as f64);
                    }
                }
            }
        }
        // Each pod's build changes version at 330 s (the old series ends with a stale
        // marker just after 315 s): the same `req` series then matches another `build`
        // series.
        for pod in 0..3 {
            let pod = pod.to_string();
            for (ver, from, to) in [("1", 0, 21), ("2", 22, 40)] {
                let labels = Labels::from_pairs([("__name__", "build"), ("pod", &pod), ("ver", ver)]);
                for i in from..=to {
                    let stale = ver == "1" && i == to;
                    let v = if stale { f64::from_bits(crate::value::STALE_NAN_BITS) } else { 1.0 };
                    st.append(&labels, i * 15_000 + if stale { 1 } else { 0 }, v);
                }
            }
        }
        // `dup` collides with `req` under `ignoring (__name__)` at 300–375 s.
        let engine = Engine::new(EngineOptions { features: Features::all(), ..EngineOptions::default() });
        // Each query and whether it fails (at some steps).
        for (q, fails) in [
            ("req / lim", false),
            ("req / on (pod) group_left sum by (pod) (lim)", false),
            ("sum by (pod) (lim) / on (pod) group_right req", false),
            ("req > bool on (pod, code) lim", false),
            ("req * on (pod, code) group_left info", false),
            ("req * on (pod) group_left (ver) build", false),
            ("build * on (pod) group_right (ver) req", false),
            ("req + ignoring (code) group_left sum without (code) (lim)", false),
            ("req / ignoring (__name__) {__name__=~\"lim|dup\"}", true),
            ("req unless on (pod) lim", false),
            ("rate(req[1m]) / on (pod, code) req", false),
        ] {
            let range = engine.range_query(&st, q, 0, 600_000, 15_000).map(|r| r.value);
            assert_eq!(range.is_err(), fails, "{q}: {range:?}");
            for t in (0..=600_000).step_by(15_000) {
                let want = engine.instant_query(&st, q, t).map(|r| r.value);
                let Ok(Value::Matrix(m)) = &range else {
                    // The range query fails where some step's instant query fails.
                    continue;
                };
                let Ok(Value::Vector(want)) = want else {
                    panic!("{q} at {t}: {want:?} but the range query succeeded")
                };
                assert_eq!(range_step(m, t), instant_step(&want), "{q} at {t}");
            }
            if let Err(e) = &range {
                let failing = (0..=600_000)
                    .step_by(15_000)
                    .filter(|&t| engine.instant_query(&st, q, t).is_err())
                    .count();
                assert!(failing > 0, "{q}: the range query failed ({e}) but no step does");
            }
        }
    }

    /// Range queries reuse a step's bucket grouping at the next; each step must still
    /// equal the instant query at its time, also where an `le` is malformed for a while.
    #[test]
    fn bucket_grouping_over_steps_equals_instant_queries() {
        let mut st = MemoryStore::new();
        for wl in ["a", "b"] {
            for (k, le) in ["0.1", "1", "10", "+Inf", "bad"].iter().enumerate() {
                let labels = Labels::from_pairs([("__name__", "h_bucket"), ("wl", wl), ("le", le)]);
                for i in 0..=40i64 {
                    // The malformed bucket exists only in the middle of the range.
                    if *le == "bad" && !(15..25).contains(&i) {
                        continue;
                    }
                    st.append(
                        &labels,
                        i * 15_000,
                        (i * (k as i64 + 1) * if wl == "a" { 3 } else { 5 }) as f64,
                    );
                }
            }
        }
        let engine = Engine::new(EngineOptions { features: Features::all(), ..EngineOptions::default() });
        for q in [
            "histogram_quantile(0.9, sum by (le, wl) (rate(h_bucket[1m])))",
            "histogram_fraction(0, 1, rate(h_bucket[1m]))",
            "histogram_quantiles(rate(h_bucket[1m]), \"q\", 0.5, 0.99)",
        ] {
            let range = engine.range_query(&st, q, 60_000, 600_000, 15_000).unwrap();
            let Value::Matrix(m) = range.value else { panic!("{q}") };
            for t in (60_000..=600_000).step_by(15_000) {
                let Value::Vector(want) = engine.instant_query(&st, q, t).unwrap().value else {
                    panic!("{q}")
                };
                assert_eq!(range_step(&m, t), instant_step(&want), "{q} at {t}");
            }
        }
    }

    fn store() -> MemoryStore {
        let mut s = MemoryStore::new();
        for (name, job, step) in [("a_total", "x", 1.0), ("b_total", "x", 2.0), ("c", "y", 3.0)] {
            let labels = Labels::from_pairs([("__name__", name), ("job", job)]);
            for i in 0..=20 {
                s.append(&labels, i * 15_000, i as f64 * step);
            }
        }
        s
    }

    fn run(features: Features, q: &str) -> Result<Vec<Sample>, EvalError> {
        let engine = Engine::new(EngineOptions { features, ..EngineOptions::default() });
        match engine.instant_query(&store(), q, 300_000)?.value {
            Value::Vector(v) => Ok(v),
            other => panic!("{q}: not a vector: {other:?}"),
        }
    }

    /// `rate`/`increase` of a metric whose name does not end like a counter's get an info
    /// note naming it, once, whether the selector names its metric or not (instant
    /// queries and range queries, which take the sliding path).
    #[test]
    fn counter_info_names_each_metric_that_does_not_look_like_a_counter() {
        let engine = Engine::new(EngineOptions::default());
        let infos = |q: &str, range: bool| -> Vec<String> {
            let r = if range {
                engine.range_query(&store(), q, 60_000, 300_000, 15_000)
            } else {
                engine.instant_query(&store(), q, 300_000)
            };
            r.unwrap()
                .annotations
                .iter()
                .filter(|a| a.kind == AnnotationKind::Info)
                .map(|a| a.message.clone())
                .collect()
        };
        let note = |name: &str| {
            format!(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
            )
        };
        for range in [false, true] {
            assert_eq!(infos("rate(c[1m])", range), [note("c")]);
            assert_eq!(infos(r#"increase(c{job="y"}[1m])"#, range), [note("c")]);
            assert!(infos("rate(a_total[1m])", range).is_empty());
            assert!(infos(r#"rate(c{job="x"}[1m])"#, range).is_empty(), "no series, no note");
            assert_eq!(infos(r#"rate({__name__=~"a_total|c"}[1m])"#, range), [note("c")]);
            assert!(infos("delta(c[1m])", range).is_empty());
        }
    }

    /// Parsed queries are kept per engine: another engine's features still decide what
    /// parses, a query's type still decides whether it may be a range query, and errors
    /// come again each time.
    #[test]
    fn parsed_queries_are_kept_per_engine_with_their_type() {
        let all = Engine::new(EngineOptions { features: Features::all(), ..EngineOptions::default() });
        let none = Engine::new(EngineOptions { features: Features::none(), ..EngineOptions::default() });
        let experimental = r#"sort_by_label(a_total, "job")"#;
        for _ in 0..2 {
            assert!(all.instant_query(&store(), experimental, 300_000).is_ok());
            assert!(none.instant_query(&store(), experimental, 300_000).is_err());
        }
        let string = r#""text""#;
        for _ in 0..2 {
            assert!(none.instant_query(&store(), string, 300_000).is_ok());
            let err = none.range_query(&store(), string, 0, 300_000, 15_000).unwrap_err();
            assert!(err.to_string().contains(r#"invalid expression type "string" for range query"#), "{err}");
        }
        for _ in 0..2 {
            let err = none.instant_query(&store(), "sum(", 300_000).unwrap_err();
            assert!(err.to_string().contains("1:5"), "{err}");
        }
        let twice: Vec<String> = (0..2)
            .map(|_| {
                format!(
                    "{:?}",
                    none.instant_query(&store(), "sum(rate(a_total[1m]))", 300_000).unwrap().value
                )
            })
            .collect();
        assert_eq!(twice[0], twice[1]);
        assert!(format!("{:?}", none.clone()).contains("ParseCache"));
        // Engines made from one share its parsed queries only with the same features.
        let shares = |a: &Engine, b: &Engine| Arc::ptr_eq(&a.parsed.0, &b.parsed.0);
        let serial = all.with_options(EngineOptions { parallel: false, ..all.options().clone() });
        assert!(shares(&all, &serial) && shares(&all, &all.clone()));
        let fewer = all.with_options(EngineOptions { features: Features::none(), ..all.options().clone() });
        assert!(!shares(&all, &fewer));
        assert!(fewer.instant_query(&store(), experimental, 300_000).is_err());
    }

    /// One-to-one matching `on` labels gives the result the signature's labels, without
    /// the name when the operator drops it, also when `on` lists the name.
    #[test]
    fn one_to_one_results_carry_the_on_labels() {
        let labels = |q: &str| -> Vec<String> {
            let engine = Engine::new(EngineOptions::default());
            match engine.instant_query(&store(), q, 300_000).unwrap().value {
                Value::Vector(v) => v.iter().map(|s| format!("{} {}", s.labels, s.v)).collect(),
                other => panic!("{q}: {other:?}"),
            }
        };
        assert_eq!(labels("a_total + on (job) b_total"), [r#"{job="x"} 60"#]);
        assert_eq!(labels("a_total + on (__name__, job) a_total"), [r#"{job="x"} 40"#]);
        assert_eq!(labels("a_total >= on (__name__, job) a_total"), [r#"{__name__="a_total", job="x"} 20"#]);
        assert_eq!(labels("a_total >= on (job) b_total"), Vec::<String>::new());
        assert_eq!(labels("b_total >= on (job) a_total"), [r#"{job="x"} 40"#]);
        let err = Engine::new(EngineOptions::default())
            .instant_query(&store(), r#"{job="x"} + on (job) a_total"#, 300_000)
            .unwrap_err();
        assert!(err.to_string().contains("many-to-one matching must be explicit"), "{err}");
    }

    /// A server's default: names are removed immediately.
    const IMMEDIATE: Features = Features::none();

    fn delayed() -> Features {
        Features::none().with(Feature::DelayedNameRemoval)
    }

    #[test]
    fn immediate_name_removal_collides_where_delayed_does_not() {
        let q = r#"rate({__name__=~"a_total|b_total"}[1m])"#;
        let err = run(IMMEDIATE, q).unwrap_err();
        assert_eq!(err.to_string(), "vector cannot contain metrics with the same labelset");
        assert_eq!(run(delayed(), &format!("sum({q})")).unwrap().len(), 1);
        assert!(run(IMMEDIATE, &format!("sum({q})")).is_err());
    }

    #[test]
    fn by_name_sees_names_only_when_delayed() {
        let q = r#"sum by (__name__) (rate({__name__=~"a_total|b_total"}[1m]))"#;
        let v = run(delayed(), q).unwrap_err();
        // Both groups lose their name at the end and then collide.
        assert_eq!(v.to_string(), "vector cannot contain metrics with the same labelset");
        let q = r#"label_replace(rate(a_total[1m]), "n", "$1", "__name__", "(.+)")"#;
        let v = run(delayed(), q).unwrap();
        assert_eq!(v[0].labels.get("n"), Some("a_total"));
        assert_eq!(v[0].labels.metric_name(), None);
        let v = run(IMMEDIATE, q).unwrap();
        assert_eq!(v[0].labels.get("n"), None);
    }

    /// `atan2` keeps the metric name in Prometheus 2, and a comparison there filters a
    /// matched pair (one-to-one or grouped) out before it counts (each checked against
    /// 2.42).
    #[test]
    fn atan2_names_and_filtered_matches_as_each_prometheus() {
        let lr = |v: f64, labels: &[(&str, &str)]| {
            let one =
                |e: String, (k, x): &(&str, &str)| format!(r#"label_replace({e}, "{k}", "{x}", "", "")"#);
            labels.iter().fold(format!("vector({v})"), one)
        };
        let m = format!(
            "({} or {})",
            lr(1.0, &[("__name__", "m"), ("a", "1")]),
            lr(2.0, &[("__name__", "m"), ("a", "2")])
        );
        let l = format!("({} or {})", lr(1.0, &[("x", "1"), ("y", "a")]), lr(5.0, &[("x", "1"), ("y", "b")]));
        let r = lr(3.0, &[("x", "1")]);
        let names = |compat, q: &str| {
            let engine = Engine::new(EngineOptions { compat, ..EngineOptions::default() });
            engine.instant_query(&crate::storage::MemoryStore::new(), q, 0).map(|result| {
                let Value::Vector(v) = result.value else { panic!("{q}") };
                v.iter().map(|s| s.labels.to_string()).collect::<Vec<_>>()
            })
        };
        for q in [format!("{m} atan2 {m}"), format!("{m} atan2 0.5"), format!("0.5 atan2 {m}")] {
            assert_eq!(
                names(Compat::Prometheus2, &q).unwrap(),
                [r#"{__name__="m", a="1"}"#, r#"{__name__="m", a="2"}"#],
                "{q}"
            );
            assert_eq!(names(Compat::Prometheus3, &q).unwrap(), [r#"{a="1"}"#, r#"{a="2"}"#], "{q}");
        }
        let q = format!("{l} > on(x) {r}");
        assert_eq!(names(Compat::Prometheus2, &q).unwrap(), [r#"{x="1"}"#]);
        let three = names(Compat::Prometheus3, &q).unwrap_err().to_string();
        assert!(three.contains("many-to-one matching must be explicit"), "{three}");
        // `bool` keeps every pair: an error in both.
        assert!(names(Compat::Prometheus2, &format!("{l} < bool on(x) {r}")).is_err());
        // The same with grouping, from either side.
        let c = lr(3.0, &[("x", "1"), ("y", "c")]);
        for q in [format!("{l} > on(x) group_left(y) {c}"), format!("{c} < on(x) group_right(y) {l}")] {
            assert_eq!(names(Compat::Prometheus2, &q).unwrap(), [r#"{x="1", y="c"}"#], "{q}");
            let three = names(Compat::Prometheus3, &q).unwrap_err().to_string();
            assert!(three.contains("grouping labels must ensure unique matches"), "{three}");
        }
    }

    /// Under `Compat::Prometheus2` an instant query's aggregations and
    /// `histogram_quantile` give 2.42's floats (each value checked against 2.42), under
    /// the default Prometheus 3's.
    #[test]
    fn aggregations_and_bucket_quantiles_as_each_prometheus() {
        let values = |vs: &[(&str, &str)]| {
            let one = |(le, v): &(&str, &str)| format!(r#"label_replace(vector({v}), "le", "{le}", "", "")"#);
            vs.iter().map(one).collect::<Vec<_>>().join(" or ")
        };
        let cases = [
            (
                format!("avg({})", values(&[("a", "1.1"), ("b", "2.2"), ("c", "3.3")])),
                2.2,
                2.1999999999999997,
            ),
            (
                format!("sum({})", values(&[("a", "0.1"), ("b", "0.2"), ("c", "0.3")])),
                0.6000000000000001,
                0.6,
            ),
            (format!("stddev({})", values(&[("a", "NaN")])), 0.0, f64::NAN),
            (
                format!(
                    "histogram_quantile(0.5, {})",
                    values(&[("1", "5"), ("2", "NaN"), ("3", "3"), ("+Inf", "10")])
                ),
                f64::NAN,
                3.0,
            ),
            (
                format!(
                    "histogram_quantile(0.50000000000003, {})",
                    values(&[("1", "1"), ("2", "1.0000000000001"), ("+Inf", "2")])
                ),
                1.6,
                2.0,
            ),
        ];
        for (q, prometheus2, prometheus3) in cases {
            for (compat, want) in [(Compat::Prometheus2, prometheus2), (Compat::Prometheus3, prometheus3)] {
                let engine = Engine::new(EngineOptions { compat, ..EngineOptions::default() });
                let result = engine.instant_query(&crate::storage::MemoryStore::new(), &q, 0).unwrap();
                let Value::Vector(v) = result.value else { panic!("{q}") };
                let got = v[0].v;
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{q} ({compat:?}): {got}"
                );
            }
        }
    }

    #[test]
    fn comparisons_keep_names_arithmetic_drops_them() {
        for f in [IMMEDIATE, delayed()] {
            let v = run(f, "a_total > 5").unwrap();
            assert_eq!(v[0].labels.metric_name(), Some("a_total"));
            let v = run(f, "a_total + 1").unwrap();
            assert_eq!(v[0].labels.metric_name(), None);
            let v = run(f, "a_total > bool 5").unwrap();
            assert_eq!((v[0].labels.metric_name(), v[0].v), (None, 1.0));
            let v = run(f, "last_over_time(a_total[1m])").unwrap();
            assert_eq!(v[0].labels.metric_name(), Some("a_total"));
        }
    }

    /// Aggregations reuse their grouping while the input series stay the same: a range
    /// query whose series come and go equals instant queries at each step.
    #[test]
    fn reused_grouping_follows_changing_inputs() {
        let mut st = MemoryStore::new();
        let l = |name: &str, job: &str| Labels::from_pairs([("__name__", "x"), ("inst", name), ("job", job)]);
        for i in 0..40 {
            let t = i * 15_000;
            st.append(&l("a", "1"), t, i as f64);
            st.append(&l("b", "1"), t, 2.0 * i as f64);
            if (10..25).contains(&i) {
                st.append(&l("c", "2"), t, 100.0);
                st.append(
                    &crate::Labels::from_pairs([("__name__", "x"), ("inst", "d"), ("job", "1")]),
                    t,
                    1.0,
                );
            }
        }
        let engine = Engine::default();
        for q in ["sum by (job) (x)", "avg without (inst) (x)", "count(x)", "max by (job) (rate(x[1m]))"] {
            let Value::Matrix(range) = engine.range_query(&st, q, 0, 585_000, 15_000).unwrap().value else {
                panic!("{q}: not a matrix")
            };
            let mut instant_points = 0;
            for step in 0..40 {
                let t = step * 15_000;
                let Value::Vector(instant) = engine.instant_query(&st, q, t).unwrap().value else {
                    panic!("{q}: not a vector")
                };
                instant_points += instant.len();
                for s in instant {
                    let series =
                        range.iter().find(|r| r.labels == s.labels).unwrap_or_else(|| panic!("{q} at {t}"));
                    let p = series.points.iter().find(|p| p.t == t).unwrap_or_else(|| panic!("{q} at {t}"));
                    assert!(p.v == s.v || (p.v.is_nan() && s.v.is_nan()), "{q} at {t}: {} vs {}", p.v, s.v);
                }
            }
            assert_eq!(range.iter().map(|r| r.points.len()).sum::<usize>(), instant_points, "{q}");
        }
    }

    #[test]
    fn large_selections_give_the_same_result_on_one_thread_and_on_several() {
        let mut st = MemoryStore::new();
        for i in 0..PARALLEL_SERIES + 904 {
            let (pod, id) = ((i % 50).to_string(), i.to_string());
            let name = if i % 7 == 0 { "g" } else { "c_total" };
            let labels = Labels::from_pairs([("__name__", name), ("pod", &pod), ("id", &id)]);
            for j in 0..30_i64 {
                // Resets now and then; some series start late.
                if (i as i64 + j) % 11 == 0 || j < (i as i64 % 5) {
                    continue;
                }
                st.append(&labels, j * 10_000, ((i as i64 * 7 + j * 3) % 23) as f64);
            }
        }
        let t = 290_000;
        for q in [
            "rate(c_total[1m])",
            "rate({__name__=~\"c_total|g\"}[1m])",
            "sum by (pod) (rate(c_total[1m]))",
            "count_over_time(c_total[2m])",
            "last_over_time({__name__=~\"c_total|g\"}[1m])",
            // The note for a named selector, from windows computed on several threads.
            "rate(g[1m])",
            // Windows side by side on one thread, one by one on several.
            "sum_over_time(c_total[2m])",
            "avg_over_time({__name__=~\"c_total|g\"}[1m])",
            "stddev_over_time(g[2m])",
            "deriv(c_total[1m])",
        ] {
            let expr = crate::parse(q).unwrap();
            let engine = Engine::default();
            let run = |parallel: bool| {
                let mut ev = engine.evaluator(t, t, 0);
                ev.parallel = parallel;
                let mut planned = Vec::new();
                ev.plan(&expr, t, t, &mut planned).unwrap();
                ev.select_all(&st, planned).unwrap();
                let out: Vec<(String, u64, bool)> = match ev.eval(&expr, t).unwrap() {
                    V::Vector(v) => {
                        v.into_iter().map(|s| (s.labels.to_string(), s.v.to_bits(), s.drop_name)).collect()
                    }
                    _ => panic!("{q}: not a vector"),
                };
                (out, ev.annotations)
            };
            let (one, several) = (run(false), run(true));
            if q.starts_with("rate({") || q.starts_with("rate(g") {
                assert_eq!(one.1.len(), 1, "{q}: the info note on `g`");
            }
            assert!(one.0.len() >= 50, "{q}: {} samples", one.0.len());
            assert_eq!(one, several, "{q}");
        }
    }

    #[test]
    fn limits_are_errors() {
        let engine = Engine::new(EngineOptions { max_samples: 10, ..EngineOptions::default() });
        let err = engine.instant_query(&store(), "sum_over_time(a_total[5m])", 300_000).unwrap_err();
        assert_eq!(err, EvalError::TooManySamples);
        // A subquery's steps are counted before they are made, however far `@` goes.
        let engine = Engine::default();
        for q in ["max_over_time(a_total[30d:1ms])", "max_over_time(a_total[30d:1ms] @ 9223372036854775)"] {
            assert_eq!(
                engine.instant_query(&store(), q, 300_000).unwrap_err(),
                EvalError::TooManySamples,
                "{q}"
            );
        }
        let engine = Engine::new(EngineOptions { timeout: Some(Duration::ZERO), ..EngineOptions::default() });
        let err = engine.range_query(&store(), "a_total", 0, 300_000, 15_000).unwrap_err();
        assert_eq!(err, EvalError::Timeout);
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let engine = Engine::new(EngineOptions { cancel: Some(cancel), ..EngineOptions::default() });
        let err = engine.range_query(&store(), "a_total", 0, 300_000, 15_000).unwrap_err();
        assert_eq!(err, EvalError::Cancelled);
    }

    thread_local! {
        /// Whether this thread is running work an offload was given.
        static OFFLOADED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// A store that notes, per selection, whether it was made in offloaded work.
    struct Watched {
        store: MemoryStore,
        bounded: bool,
        selections: std::sync::Mutex<Vec<bool>>,
    }

    impl SampleSource for Watched {
        fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError> {
            self.selections.lock().unwrap().push(OFFLOADED.get());
            self.store.select(sel)
        }

        fn series_bound(&self, matchers: &[LabelMatcher]) -> Option<usize> {
            self.bounded.then(|| self.store.series_bound(matchers)).flatten()
        }
    }

    /// Steps near the end of time stop there instead of wrapping round, and times at
    /// both ends of the range the API takes are evaluated without overflow.
    #[test]
    fn range_queries_at_the_ends_of_time() {
        let mut store = MemoryStore::new();
        for t in 0..40 {
            store.append(&Labels::from_pairs([("__name__", "m"), ("x", "1")]), t * 15_000, t as f64);
        }
        let engine =
            Engine::new(EngineOptions { features: crate::Features::all(), ..EngineOptions::default() });
        let (min, max) = (-9_223_309_901_257_974_000, 9_223_309_901_257_974_999);
        for q in [
            "1",
            "time()",
            "m",
            "rate(m[1m])",
            "sum(m)",
            "max_over_time(m[1m:15s])",
            "m offset 1m",
            "range()",
        ] {
            let r = engine.range_query(&store, q, 0, max, 5_000_000_000_000_000_000).unwrap();
            let Value::Matrix(series) = r.value else { panic!("{q}: not a matrix") };
            assert!(
                series.iter().all(|s| s.points.len() <= 2 && s.points.is_sorted_by_key(|p| p.t)),
                "{q}: {series:?}"
            );
            engine.range_query(&store, q, min, max, 4_000_000_000_000_000_000).unwrap();
            engine.instant_query(&store, q, max).unwrap();
            engine.instant_query(&store, q, min).unwrap();
        }
    }

    /// A source that gives every series twice, as a broken one might.
    struct Doubled(MemoryStore);

    impl SampleSource for Doubled {
        fn select(&self, sel: &Selection<'_>) -> Result<Vec<Series>, SourceError> {
            let once = self.0.select(sel)?;
            Ok(once.iter().chain(&once).cloned().collect())
        }
    }

    /// The whole-query paths of range queries leave a series given twice to the step
    /// path, which reports it.
    #[test]
    fn a_series_given_twice_is_an_error_in_range_queries_too() {
        let mut store = MemoryStore::new();
        for t in 0..40 {
            store.append(&Labels::from_pairs([("__name__", "m"), ("x", "1")]), t * 15_000, 1.0);
        }
        let engine = Engine::default();
        // Subqueries too, over the inner steps they share or one window at a time.
        for q in
            ["m", "last_over_time(m[1m])", "last_over_time(m[1m:15s])", "max_over_time(rate(m[1m])[1m:15s])"]
        {
            let err = engine.range_query(&Doubled(store.clone()), q, 60_000, 300_000, 15_000).unwrap_err();
            assert!(err.to_string().contains("same labelset"), "{q}: {err}");
            let err = engine.instant_query(&Doubled(store.clone()), q, 300_000).unwrap_err();
            assert!(err.to_string().contains("same labelset"), "{q} (instant): {err}");
        }
    }

    #[test]
    fn only_light_queries_run_in_place_with_an_offload() {
        let mut store = MemoryStore::new();
        for i in 0..3 {
            let labels = Labels::from_pairs([("__name__", "few_total"), ("i", &i.to_string())]);
            for t in 0..=40 {
                store.append(&labels, t * 15_000, (t * i) as f64);
            }
        }
        for i in 0..=LIGHT_SERIES {
            store.append(&Labels::from_pairs([("__name__", "many"), ("i", &i.to_string())]), 600_000, 1.0);
        }
        for t in 0..=LIGHT_LOOKS as i64 {
            store.append(&Labels::from_pairs([("__name__", "dense")]), t, 1.0);
        }
        let offloads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = offloads.clone();
        let offload = Offload::new(move |work| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            OFFLOADED.set(true);
            work();
            OFFLOADED.set(false);
        });
        // Every feature, for `smoothed`.
        let options = EngineOptions { features: Features::all(), ..EngineOptions::default() };
        let plain = Engine::new(options.clone());
        let engine = Engine::new(EngineOptions { offload: Some(offload), ..options });
        // Query, range step (0: instant), whether the source bounds its selections, and
        // where the selection and the evaluation ran: `None` all in place, `Some(true)`
        // all offloaded, `Some(false)` selected in place and evaluated offloaded.
        let many_nodes = format!("few_total{}", " + 1".repeat(110));
        let cases: [(&str, i64, bool, Option<bool>); 19] = [
            ("sum(rate(few_total[1m]))", 0, true, None),
            ("few_total / on(i) few_total", 0, true, None),
            // 3 series, 41 samples each, 11 steps: 2 windows a sample.
            ("sum(rate(few_total[1m]))", 60_000, true, None),
            ("few_total / on(i) few_total", 15_000, true, None),
            ("sum(rate(few_total[1m]))", 60_000, false, Some(true)),
            // 601 windows a sample: 73,923 looks at samples.
            ("sum(rate(few_total[10m]))", 1_000, true, Some(false)),
            // 601 steps of 3 series and 221 nodes: 134,747 looks, 1,926 without the
            // nodes.
            (&many_nodes, 1_000, true, Some(false)),
            // Smoothed windows reach a lookback delta both ways: 661 windows a sample
            // (81,303 looks at samples), 361 without the reach forward (44,403).
            ("sum(rate(few_total[1m] smoothed))", 1_000, true, Some(false)),
            ("sum(rate(few_total[1m] smoothed))", 15_000, true, None),
            // 4,001 steps: 12,003 looks at series, and at 15 samples in every step's
            // window (60,015); the window alone would hold each in 401 steps' (6,015).
            ("sum(rate(few_total[1m] @ 600))", 150, true, Some(false)),
            ("sum(rate(few_total[1m] @ 600))", 1_000, true, None),
            // Subqueries: 6 inner steps of 3 series, each of 123 samples once; 600,001
            // inner steps; 601 × 601 nested; 11 steps of 21 inner steps, each sample in
            // 5 inner windows of each of 6 outer ones (a few thousand looks).
            ("max_over_time(few_total[5m:1m])", 0, true, None),
            ("count_over_time(few_total[10m:1ms])", 0, true, Some(false)),
            ("max_over_time(max_over_time(few_total[1m:100ms])[10m:1s])", 0, true, Some(false)),
            ("max_over_time(rate(few_total[1m])[5m:15s])", 60_000, true, None),
            // A selector pinned by `@` inside a subquery: its whole window (123 samples)
            // at each of 61 inner steps of each of 11 steps.
            (
                "last_over_time(quantile_over_time(0.5, few_total[10m] @ 600)[1m:1s])",
                60_000,
                true,
                Some(false),
            ),
            ("count(many)", 0, true, Some(true)),
            ("count_over_time(dense[1h])", 0, true, Some(false)),
            ("sum(rate(few_total[1m]))", 0, false, Some(true)),
        ];
        for (q, step, bounded, expected) in cases {
            let source = Watched { store: store.clone(), bounded, selections: Default::default() };
            let before = offloads.load(std::sync::atomic::Ordering::Relaxed);
            let (got, want) = if step == 0 {
                (engine.instant_query(&source, q, 600_000), plain.instant_query(&store, q, 600_000))
            } else {
                (
                    engine.range_query(&source, q, 0, 600_000, step),
                    plain.range_query(&store, q, 0, 600_000, step),
                )
            };
            assert_eq!(format!("{:?}", got.unwrap().value), format!("{:?}", want.unwrap().value), "{q}");
            let offloaded = offloads.load(std::sync::atomic::Ordering::Relaxed) - before;
            assert_eq!(offloaded, usize::from(expected.is_some()), "{q}: offloads");
            let selections = source.selections.into_inner().unwrap();
            assert!(!selections.is_empty(), "{q}");
            assert!(selections.iter().all(|&s| s == (expected == Some(true))), "{q}: {selections:?}");
        }
        // An offload that drops the work is an error, not an empty answer.
        let dropping =
            Engine::new(EngineOptions { offload: Some(Offload::new(|_| {})), ..EngineOptions::default() });
        let err = dropping.instant_query(&store, "count_over_time(few_total[10m:1ms])", 600_000).unwrap_err();
        assert!(matches!(err, EvalError::Execution(ref m) if m.contains("offload")), "{err}");
    }

    /// Label sets found distinct at one step are not looked at again while a node's
    /// output keeps them, but a collision that appears at a later step (a series that
    /// differs only by name starts there) is still an error, at every node that
    /// checks, with names dropped at once or at the end.
    #[test]
    fn collisions_that_appear_later_in_a_range_are_errors() {
        let mut store = MemoryStore::new();
        for t in 0..40 {
            store.append(&Labels::from_pairs([("__name__", "a"), ("x", "1")]), t * 15_000, 1.0);
            store.append(&Labels::from_pairs([("__name__", "a"), ("x", "2")]), t * 15_000, 1.0);
            if t >= 20 {
                store.append(&Labels::from_pairs([("__name__", "b"), ("x", "1")]), t * 15_000, 2.0);
            }
        }
        let delayed = Features::none().with(crate::features::Feature::DelayedNameRemoval);
        for features in [Features::none(), delayed] {
            let engine = Engine::new(EngineOptions { features, ..EngineOptions::default() });
            for q in ["{x=~\"1|2\"} * 2", "abs({x=~\"1|2\"})", "rate({x=~\"1|2\"}[1m])", "-{x=~\"1|2\"}"] {
                // Distinct up to 285 s, a collision from 300 s on.
                let fine = engine.range_query(&store, q, 60_000, 285_000, 15_000);
                assert!(fine.is_ok(), "{q}: {fine:?}");
                let err = engine.range_query(&store, q, 60_000, 400_000, 15_000).unwrap_err();
                assert!(err.to_string().contains("same labelset"), "{q}: {err}");
            }
        }
    }

    #[test]
    fn unsupported_features_say_so() {
        let engine = Engine::new(EngineOptions { features: Features::all(), ..EngineOptions::default() });
        let err = engine.instant_query(&store(), "a_total anchored", 300_000).unwrap_err();
        assert!(matches!(err, EvalError::Unsupported(_)), "{err}");
        let err = engine.instant_query(&store(), "a_total </ 2", 300_000).unwrap_err();
        assert!(matches!(err, EvalError::Unsupported(_)), "{err}");
        let err = engine.instant_query(&store(), "start_timestamp(a_total)", 300_000).unwrap_err();
        assert!(matches!(err, EvalError::Unsupported(_)), "{err}");
    }

    #[test]
    fn compat_2_extrapolates_rate_like_2_42_after_a_restart_gap() {
        // A pod restart: the counter starts again after a gap, two samples in the window.
        let mut store = MemoryStore::new();
        let labels = Labels::from_pairs([("__name__", "x_total")]);
        for (t, v) in [
            (105_702, 1_816_568.0),
            (120_759, 1_817_371.0),
            (135_755, 1_818_201.0),
            (195_783, 917.0),
            (210_698, 1814.0),
        ] {
            store.append(&labels, t, v);
        }
        let rate = |compat| {
            let engine = Engine::new(EngineOptions { compat, ..EngineOptions::default() });
            match engine.instant_query(&store, "rate(x_total[1m])", 220_000).unwrap().value {
                Value::Vector(v) => v[0].v,
                other => panic!("{other:?}"),
            }
        };
        // Values Prometheus 3.x and 2.42 return for the same samples.
        assert!((rate(Compat::Prometheus3) - 31.748828360710693).abs() < 1e-9);
        assert!((rate(Compat::Prometheus2) - 39.55716169404403).abs() < 1e-9);
    }

    #[test]
    fn compat_2_closes_windows_on_the_left() {
        let mut store = MemoryStore::new();
        let labels = Labels::from_pairs([("__name__", "g")]);
        store.append(&labels, 0, 1.0);
        store.append(&labels, 60_000, 2.0);
        let count = |compat, q: &str, t| {
            let engine = Engine::new(EngineOptions { compat, ..EngineOptions::default() });
            match engine.instant_query(&store, q, t).unwrap().value {
                Value::Vector(v) => v.first().map(|s| s.v),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(count(Compat::Prometheus3, "count_over_time(g[1m])", 60_000), Some(1.0));
        assert_eq!(count(Compat::Prometheus2, "count_over_time(g[1m])", 60_000), Some(2.0));
        assert_eq!(count(Compat::Prometheus3, "g", 300_000), Some(2.0));
        assert_eq!(count(Compat::Prometheus3, "g", 360_000), None);
        assert_eq!(count(Compat::Prometheus2, "g", 360_000), Some(2.0));
        assert_eq!(count(Compat::Prometheus3, "count_over_time(g[2m:1m])", 120_000), Some(2.0));
        assert_eq!(count(Compat::Prometheus2, "count_over_time(g[2m:1m])", 120_000), Some(3.0));
    }

    #[test]
    fn range_query_rejects_range_vectors() {
        let err = Engine::default().range_query(&store(), "a_total[1m]", 0, 60_000, 15_000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
        );
    }
}
