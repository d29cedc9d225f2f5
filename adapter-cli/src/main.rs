//! `promql-cli`: a thin command line over the `promql` library.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use promql::Features;

// The system allocator, not mimalloc: as fast over the Istio query set of
// benches/README.md, and `serve`'s peak RSS there is 12 MB lower (76 against 88 MB
// after loading 50×4 and running the set 20 times), because mimalloc 3 holds freed
// pages for a second before it returns them.

mod completions;
mod csv_out;
mod explain;
mod hpa;
mod output;
mod plot;
mod progress;
mod serve;
mod timeflags;

/// Query recorded metrics or a Prometheus with PromQL, outside Prometheus.
#[derive(Debug, Parser)]
#[command(
    name = "promql-cli",
    version,
    about,
    after_help = "Exit codes: 0 success; 1 the query or a test failed (the message says where); \
                  2 bad usage, unreadable data or an unreachable server."
)]
struct Cli {
    /// Comma-separated Prometheus feature flags, e.g.
    /// `promql-experimental-functions,promql-duration-expr`.
    #[arg(long = "enable-feature", value_name = "FEATURES", global = true, value_delimiter = ',')]
    enable_feature: Vec<String>,

    /// Follow Prometheus 3 (default) or 2 where they differ: 2 keeps left-closed windows,
    /// 2.x `rate` extrapolation, 2.x's uncompensated `sum` and `avg`, its `stddev` of a lone
    /// NaN (0), `atan2`'s metric name and matches a comparison filters out before they
    /// count as duplicates, to compare with an older server.
    #[arg(long, value_name = "MAJOR", global = true, default_value = "3", value_parser = ["2", "3"])]
    compat: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate a query over recorded data or over samples fetched from a Prometheus.
    ///
    /// Instant with `--time` (default now), range with `--start --end --step`. The query
    /// runs in this process either way; `--prometheus` only supplies raw samples.
    /// Exit codes: 0 ok, 1 query error, 2 bad usage or unreadable data.
    #[command(
        after_help = "Examples:\n  promql-cli query --data examples/istio.om --time 2024-01-01T00:30:00Z \\\n    \
                            'sum by (destination_workload) (rate(istio_requests_total[1m]))'\n  \
                            promql-cli query --prometheus http://127.0.0.1:9090 --format json 'up'"
    )]
    Query(Box<QueryArgs>),
    /// Pull raw samples from a Prometheus into an OpenMetrics fixture, to replay
    /// production data offline (`query --data`) or backfill it elsewhere (promtool).
    #[command(after_help = "Example:\n  promql-cli record --prometheus http://127.0.0.1:9090 \\\n    \
                            --match 'istio_requests_total{reporter=\"destination\"}' --start now-1h --out istio.om")]
    Record(Box<RecordArgs>),
    /// Serve a Prometheus-compatible HTTP API over fixtures.
    ///
    /// `/api/v1/query`, `/api/v1/query_range` (GET and form POST), `/api/v1/series`,
    /// `/api/v1/labels`, `/api/v1/label/NAME/values`, `/api/v1/status/buildinfo`, with
    /// Prometheus' JSON and error shapes. Stops gracefully on SIGTERM or Ctrl-C.
    ///
    /// Each query runs on the thread that read its request. One query at a time may split
    /// a large evaluation over a pool of one thread per core; queries that come meanwhile
    /// evaluate single-threaded, so that a long query does not hold them up. `/-/ready` and
    /// `/-/healthy` answer throughout.
    #[command(
        after_help = "Example:\n  promql-cli serve --data examples/istio.om --listen 127.0.0.1:9091 &\n  \
                            promtool query instant http://127.0.0.1:9091 'sum(rate(istio_requests_total[1m]))'"
    )]
    Serve {
        /// Fixture files (any format `query --data` reads). Repeatable.
        #[arg(long = "data", value_name = "FILE", required = true)]
        data: Vec<std::path::PathBuf>,
        /// Address to listen on.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9090")]
        listen: String,
    },
    /// Parse and check a query; print it in canonical form, or the error with a caret.
    ///
    /// Exit codes: 0 valid, 1 invalid query, 2 bad usage.
    #[command(
        after_help = "Example:\n  promql-cli parse 'sum by (job) (rate(http_requests_total[5m]))'\n  \
                            promql-cli parse --json 'up == 0'"
    )]
    Parse {
        /// Print the syntax tree as JSON instead of the canonical text.
        #[arg(long)]
        json: bool,
        /// The PromQL expression.
        query: String,
    },
    /// Show a query's checked tree with types and the absolute window of each selection.
    #[command(after_help = "Example:\n  promql-cli explain --time 2024-01-01T00:30:00Z \\\n    \
                            'max_over_time(sum(rate(istio_requests_total[1m]))[30m:1m] offset 1h)'")]
    Explain {
        #[command(flatten)]
        times: TimeArgs,
        /// The PromQL expression.
        query: String,
    },
    /// HorizontalPodAutoscaler tools.
    #[command(subcommand)]
    Hpa(HpaCommand),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  promql-cli completions bash > /etc/bash_completion.d/promql-cli")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run Prometheus promqltest scripts against the engine.
    ///
    /// Prints `FILE: N passed, N failed` per file and a total line. `FILE:LINE` runs the
    /// one eval at that line and shows expected against got. Exit codes: 0 when every
    /// failure is listed in the baseline (or there is none), 1 otherwise, 2 bad usage.
    #[command(after_help = "Examples:\n  promql-cli test ../shared/promqltest/*.test\n  \
                            promql-cli test ../shared/promqltest/functions.test:120\n  \
                            promql-cli test --baseline promql/tests/conformance-baseline.txt ../shared/promqltest/*.test")]
    Test {
        /// Known failures, `file:line reason` per line (file names without directory).
        #[arg(long, value_name = "FILE")]
        baseline: Option<std::path::PathBuf>,
        /// Print each failing case's details.
        #[arg(short, long)]
        verbose: bool,
        /// Script files, or FILE:LINE for a single case.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let features = Features::from_flags(&cli.enable_feature.join(",")).context("--enable-feature")?;
    let engine_options = promql::eval::EngineOptions {
        features,
        compat: if cli.compat == "2" {
            promql::eval::Compat::Prometheus2
        } else {
            promql::eval::Compat::Prometheus3
        },
        ..Default::default()
    };
    match cli.command {
        Command::Parse { json, query } => parse(&query, features, json),
        Command::Query(args) => query(*args, engine_options),
        Command::Record(args) => record(*args),
        Command::Explain { times, query } => {
            let (start, end, step) = times.resolve()?;
            match explain::explain(&query, features, start, end, step) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => match e.downcast_ref::<promql::ParseError>() {
                    Some(p) => {
                        eprintln!("{p:#}");
                        Ok(ExitCode::from(1))
                    }
                    None => Err(e),
                },
            }
        }
        Command::Hpa(HpaCommand::Simulate(args)) => hpa::simulate(*args, features),
        Command::Completions { shell } => {
            completions::print_completions(shell, &mut Cli::command());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { data, listen } => {
            let engine = promql::eval::Engine::new(engine_options);
            let store = load_data(&data, engine.options().max_samples)?;
            serve::serve(store, engine, &listen)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { baseline, verbose, files } => test(&files, baseline.as_deref(), verbose),
    }
}

/// `hpa` subcommands.
#[derive(Debug, Subcommand)]
enum HpaCommand {
    /// Replay an autoscaling/v2 HorizontalPodAutoscaler over recorded data with the real
    /// HPA algorithm (tolerance, AverageValue/Value, min/max, behavior), every sync period.
    ///
    /// The query comes from kube-metrics-adapter annotations of the HPA, or `--query`.
    /// Prints the replica timeline; `--plot-out` writes it as .csv, .svg or .png.
    #[command(
        after_help = "Example:\n  promql-cli record --prometheus http://127.0.0.1:9090 --match istio_requests_total \\\n    \
                            --start now-1h --out podinfo.om\n  \
                            promql-cli hpa simulate --hpa examples/podinfo-hpa.yaml --data podinfo.om --plot-out replicas.svg"
    )]
    Simulate(Box<hpa::SimulateArgs>),
}

/// Where samples come from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct DataSource {
    /// A fixture file: OpenMetrics/Prometheus text, promqltest `load` blocks or
    /// Prometheus API JSON (detected from content). Repeatable.
    #[arg(long = "data", value_name = "FILE")]
    data: Vec<std::path::PathBuf>,
    /// A Prometheus-compatible API to fetch raw samples from.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    #[command(flatten)]
    source: DataSource,
    #[command(flatten)]
    times: TimeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Draw a range result as a chart in the terminal.
    #[arg(long, requires = "step")]
    plot: bool,
    /// Write a range result as an image (`.svg` or `.png`) with axes and a legend.
    #[arg(long, value_name = "FILE", requires = "step")]
    plot_out: Option<std::path::PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
    /// The PromQL expression.
    query: String,
}

/// When to evaluate: an instant (`--time`) or a range (`--start --end --step`).
#[derive(Debug, Args)]
struct TimeArgs {
    /// Evaluation time of an instant query: RFC 3339, Unix seconds, `now`, `now-1h`
    /// (default now).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["start", "end", "step"])]
    time: Option<String>,
    /// Start of a range query.
    #[arg(long, value_name = "TIME", requires_all = ["end", "step"])]
    start: Option<String>,
    /// End of a range query.
    #[arg(long, value_name = "TIME", requires_all = ["start", "step"])]
    end: Option<String>,
    /// Step of a range query: a duration (`15s`) or seconds.
    #[arg(long, value_name = "DURATION", requires_all = ["start", "end"])]
    step: Option<String>,
}

impl TimeArgs {
    /// `(start, end, step)` in milliseconds; step 0 for an instant query.
    fn resolve(&self) -> anyhow::Result<(i64, i64, i64)> {
        let now = timeflags::now_ms();
        Ok(match (&self.start, &self.end, &self.step) {
            (Some(s), Some(e), Some(st)) => (
                timeflags::parse_time(s, now)?,
                timeflags::parse_time(e, now)?,
                timeflags::parse_duration(st)?,
            ),
            _ => {
                let t = self.time.as_deref().map_or(Ok(now), |t| timeflags::parse_time(t, now))?;
                (t, t, 0)
            }
        })
    }
}

/// How to talk to a Prometheus.
#[derive(Debug, Args)]
struct ClientArgs {
    /// File with a bearer token for `--prometheus`.
    #[arg(long, value_name = "FILE")]
    bearer_token_file: Option<std::path::PathBuf>,
    /// `user:password` for basic authentication with `--prometheus`.
    #[arg(long, value_name = "USER:PASSWORD")]
    basic_auth: Option<String>,
    /// Extra header for `--prometheus`, `Name: value`. Repeatable.
    #[arg(long, value_name = "HEADER")]
    header: Vec<String>,
    /// PEM file of CAs to trust for `--prometheus`.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Accept any TLS certificate from `--prometheus` (testing only).
    #[arg(long)]
    insecure_skip_verify: bool,
}

impl ClientArgs {
    fn source(&self, url: &str) -> anyhow::Result<promql::source::prometheus::PrometheusSource> {
        use promql::source::prometheus::{HttpOptions, PrometheusSource};
        let mut opts = HttpOptions {
            bearer_token_file: self.bearer_token_file.clone(),
            ca_file: self.ca_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            ..HttpOptions::default()
        };
        if let Some(auth) = &self.basic_auth {
            let (user, password) = auth.split_once(':').context("--basic-auth wants USER:PASSWORD")?;
            opts.basic_auth = Some((user.to_owned(), password.to_owned()));
        }
        for h in &self.header {
            let (name, value) =
                h.split_once(':').with_context(|| format!("--header {h:?}: expected `Name: value`"))?;
            opts.headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(PrometheusSource::new(url, opts)?)
    }
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// The Prometheus-compatible API to read from.
    #[arg(long, value_name = "URL")]
    prometheus: String,
    /// Series selector to record, e.g. `istio_requests_total{reporter="destination"}`. Repeatable.
    #[arg(long = "match", value_name = "SELECTOR", required = true)]
    matches: Vec<String>,
    /// First sample time: RFC 3339, Unix seconds, `now-1h`.
    #[arg(long, value_name = "TIME")]
    start: String,
    /// Last sample time (default now).
    #[arg(long, value_name = "TIME", default_value = "now")]
    end: String,
    /// The OpenMetrics fixture to write.
    #[arg(long, value_name = "FILE")]
    out: std::path::PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned text.
    Table,
    /// Exactly the `data` object of Prometheus' `/api/v1/query` response.
    Json,
    /// Comma-separated values, a row per sample: timestamp, value, labels.
    Csv,
}

fn query(args: QueryArgs, options: promql::eval::EngineOptions) -> anyhow::Result<ExitCode> {
    use promql::eval::Engine;
    let features = options.features;
    let (start, end, step) = args.times.resolve()?;
    let engine = Engine::new(options);
    let expr = match promql::parse_with(&args.query, features) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    if step > 0 {
        if let Err(e) = check_range_type(&expr) {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    let store = match &args.source.prometheus {
        Some(url) => fetch(url, &args, &engine, &expr, start, end, step)?,
        None => load_data(&args.source.data, engine.options().max_samples)?,
    };
    let result = match engine.eval(&store, &expr, start, end, step) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for a in &result.annotations {
        eprintln!("{}", a.render(&args.query));
    }
    if let Some(path) = &args.plot_out {
        plot::write_plot(&result.value, path, &args.query)?;
    }
    if args.plot {
        let (width, height) = terminal_size();
        print!("{}", plot::terminal_plot(&result.value, width, height));
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Json => output::print(&result.value, true)?,
        Format::Table => output::print(&result.value, false)?,
        Format::Csv => {
            let mut out = std::io::stdout().lock();
            match csv_out::write_csv(&mut out, &result.value) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads fixture files into one store (a progress bar on a terminal); the sample limit
/// applies to each file.
fn load_data(
    paths: &[std::path::PathBuf],
    max_samples: usize,
) -> anyhow::Result<promql::storage::MemoryStore> {
    let mut store = progress::load_with_progress(paths, max_samples)?;
    store.shrink_to_fit();
    Ok(store)
}

/// The terminal's size from `COLUMNS`/`LINES`, or 100×24.
fn terminal_size() -> (usize, usize) {
    let get = |name: &str, default: usize| {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n: &usize| n >= 20).unwrap_or(default)
    };
    (get("COLUMNS", 100), get("LINES", 24))
}

fn check_range_type(expr: &promql::Expr) -> Result<(), String> {
    match promql::check::check(expr).map_err(|e| e.to_string())? {
        promql::ValueType::Scalar | promql::ValueType::Vector => Ok(()),
        t => {
            Err(format!("invalid expression type \"{t}\" for range query, must be Scalar or instant Vector"))
        }
    }
}

fn fetch(
    url: &str,
    args: &QueryArgs,
    engine: &promql::eval::Engine,
    expr: &promql::Expr,
    start: i64,
    end: i64,
    step: i64,
) -> anyhow::Result<promql::storage::MemoryStore> {
    let source = args.client.source(url)?;
    let plan = engine.plan(expr, start, end, step)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(source.fetch(&plan))?)
}

fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let now = timeflags::now_ms();
    let (start, end) = (timeflags::parse_time(&args.start, now)?, timeflags::parse_time(&args.end, now)?);
    anyhow::ensure!(start <= end, "--start must not be after --end");
    let source = args.client.source(&args.prometheus)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = runtime.block_on(source.record(&args.matches, start, end))?;
    // Write to a temporary file first so that a failure leaves no half-written fixture.
    let tmp = args.out.with_extension("om.partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    promql::storage::write_openmetrics(&store, &mut w)
        .with_context(|| format!("writing {}", tmp.display()))?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("renaming to {}", args.out.display()))?;
    eprintln!(
        "recorded {} series, {} samples to {}",
        store.series_count(),
        store.sample_count(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(files: &[String], baseline: Option<&std::path::Path>, verbose: bool) -> anyhow::Result<ExitCode> {
    use promql::promqltest::{run::run_script, run::Outcome, Baseline};
    let baseline = match baseline {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Baseline::parse(&text).map_err(anyhow::Error::msg)?
        }
        None => Baseline::default(),
    };
    let (mut passed, mut failed, mut unexpected) = (0usize, 0usize, 0usize);
    for arg in files {
        // FILE:LINE selects one case.
        let (path, line) = match arg.rsplit_once(':') {
            Some((p, l)) if l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty() => {
                (p, l.parse::<usize>().ok())
            }
            _ => (arg.as_str(), None),
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let results = run_script(&text, line).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        if line.is_some() && results.is_empty() {
            anyhow::bail!("{arg}: no eval command at that line");
        }
        let name =
            std::path::Path::new(path).file_name().map_or(path.into(), |n| n.to_string_lossy().into_owned());
        let (mut p, mut f) = (0, 0);
        for r in &results {
            match &r.outcome {
                Outcome::Pass => p += 1,
                Outcome::Fail(msg) => {
                    f += 1;
                    let known = baseline.reason(&name, r.line).is_some();
                    if !known {
                        unexpected += 1;
                    }
                    if verbose || line.is_some() {
                        println!(
                            "{path}:{}: FAIL{} {}\n{msg}\n",
                            r.line,
                            if known { " (in baseline)" } else { "" },
                            r.query
                        );
                    }
                }
            }
        }
        if line.is_some() && f == 0 {
            println!("{path}:{}: PASS {}", results[0].line, results[0].query);
        }
        println!("{path}: {p} passed, {f} failed");
        passed += p;
        failed += f;
    }
    println!("{passed} passed, {failed} failed");
    Ok(if unexpected == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn parse(query: &str, features: Features, json: bool) -> anyhow::Result<ExitCode> {
    let expr = match promql::parse_with(query, features) {
        Ok(expr) => expr,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &expr)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        writeln!(out, "{expr}")
    };
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
