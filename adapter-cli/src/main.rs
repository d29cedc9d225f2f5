//! `promql-cli`: a thin command line over the `promql` library.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use promql::Features;

/// Query recorded metrics or a Prometheus with PromQL, outside Prometheus.
#[derive(Debug, Parser)]
#[command(name = "promql-cli", version, about)]
struct Cli {
    /// Comma-separated Prometheus feature flags, e.g.
    /// `promql-experimental-functions,promql-duration-expr`.
    #[arg(long = "enable-feature", value_name = "FEATURES", global = true, value_delimiter = ',')]
    enable_feature: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    match cli.command {
        Command::Parse { json, query } => parse(&query, features, json),
        Command::Test { baseline, verbose, files } => test(&files, baseline.as_deref(), verbose),
    }
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
