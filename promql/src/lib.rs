//! PromQL outside Prometheus: a parser and evaluator with Prometheus 3.x semantics,
//! built to be embedded in autoscalers, CI checks of recorded metrics and adapters.
//!
//! The pipeline is `parse` → [`check`] → plan → evaluate. This release provides the
//! first two: a complete parser with Prometheus' error messages and a static checker.
//!
//! ```
//! let expr = promql::parse(
//!     r#"sum(rate(istio_requests_total{destination_workload="podinfo",reporter="destination"}[1m]))"#,
//! )
//! .unwrap();
//! assert_eq!(
//!     expr.to_string(),
//!     r#"sum(rate(istio_requests_total{destination_workload="podinfo", reporter="destination"}[1m]))"#
//! );
//!
//! let err = promql::parse("rate(http_requests_total)").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"1:6: parse error: expected type range vector in call to function "rate", got instant vector"#
//! );
//! ```

pub mod api;
pub mod ast;
pub mod check;
mod error;
pub mod eval;
mod features;
pub mod functions;
mod labels;
mod lexer;
mod memo;
pub mod parser;
mod printer;
pub mod promqltest;
pub mod source;
pub mod storage;
pub mod value;

pub use ast::{Expr, Span, ValueType};
pub use error::{ErrorKind, ParseError};
pub use features::{Feature, Features, UnknownFeature};
pub use labels::{Label, Labels, METRIC_NAME};
pub use printer::format_duration;

/// Parses and checks a query with no feature flags enabled, like a Prometheus server
/// started without `--enable-feature`.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    parse_with(query, Features::none())
}

/// Parses and checks a query with the given features enabled.
///
/// ```
/// use promql::{parse_with, Features};
/// assert!(promql::parse("sort_by_label(x, \"job\")").is_err());
/// assert!(parse_with("sort_by_label(x, \"job\")", Features::all()).is_ok());
/// ```
pub fn parse_with(query: &str, features: Features) -> Result<Expr, ParseError> {
    parse_typed(query, features).map(|(expr, _)| expr)
}

/// [`parse_with`], and the query's type.
pub(crate) fn parse_typed(query: &str, features: Features) -> Result<(Expr, ValueType), ParseError> {
    let expr = parser::parse_syntax(query, features)?;
    let ty = check::check(&expr).map_err(|e| e.with_query(query))?;
    Ok((expr, ty))
}
