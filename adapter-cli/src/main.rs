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
    }
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
