//! `Display` for the syntax tree: prints valid PromQL that parses back to the same tree.
//!
//! The printer is faithful rather than clever: parentheses are printed where the tree
//! has [`ParenExpr`] nodes and nowhere else, so the tree decides the grouping.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::*;
use crate::lexer::{is_label_name, is_reserved_word};

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        crate::parser::grow_stack(|| self.fmt_inner(f))
    }
}

impl Expr {
    fn fmt_inner(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Aggregate(e) => e.fmt(f),
            Expr::Binary(e) => e.fmt(f),
            Expr::Call(e) => e.fmt(f),
            Expr::MatrixSelector(e) => e.fmt(f),
            Expr::Number(e) => e.fmt(f),
            Expr::Paren(e) => write!(f, "({})", e.expr),
            Expr::String(e) => match &e.bytes {
                Some(bytes) => write_quoted_bytes(f, bytes),
                None => write_quoted(f, &e.value),
            },
            Expr::Subquery(e) => e.fmt(f),
            Expr::Unary(e) => e.fmt(f),
            Expr::VectorSelector(e) => e.fmt(f),
        }
    }
}

impl Display for NumberLiteral {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let v = self.value;
        let ms = (v.abs() * 1000.0).round();
        // Print as a duration only when that reads back as the same float.
        if self.duration && ms < 9.2e18 && ms / 1000.0 == v.abs() {
            if v.is_sign_negative() {
                f.write_char('-')?;
            }
            return write_duration_ms(f, ms as i64);
        }
        write_float(f, v)
    }
}

/// Prints a float so that the lexer reads back the same bits: `Inf`, `NaN`, plain
/// decimals for ordinary magnitudes, exponents for the rest.
pub(crate) fn write_float(f: &mut impl Write, v: f64) -> fmt::Result {
    if v.is_nan() {
        f.write_str("NaN")
    } else if v.is_infinite() {
        f.write_str(if v > 0.0 { "Inf" } else { "-Inf" })
    } else if v == 0.0 || (1e-4..1e15).contains(&v.abs()) {
        write!(f, "{v}")
    } else {
        write!(f, "{v:e}")
    }
}

/// Milliseconds as a Prometheus duration: `1h30m`, `500ms`, `0s`, `-5m`.
///
/// ```
/// assert_eq!(promql::format_duration(5_400_000), "1h30m");
/// assert_eq!(promql::format_duration(-300_000), "-5m");
/// ```
pub fn format_duration(ms: i64) -> String {
    let mut s = String::new();
    if ms < 0 {
        s.push('-');
    }
    let _ = write_duration_ms(&mut s, i64::try_from(ms.unsigned_abs()).unwrap_or(i64::MAX));
    s
}

/// Prints non-negative milliseconds as a Prometheus duration (`1h30m`, `0s`).
pub(crate) fn write_duration_ms(f: &mut impl Write, ms: i64) -> fmt::Result {
    if ms == 0 {
        return f.write_str("0s");
    }
    let mut rest = ms;
    for (unit, size) in crate::lexer::DURATION_UNITS {
        if rest >= size {
            write!(f, "{}{unit}", rest / size)?;
            rest %= size;
        }
    }
    Ok(())
}

/// Prints a string in double quotes with Go-compatible escapes.
pub(crate) fn write_quoted(f: &mut impl Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    write_escaped(f, s)?;
    f.write_char('"')
}

/// Like [`write_quoted`] for bytes that need not be UTF-8: stray bytes print as `\xNN`,
/// as Go's `%q` does.
pub fn write_quoted_bytes(f: &mut impl Write, bytes: &[u8]) -> fmt::Result {
    f.write_char('"')?;
    for chunk in bytes.utf8_chunks() {
        write_escaped(f, chunk.valid())?;
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    f.write_char('"')
}

fn write_escaped(f: &mut impl Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\u{7}' => f.write_str("\\a")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            '\u{b}' => f.write_str("\\v")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    Ok(())
}

fn write_label_name(f: &mut Formatter<'_>, name: &str) -> fmt::Result {
    // `inf` and `nan` are numbers to the lexer outside braces, so quote them in lists.
    let number_word = name.eq_ignore_ascii_case("inf") || name.eq_ignore_ascii_case("nan");
    if is_label_name(name) && !number_word {
        f.write_str(name)
    } else {
        write_quoted(f, name)
    }
}

fn write_label_list(f: &mut Formatter<'_>, labels: &[String]) -> fmt::Result {
    f.write_char('(')?;
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_label_name(f, l)?;
    }
    f.write_char(')')
}

fn write_matchers(f: &mut Formatter<'_>, quoted_name: Option<&str>, matchers: &[Matcher]) -> fmt::Result {
    f.write_char('{')?;
    let mut first = true;
    if let Some(name) = quoted_name {
        write_quoted(f, name)?;
        first = false;
    }
    for m in matchers {
        if !first {
            f.write_str(", ")?;
        }
        first = false;
        write_label_name(f, &m.name)?;
        f.write_str(m.op.as_str())?;
        write_quoted(f, &m.value)?;
    }
    f.write_char('}')
}

/// Whether a metric name can be written bare, outside braces.
fn is_bare_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !is_reserved_word(name)
}

fn write_selector_body(f: &mut Formatter<'_>, vs: &VectorSelector) -> fmt::Result {
    match &vs.name {
        Some(name) if is_bare_metric_name(name) => {
            f.write_str(name)?;
            if !vs.matchers.is_empty() {
                write_matchers(f, None, &vs.matchers)?;
            }
            Ok(())
        }
        Some(name) => write_matchers(f, Some(name), &vs.matchers),
        None => write_matchers(f, None, &vs.matchers),
    }
}

fn write_modifiers(
    f: &mut Formatter<'_>,
    offset: Option<&DurationExpr>,
    at: Option<AtModifier>,
    anchoring: Option<RangeAnchoring>,
) -> fmt::Result {
    match at {
        Some(AtModifier::Timestamp(ms)) => {
            f.write_str(" @ ")?;
            write_float(f, ms as f64 / 1000.0)?;
        }
        Some(AtModifier::Start) => f.write_str(" @ start()")?,
        Some(AtModifier::End) => f.write_str(" @ end()")?,
        None => {}
    }
    if let Some(o) = offset {
        write!(f, " offset {o}")?;
    }
    if let Some(a) = anchoring {
        write!(f, " {}", a.as_str())?;
    }
    Ok(())
}

impl Display for VectorSelector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_selector_body(f, self)?;
        write_modifiers(f, self.offset.as_ref(), self.at, self.anchoring)
    }
}

impl Display for MatrixSelector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let vs = &self.selector;
        write_selector_body(f, vs)?;
        write!(f, "[{}]", self.range)?;
        write_modifiers(f, vs.offset.as_ref(), vs.at, vs.anchoring)
    }
}

impl Display for SubqueryExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}:", self.expr, self.range)?;
        if let Some(step) = &self.step {
            write!(f, "{step}")?;
        }
        f.write_char(']')?;
        write_modifiers(f, self.offset.as_ref(), self.at, None)
    }
}

impl Display for DurationExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            DurationExpr::Number(n) => n.fmt(f),
            DurationExpr::Step { .. } => f.write_str("step()"),
            DurationExpr::Range { .. } => f.write_str("range()"),
            DurationExpr::Paren { expr, .. } => write!(f, "({expr})"),
            DurationExpr::Unary { op, expr, .. } => write!(f, "{}{expr}", unary_str(*op)),
            DurationExpr::Binary { op, lhs, rhs, .. } => write!(f, "{lhs} {} {rhs}", op.as_str()),
            DurationExpr::Call { func, args, .. } => write!(f, "{}({}, {})", func.as_str(), args[0], args[1]),
        }
    }
}

fn unary_str(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "-",
        UnaryOp::Pos => "+",
    }
}

impl Display for UnaryExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", unary_str(self.op), self.expr)
    }
}

impl Display for BinaryExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.lhs, self.op.as_str())?;
        if self.return_bool {
            f.write_str(" bool")?;
        }
        if let Some(m) = &self.matching {
            f.write_str(if m.on { " on" } else { " ignoring" })?;
            write_label_list(f, &m.labels)?;
            if let Some((side, include)) = &m.group {
                f.write_str(match side {
                    GroupSide::Left => " group_left",
                    GroupSide::Right => " group_right",
                })?;
                // Always print the list: `group_left (x)` would read `(x)` as the labels.
                write_label_list(f, include)?;
            }
        }
        if let Some(fill) = &self.fill {
            match (fill.left, fill.right) {
                (Some(l), Some(r)) if same_float(l, r) => {
                    f.write_str(" fill(")?;
                    write_float(f, l)?;
                    f.write_char(')')?;
                }
                (l, r) => {
                    if let Some(l) = l {
                        f.write_str(" fill_left(")?;
                        write_float(f, l)?;
                        f.write_char(')')?;
                    }
                    if let Some(r) = r {
                        f.write_str(" fill_right(")?;
                        write_float(f, r)?;
                        f.write_char(')')?;
                    }
                }
            }
        }
        write!(f, " {}", self.rhs)
    }
}

impl Display for AggregateExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        if let Some(g) = &self.grouping {
            f.write_str(if g.without { " without " } else { " by " })?;
            write_label_list(f, &g.labels)?;
            f.write_char(' ')?;
        }
        f.write_char('(')?;
        if let Some(p) = &self.param {
            write!(f, "{p}, ")?;
        }
        write!(f, "{})", self.expr)
    }
}

impl Display for Call {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.func.name)?;
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            a.fmt(f)?;
        }
        f.write_char(')')
    }
}
