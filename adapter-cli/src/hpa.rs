//! `promql-cli hpa simulate`: replays an `autoscaling/v2` HorizontalPodAutoscaler over
//! recorded data with the Kubernetes HPA controller's algorithm.
//!
//! The parts, each usable on its own:
//!
//! - [`Quantity`]: Kubernetes resource quantities (`10`, `500m`, `1k`, `2Ki`, `1e3`).
//! - [`HpaSpec::parse`]: the manifest, with the PromQL of each External metric taken
//!   from kube-metrics-adapter annotations the way kube-metrics-adapter finds it.
//! - [`Controller`]: the controller's decision for one sync (replica calculation,
//!   tolerance, stabilization windows, scaling policies, min/max), with no I/O.
//! - [`run_simulation`]: the controller driven by PromQL over a sample source.
//!
//! What follows kube-controller-manager (pkg/controller/podautoscaler):
//!
//! - External `AverageValue`: `ceil(total / target)`; `Value`: `ceil(replicas × total /
//!   target)`; no change while the usage ratio is within the tolerance (0.1).
//! - Metric values are milli-units, truncated as kube-metrics-adapter does.
//! - With several metrics the largest proposal wins; when some metrics have no data
//!   the HPA only scales up, and with no data at all it keeps the current replicas.
//! - With `spec.behavior`: stabilization windows over past recommendations (scale up
//!   takes the lowest in its window, scale down the highest), then the scaling
//!   policies over the scale events of their periods, `selectPolicy`, min/max.
//!   Unset fields get the API server's defaults; an unset scale-down stabilization
//!   window is the controller's `--horizontal-pod-autoscaler-downscale-stabilization`.
//! - Without `spec.behavior` the controller takes its older path, as it does in a
//!   cluster: the highest recommendation of the downscale stabilization window, and
//!   at most `max(2 × current, 4)` replicas per sync.
//!
//! Pods are taken to be ready as soon as they are requested.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use promql::eval::Engine;
use promql::storage::SampleSource;
use promql::value::Value;
use serde::Deserialize;

use crate::timeflags;

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// Output formats of `hpa simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimulateFormat {
    /// An aligned table.
    Table,
    /// One JSON object per sync, one per line.
    Json,
}

/// Flags of `hpa simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The HorizontalPodAutoscaler manifest (YAML). In a multi-document file, the first
    /// document of kind HorizontalPodAutoscaler.
    #[arg(long, value_name = "FILE")]
    pub hpa: PathBuf,
    /// Fixture files with the recorded metrics (any format `query --data` reads). Repeatable.
    #[arg(long = "data", value_name = "FILE", required = true)]
    pub data: Vec<PathBuf>,
    /// PromQL for the HPA's first External metric, instead of the query in its
    /// kube-metrics-adapter annotations.
    #[arg(long, value_name = "QUERY")]
    pub query: Option<String>,
    /// First sync: RFC 3339, Unix seconds, `now-1h` (default: the data's first sample).
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// Last sync at or before this time (default: the data's last sample).
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// Replicas before the first sync (default: spec.minReplicas, or 1).
    #[arg(long, value_name = "N")]
    pub initial_replicas: Option<u32>,
    /// Time between syncs: the controller's `--horizontal-pod-autoscaler-sync-period`.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub sync_period: String,
    /// The controller's `--horizontal-pod-autoscaler-downscale-stabilization`: the scale-down
    /// stabilization window of HPAs that do not set one.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub downscale_stabilization: String,
    /// The controller's `--horizontal-pod-autoscaler-tolerance`: usage ratios this close
    /// to 1 cause no scaling.
    #[arg(long, value_name = "RATIO", default_value_t = DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SimulateFormat::Table)]
    pub format: SimulateFormat,
    /// Also write the timeline to this file: a CSV table (`.csv`) or a chart (`.svg`, `.png`).
    #[arg(long, value_name = "FILE")]
    pub plot_out: Option<PathBuf>,
    /// Draw the timeline as a chart in the terminal after the table.
    #[arg(long)]
    pub plot: bool,
}

/// The controller's default tolerance.
const DEFAULT_TOLERANCE: f64 = 0.1;
/// The most syncs one simulation runs.
const MAX_SYNCS: i64 = 2_000_000;

/// Runs `hpa simulate`: exit code 0 after printing the timeline, 1 for a query that does
/// not parse; errors for unreadable or unusable input.
pub fn simulate(args: SimulateArgs, features: promql::Features) -> anyhow::Result<ExitCode> {
    simulate_to(args, features, &mut std::io::stdout().lock())
}

/// [`simulate`], printing the timeline to `out`.
fn simulate_to(
    args: SimulateArgs,
    features: promql::Features,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.plot_out {
        check_plot_out(path)?;
    }
    let sync_ms = timeflags::parse_duration(&args.sync_period).context("--sync-period")?;
    if sync_ms <= 0 {
        bail!("--sync-period must be positive");
    }
    let downscale_ms =
        timeflags::parse_duration(&args.downscale_stabilization).context("--downscale-stabilization")?;
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        bail!("--tolerance must be a non-negative number, got {}", args.tolerance);
    }

    let text =
        std::fs::read_to_string(&args.hpa).with_context(|| format!("reading {}", args.hpa.display()))?;
    let spec = HpaSpec::parse(&text, args.query.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.hpa.display()))?;

    let mut exprs = Vec::with_capacity(spec.metrics.len());
    for m in &spec.metrics {
        match promql::parse_with(&m.query, features) {
            Ok(expr) => {
                check_query_type(&expr).map_err(|e| anyhow::anyhow!("{}: {e}", m.query_source))?;
                exprs.push(expr);
            }
            Err(e) => {
                eprintln!("error: the query of {} ({}) does not parse:\n{e:#}", m.path, m.query_source);
                return Ok(ExitCode::from(1));
            }
        }
    }

    let engine = Engine::new(promql::eval::EngineOptions { features, ..Default::default() });
    let mut store = promql::storage::MemoryStore::new();
    let (mut min_t, mut max_t) = (None::<i64>, None::<i64>);
    for path in &args.data {
        let stats = promql::storage::load_fixture(path, None, &mut store, engine.options().max_samples)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        min_t = [min_t, stats.min_time].into_iter().flatten().min();
        max_t = [max_t, stats.max_time].into_iter().flatten().max();
    }
    let now = timeflags::now_ms();
    let start = match &args.start {
        Some(s) => timeflags::parse_time(s, now).context("--start")?,
        None => min_t.context("the data has no samples: give --start and --end")?,
    };
    let end = match &args.end {
        Some(s) => timeflags::parse_time(s, now).context("--end")?,
        None => max_t.context("the data has no samples: give --start and --end")?,
    };
    if end < start {
        bail!("--end ({}) is before --start ({})", format_time(end), format_time(start));
    }
    if (end - start) / sync_ms >= MAX_SYNCS {
        bail!(
            "{} to {} is more than {MAX_SYNCS} syncs: give a longer --sync-period",
            format_time(start),
            format_time(end)
        );
    }
    let initial = match args.initial_replicas {
        Some(n) => i32::try_from(n).context("--initial-replicas is too large")?,
        None => spec.min_replicas,
    };

    eprintln!("{}", spec.describe());
    for w in &spec.warnings {
        eprintln!("warning: {w}");
    }
    let opts = ControllerOptions { tolerance: args.tolerance, downscale_stabilization_ms: downscale_ms };
    let sim = Simulation { spec: &spec, exprs: &exprs, engine: &engine, opts, initial_replicas: initial };
    let timeline = run_simulation(&sim, &store, start, end, sync_ms);
    for w in &timeline.warnings {
        eprintln!("warning: {w}");
    }

    let written = match args.format {
        SimulateFormat::Table => write_table(out, &timeline).and_then(|()| {
            if args.plot {
                write!(out, "\n{}", crate::plot::terminal_plot(&timeline_matrix(&timeline), 100, 24))
            } else {
                Ok(())
            }
        }),
        SimulateFormat::Json => write_json_lines(out, &timeline),
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing the timeline")?,
    }
    if let Some(path) = &args.plot_out {
        write_plot_out(&timeline, path)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that `--plot-out` names a file type it can write: `.csv`, `.svg` or `.png`.
pub fn check_plot_out(path: &Path) -> anyhow::Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("csv" | "svg" | "png")) {
        bail!("--plot-out {}: name a .csv, .svg or .png file", path.display());
    }
    Ok(())
}

/// Writes the timeline to `path`: a CSV table, or a chart of replicas, desired replicas
/// and each metric's value.
pub fn write_plot_out(timeline: &Timeline, path: &Path) -> anyhow::Result<()> {
    check_plot_out(path)?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        return write_csv(&mut w, timeline)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", path.display()));
    }
    crate::plot::write_plot(&timeline_matrix(timeline), path, "HPA replay")
}

/// The timeline as series, for plotting.
fn timeline_matrix(timeline: &Timeline) -> promql::value::Value {
    use promql::value::{Point, Series, Value};
    let points = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<Point> {
        timeline.rows.iter().filter_map(|r| f(r).map(|v| Point { t: r.t, v })).collect()
    };
    let mut series = vec![
        Series {
            labels: promql::Labels::from_pairs([("__name__", "replicas")]),
            points: points(&|r| Some(f64::from(r.replicas))),
        },
        Series {
            labels: promql::Labels::from_pairs([("__name__", "desired_replicas")]),
            points: points(&|r| r.desired.map(f64::from)),
        },
    ];
    for (i, name) in timeline.metric_names.iter().enumerate() {
        series.push(Series {
            labels: promql::Labels::from_pairs([("__name__", "metric"), ("name", name.as_str())]),
            points: points(&|r| r.values.get(i).copied().flatten()),
        });
    }
    Value::Matrix(series)
}

/// kube-metrics-adapter reads a vector or a scalar from Prometheus.
fn check_query_type(expr: &promql::Expr) -> Result<(), String> {
    match promql::check::check(expr).map_err(|e| e.to_string())? {
        promql::ValueType::Scalar | promql::ValueType::Vector => Ok(()),
        t => Err(format!("the query returns a {t}; an External metric needs an instant vector or a scalar")),
    }
}

// ---------------------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------------------

/// A Kubernetes resource quantity: `10`, `0.5`, `500m`, `1k`, `2Ki`, `1e3`, `1.5E-2`.
///
/// Suffixes: `n u m "" k M G T P E` (powers of 1000), `Ki Mi Gi Ti Pi Ei` (powers of
/// 1024), or a decimal exponent `e<N>`/`E<N>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    milli: i64,
    approx: f64,
}

impl Quantity {
    /// Parses a quantity as the Kubernetes API does.
    pub fn parse(s: &str) -> Result<Quantity, String> {
        let bad = |why: &str| format!("bad quantity {s:?}: {why}");
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("expected a number such as 10, 0.5, 500m or 2Ki"));
        }
        if frac_part.contains('.') {
            return Err(bad("more than one decimal point"));
        }
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => match suffix.strip_prefix(['e', 'E']) {
                Some(exp) if !exp.is_empty() => {
                    let e: i32 = exp.parse().map_err(|_| bad("bad exponent"))?;
                    if e.abs() > 1000 {
                        return Err(bad("exponent out of range"));
                    }
                    (e, 0)
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown suffix {suffix:?} (expected n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, \
                         Pi, Ei or e<exponent>)"
                    )))
                }
            },
        };
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(bad("too many significant digits"));
        }
        let mantissa: i128 =
            if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad("bad number"))? };
        let exp10 = exp10 - frac_part.len() as i32;
        let out_of_range = || bad("out of range");
        // The value in milli-units, rounded up as Quantity.MilliValue() does.
        let scaled = mantissa.checked_mul(1i128 << exp2).ok_or_else(out_of_range)?;
        let e = exp10 + 3;
        let milli_abs = if e >= 0 {
            let factor = 10i128.checked_pow(e as u32).ok_or_else(out_of_range)?;
            if scaled == 0 {
                0
            } else {
                scaled.checked_mul(factor).ok_or_else(out_of_range)?
            }
        } else {
            match 10i128.checked_pow((-e) as u32) {
                Some(d) if negative => scaled / d,
                Some(d) => (scaled + d - 1) / d,
                None if negative || scaled == 0 => 0,
                None => 1,
            }
        };
        let milli_abs = i64::try_from(milli_abs).map_err(|_| out_of_range())?;
        let approx = mantissa as f64 * 2f64.powi(exp2) * 10f64.powi(exp10);
        Ok(if negative {
            Quantity { milli: -milli_abs, approx: -approx }
        } else {
            Quantity { milli: milli_abs, approx }
        })
    }

    /// The value in thousandths, rounded up (`Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i64 {
        self.milli
    }

    /// The value as a float.
    pub fn as_f64(&self) -> f64 {
        self.approx
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.approx)
    }
}

// ---------------------------------------------------------------------------------------
// The HPA
// ---------------------------------------------------------------------------------------

/// The parts of an HPA the simulation uses, validated and with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// `metadata.namespace/metadata.name`, or what of it is set.
    pub name: String,
    /// `Kind/name` of `spec.scaleTargetRef`.
    pub target: String,
    /// `spec.minReplicas` (default 1).
    pub min_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: i32,
    /// The External metrics served by kube-metrics-adapter's Prometheus collector.
    pub metrics: Vec<ExternalMetric>,
    /// `spec.behavior`, with the API server's defaults for unset fields; `None` when the
    /// HPA has none.
    pub behavior: Option<Behavior>,
    /// Metrics left out of the simulation, and why.
    pub warnings: Vec<String>,
}

/// An External metric and the PromQL behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalMetric {
    /// Where it is in the manifest, e.g. `spec.metrics[0]`.
    pub path: String,
    /// `external.metric.name`.
    pub name: String,
    /// `external.metric.selector.matchLabels`.
    pub selector: BTreeMap<String, String>,
    /// `external.target`.
    pub target: MetricTarget,
    /// The PromQL kube-metrics-adapter runs for it.
    pub query: String,
    /// Where the query came from: the annotation's key, or `--query`.
    pub query_source: String,
}

/// The target of an External metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricTarget {
    /// `type: Value`: the metric's total, against the target.
    Value(Quantity),
    /// `type: AverageValue`: the metric's total divided by the replicas, against the target.
    AverageValue(Quantity),
}

/// `spec.behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// `scaleUp`.
    pub scale_up: ScalingRules,
    /// `scaleDown`.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// What the API server fills in for a `behavior: {}`.
    fn default() -> Self {
        Behavior {
            scale_up: ScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: SelectPolicy::Max,
                policies: vec![
                    ScalingPolicy { kind: PolicyType::Pods, value: 4, period_seconds: 15 },
                    ScalingPolicy { kind: PolicyType::Percent, value: 100, period_seconds: 15 },
                ],
                tolerance: None,
            },
            scale_down: ScalingRules {
                stabilization_window_seconds: None,
                select_policy: SelectPolicy::Max,
                policies: vec![ScalingPolicy { kind: PolicyType::Percent, value: 100, period_seconds: 15 }],
                tolerance: None,
            },
        }
    }
}

/// `scaleUp` or `scaleDown` of `spec.behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    /// `stabilizationWindowSeconds`; `None` (scale down only) means the controller's
    /// downscale stabilization window.
    pub stabilization_window_seconds: Option<i32>,
    /// `selectPolicy`.
    pub select_policy: SelectPolicy,
    /// `policies`.
    pub policies: Vec<ScalingPolicy>,
    /// `tolerance` (Kubernetes 1.33+); `None` means the controller's.
    pub tolerance: Option<f64>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One of `policies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// `type`.
    pub kind: PolicyType,
    /// `value`: pods, or percent of the replicas at the start of the period.
    pub value: i32,
    /// `periodSeconds`.
    pub period_seconds: i32,
}

/// `type` of a scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    /// A number of pods.
    Pods,
    /// A percentage of the replicas.
    Percent,
}

// The manifest as written: everything optional, checked with field paths afterwards.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HpaDoc {
    api_version: Option<String>,
    metadata: Option<MetadataDoc>,
    spec: Option<SpecDoc>,
}

#[derive(Deserialize)]
struct MetadataDoc {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDoc {
    scale_target_ref: Option<TargetRefDoc>,
    min_replicas: Option<i32>,
    max_replicas: Option<i32>,
    #[serde(default)]
    metrics: Vec<MetricDoc>,
    behavior: Option<BehaviorDoc>,
}

#[derive(Deserialize)]
struct TargetRefDoc {
    kind: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct MetricDoc {
    #[serde(rename = "type")]
    kind: Option<String>,
    external: Option<ExternalDoc>,
}

#[derive(Deserialize)]
struct ExternalDoc {
    metric: Option<MetricIdDoc>,
    target: Option<TargetDoc>,
}

#[derive(Deserialize)]
struct MetricIdDoc {
    name: Option<String>,
    selector: Option<SelectorDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectorDoc {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetDoc {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<serde_norway::Value>,
    average_value: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BehaviorDoc {
    scale_up: Option<RulesDoc>,
    scale_down: Option<RulesDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RulesDoc {
    stabilization_window_seconds: Option<i32>,
    select_policy: Option<String>,
    policies: Option<Vec<PolicyDoc>>,
    tolerance: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyDoc {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<i32>,
    period_seconds: Option<i32>,
}

const HPA_KIND: &str = "HorizontalPodAutoscaler";

impl HpaSpec {
    /// Parses a manifest: the first HorizontalPodAutoscaler of a (multi-document) YAML
    /// text. `query_override` replaces the query of the first External metric.
    /// Errors name the field, e.g. `spec.metrics[0].external.target.averageValue`.
    pub fn parse(yaml: &str, query_override: Option<&str>) -> Result<HpaSpec, String> {
        // Find the document, then deserialize it again so that errors carry its paths.
        let mut kinds = Vec::new();
        let mut found = None;
        for (i, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
            let value = serde_norway::Value::deserialize(doc)
                .map_err(|e| format!("document {}: bad YAML: {e}", i + 1))?;
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind == HPA_KIND {
                found = Some(i);
                break;
            }
            if !value.is_null() {
                kinds.push(if kind.is_empty() { "(no kind)".to_owned() } else { kind.to_owned() });
            }
        }
        let Some(index) = found else {
            return Err(if kinds.is_empty() {
                format!("no {HPA_KIND} document (the file is empty)")
            } else {
                format!("no {HPA_KIND} document (found {})", kinds.join(", "))
            });
        };
        let doc = serde_norway::Deserializer::from_str(yaml)
            .nth(index)
            .ok_or_else(|| format!("document {} disappeared", index + 1))?;
        let doc = HpaDoc::deserialize(doc).map_err(|e| {
            if index == 0 {
                e.to_string()
            } else {
                format!("document {}: {e}", index + 1)
            }
        })?;
        Self::from_doc(doc, query_override)
    }

    fn from_doc(doc: HpaDoc, query_override: Option<&str>) -> Result<HpaSpec, String> {
        match doc.api_version.as_deref() {
            Some("autoscaling/v2" | "autoscaling/v2beta2") => {}
            Some(v @ ("autoscaling/v1" | "autoscaling/v2beta1")) => {
                return Err(format!("apiVersion: {v} is not supported: write the HPA as autoscaling/v2"))
            }
            Some(v) => return Err(format!("apiVersion: expected autoscaling/v2, got {v}")),
            None => return Err("apiVersion: required (autoscaling/v2)".into()),
        }
        let (name, annotations) = match doc.metadata {
            Some(m) => {
                let name = match (m.namespace, m.name) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    (None, Some(n)) => n,
                    (_, None) => "(unnamed)".into(),
                };
                (name, m.annotations)
            }
            None => ("(unnamed)".into(), BTreeMap::new()),
        };
        let spec = doc.spec.ok_or("spec: required")?;
        let target = match spec.scale_target_ref {
            Some(r) => format!("{}/{}", r.kind.as_deref().unwrap_or("?"), r.name.as_deref().unwrap_or("?")),
            None => "?".into(),
        };
        let min_replicas = spec.min_replicas.unwrap_or(1);
        if min_replicas < 0 {
            return Err(format!("spec.minReplicas: must not be negative, got {min_replicas}"));
        }
        let max_replicas = spec.max_replicas.ok_or("spec.maxReplicas: required")?;
        if max_replicas < 1 {
            return Err(format!("spec.maxReplicas: must be at least 1, got {max_replicas}"));
        }
        if max_replicas < min_replicas {
            return Err(format!(
                "spec.maxReplicas: {max_replicas} is less than spec.minReplicas ({min_replicas})"
            ));
        }
        let behavior = spec.behavior.map(parse_behavior).transpose()?;

        let configs = AdapterConfigs::parse(&annotations);
        let mut metrics = Vec::new();
        let mut warnings = Vec::new();
        let mut problems = Vec::new();
        let mut override_left = query_override;
        for (i, m) in spec.metrics.into_iter().enumerate() {
            let path = format!("spec.metrics[{i}]");
            let kind = m.kind.as_deref().ok_or_else(|| format!("{path}.type: required"))?;
            if kind != "External" {
                warnings.push(format!(
                    "{path}: a {kind} metric cannot be replayed from recorded data; left out of the \
                     simulation"
                ));
                continue;
            }
            let ext = m.external.ok_or_else(|| format!("{path}.external: required for type External"))?;
            let metric = parse_external(&path, ext, &configs, override_left.take())?;
            match metric {
                Ok(metric) => metrics.push(metric),
                Err(Unusable::OtherCollector(msg)) => warnings.push(msg),
                Err(Unusable::NoQuery(msg)) => problems.push(msg),
            }
        }
        if let Some(first) = problems.into_iter().next() {
            return Err(first);
        }
        if metrics.is_empty() {
            let mut msg = "spec.metrics: no External metric with a Prometheus query to replay".to_owned();
            for w in &warnings {
                let _ = write!(msg, "\n  {w}");
            }
            return Err(msg);
        }
        Ok(HpaSpec { name, target, min_replicas, max_replicas, metrics, behavior, warnings })
    }

    /// A few lines on what is simulated.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "HPA {} scaling {} between {} and {} replicas",
            self.name, self.target, self.min_replicas, self.max_replicas
        );
        if self.behavior.is_none() {
            s.push_str(" (no spec.behavior: the controller's default path)");
        }
        for m in &self.metrics {
            let labels: Vec<String> = m.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let target = match m.target {
                MetricTarget::Value(q) => format!("Value {q}"),
                MetricTarget::AverageValue(q) => format!("AverageValue {q}"),
            };
            let _ =
                write!(s, "\n  {} {}{{{}}} {target}: {}", m.path, m.name, labels.join(","), m.query.trim());
        }
        s
    }
}

/// Why an External metric cannot be simulated.
enum Unusable {
    /// kube-metrics-adapter would serve it with a collector other than Prometheus.
    OtherCollector(String),
    /// It is meant for the Prometheus collector, but its query cannot be found.
    NoQuery(String),
}

fn parse_external(
    path: &str,
    ext: ExternalDoc,
    configs: &AdapterConfigs,
    query_override: Option<&str>,
) -> Result<Result<ExternalMetric, Unusable>, String> {
    let id = ext.metric.ok_or_else(|| format!("{path}.external.metric: required"))?;
    let name = id.name.ok_or_else(|| format!("{path}.external.metric.name: required"))?;
    let target_doc = ext.target.ok_or_else(|| format!("{path}.external.target: required"))?;
    let target_path = format!("{path}.external.target");
    let target = match target_doc.kind.as_deref() {
        Some("AverageValue") => MetricTarget::AverageValue(positive_quantity(
            &format!("{target_path}.averageValue"),
            target_doc.average_value.as_ref(),
        )?),
        Some("Value") => MetricTarget::Value(positive_quantity(
            &format!("{target_path}.value"),
            target_doc.value.as_ref(),
        )?),
        Some(other) => {
            return Err(format!(
                "{target_path}.type: expected Value or AverageValue for an External metric, got {other}"
            ))
        }
        None => return Err(format!("{target_path}.type: required (Value or AverageValue)")),
    };
    let has_selector = id.selector.is_some();
    let selector = id.selector.map(|s| s.match_labels).unwrap_or_default();
    let metric = |query: String, query_source: String| ExternalMetric {
        path: path.to_owned(),
        name: name.clone(),
        selector: selector.clone(),
        target,
        query,
        query_source,
    };
    if let Some(q) = query_override {
        return Ok(Ok(metric(q.to_owned(), "--query".into())));
    }
    Ok(match configs.prometheus_query(path, &name, &selector, has_selector) {
        Ok((query, source)) => Ok(metric(query, source)),
        Err(e) => Err(e),
    })
}

fn positive_quantity(path: &str, value: Option<&serde_norway::Value>) -> Result<Quantity, String> {
    let q = quantity_field(path, value)?.ok_or_else(|| format!("{path}: required"))?;
    if q.milli_value() <= 0 {
        return Err(format!("{path}: must be positive, got {q}"));
    }
    Ok(q)
}

fn quantity_field(path: &str, value: Option<&serde_norway::Value>) -> Result<Option<Quantity>, String> {
    let text = match value {
        None | Some(serde_norway::Value::Null) => return Ok(None),
        Some(serde_norway::Value::String(s)) => s.trim().to_owned(),
        Some(serde_norway::Value::Number(n)) => n.to_string(),
        Some(_) => return Err(format!("{path}: expected a quantity such as 10, 500m or 2Ki")),
    };
    Quantity::parse(&text).map(Some).map_err(|e| format!("{path}: {e}"))
}

fn parse_behavior(doc: BehaviorDoc) -> Result<Behavior, String> {
    let defaults = Behavior::default();
    Ok(Behavior {
        scale_up: parse_rules("spec.behavior.scaleUp", doc.scale_up, defaults.scale_up)?,
        scale_down: parse_rules("spec.behavior.scaleDown", doc.scale_down, defaults.scale_down)?,
    })
}

/// The rules as written over the defaults, field by field, as the API server does.
fn parse_rules(path: &str, doc: Option<RulesDoc>, mut rules: ScalingRules) -> Result<ScalingRules, String> {
    let Some(doc) = doc else { return Ok(rules) };
    if let Some(w) = doc.stabilization_window_seconds {
        if !(0..=3600).contains(&w) {
            return Err(format!("{path}.stabilizationWindowSeconds: must be 0 to 3600, got {w}"));
        }
        rules.stabilization_window_seconds = Some(w);
    }
    if let Some(p) = doc.select_policy {
        rules.select_policy = match p.as_str() {
            "Max" => SelectPolicy::Max,
            "Min" => SelectPolicy::Min,
            "Disabled" => SelectPolicy::Disabled,
            other => return Err(format!("{path}.selectPolicy: expected Max, Min or Disabled, got {other}")),
        };
    }
    if let Some(policies) = doc.policies {
        if policies.is_empty() {
            return Err(format!("{path}.policies: must have at least one policy"));
        }
        rules.policies = policies
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("{path}.policies[{i}]");
                let kind = match p.kind.as_deref() {
                    Some("Pods") => PolicyType::Pods,
                    Some("Percent") => PolicyType::Percent,
                    Some(other) => return Err(format!("{at}.type: expected Pods or Percent, got {other}")),
                    None => return Err(format!("{at}.type: required (Pods or Percent)")),
                };
                let value = p.value.ok_or_else(|| format!("{at}.value: required"))?;
                if value <= 0 {
                    return Err(format!("{at}.value: must be positive, got {value}"));
                }
                let period_seconds =
                    p.period_seconds.ok_or_else(|| format!("{at}.periodSeconds: required"))?;
                if !(1..=1800).contains(&period_seconds) {
                    return Err(format!("{at}.periodSeconds: must be 1 to 1800, got {period_seconds}"));
                }
                Ok(ScalingPolicy { kind, value, period_seconds })
            })
            .collect::<Result<_, _>>()?;
    }
    let tolerance_path = format!("{path}.tolerance");
    if let Some(t) = quantity_field(&tolerance_path, doc.tolerance.as_ref())? {
        if t.as_f64() < 0.0 {
            return Err(format!("{tolerance_path}: must not be negative, got {t}"));
        }
        rules.tolerance = Some(t.as_f64());
    }
    Ok(rules)
}

// ---------------------------------------------------------------------------------------
// kube-metrics-adapter's annotations
// ---------------------------------------------------------------------------------------

/// The `metric-config.<type>.<metric>.<collector>/<key>: <value>` annotations, grouped
/// by External metric name as kube-metrics-adapter groups them.
struct AdapterConfigs {
    external: BTreeMap<String, AdapterConfig>,
}

struct AdapterConfig {
    collector: String,
    /// `<key>` → (value, the annotation's key).
    values: BTreeMap<String, (String, String)>,
}

/// Keys kube-metrics-adapter reads itself rather than passing to the collector.
const ADAPTER_KEYS: [&str; 3] = ["per-replica", "interval", "min-pod-ready-age"];
/// External metrics with this selector label name their collector.
const TYPE_LABEL: &str = "type";
/// The collector names kube-metrics-adapter maps to its Prometheus collector.
const PROMETHEUS_COLLECTORS: [&str; 2] = ["prometheus", "prometheus-query"];
/// The selector label of the legacy form, naming the annotation with the query.
const QUERY_NAME_LABEL: &str = "query-name";

impl AdapterConfigs {
    fn parse(annotations: &BTreeMap<String, String>) -> AdapterConfigs {
        let mut external: BTreeMap<String, AdapterConfig> = BTreeMap::new();
        for (key, value) in annotations {
            let Some(_) = key.strip_prefix("metric-config.") else { continue };
            let Some((head, config_key)) = key.split_once('/') else { continue };
            if config_key.contains('/') {
                continue;
            }
            let parts: Vec<&str> = head.split('.').collect();
            let [_, kind, metric, collector] = parts.as_slice() else { continue };
            // kube-metrics-adapter files every type other than pods and object as External.
            if matches!(*kind, "pods" | "object") {
                continue;
            }
            let config = external.entry((*metric).to_owned()).or_insert_with(|| AdapterConfig {
                collector: (*collector).to_owned(),
                values: BTreeMap::new(),
            });
            // Annotations naming another collector for the same metric are ignored there
            // (which one wins depends on Go's map order; here, the first in key order).
            if config.collector != *collector || ADAPTER_KEYS.contains(&config_key) {
                continue;
            }
            config.values.insert(config_key.to_owned(), (value.clone(), key.clone()));
        }
        AdapterConfigs { external }
    }

    /// The query kube-metrics-adapter's Prometheus collector runs for an External
    /// metric, and the annotation it comes from.
    fn prometheus_query(
        &self,
        path: &str,
        name: &str,
        selector: &BTreeMap<String, String>,
        has_selector: bool,
    ) -> Result<(String, String), Unusable> {
        let labels = format!("{path}.external.metric.selector.matchLabels");
        // The collector: the `type` label, else (the legacy way) the metric's name.
        let plugin = selector.get(TYPE_LABEL).filter(|t| !t.is_empty()).map_or(name, String::as_str);
        if !PROMETHEUS_COLLECTORS.contains(&plugin) {
            let how = if selector.contains_key(TYPE_LABEL) {
                format!("{labels}.type is {plugin:?}")
            } else {
                format!("its name {plugin:?} is no collector and it has no `type: prometheus` selector label")
            };
            return Err(Unusable::OtherCollector(format!(
                "{path}: External metric {name:?} is not served by kube-metrics-adapter's Prometheus \
                 collector ({how}); left out of the simulation"
            )));
        }
        if !has_selector {
            return Err(Unusable::NoQuery(format!(
                "{path}.external.metric.selector: required: kube-metrics-adapter needs a selector for a \
                 Prometheus query (matchLabels type: prometheus)"
            )));
        }
        // The collector's configuration: the selector labels, overridden by annotations.
        let annotated = self.external.get(name);
        let lookup = |key: &str| -> Option<(String, String)> {
            annotated
                .and_then(|c| c.values.get(key).cloned())
                .or_else(|| selector.get(key).map(|v| (v.clone(), format!("{labels}.{key}"))))
        };
        let collector = annotated.map_or("prometheus", |c| c.collector.as_str());
        if let Some(found) = lookup("query") {
            return Ok(found);
        }
        let dots = if name.contains('.') {
            " (kube-metrics-adapter reads no annotations for metric names with dots)"
        } else {
            ""
        };
        match lookup(QUERY_NAME_LABEL) {
            Some((query_name, _)) => lookup(&query_name).ok_or_else(|| {
                Unusable::NoQuery(format!(
                    "{labels}.{QUERY_NAME_LABEL} is {query_name:?} but there is no annotation \
                     `metric-config.external.{name}.{collector}/{query_name}` with its query \
                     (or pass --query)"
                ))
            }),
            None => Err(Unusable::NoQuery(format!(
                "{path}: no query for External metric {name:?}: expected an annotation \
                 `metric-config.external.{name}.prometheus/query` (with matchLabels type: prometheus), \
                 or the legacy form: metric name prometheus-query, matchLabels query-name: NAME and \
                 an annotation `metric-config.external.prometheus-query.prometheus/NAME` (or pass \
                 --query){dots}"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// Settings of the controller itself (kube-controller-manager flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerOptions {
    /// `--horizontal-pod-autoscaler-tolerance`.
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`, in milliseconds.
    pub downscale_stabilization_ms: i64,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions { tolerance: DEFAULT_TOLERANCE, downscale_stabilization_ms: 300_000 }
    }
}

/// What a metric reported at one sync.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The total, in thousandths (as the External Metrics API carries it).
    Milli(i64),
    /// No value, and why.
    NoData(String),
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Each metric's replica proposal; `None` without data.
    pub proposals: Vec<Option<i32>>,
    /// The replicas the metrics ask for, before stabilization and limits; `None` when
    /// the metrics were not consulted.
    pub desired: Option<i32>,
    /// The replicas after this sync.
    pub replicas: i32,
    /// A short reason, after the HPA's condition reasons (e.g. `ScaleUpLimit`).
    pub reason: &'static str,
    /// A longer explanation.
    pub message: String,
}

#[derive(Debug, Clone, Copy)]
struct Recommendation {
    replicas: i32,
    t: i64,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    t: i64,
    outdated: bool,
}

/// The HPA controller's state for one HPA, advanced one sync at a time.
#[derive(Debug, Clone)]
pub struct Controller {
    min_replicas: i32,
    max_replicas: i32,
    targets: Vec<(String, MetricTarget)>,
    behavior: Option<Behavior>,
    opts: ControllerOptions,
    replicas: i32,
    synced: bool,
    recommendations: Vec<Recommendation>,
    scale_up_events: Vec<ScaleEvent>,
    scale_down_events: Vec<ScaleEvent>,
}

impl Controller {
    /// A controller for `spec` whose target runs `initial_replicas`.
    pub fn new(spec: &HpaSpec, opts: ControllerOptions, initial_replicas: i32) -> Controller {
        Controller {
            min_replicas: spec.min_replicas,
            max_replicas: spec.max_replicas,
            targets: spec.metrics.iter().map(|m| (m.name.clone(), m.target)).collect(),
            behavior: spec.behavior.clone(),
            opts,
            replicas: initial_replicas,
            synced: false,
            recommendations: Vec::new(),
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
        }
    }

    /// One sync at `now_ms`, given one observation per metric of the spec, in order.
    pub fn sync(&mut self, now_ms: i64, observations: &[Observation]) -> Decision {
        let current = self.replicas;
        if !self.synced {
            // The controller's first recommendation is the replicas it finds.
            self.synced = true;
            self.recommendations.push(Recommendation { replicas: current, t: now_ms });
        }
        let none = vec![None; self.targets.len()];
        if current == 0 && self.min_replicas != 0 {
            let message = "scaling is disabled since the replica count of the target is zero".to_owned();
            return Decision {
                proposals: none,
                desired: None,
                replicas: 0,
                reason: "ScalingDisabled",
                message,
            };
        }
        // Out-of-range replicas are brought into range without consulting the metrics.
        if current > self.max_replicas {
            let message = "current number of replicas above spec.maxReplicas".to_owned();
            return self.rescale(now_ms, current, self.max_replicas, none, None, "AboveMaxReplicas", message);
        }
        if current < self.min_replicas {
            let message = "current number of replicas below spec.minReplicas".to_owned();
            return self.rescale(now_ms, current, self.min_replicas, none, None, "BelowMinReplicas", message);
        }
        let metrics = match self.consult_metrics(current, observations) {
            Ok(m) => m,
            Err(decision) => return decision,
        };
        let prenormalized = metrics.desired.max(0);
        let down_window_ms = self.opts.downscale_stabilization_ms;
        let ((stabilized, stabilized_reason), (desired, limit_reason, limit_message)) = match &self.behavior {
            None => {
                let s = stabilize_legacy(&mut self.recommendations, now_ms, down_window_ms, prenormalized);
                (s, self.limit_legacy(current, s.0))
            }
            Some(b) => {
                let s = stabilize_with_behavior(
                    &mut self.recommendations,
                    now_ms,
                    b,
                    down_window_ms,
                    current,
                    prenormalized,
                );
                (s, self.limit_with_behavior(now_ms, b, current, s.0))
            }
        };
        let (reason, message) = if desired != stabilized {
            (limit_reason, limit_message.to_owned())
        } else if stabilized != prenormalized {
            let message = if stabilized_reason == "ScaleUpStabilized" {
                "recent recommendations were lower: applying the lowest recent recommendation"
            } else {
                "recent recommendations were higher: applying the highest recent recommendation"
            };
            (stabilized_reason, message.to_owned())
        } else if desired > current {
            ("ScaleUp", format!("external metric {} above target", self.targets[metrics.metric].0))
        } else if desired < current {
            ("ScaleDown", "all metrics below target".to_owned())
        } else if metrics.within_tolerance {
            ("WithinTolerance", "the usage ratio is within the tolerance of the target".to_owned())
        } else {
            ("Steady", "the desired count matches the current one".to_owned())
        };
        self.rescale(now_ms, current, desired, metrics.proposals, Some(prenormalized), reason, message)
    }

    /// Applies a decision.
    #[allow(clippy::too_many_arguments)]
    fn rescale(
        &mut self,
        now: i64,
        current: i32,
        desired: i32,
        proposals: Vec<Option<i32>>,
        metric_desired: Option<i32>,
        reason: &'static str,
        message: String,
    ) -> Decision {
        if desired != current {
            self.store_scale_event(now, current, desired);
            self.replicas = desired;
        }
        Decision { proposals, desired: metric_desired, replicas: self.replicas, reason, message }
    }

    /// The metrics' proposals; the decision to keep the replicas when metrics are missing
    /// (all of them, or some while the others ask for fewer replicas).
    fn consult_metrics(
        &self,
        current: i32,
        observations: &[Observation],
    ) -> Result<MetricsOutcome, Decision> {
        let mut proposals = vec![None; self.targets.len()];
        let mut first_error = None;
        let mut within_tolerance = false;
        let mut best: Option<(i32, usize)> = None;
        for (i, ((name, target), obs)) in self.targets.iter().zip(observations).enumerate() {
            match obs {
                Observation::Milli(usage) => {
                    let (p, within) = self.propose(*target, *usage, current);
                    within_tolerance |= within;
                    if best.is_none_or(|(b, _)| p > b) {
                        best = Some((p, i));
                    }
                    proposals[i] = Some(p);
                }
                Observation::NoData(why) => {
                    first_error.get_or_insert_with(|| format!("external metric {name}: {why}"));
                }
            }
        }
        match (best, first_error) {
            (Some((desired, metric)), err) if err.is_none() || desired >= current => {
                Ok(MetricsOutcome { proposals, desired, metric, within_tolerance })
            }
            (best, err) => {
                let mut message = err.unwrap_or_else(|| "no observations".into());
                if best.is_some() {
                    message.push_str(
                        " (the other metrics ask for fewer replicas: the HPA does not scale down then)",
                    );
                }
                Err(Decision { proposals, desired: None, replicas: current, reason: "NoData", message })
            }
        }
    }

    fn tolerances(&self) -> (f64, f64) {
        let t = self.opts.tolerance;
        match &self.behavior {
            Some(b) => (b.scale_down.tolerance.unwrap_or(t), b.scale_up.tolerance.unwrap_or(t)),
            None => (t, t),
        }
    }

    /// The replica calculator: a metric's proposal and whether the tolerance held it.
    fn propose(&self, target: MetricTarget, usage: i64, current: i32) -> (i32, bool) {
        let (down, up) = self.tolerances();
        let within = |ratio: f64| (1.0 - down) <= ratio && ratio <= 1.0 + up;
        let usage = usage as f64;
        match target {
            MetricTarget::AverageValue(q) => {
                let per_pod = q.milli_value() as f64;
                let ratio = usage / (per_pod * f64::from(current));
                if within(ratio) {
                    (current, true)
                } else {
                    (ceil_to_i32(usage / per_pod), false)
                }
            }
            MetricTarget::Value(q) => {
                let ratio = usage / q.milli_value() as f64;
                if current == 0 {
                    (ceil_to_i32(ratio), false)
                } else if within(ratio) {
                    (current, true)
                } else {
                    // Every replica counts as a ready pod.
                    (ceil_to_i32(ratio * f64::from(current)), false)
                }
            }
        }
    }

    /// Without `behavior`: min/max, and at most `max(2 × current, 4)`.
    fn limit_legacy(&self, current: i32, desired: i32) -> (i32, &'static str, &'static str) {
        let scale_up_limit = (2 * i64::from(current)).max(4).min(i64::from(i32::MAX)) as i32;
        let (max_allowed, reason, message) = if self.max_replicas > scale_up_limit {
            (
                scale_up_limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                self.max_replicas,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if desired < self.min_replicas {
            (
                self.min_replicas,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        } else if desired > max_allowed {
            (max_allowed, reason, message)
        } else {
            (desired, "DesiredWithinRange", "the desired count is within the acceptable range")
        }
    }

    /// With `behavior`: the scaling policies, then min/max.
    fn limit_with_behavior(
        &self,
        now: i64,
        behavior: &Behavior,
        current: i32,
        desired: i32,
    ) -> (i32, &'static str, &'static str) {
        if desired > current {
            let limit = self.scale_up_limit(now, current, &behavior.scale_up).max(current);
            let (max_allowed, reason, message) = if self.max_replicas > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    self.max_replicas,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > max_allowed {
                return (max_allowed, reason, message);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(now, current, &behavior.scale_down).min(current);
            let (min_allowed, reason, message) = if self.min_replicas < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    self.min_replicas,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < min_allowed {
                return (min_allowed, reason, message);
            }
        }
        (desired, "DesiredWithinRange", "the desired count is within the acceptable range")
    }

    /// The replicas at the start of a policy's period: now less the scale events since.
    fn period_start(&self, now: i64, current: i32, period_seconds: i32) -> i64 {
        let cutoff = now - i64::from(period_seconds) * 1000;
        let sum = |events: &[ScaleEvent]| -> i64 {
            events.iter().filter(|e| e.t > cutoff).map(|e| i64::from(e.change)).sum()
        };
        i64::from(current) - sum(&self.scale_up_events) + sum(&self.scale_down_events)
    }

    fn scale_up_limit(&self, now: i64, current: i32, rules: &ScalingRules) -> i32 {
        let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => (i64::from(i32::MAX), i64::min),
            SelectPolicy::Max => (i64::from(i32::MIN), i64::max),
        };
        for p in &rules.policies {
            let start = self.period_start(now, current, p.period_seconds);
            let proposed = match p.kind {
                PolicyType::Pods => start + i64::from(p.value),
                // Rounded up, or a small target could never grow.
                PolicyType::Percent => (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64,
            };
            result = pick(result, proposed);
        }
        clamp_i32(result)
    }

    fn scale_down_limit(&self, now: i64, current: i32, rules: &ScalingRules) -> i32 {
        let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => (i64::from(i32::MIN), i64::max),
            SelectPolicy::Max => (i64::from(i32::MAX), i64::min),
        };
        for p in &rules.policies {
            let start = self.period_start(now, current, p.period_seconds);
            let proposed = match p.kind {
                PolicyType::Pods => start - i64::from(p.value),
                // Truncated, as Go's int32() conversion does.
                PolicyType::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
            };
            result = pick(result, proposed);
        }
        clamp_i32(result)
    }

    /// Records a rescale for the policies, reusing a slot older than the longest period.
    fn store_scale_event(&mut self, now: i64, previous: i32, new: i32) {
        let Some(behavior) = &self.behavior else { return };
        let (events, rules, change) = if new > previous {
            (&mut self.scale_up_events, &behavior.scale_up, new - previous)
        } else {
            (&mut self.scale_down_events, &behavior.scale_down, previous - new)
        };
        let longest = rules.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0);
        let cutoff = now - i64::from(longest) * 1000;
        let mut old = None;
        for (i, e) in events.iter_mut().enumerate() {
            if e.t < cutoff {
                e.outdated = true;
            }
            if e.outdated {
                old = Some(i);
            }
        }
        let event = ScaleEvent { change, t: now, outdated: false };
        match old {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

/// The metrics' verdict at one sync.
struct MetricsOutcome {
    proposals: Vec<Option<i32>>,
    /// The largest proposal, and the metric making it.
    desired: i32,
    metric: usize,
    /// Whether the tolerance held some metric at the current replicas.
    within_tolerance: bool,
}

/// Without `behavior`: the highest recommendation of the downscale window.
fn stabilize_legacy(
    recs: &mut Vec<Recommendation>,
    now: i64,
    window_ms: i64,
    prenormalized: i32,
) -> (i32, &'static str) {
    let cutoff = now - window_ms;
    let mut max = prenormalized;
    let mut old = None;
    for (i, rec) in recs.iter().enumerate() {
        if rec.t < cutoff {
            old = Some(i);
        } else if rec.replicas > max {
            max = rec.replicas;
        }
    }
    store_recommendation(recs, old, Recommendation { replicas: prenormalized, t: now });
    (max, "ScaleDownStabilized")
}

/// With `behavior`: the current replicas brought within the lowest recommendation of
/// the scale-up window and the highest of the scale-down window.
fn stabilize_with_behavior(
    recs: &mut Vec<Recommendation>,
    now: i64,
    behavior: &Behavior,
    default_down_window_ms: i64,
    current: i32,
    prenormalized: i32,
) -> (i32, &'static str) {
    let up_window = i64::from(behavior.scale_up.stabilization_window_seconds.unwrap_or(0)) * 1000;
    let down_window = behavior
        .scale_down
        .stabilization_window_seconds
        .map_or(default_down_window_ms, |s| i64::from(s) * 1000);
    let (up_cutoff, down_cutoff) = (now - up_window, now - down_window);
    let (mut up, mut down) = (prenormalized, prenormalized);
    let mut old = None;
    for (i, rec) in recs.iter().enumerate() {
        if rec.t > up_cutoff {
            up = up.min(rec.replicas);
        }
        if rec.t > down_cutoff {
            down = down.max(rec.replicas);
        }
        if rec.t < up_cutoff && rec.t < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up).min(down);
    store_recommendation(recs, old, Recommendation { replicas: prenormalized, t: now });
    (stabilized, if prenormalized >= current { "ScaleUpStabilized" } else { "ScaleDownStabilized" })
}

fn store_recommendation(recs: &mut Vec<Recommendation>, old: Option<usize>, rec: Recommendation) {
    match old {
        Some(i) => recs[i] = rec,
        None => recs.push(rec),
    }
}

fn ceil_to_i32(x: f64) -> i32 {
    // `as` saturates; NaN (0/0) becomes 0 like the controller's 0 replicas.
    x.ceil() as i32
}

fn clamp_i32(x: i64) -> i32 {
    x.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

// ---------------------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------------------

/// What a simulation runs: the HPA, one parsed query per metric, the engine.
pub struct Simulation<'a> {
    /// The HPA.
    pub spec: &'a HpaSpec,
    /// The queries of `spec.metrics`, parsed, in the same order.
    pub exprs: &'a [promql::Expr],
    /// The engine evaluating them.
    pub engine: &'a Engine,
    /// Controller flags.
    pub opts: ControllerOptions,
    /// Replicas before the first sync.
    pub initial_replicas: i32,
}

/// One sync of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The sync's time, in milliseconds since the epoch.
    pub t: i64,
    /// Each metric's value (the query's result as the HPA sees it), `None` without data.
    pub values: Vec<Option<f64>>,
    /// The replicas the metrics ask for, before stabilization and limits.
    pub desired: Option<i32>,
    /// The replicas after the sync.
    pub replicas: i32,
    /// Short reason.
    pub reason: &'static str,
    /// Longer explanation.
    pub message: String,
}

/// The outcome of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The metrics' names, for column headers.
    pub metric_names: Vec<String>,
    /// One row per sync.
    pub rows: Vec<Row>,
    /// Things worth knowing about the queries' results, once each.
    pub warnings: Vec<String>,
}

/// Runs the controller every `step_ms` from `start` to `end` (milliseconds), with the
/// queries evaluated over `source` at each sync.
pub fn run_simulation(
    sim: &Simulation<'_>,
    source: &dyn SampleSource,
    start: i64,
    end: i64,
    step_ms: i64,
) -> Timeline {
    let mut controller = Controller::new(sim.spec, sim.opts, sim.initial_replicas);
    let mut rows = Vec::new();
    let mut multi_series = vec![0usize; sim.exprs.len()];
    let mut warnings = Vec::new();
    let mut t = start;
    while t <= end && step_ms > 0 {
        let observations: Vec<Observation> = sim
            .exprs
            .iter()
            .enumerate()
            .map(|(i, expr)| {
                let (obs, series) = observe(sim.engine, source, expr, t);
                if series > 1 {
                    multi_series[i] += 1;
                }
                obs
            })
            .collect();
        let decision = controller.sync(t, &observations);
        let values = observations
            .iter()
            .map(|o| match o {
                Observation::Milli(m) => Some(*m as f64 / 1000.0),
                Observation::NoData(_) => None,
            })
            .collect();
        rows.push(Row {
            t,
            values,
            desired: decision.desired,
            replicas: decision.replicas,
            reason: decision.reason,
            message: decision.message,
        });
        t += step_ms;
    }
    for (m, n) in sim.spec.metrics.iter().zip(multi_series) {
        if n > 0 {
            warnings.push(format!(
                "the query of {} returned several series at {n} syncs: their values were summed as the \
                 HPA sums External Metrics API items, but kube-metrics-adapter serves only the first \
                 sample of a vector (aggregate the query, e.g. with sum())",
                m.path
            ));
        }
    }
    Timeline { metric_names: sim.spec.metrics.iter().map(|m| m.name.clone()).collect(), rows, warnings }
}

/// One metric at one sync: its value in thousandths (each series truncated, as
/// kube-metrics-adapter truncates) and how many series the query returned.
fn observe(engine: &Engine, source: &dyn SampleSource, expr: &promql::Expr, t: i64) -> (Observation, usize) {
    let value = match engine.eval(source, expr, t, t, 0) {
        Ok(r) => r.value,
        Err(e) => return (Observation::NoData(format!("query failed: {e}")), 0),
    };
    let values: Vec<f64> = match value {
        Value::Scalar { v, .. } => vec![v],
        Value::Vector(samples) => samples.iter().map(|s| s.v).collect(),
        Value::Matrix(_) | Value::String { .. } => {
            return (Observation::NoData("the query returned neither a vector nor a scalar".into()), 0)
        }
    };
    if values.is_empty() {
        return (Observation::NoData("the query returned no samples".into()), 0);
    }
    if values.iter().any(|v| !v.is_finite()) {
        return (Observation::NoData("the query returned NaN or an infinity".into()), values.len());
    }
    let total = values.iter().fold(0i64, |acc, v| acc.saturating_add((v * 1000.0) as i64));
    (Observation::Milli(total), values.len())
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn format_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn value_headers(timeline: &Timeline) -> Vec<String> {
    if timeline.metric_names.len() == 1 {
        vec!["VALUE".to_owned()]
    } else {
        timeline.metric_names.clone()
    }
}

/// Writes the timeline as an aligned table: time, value(s), desired, replicas, reason.
pub fn write_table(out: &mut dyn Write, timeline: &Timeline) -> std::io::Result<()> {
    let mut header = vec!["TIME".to_owned()];
    header.extend(value_headers(timeline));
    header.extend(["DESIRED", "REPLICAS", "REASON"].map(String::from));
    let mut cells = vec![header];
    for r in &timeline.rows {
        let mut line = vec![format_time(r.t)];
        line.extend(r.values.iter().map(|v| format_opt(*v)));
        line.extend([format_opt(r.desired), r.replicas.to_string(), r.reason.to_owned()]);
        cells.push(line);
    }
    let columns = cells[0].len();
    let widths: Vec<usize> =
        (0..columns).map(|c| cells.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    for line in &cells {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let w = widths[c];
            if c == 0 {
                let _ = write!(text, "{cell:<w$}");
            } else if c + 1 == columns {
                let _ = write!(text, "  {cell}");
            } else {
                let _ = write!(text, "  {cell:>w$}");
            }
        }
        writeln!(out, "{text}")?;
    }
    Ok(())
}

fn row_json(timeline: &Timeline, r: &Row) -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = timeline
        .metric_names
        .iter()
        .zip(&r.values)
        .map(|(name, v)| serde_json::json!({ "name": name, "value": v }))
        .collect();
    serde_json::json!({
        "time": format_time(r.t),
        "value": r.values.first().copied().flatten(),
        "desired": r.desired,
        "replicas": r.replicas,
        "reason": r.reason,
        "message": r.message,
        "metrics": metrics,
    })
}

/// Writes one JSON object per sync: `time`, `value` (of the first metric), `desired`,
/// `replicas`, `reason`, `message` and `metrics` (`name`, `value` of each).
pub fn write_json_lines(out: &mut dyn Write, timeline: &Timeline) -> std::io::Result<()> {
    for r in &timeline.rows {
        writeln!(out, "{}", row_json(timeline, r))?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes the timeline as CSV: `time,timestamp_ms,<value columns>,desired,replicas,reason,message`.
pub fn write_csv(out: &mut dyn Write, timeline: &Timeline) -> std::io::Result<()> {
    let values: Vec<String> = if timeline.metric_names.len() == 1 {
        vec!["value".into()]
    } else {
        timeline.metric_names.iter().map(|n| csv_field(&format!("value_{n}"))).collect()
    };
    writeln!(out, "time,timestamp_ms,{},desired,replicas,reason,message", values.join(","))?;
    for r in &timeline.rows {
        let values: Vec<String> =
            r.values.iter().map(|v| v.map(|v| v.to_string()).unwrap_or_default()).collect();
        writeln!(
            out,
            "{},{},{},{},{},{},{}",
            format_time(r.t),
            r.t,
            values.join(","),
            r.desired.map(|d| d.to_string()).unwrap_or_default(),
            r.replicas,
            r.reason,
            csv_field(&r.message)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODINFO_HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: podinfo
  namespace: test
  annotations:
    metric-config.external.prometheus-query.prometheus/processed-requests-per-second: |
      sum(rate(istio_requests_total{destination_workload="podinfo",reporter="destination"}[1m]))
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: External
    external:
      metric:
        name: prometheus-query
        selector:
          matchLabels:
            query-name: processed-requests-per-second
      target:
        type: AverageValue
        averageValue: "10"
"#;

    const QUERY: &str =
        r#"sum(rate(istio_requests_total{destination_workload="podinfo",reporter="destination"}[1m]))"#;
    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(q("10").milli_value(), 10_000);
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("1k").milli_value(), 1_000_000);
        assert_eq!(q("2Ki").milli_value(), 2_048_000);
        assert_eq!(q("1Mi").milli_value(), 1_048_576_000);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1.").milli_value(), 1000);
        assert_eq!(q("1e3").milli_value(), 1_000_000);
        assert_eq!(q("1E-2").milli_value(), 10);
        assert_eq!(q("+2").milli_value(), 2000);
        assert_eq!(q("-1.5").milli_value(), -1500);
        assert_eq!(q("1P").milli_value(), 1_000_000_000_000_000_000);
        // Finer than milli rounds up, as Quantity.MilliValue() does.
        assert_eq!(q("1u").milli_value(), 1);
        assert_eq!(q("1500u").milli_value(), 2);
        assert_eq!(q("0n").milli_value(), 0);
        assert!((q("1.5Gi").as_f64() - 1.5 * 1024f64.powi(3)).abs() < 1e-3);
        assert!((q("250m").as_f64() - 0.25).abs() < 1e-12);
        for bad in ["", "m", "abc", "1.2.3", "10 m", "1K", "1kb", "1e", "1Ki2", "--1", "1e99999"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(Quantity::parse("1E").is_err(), "1 exa does not fit in milli-units of an i64");
    }

    #[test]
    fn parses_the_seed_hpa_with_its_annotation() {
        let spec = HpaSpec::parse(PODINFO_HPA, None).unwrap();
        assert_eq!(spec.name, "test/podinfo");
        assert_eq!(spec.target, "Deployment/podinfo");
        assert_eq!((spec.min_replicas, spec.max_replicas), (1, 10));
        assert_eq!(spec.behavior, None);
        assert!(spec.warnings.is_empty());
        let [m] = spec.metrics.as_slice() else { panic!("{:?}", spec.metrics) };
        assert_eq!(m.name, "prometheus-query");
        assert_eq!(m.target, MetricTarget::AverageValue(q("10")));
        assert_eq!(m.query.trim(), QUERY);
        assert_eq!(
            m.query_source,
            "metric-config.external.prometheus-query.prometheus/processed-requests-per-second"
        );
        assert!(promql::parse(&m.query).is_ok());
        // --query wins.
        let spec = HpaSpec::parse(PODINFO_HPA, Some("vector(1)")).unwrap();
        assert_eq!(
            (spec.metrics[0].query.as_str(), spec.metrics[0].query_source.as_str()),
            ("vector(1)", "--query")
        );
    }

    #[test]
    fn the_example_manifest_parses() {
        let text = include_str!("../../examples/podinfo-hpa.yaml");
        let spec = HpaSpec::parse(text, None).unwrap();
        assert_eq!(spec.metrics.len(), 1);
        assert_eq!(spec.metrics[0].query.trim(), QUERY);
        assert_eq!((spec.min_replicas, spec.max_replicas), (1, 10));
    }

    #[test]
    fn current_annotation_form_multi_document_and_behavior() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: app
  annotations:
    metric-config.external.rps.prometheus/query: sum(rate(http_requests_total[1m]))
    metric-config.external.rps.prometheus/interval: 30s
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  maxReplicas: 20
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  - type: External
    external:
      metric: {name: rps, selector: {matchLabels: {type: prometheus}}}
      target: {type: Value, value: 1.5k}
  behavior:
    scaleDown:
      policies: [{type: Pods, value: 1, periodSeconds: 60}]
      selectPolicy: Min
    scaleUp:
      tolerance: 50m
"#;
        let spec = HpaSpec::parse(yaml, None).unwrap();
        assert_eq!(spec.min_replicas, 1);
        assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
        assert!(spec.warnings[0].starts_with("spec.metrics[0]: a Resource metric"), "{}", spec.warnings[0]);
        let m = &spec.metrics[0];
        assert_eq!((m.path.as_str(), m.name.as_str()), ("spec.metrics[1]", "rps"));
        assert_eq!(m.query, "sum(rate(http_requests_total[1m]))");
        assert_eq!(m.query_source, "metric-config.external.rps.prometheus/query");
        assert_eq!(m.target, MetricTarget::Value(q("1500")));
        let b = spec.behavior.unwrap();
        let defaults = Behavior::default();
        assert_eq!(b.scale_up.policies, defaults.scale_up.policies);
        assert_eq!(b.scale_up.tolerance, Some(0.05));
        assert_eq!(b.scale_down.stabilization_window_seconds, None);
        assert_eq!(b.scale_down.select_policy, SelectPolicy::Min);
        assert_eq!(
            b.scale_down.policies,
            vec![ScalingPolicy { kind: PolicyType::Pods, value: 1, period_seconds: 60 }]
        );
    }

    #[test]
    fn default_behavior() {
        let b = Behavior::default();
        assert_eq!(b.scale_up.stabilization_window_seconds, Some(0));
        assert_eq!(b.scale_up.select_policy, SelectPolicy::Max);
        assert_eq!(
            b.scale_up.policies,
            vec![
                ScalingPolicy { kind: PolicyType::Pods, value: 4, period_seconds: 15 },
                ScalingPolicy { kind: PolicyType::Percent, value: 100, period_seconds: 15 },
            ]
        );
        // Unset: the controller's --horizontal-pod-autoscaler-downscale-stabilization (5m).
        assert_eq!(b.scale_down.stabilization_window_seconds, None);
        assert_eq!(ControllerOptions::default().downscale_stabilization_ms, 300_000);
        assert_eq!(b.scale_down.select_policy, SelectPolicy::Max);
        assert_eq!(
            b.scale_down.policies,
            vec![ScalingPolicy { kind: PolicyType::Percent, value: 100, period_seconds: 15 }]
        );
        // `behavior: {}` in a manifest is exactly that.
        let yaml = PODINFO_HPA.to_owned() + "  behavior: {}\n";
        assert_eq!(HpaSpec::parse(&yaml, None).unwrap().behavior, Some(b));
    }

    #[test]
    fn errors_name_the_field() {
        let err = |yaml: &str| HpaSpec::parse(yaml, None).unwrap_err();
        let e = err(&PODINFO_HPA.replace("averageValue: \"10\"", "averageValue: 10x"));
        assert!(e.starts_with("spec.metrics[0].external.target.averageValue: bad quantity \"10x\""), "{e}");
        let e = err(&PODINFO_HPA.replace("averageValue: \"10\"", "averageValue: 0"));
        assert!(e.starts_with("spec.metrics[0].external.target.averageValue: must be positive"), "{e}");
        let e = err(&PODINFO_HPA.replace("type: AverageValue", "type: Value"));
        assert_eq!(e, "spec.metrics[0].external.target.value: required");
        let e = err(&PODINFO_HPA.replace("  maxReplicas: 10\n", ""));
        assert_eq!(e, "spec.maxReplicas: required");
        let e = err(&PODINFO_HPA.replace("query-name: processed-requests-per-second", "query-name: other"));
        assert!(e.contains("matchLabels.query-name is \"other\""), "{e}");
        assert!(e.contains("metric-config.external.prometheus-query.prometheus/other"), "{e}");
        let e = err(&PODINFO_HPA.replace("metric-config.external", "x-metric-config.external"));
        assert!(
            e.contains("no annotation `metric-config.external.prometheus-query.prometheus/processed"),
            "{e}"
        );
        let e = err(&PODINFO_HPA.replace("maxReplicas: 10", "maxReplicas: ten"));
        assert!(e.contains("spec.maxReplicas") && e.contains("invalid type"), "{e}");
        let e = err(&(PODINFO_HPA.to_owned()
            + "  behavior:\n    scaleUp:\n      policies: [{type: Pods, value: 0, periodSeconds: 15}]\n"));
        assert_eq!(e, "spec.behavior.scaleUp.policies[0].value: must be positive, got 0");
        let e = err("apiVersion: v1\nkind: Service\n---\nkind: ConfigMap\n");
        assert_eq!(e, "no HorizontalPodAutoscaler document (found Service, ConfigMap)");
        let e = err(&PODINFO_HPA.replace("autoscaling/v2", "autoscaling/v2beta1"));
        assert!(e.starts_with("apiVersion: autoscaling/v2beta1 is not supported"), "{e}");
        // A collector other than Prometheus is no usable metric.
        let e = err(&PODINFO_HPA.replace("query-name: processed-requests-per-second", "type: influxdb"));
        assert!(e.starts_with("spec.metrics: no External metric with a Prometheus query"), "{e}");
        assert!(e.contains("matchLabels.type is \"influxdb\""), "{e}");
    }

    fn spec_with(target: MetricTarget, behavior: Option<Behavior>, min: i32, max: i32) -> HpaSpec {
        HpaSpec {
            name: "t".into(),
            target: "Deployment/t".into(),
            min_replicas: min,
            max_replicas: max,
            metrics: vec![ExternalMetric {
                path: "spec.metrics[0]".into(),
                name: "m".into(),
                selector: BTreeMap::new(),
                target,
                query: "vector(0)".into(),
                query_source: "--query".into(),
            }],
            behavior,
            warnings: vec![],
        }
    }

    fn run(c: &mut Controller, values: &[Option<f64>]) -> Vec<i32> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let obs = match v {
                    Some(v) => Observation::Milli((v * 1000.0) as i64),
                    None => Observation::NoData("none".into()),
                };
                c.sync(T0 + i as i64 * 15_000, &[obs]).replicas
            })
            .collect()
    }

    #[test]
    fn replica_calculation_and_tolerance() {
        let spec = spec_with(MetricTarget::AverageValue(q("10")), Some(Behavior::default()), 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 4);
        // 43 / (10 × 4) = 1.075: within the tolerance.
        let d = c.sync(T0, &[Observation::Milli(43_000)]);
        assert_eq!((d.desired, d.replicas, d.reason), (Some(4), 4, "WithinTolerance"));
        // 45 / 40 = 1.125: ceil(45 / 10) = 5.
        let d = c.sync(T0 + 15_000, &[Observation::Milli(45_000)]);
        assert_eq!((d.desired, d.replicas, d.reason), (Some(5), 5, "ScaleUp"));
        // No data: nothing changes, nothing is recorded.
        let d = c.sync(T0 + 30_000, &[Observation::NoData("the query returned no samples".into())]);
        assert_eq!((d.desired, d.replicas, d.reason), (None, 5, "NoData"));

        // Value: ceil(current × total / target).
        let spec = spec_with(MetricTarget::Value(q("100")), Some(Behavior::default()), 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 3);
        let d = c.sync(T0, &[Observation::Milli(250_000)]);
        assert_eq!((d.desired, d.replicas), (Some(8), 7), "ceil(3 × 2.5) = 8, limited to 3 + 4");
        let d = c.sync(T0 + 15_000, &[Observation::Milli(105_000)]);
        assert_eq!((d.desired, d.reason), (Some(7), "WithinTolerance"));
    }

    #[test]
    fn scale_up_policies_and_selection() {
        // Defaults: max(current + 4, 2 × current) per 15 s.
        let spec = spec_with(MetricTarget::AverageValue(q("1")), Some(Behavior::default()), 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 1);
        assert_eq!(run(&mut c, &[Some(100.0); 5]), vec![5, 10, 20, 40, 80]);

        // One pod per minute: the scale events of the period count.
        let mut b = Behavior::default();
        b.scale_up.policies = vec![ScalingPolicy { kind: PolicyType::Pods, value: 1, period_seconds: 60 }];
        let spec = spec_with(MetricTarget::AverageValue(q("1")), Some(b.clone()), 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 1);
        assert_eq!(run(&mut c, &[Some(100.0); 9]), vec![2, 2, 2, 2, 3, 3, 3, 3, 4]);
        let d = c.sync(T0 + 9 * 15_000, &[Observation::Milli(100_000)]);
        assert_eq!(d.reason, "ScaleUpLimit");

        // Min picks the policy allowing the smaller change; Disabled none.
        b.scale_up.policies = vec![
            ScalingPolicy { kind: PolicyType::Pods, value: 4, period_seconds: 15 },
            ScalingPolicy { kind: PolicyType::Percent, value: 50, period_seconds: 15 },
        ];
        b.scale_up.select_policy = SelectPolicy::Min;
        let spec = spec_with(MetricTarget::AverageValue(q("1")), Some(b.clone()), 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 2);
        assert_eq!(run(&mut c, &[Some(100.0); 4]), vec![3, 5, 8, 12]);
        b.scale_up.select_policy = SelectPolicy::Disabled;
        let spec = spec_with(MetricTarget::AverageValue(q("1")), Some(b), 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 2);
        assert_eq!(run(&mut c, &[Some(100.0); 3]), vec![2, 2, 2]);

        // maxReplicas caps it.
        let spec = spec_with(MetricTarget::AverageValue(q("1")), Some(Behavior::default()), 1, 6);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 1);
        assert_eq!(run(&mut c, &[Some(100.0); 2]), vec![5, 6]);
        let d = c.sync(T0 + 30_000, &[Observation::Milli(100_000)]);
        assert_eq!((d.desired, d.replicas, d.reason), (Some(100), 6, "TooManyReplicas"));
    }

    #[test]
    fn scale_down_stabilization_and_policies() {
        // A short window and one pod per 30 s.
        let mut b = Behavior::default();
        b.scale_down.stabilization_window_seconds = Some(60);
        b.scale_down.policies = vec![ScalingPolicy { kind: PolicyType::Pods, value: 1, period_seconds: 30 }];
        let spec = spec_with(MetricTarget::AverageValue(q("10")), Some(b), 2, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 6);
        let got = run(
            &mut c,
            &[
                Some(60.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(0.0),
            ],
        );
        // 6 was recommended at T0 (also as the initial replicas): the 60 s window holds it
        // until T0+60s; then one pod per 30 s, down to minReplicas.
        assert_eq!(got, vec![6, 6, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2]);
    }

    #[test]
    fn without_behavior_the_controller_uses_its_default_path() {
        let spec = spec_with(MetricTarget::AverageValue(q("1")), None, 1, 100);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 1);
        // At most max(2 × current, 4) per sync.
        assert_eq!(run(&mut c, &[Some(50.0); 5]), vec![4, 8, 16, 32, 50]);
        // Down only after the highest recommendation of the last 5 minutes has gone.
        let mut values = vec![Some(1.0); 25];
        values[0] = Some(50.0);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 50);
        let got = run(&mut c, &values);
        assert!(got[..21].iter().all(|&r| r == 50), "{got:?}");
        assert_eq!(got[21..], [1, 1, 1, 1]);
    }

    #[test]
    fn several_metrics_and_missing_data() {
        let mut spec = spec_with(MetricTarget::AverageValue(q("10")), Some(Behavior::default()), 1, 100);
        let mut second = spec.metrics[0].clone();
        second.name = "n".into();
        spec.metrics.push(second);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 4);
        // The largest proposal wins.
        let d = c.sync(T0, &[Observation::Milli(20_000), Observation::Milli(60_000)]);
        assert_eq!((d.proposals.clone(), d.desired, d.replicas), (vec![Some(2), Some(6)], Some(6), 6));
        // One metric missing: scaling up still happens, scaling down does not.
        let d = c.sync(T0 + 15_000, &[Observation::NoData("x".into()), Observation::Milli(80_000)]);
        assert_eq!(d.replicas, 8);
        let d = c.sync(T0 + 30_000, &[Observation::NoData("x".into()), Observation::Milli(10_000)]);
        assert_eq!((d.replicas, d.reason), (8, "NoData"));
    }

    #[test]
    fn out_of_range_replicas_are_corrected_first() {
        let spec = spec_with(MetricTarget::AverageValue(q("10")), None, 2, 5);
        let mut c = Controller::new(&spec, ControllerOptions::default(), 9);
        let d = c.sync(T0, &[Observation::Milli(100_000)]);
        assert_eq!((d.desired, d.replicas, d.reason), (None, 5, "AboveMaxReplicas"));
        let mut c = Controller::new(&spec, ControllerOptions::default(), 0);
        let d = c.sync(T0, &[Observation::Milli(100_000)]);
        assert_eq!((d.replicas, d.reason), (0, "ScalingDisabled"));
    }

    /// 50 req/s for 5 minutes, then none; scraped every 15 s, for 20 minutes.
    fn podinfo_store() -> promql::storage::MemoryStore {
        let mut store = promql::storage::MemoryStore::new();
        let labels = promql::Labels::from_pairs([
            ("__name__", "istio_requests_total"),
            ("destination_workload", "podinfo"),
            ("reporter", "destination"),
        ]);
        for i in 0..=80 {
            let t = T0 + i * 15_000;
            let elapsed_s = (i * 15).min(300);
            store.append(&labels, t, 50.0 * elapsed_s as f64);
        }
        store
    }

    fn simulate_podinfo(behavior: Option<Behavior>) -> Timeline {
        let mut spec = HpaSpec::parse(PODINFO_HPA, None).unwrap();
        spec.behavior = behavior;
        let exprs = vec![promql::parse(&spec.metrics[0].query).unwrap()];
        let engine = Engine::default();
        let sim = Simulation {
            spec: &spec,
            exprs: &exprs,
            engine: &engine,
            opts: ControllerOptions::default(),
            initial_replicas: spec.min_replicas,
        };
        run_simulation(&sim, &podinfo_store(), T0, T0 + 20 * 60_000, 15_000)
    }

    fn at(timeline: &Timeline, seconds: i64) -> &Row {
        &timeline.rows[(seconds / 15) as usize]
    }

    fn check_podinfo_timeline(timeline: &Timeline, max_step_up: impl Fn(i32) -> i32) {
        let mut table = Vec::new();
        write_table(&mut table, timeline).unwrap();
        println!("{}", String::from_utf8_lossy(&table));
        let rows = &timeline.rows;
        assert_eq!(rows.len(), 81);
        assert!(timeline.warnings.is_empty(), "{:?}", timeline.warnings);
        // One sample in the window: no rate yet.
        assert_eq!((rows[0].values[0], rows[0].replicas, rows[0].reason), (None, 1, "NoData"));
        // Up to 5 replicas (50 req/s at 10 per pod), within the scale-up limits.
        for w in rows.windows(2) {
            let (before, after) = (w[0].replicas, w[1].replicas);
            assert!(after <= max_step_up(before), "{before} -> {after} at {}", format_time(w[1].t));
        }
        let peak = rows.iter().position(|r| r.replicas == 5).unwrap();
        assert!(rows[peak].t <= T0 + 120_000, "5 replicas only at {}", format_time(rows[peak].t));
        assert!(rows.iter().all(|r| r.replicas <= 5));
        // 49.999: kube-metrics-adapter truncates to thousandths, and the rate is a hair under 50.
        assert!(
            at(timeline, 240).values[0].is_some_and(|v| (v - 50.0).abs() < 0.01),
            "{:?}",
            at(timeline, 240)
        );
        assert_eq!(at(timeline, 240).desired, Some(5));
        // The traffic is gone a minute after it stops...
        assert_eq!(at(timeline, 375).values[0], Some(0.0));
        assert_eq!(at(timeline, 375).desired, Some(0));
        // ...but the highest recommendation of the last 300 s holds the replicas: 5 was
        // recommended last at 300 s, so they stay at 5 until 300 s later.
        assert!(rows[peak..40].iter().all(|r| r.replicas == 5), "{rows:#?}");
        assert_eq!(at(timeline, 450).reason, "ScaleDownStabilized");
        // Then down, to minReplicas by 645 s, and there they stay.
        let first_down = rows.iter().position(|r| r.t > T0 + 300_000 && r.replicas < 5).unwrap();
        assert!(rows[first_down].t >= T0 + 600_000, "down at {}", format_time(rows[first_down].t));
        assert!(rows[first_down].t <= T0 + 615_000, "down at {}", format_time(rows[first_down].t));
        assert_eq!(at(timeline, 645).replicas, 1);
        assert!(rows[43..].iter().all(|r| r.replicas == 1));
    }

    #[test]
    fn podinfo_scenario_with_default_behavior() {
        let timeline = simulate_podinfo(Some(Behavior::default()));
        check_podinfo_timeline(&timeline, |r| (r + 4).max(2 * r));
        // At 15 s: 750 requests in the window, 12.5 req/s: 2 replicas.
        assert_eq!((at(&timeline, 15).values[0], at(&timeline, 15).replicas), (Some(12.5), 2));
    }

    #[test]
    fn podinfo_scenario_without_behavior() {
        let timeline = simulate_podinfo(None);
        check_podinfo_timeline(&timeline, |r| (2 * r).max(4));
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("promql-cli-hpa-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn args(hpa: PathBuf, data: PathBuf) -> SimulateArgs {
        SimulateArgs {
            hpa,
            data: vec![data],
            query: None,
            start: None,
            end: None,
            initial_replicas: None,
            sync_period: "15s".into(),
            downscale_stabilization: "5m".into(),
            tolerance: DEFAULT_TOLERANCE,
            format: SimulateFormat::Json,
            plot_out: None,
            plot: false,
        }
    }

    #[test]
    fn simulate_from_files() {
        let dir = scratch_dir("files");
        let data = dir.join("podinfo.om");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
        promql::storage::write_openmetrics(&podinfo_store(), &mut w).unwrap();
        drop(w);
        let manifest = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/podinfo-hpa.yaml"));
        let csv = dir.join("timeline.csv");

        let mut a = args(manifest.clone(), data.clone());
        a.plot_out = Some(csv.clone());
        a.end = Some("2024-01-01T00:12:00Z".into());
        let mut out = Vec::new();
        assert_eq!(simulate_to(a, promql::Features::none(), &mut out).unwrap(), ExitCode::SUCCESS);
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // The data's first sample to --end, every 15 s.
        assert_eq!(lines.len(), 49);
        assert_eq!(lines[0]["time"], "2024-01-01T00:00:00Z");
        assert_eq!(lines[4]["replicas"], 5);
        assert_eq!(lines[48]["replicas"], 1);
        let csv = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(csv.lines().count(), 50);
        assert!(csv
            .lines()
            .nth(5)
            .unwrap()
            .starts_with("2024-01-01T00:01:00Z,1704067260000,49.999,5,5,ScaleUp,"));

        // --query, --initial-replicas, --start.
        let mut a = args(manifest.clone(), data.clone());
        a.query = Some("vector(95)".into());
        a.initial_replicas = Some(3);
        a.start = Some("2024-01-01T00:19:30Z".into());
        a.format = SimulateFormat::Table;
        let mut out = Vec::new();
        simulate_to(a, promql::Features::none(), &mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.lines().nth(1).unwrap().ends_with("95       10         6  ScaleUpLimit"), "{table}");

        // A query that does not parse is exit code 1; a bad --plot-out fails before anything runs.
        let mut a = args(manifest.clone(), data.clone());
        a.query = Some("sum(".into());
        assert_eq!(simulate_to(a, promql::Features::none(), &mut Vec::new()).unwrap(), ExitCode::from(1));
        let mut a = args(manifest.clone(), data.clone());
        a.plot_out = Some(dir.join("timeline.gif"));
        assert!(simulate_to(a, promql::Features::none(), &mut Vec::new()).is_err());
        // A chart of the timeline: produced, with the series in its legend.
        let mut a = args(manifest, data);
        let svg = dir.join("timeline.svg");
        a.plot_out = Some(svg.clone());
        assert_eq!(simulate_to(a, promql::Features::none(), &mut Vec::new()).unwrap(), ExitCode::SUCCESS);
        let svg = std::fs::read_to_string(svg).unwrap();
        assert!(svg.contains("replicas") && svg.contains("desired_replicas"), "{svg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn output_formats() {
        let timeline = Timeline {
            metric_names: vec!["prometheus-query".into()],
            rows: vec![
                Row {
                    t: T0,
                    values: vec![None],
                    desired: None,
                    replicas: 1,
                    reason: "NoData",
                    message: "no samples".into(),
                },
                Row {
                    t: T0 + 15_000,
                    values: vec![Some(12.5)],
                    desired: Some(2),
                    replicas: 2,
                    reason: "ScaleUp",
                    message: "a, \"b\"".into(),
                },
            ],
            warnings: vec![],
        };
        let mut table = Vec::new();
        write_table(&mut table, &timeline).unwrap();
        assert_eq!(
            String::from_utf8(table).unwrap(),
            "TIME                  VALUE  DESIRED  REPLICAS  REASON\n\
             2024-01-01T00:00:00Z      -        -         1  NoData\n\
             2024-01-01T00:00:15Z   12.5        2         2  ScaleUp\n"
        );
        let mut json = Vec::new();
        write_json_lines(&mut json, &timeline).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["value"], serde_json::Value::Null);
        assert_eq!(lines[1]["time"], "2024-01-01T00:00:15Z");
        assert_eq!(lines[1]["value"], 12.5);
        assert_eq!(lines[1]["desired"], 2);
        assert_eq!(lines[1]["metrics"][0]["name"], "prometheus-query");
        let mut csv = Vec::new();
        write_csv(&mut csv, &timeline).unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "time,timestamp_ms,value,desired,replicas,reason,message\n\
             2024-01-01T00:00:00Z,1704067200000,,,1,NoData,no samples\n\
             2024-01-01T00:00:15Z,1704067215000,12.5,2,2,ScaleUp,\"a, \"\"b\"\"\"\n"
        );
        assert!(check_plot_out(Path::new("out.CSV")).is_ok());
        assert!(check_plot_out(Path::new("out.svg")).is_ok());
        let e = check_plot_out(Path::new("out.gif")).unwrap_err().to_string();
        assert!(e.contains("name a .csv, .svg or .png file"), "{e}");
    }
}
