//! `explain`: how a query is structured and which samples it will read.

use std::fmt::Write as _;

use promql::ast::{AggregateExpr, BinaryExpr, SubqueryExpr};
use promql::eval::Engine;
use promql::{Expr, Features};

/// The checked tree of `query` with each node's type, and the selections (selector and
/// absolute window) evaluating it over `start..=end` every `step` (0: instant) makes.
pub fn explain(query: &str, features: Features, start: i64, end: i64, step: i64) -> anyhow::Result<String> {
    let expr = promql::parse_with(query, features)?;
    let mut nodes = Vec::new();
    outline(&expr, 0, &mut nodes)?;
    let plan = Engine::default().plan(&expr, start, end, step)?;

    let mut out = String::new();
    let root_type = nodes.first().map_or("", |(_, _, t)| *t);
    // Writing to a String cannot fail.
    let _ = writeln!(out, "query:  {expr}");
    let _ = writeln!(out, "type:   {root_type}");
    if step == 0 {
        let _ = writeln!(out, "eval:   instant query at {}", format_time(start));
    } else {
        let _ = writeln!(
            out,
            "eval:   range query from {} to {}, step {}",
            format_time(start),
            format_time(end),
            promql::format_duration(step)
        );
    }
    out.push_str("\ntree:\n");
    let width = nodes.iter().map(|(depth, desc, _)| depth * 2 + desc.chars().count()).max().unwrap_or(0);
    for (depth, desc, ty) in &nodes {
        let indented = format!("{:indent$}{desc}", "", indent = depth * 2);
        let _ = writeln!(out, "  {indented:<width$} {ty}");
    }
    out.push_str("\nselections:\n");
    if plan.selections.is_empty() {
        out.push_str("  none: the query reads no series\n");
    }
    for s in &plan.selections {
        let _ = writeln!(
            out,
            "  {}\n    {} .. {} ({})",
            s.selector(),
            format_time(s.start),
            format_time(s.end),
            promql::format_duration(s.end - s.start)
        );
    }
    Ok(out)
}

/// Appends `(depth, description, type)` for `expr` and its children, depth first.
fn outline(expr: &Expr, depth: usize, out: &mut Vec<(usize, String, &'static str)>) -> anyhow::Result<()> {
    let ty = promql::check::check(expr)?.name();
    let children: Vec<&Expr> = match expr {
        Expr::Aggregate(a) => {
            out.push((depth, describe_aggregate(a), ty));
            a.param.iter().map(|p| &**p).chain([&*a.expr]).collect()
        }
        Expr::Binary(b) => {
            out.push((depth, describe_binary(b), ty));
            vec![&*b.lhs, &*b.rhs]
        }
        Expr::Call(c) => {
            out.push((depth, format!("function {}", c.func.name), ty));
            c.args.iter().collect()
        }
        Expr::MatrixSelector(m) => {
            out.push((depth, format!("range selector {m}"), ty));
            vec![]
        }
        Expr::Number(_) => {
            out.push((depth, format!("number {expr}"), ty));
            vec![]
        }
        Expr::Paren(p) => {
            out.push((depth, "parentheses".into(), ty));
            vec![&*p.expr]
        }
        Expr::String(_) => {
            out.push((depth, format!("string {expr}"), ty));
            vec![]
        }
        Expr::Subquery(s) => {
            out.push((depth, describe_subquery(s), ty));
            vec![&*s.expr]
        }
        Expr::Unary(u) => {
            let op = match u.op {
                promql::ast::UnaryOp::Neg => "-",
                promql::ast::UnaryOp::Pos => "+",
            };
            out.push((depth, format!("unary {op}"), ty));
            vec![&*u.expr]
        }
        Expr::VectorSelector(v) => {
            out.push((depth, format!("selector {v}"), ty));
            vec![]
        }
    };
    for child in children {
        outline(child, depth + 1, out)?;
    }
    Ok(())
}

/// `aggregation sum by (job)`.
fn describe_aggregate(a: &AggregateExpr) -> String {
    let mut desc = format!("aggregation {}", a.op.as_str());
    if let Some(g) = &a.grouping {
        let _ = write!(desc, " {} ({})", if g.without { "without" } else { "by" }, g.labels.join(", "));
    }
    desc
}

/// `binary / on (job) group_left (x)`: the printed expression without its operands.
fn describe_binary(b: &BinaryExpr) -> String {
    let full = b.to_string();
    let (lhs, rhs) = (b.lhs.to_string(), b.rhs.to_string());
    let op = full
        .strip_prefix(lhs.as_str())
        .and_then(|rest| rest.strip_suffix(rhs.as_str()))
        .map_or_else(|| b.op.as_str().to_owned(), |op| op.trim().to_owned());
    format!("binary {op}")
}

/// `subquery [30m:1m] offset 1h @ 1700000000`: the printed subquery without its inner
/// expression.
fn describe_subquery(s: &SubqueryExpr) -> String {
    let full = s.to_string();
    let inner = s.expr.to_string();
    let modifiers = full.strip_prefix(inner.as_str()).unwrap_or(&full);
    format!("subquery {modifiers}")
}

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z.
    const T: i64 = 1_700_000_000_000;

    #[test]
    fn subquery_with_offset_and_at() {
        let q =
            "max_over_time(rate(http_requests_total{job=\"api\"}[5m])[30m:1m] offset 1h @ 1700000000) > 2";
        // The evaluation time does not matter: `@` pins the subquery.
        let text = explain(q, Features::none(), T + 86_400_000, T + 86_400_000, 0).unwrap();
        // The subquery ends at 21:13:20 (the @ time less the offset) and spans 30m; rate
        // looks back 5m more.
        let expected = r#"query:  max_over_time(rate(http_requests_total{job="api"}[5m])[30m:1m] @ 1700000000 offset 1h) > 2
type:   instant vector
eval:   instant query at 2023-11-15T22:13:20.000Z

tree:
  binary >                                                  instant vector
    function max_over_time                                  instant vector
      subquery [30m:1m] @ 1700000000 offset 1h              range vector
        function rate                                       instant vector
          range selector http_requests_total{job="api"}[5m] range vector
    number 2                                                scalar

selections:
  {__name__="http_requests_total",job="api"}
    2023-11-14T20:38:20.000Z .. 2023-11-14T21:13:20.000Z (35m)
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn range_query_aggregation_and_selector_offset() {
        let q = "sum by (job) (rate(x[5m] offset 10m)) / on (job) group_left count(up)";
        let text = explain(q, Features::none(), T, T + 600_000, 60_000).unwrap();
        // x: 5m before the first step less 10m, to the last step less 10m; up: the 5m
        // lookback before the first step, to the last.
        let expected = r#"query:  sum by (job) (rate(x[5m] offset 10m)) / on(job) group_left() count(up)
type:   instant vector
eval:   range query from 2023-11-14T22:13:20.000Z to 2023-11-14T22:23:20.000Z, step 1m

tree:
  binary / on(job) group_left()         instant vector
    aggregation sum by (job)            instant vector
      function rate                     instant vector
        range selector x[5m] offset 10m range vector
    aggregation count                   instant vector
      selector up                       instant vector

selections:
  {__name__="x"}
    2023-11-14T21:58:20.000Z .. 2023-11-14T22:13:20.000Z (15m)
  {__name__="up"}
    2023-11-14T22:08:20.000Z .. 2023-11-14T22:23:20.000Z (15m)
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn strings_scalars_and_no_selections() {
        let text = explain("-(1 + 2)", Features::none(), T, T, 0).unwrap();
        assert!(text.contains("  unary -"), "{text}");
        assert!(text.contains("    parentheses"), "{text}");
        assert!(text.contains("        number 1"), "{text}");
        assert!(text.contains("selections:\n  none: the query reads no series\n"), "{text}");
        let text = explain("\"hello\"", Features::none(), T, T, 0).unwrap();
        assert!(text.contains("type:   string\n"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("  string \"hello\"") && l.ends_with(" string")),
            "{text}"
        );
    }

    #[test]
    fn invalid_query_is_the_parse_error() {
        let err = explain("rate(x)", Features::none(), T, T, 0).unwrap_err();
        let parse = err.downcast_ref::<promql::ParseError>().unwrap();
        assert!(parse.to_string().contains("expected type range vector"), "{parse}");
    }

    #[test]
    fn durations() {
        assert_eq!(promql::format_duration(0), "0s");
        assert_eq!(promql::format_duration(5_400_000), "1h30m");
        assert_eq!(promql::format_duration(1_500), "1s500ms");
        assert_eq!(promql::format_duration(-60_000), "-1m");
    }
}
