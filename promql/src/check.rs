//! Static checking: value types, function signatures and the rest of Prometheus'
//! static errors. The parser builds any well-formed tree; this pass decides whether it
//! means something, with Prometheus' messages.

use crate::ast::*;
use crate::error::{ErrorKind, ParseError};

/// Checks a tree and returns the type of its value.
///
/// Errors carry the span of the culprit but no query text; [`crate::parse`] attaches it.
///
/// ```
/// use promql::{check::check, parser::parse_syntax, Features, ValueType};
/// let e = parse_syntax("sum(rate(x[5m]))", Features::none()).unwrap();
/// assert_eq!(check(&e).unwrap(), ValueType::Vector);
/// let e = parse_syntax("rate(x)", Features::none()).unwrap();
/// assert_eq!(
///     check(&e).unwrap_err().message(),
///     r#"expected type range vector in call to function "rate", got instant vector"#
/// );
/// ```
pub fn check(expr: &Expr) -> Result<ValueType, ParseError> {
    Checker.expr(expr)
}

type CResult<T> = Result<T, ParseError>;

fn type_error<T>(msg: String, span: Span) -> CResult<T> {
    Err(ParseError::new(ErrorKind::Type(msg), span))
}

struct Checker;

impl Checker {
    fn expr(&self, e: &Expr) -> CResult<ValueType> {
        crate::parser::grow_stack(|| self.expr_inner(e))
    }

    fn expr_inner(&self, e: &Expr) -> CResult<ValueType> {
        match e {
            Expr::Number(_) => Ok(ValueType::Scalar),
            Expr::String(_) => Ok(ValueType::String),
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::VectorSelector(vs) => {
                self.selector(vs, false)?;
                Ok(ValueType::Vector)
            }
            Expr::MatrixSelector(ms) => {
                self.selector(&ms.selector, false)?;
                Ok(ValueType::Matrix)
            }
            Expr::Subquery(sq) => {
                let t = self.expr(&sq.expr)?;
                if t != ValueType::Vector {
                    return type_error(
                        format!(
                            "subquery is only allowed on instant vector, got {} instead",
                            go_type_name(t)
                        ),
                        sq.span,
                    );
                }
                Ok(ValueType::Matrix)
            }
            Expr::Unary(u) => {
                let t = self.expr(&u.expr)?;
                if !matches!(t, ValueType::Scalar | ValueType::Vector) {
                    return type_error(
                        format!("unary expression only allowed on expressions of type scalar or instant vector, got {:?}", t.name()),
                        u.span,
                    );
                }
                Ok(t)
            }
            Expr::Aggregate(a) => self.aggregate(a),
            Expr::Binary(b) => self.binary(b),
            Expr::Call(c) => self.call(c),
        }
    }

    fn selector(&self, vs: &VectorSelector, is_info_labels: bool) -> CResult<()> {
        if let Some(name) = &vs.name {
            if let Some(m) = vs.matchers.iter().find(|m| m.name == "__name__") {
                return type_error(
                    format!("metric name must not be set twice: {name:?} or {:?}", m.value),
                    vs.span,
                );
            }
            return Ok(());
        }
        if is_info_labels || vs.matchers.iter().any(|m| !matches_empty(m)) {
            return Ok(());
        }
        type_error("vector selector must contain at least one non-empty matcher".into(), vs.span)
    }

    fn aggregate(&self, a: &AggregateExpr) -> CResult<ValueType> {
        self.expect_type(&a.expr, ValueType::Vector, "aggregation expression", a.span)?;
        if let (Some(want), Some(param)) = (a.op.param_type(), &a.param) {
            self.expect_type(param, want, "aggregation parameter", a.span)?;
        }
        Ok(ValueType::Vector)
    }

    fn expect_type(&self, e: &Expr, want: ValueType, context: &str, span: Span) -> CResult<()> {
        let got = self.expr(e)?;
        if got != want {
            return type_error(format!("expected type {want} in {context}, got {got}"), span);
        }
        Ok(())
    }

    fn binary(&self, b: &BinaryExpr) -> CResult<ValueType> {
        let lt = self.expr(&b.lhs)?;
        let rt = self.expr(&b.rhs)?;
        let op_span = Span { start: b.lhs.span().end, end: b.rhs.span().start };
        if b.return_bool && !b.op.is_comparison() {
            return type_error("bool modifier can only be used on comparison operators".into(), op_span);
        }
        if b.op.is_comparison() && !b.return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar {
            return type_error("comparisons between scalars must use BOOL modifier".into(), op_span);
        }
        if let Some(VectorMatching { on: true, labels, group: Some((_, include)) }) = &b.matching {
            if let Some(l) = labels.iter().find(|l| include.contains(l)) {
                return type_error(
                    format!("label {l:?} must not occur in ON and GROUP clause at once"),
                    op_span,
                );
            }
        }
        for (t, side) in [(lt, &b.lhs), (rt, &b.rhs)] {
            if !matches!(t, ValueType::Scalar | ValueType::Vector) {
                return type_error(
                    "binary expression must contain only scalar and instant vector types".into(),
                    side.span(),
                );
            }
        }
        let both_vectors = lt == ValueType::Vector && rt == ValueType::Vector;
        if !both_vectors {
            if b.matching.as_ref().is_some_and(|m| !m.labels.is_empty()) {
                return type_error("vector matching only allowed between instant vectors".into(), b.span);
            }
            if b.fill.is_some() {
                return type_error(
                    "filling in missing series only allowed between instant vectors".into(),
                    b.span,
                );
            }
        } else if b.op.is_set_operator() {
            if b.matching.as_ref().is_some_and(|m| m.group.is_some()) {
                return type_error(format!("no grouping allowed for {:?} operation", b.op.as_str()), b.span);
            }
            if b.fill.is_some() {
                return type_error("filling in missing series not allowed for set operators".into(), b.span);
            }
        }
        if b.op.is_set_operator() && (lt == ValueType::Scalar || rt == ValueType::Scalar) {
            return type_error(
                format!("set operator {:?} not allowed in binary scalar expression", b.op.as_str()),
                b.span,
            );
        }
        Ok(if lt == ValueType::Scalar && rt == ValueType::Scalar {
            ValueType::Scalar
        } else {
            ValueType::Vector
        })
    }

    fn call(&self, c: &Call) -> CResult<ValueType> {
        let f = c.func;
        let (nargs, given) = (f.arg_types.len(), c.args.len());
        if f.variadic == 0 {
            if nargs != given {
                return type_error(
                    format!("expected {nargs} argument(s) in call to {:?}, got {given}", f.name),
                    c.span,
                );
            }
        } else {
            let min = nargs - 1;
            if given < min {
                return type_error(
                    format!("expected at least {min} argument(s) in call to {:?}, got {given}", f.name),
                    c.span,
                );
            }
            if let Ok(extra @ 1..) = usize::try_from(f.variadic) {
                if given > min + extra {
                    return type_error(
                        format!(
                            "expected at most {} argument(s) in call to {:?}, got {given}",
                            min + extra,
                            f.name
                        ),
                        c.span,
                    );
                }
            }
        }
        let mut info_labels = None;
        if f.name == "info" && given > 1 {
            let arg = &c.args[1];
            // The label selector may match everything: it selects info metrics, not data.
            let t = match arg {
                Expr::VectorSelector(_) => ValueType::Vector,
                _ => self.expr(arg)?,
            };
            if t != ValueType::Vector {
                return type_error(
                    format!("expected type instant vector in call to function \"info\", got {t}"),
                    c.span,
                );
            }
            match arg {
                Expr::VectorSelector(vs) if vs.name.is_some() => {
                    return type_error(
                        "expected label selectors only, got vector selector instead".into(),
                        arg.span(),
                    );
                }
                Expr::VectorSelector(vs) => info_labels = Some(vs),
                _ => return type_error("expected label selectors only".into(), arg.span()),
            }
        }
        for (i, arg) in c.args.iter().enumerate() {
            let want = match f.arg_types.get(i) {
                Some(&t) => t,
                None if f.variadic != 0 => f.arg_types[nargs - 1],
                None => break,
            };
            let got = match (i, info_labels) {
                (1, Some(vs)) => {
                    self.selector(vs, true)?;
                    ValueType::Vector
                }
                _ => self.expr(arg)?,
            };
            if got != want {
                return type_error(
                    format!("expected type {want} in call to function {:?}, got {got}", f.name),
                    arg.span(),
                );
            }
        }
        Ok(f.return_type)
    }
}

/// Prometheus' raw type names, used by a few messages (`matrix`, `vector`).
fn go_type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Scalar => "scalar",
        ValueType::Vector => "vector",
        ValueType::Matrix => "matrix",
        ValueType::String => "string",
    }
}

/// Whether a matcher accepts the empty string (and so series without the label).
pub(crate) fn matches_empty(m: &Matcher) -> bool {
    match m.op {
        MatchOp::Equal => m.value.is_empty(),
        MatchOp::NotEqual => !m.value.is_empty(),
        MatchOp::Regex | MatchOp::NotRegex => {
            let re = crate::storage::go_pattern(&m.value);
            // An invalid pattern was rejected by the parser; count it as non-empty.
            let matches = re.map(|re| re.is_match("")).unwrap_or(false);
            matches == (m.op == MatchOp::Regex)
        }
    }
}
