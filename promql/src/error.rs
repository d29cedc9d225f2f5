//! Parse and check errors, with positions that people can act on.

use std::fmt;

use crate::ast::Span;

/// What went wrong while parsing or checking a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A token that does not fit the grammar here, e.g.
    /// `unexpected "}" in label matching, expected string`.
    #[error("unexpected {found}{}{}", context.map(|c| format!(" in {c}")).unwrap_or_default(), expected.map(|e| format!(", expected {e}")).unwrap_or_default())]
    Unexpected {
        /// The offending token, described as Prometheus does (`identifier "foo"`, `<op:+>`).
        found: String,
        /// The construct being parsed (`label matching`, `aggregation`, …).
        context: Option<&'static str>,
        /// What would have fit.
        expected: Option<&'static str>,
    },
    /// A lexical error: an unterminated string, a bad escape, a malformed number, ….
    #[error("{0}")]
    Lexical(String),
    /// A well-formed construct that PromQL forbids, e.g.
    /// `ranges only allowed for vector selectors`.
    #[error("{0}")]
    Syntax(String),
    /// A type or static semantic error from [`crate::check`], e.g.
    /// `expected type range vector in call to function "rate", got instant vector`.
    #[error("{0}")]
    Type(String),
    /// A construct behind a feature flag that is off, e.g. `function "sort_by_label" is not enabled`.
    #[error("{0}")]
    FeatureDisabled(String),
    /// The expression nests deeper than the parser allows.
    #[error("expression nests too deeply (more than {0} levels)")]
    TooDeep(usize),
    /// The query is empty or only whitespace and comments.
    #[error("no expression found in input")]
    Empty,
}

/// An error at a position of a query: renders as `line:col: parse error: message`.
///
/// `{:#}` (alternate form) adds the query line and a caret under the culprit:
///
/// ```
/// let err = promql::parse("sum(rate(x[5m])) by (job").unwrap_err();
/// assert_eq!(err.to_string(), "1:25: parse error: unclosed left parenthesis");
/// let pretty = format!("{err:#}");
/// assert!(pretty.ends_with("sum(rate(x[5m])) by (job\n                        ^"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where, as byte offsets into `query`.
    pub span: Span,
    /// The query text (empty when the error came from checking a tree built by hand).
    pub query: String,
}

impl std::error::Error for ParseError {}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, span: Span) -> Self {
        ParseError { kind, span, query: String::new() }
    }

    /// Attaches the query text the span refers to.
    pub fn with_query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }

    /// 1-based line and column (in bytes, as Prometheus counts) of the error's start.
    pub fn line_col(&self) -> (usize, usize) {
        let pos = (self.span.start as usize).min(self.query.len());
        let before = &self.query.as_bytes()[..pos];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        (line, pos - line_start + 1)
    }

    /// The message without position.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    fn write_caret(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = (self.span.start as usize).min(self.query.len());
        let line_start = self.query[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.query[start..].find('\n').map_or(self.query.len(), |i| start + i);
        let line = &self.query[line_start..line_end];
        // Columns for the caret count characters (tabs kept) so it lines up in a terminal.
        let pad: String =
            self.query[line_start..start].chars().map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let end = (self.span.end as usize).clamp(start, line_end);
        let width = self.query[start..end].chars().count().max(1);
        write!(f, "\n{line}\n{pad}{}", "^".repeat(width))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{line}:{col}: parse error: {}", self.kind)?;
        if f.alternate() && !self.query.is_empty() {
            self.write_caret(f)?;
        }
        Ok(())
    }
}
