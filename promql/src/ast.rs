//! The PromQL syntax tree.
//!
//! The tree records what was written, with a byte [`Span`] on every node; it
//! makes no claim that the expression is well typed. [`crate::check`] decides
//! that. `Display` prints valid PromQL back: for any tree the parser produces,
//! parsing the printed text gives the same tree (spans aside).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::functions::Function;

/// A half-open byte range `start..end` into the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Span {
    /// Offset of the first byte.
    pub start: u32,
    /// Offset one past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Self {
        // Queries longer than 4 GiB are rejected before parsing, so this cannot truncate.
        Span { start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    /// The span as a `usize` range, for slicing the query.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// The four PromQL value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A single float.
    Scalar,
    /// An instant vector: one sample per series.
    Vector,
    /// A range vector: a window of samples per series.
    Matrix,
    /// A string.
    String,
}

impl ValueType {
    /// The name Prometheus uses in messages (`"range vector"`, …).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::String => "string",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A PromQL expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Expr {
    /// `sum by (job) (x)`, `topk(3, x)`.
    Aggregate(AggregateExpr),
    /// `a + on(x) b`.
    Binary(BinaryExpr),
    /// `rate(x[5m])`.
    Call(Call),
    /// `x[5m]`.
    MatrixSelector(MatrixSelector),
    /// `1`, `0x1f`, `Inf`, `5m` used as a number.
    Number(NumberLiteral),
    /// `(x)`.
    Paren(ParenExpr),
    /// `"text"`.
    String(StringLiteral),
    /// `x[30m:1m]`.
    Subquery(SubqueryExpr),
    /// `-x`.
    Unary(UnaryExpr),
    /// `x{job="a"}`.
    VectorSelector(VectorSelector),
}

impl Expr {
    /// The bytes of the query this expression was parsed from.
    pub fn span(&self) -> Span {
        match self {
            Expr::Aggregate(e) => e.span,
            Expr::Binary(e) => e.span,
            Expr::Call(e) => e.span,
            Expr::MatrixSelector(e) => e.span,
            Expr::Number(e) => e.span,
            Expr::Paren(e) => e.span,
            Expr::String(e) => e.span,
            Expr::Subquery(e) => e.span,
            Expr::Unary(e) => e.span,
            Expr::VectorSelector(e) => e.span,
        }
    }

    /// Strips any number of enclosing parentheses.
    pub fn unparen(&self) -> &Expr {
        let mut e = self;
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        e
    }

    /// The expressions directly inside this one, in query order (an aggregation's
    /// parameter before its argument). A range selector's selector is not an
    /// expression of its own.
    ///
    /// ```
    /// let e = promql::parse("topk(3, rate(x[5m]) * 2)").unwrap();
    /// assert_eq!(e.children().count(), 2);
    /// ```
    pub fn children(&self) -> impl Iterator<Item = &Expr> {
        let none: &[Expr] = &[];
        let (first, second, rest): (Option<&Expr>, Option<&Expr>, &[Expr]) = match self {
            Expr::Aggregate(a) => (a.param.as_deref(), Some(&a.expr), none),
            Expr::Binary(b) => (Some(&b.lhs), Some(&b.rhs), none),
            Expr::Call(c) => (None, None, &c.args),
            Expr::Paren(p) => (Some(&p.expr), None, none),
            Expr::Subquery(s) => (Some(&s.expr), None, none),
            Expr::Unary(u) => (Some(&u.expr), None, none),
            Expr::MatrixSelector(_) | Expr::Number(_) | Expr::String(_) | Expr::VectorSelector(_) => {
                (None, None, none)
            }
        };
        first.into_iter().chain(second).chain(rest)
    }

    /// Sets every span in the tree to the empty default, so that trees parsed
    /// from differently formatted text compare equal.
    pub fn clear_spans(&mut self) {
        let mut stack: Vec<&mut Expr> = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Aggregate(a) => {
                    a.span = Span::default();
                    if let Some(p) = a.param.as_deref_mut() {
                        stack.push(p);
                    }
                    stack.push(&mut a.expr);
                }
                Expr::Binary(b) => {
                    b.span = Span::default();
                    stack.push(&mut b.lhs);
                    stack.push(&mut b.rhs);
                }
                Expr::Call(c) => {
                    c.span = Span::default();
                    stack.extend(c.args.iter_mut());
                }
                Expr::MatrixSelector(m) => {
                    m.span = Span::default();
                    m.selector.clear_spans();
                    m.range.clear_spans();
                }
                Expr::Number(n) => n.span = Span::default(),
                Expr::Paren(p) => {
                    p.span = Span::default();
                    stack.push(&mut p.expr);
                }
                Expr::String(s) => s.span = Span::default(),
                Expr::Subquery(s) => {
                    s.span = Span::default();
                    s.range.clear_spans();
                    if let Some(step) = &mut s.step {
                        step.clear_spans();
                    }
                    if let Some(o) = &mut s.offset {
                        o.clear_spans();
                    }
                    stack.push(&mut s.expr);
                }
                Expr::Unary(u) => {
                    u.span = Span::default();
                    stack.push(&mut u.expr);
                }
                Expr::VectorSelector(v) => v.clear_spans(),
            }
        }
    }
}

/// A number literal. Unary minus on a literal is folded into it, as Prometheus does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NumberLiteral {
    /// The value; durations are in seconds.
    pub value: f64,
    /// Written as a duration (`5m`): printed back as one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duration: bool,
    /// Where it was written.
    pub span: Span,
}

impl PartialEq for NumberLiteral {
    fn eq(&self, other: &Self) -> bool {
        same_float(self.value, other.value) && self.duration == other.duration && self.span == other.span
    }
}

/// Equality that treats every NaN as equal and tells `0` from `-0`, for tree comparison.
pub(crate) fn same_float(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A string literal, unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringLiteral {
    /// The value after unescaping. If escapes produced bytes that are not UTF-8
    /// (`"\xff"`, which Go allows), this is the lossy form and `bytes` holds the truth.
    pub value: String,
    /// The exact bytes, only when they are not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
    /// Where it was written, quotes included.
    pub span: Span,
}

/// `(expr)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParenExpr {
    /// The enclosed expression.
    pub expr: Box<Expr>,
    /// Where it was written, parentheses included.
    pub span: Span,
}

/// Unary `-` or `+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `+x`
    Pos,
}

/// `-expr` or `+expr` (on anything but a number literal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnaryExpr {
    /// The operator.
    pub op: UnaryOp,
    /// The operand.
    pub expr: Box<Expr>,
    /// Where it was written.
    pub span: Span,
}

/// A label matcher operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`
    #[serde(rename = "=")]
    Equal,
    /// `!=`
    #[serde(rename = "!=")]
    NotEqual,
    /// `=~`
    #[serde(rename = "=~")]
    Regex,
    /// `!~`
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// `name="value"` inside a selector's braces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    /// The label name (unquoted).
    pub name: String,
    /// The operator.
    pub op: MatchOp,
    /// The value (unescaped). For regex operators, the pattern as written.
    pub value: String,
    /// Where it was written.
    pub span: Span,
}

/// The `@` modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtModifier {
    /// `@ 1700000000.123`, in milliseconds since the epoch.
    Timestamp(i64),
    /// `@ start()`
    Start,
    /// `@ end()`
    End,
}

/// How a range selector treats the window's edges (`promql-extended-range-selectors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeAnchoring {
    /// `x[5m] anchored`
    Anchored,
    /// `x[5m] smoothed`
    Smoothed,
}

impl RangeAnchoring {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeAnchoring::Anchored => "anchored",
            RangeAnchoring::Smoothed => "smoothed",
        }
    }
}

/// An instant vector selector: `name{matchers} offset d @ t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorSelector {
    /// The metric name, written bare (`foo{…}`) or as a lone quoted string in the braces
    /// (`{"foo.bar", …}`). A `__name__` matcher is kept among `matchers` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The matchers in the braces, in written order.
    pub matchers: Vec<Matcher>,
    /// `offset` (negative allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<DurationExpr>,
    /// `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<AtModifier>,
    /// `anchored` / `smoothed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchoring: Option<RangeAnchoring>,
    /// Where it was written, modifiers included.
    pub span: Span,
}

impl VectorSelector {
    fn clear_spans(&mut self) {
        self.span = Span::default();
        for m in &mut self.matchers {
            m.span = Span::default();
        }
        if let Some(o) = &mut self.offset {
            o.clear_spans();
        }
    }
}

/// A range vector selector: `selector[range]`. Its `offset`, `@` and anchoring live on
/// the inner selector, but are written after the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixSelector {
    /// The selector.
    pub selector: VectorSelector,
    /// The window length.
    pub range: DurationExpr,
    /// Where it was written, modifiers included.
    pub span: Span,
}

/// `expr[range:step] offset d @ t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubqueryExpr {
    /// The inner expression.
    pub expr: Box<Expr>,
    /// The window length.
    pub range: DurationExpr,
    /// The resolution; `None` for `[30m:]` (the default evaluation interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<DurationExpr>,
    /// `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<DurationExpr>,
    /// `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<AtModifier>,
    /// Where it was written, modifiers included.
    pub span: Span,
}

/// A duration: a literal, or with `promql-duration-expr`, arithmetic over literals,
/// `step()`, `range()`, `min_of` and `max_of`. Values are in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DurationExpr {
    /// `5m`, `300`, `1.5`.
    Number(NumberLiteral),
    /// `step()`: the query's step (0 for an instant query).
    Step {
        /// Where it was written.
        span: Span,
    },
    /// `range()`: the query's end minus its start.
    Range {
        /// Where it was written.
        span: Span,
    },
    /// `(d)`.
    Paren {
        /// The enclosed duration.
        expr: Box<DurationExpr>,
        /// Where it was written.
        span: Span,
    },
    /// `-d`, `+d`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<DurationExpr>,
        /// Where it was written.
        span: Span,
    },
    /// `a + b`, with `+ - * / % ^`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<DurationExpr>,
        /// Right operand.
        rhs: Box<DurationExpr>,
        /// Where it was written.
        span: Span,
    },
    /// `min_of(a, b)` or `max_of(a, b)`.
    Call {
        /// Which.
        func: DurationFunc,
        /// The two arguments.
        args: Box<[DurationExpr; 2]>,
        /// Where it was written.
        span: Span,
    },
}

/// The two-argument duration functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurationFunc {
    /// `min_of`
    MinOf,
    /// `max_of`
    MaxOf,
}

impl DurationFunc {
    /// The function name.
    pub fn as_str(self) -> &'static str {
        match self {
            DurationFunc::MinOf => "min_of",
            DurationFunc::MaxOf => "max_of",
        }
    }
}

impl DurationExpr {
    /// Where it was written.
    pub fn span(&self) -> Span {
        match self {
            DurationExpr::Number(n) => n.span,
            DurationExpr::Step { span }
            | DurationExpr::Range { span }
            | DurationExpr::Paren { span, .. }
            | DurationExpr::Unary { span, .. }
            | DurationExpr::Binary { span, .. }
            | DurationExpr::Call { span, .. } => *span,
        }
    }

    /// The value in seconds when it is a plain literal (no arithmetic, no `step()`).
    pub fn literal_seconds(&self) -> Option<f64> {
        match self {
            DurationExpr::Number(n) => Some(n.value),
            _ => None,
        }
    }

    fn clear_spans(&mut self) {
        match self {
            DurationExpr::Number(n) => n.span = Span::default(),
            DurationExpr::Step { span } | DurationExpr::Range { span } => *span = Span::default(),
            DurationExpr::Paren { expr, span } | DurationExpr::Unary { expr, span, .. } => {
                *span = Span::default();
                expr.clear_spans();
            }
            DurationExpr::Binary { lhs, rhs, span, .. } => {
                *span = Span::default();
                lhs.clear_spans();
                rhs.clear_spans();
            }
            DurationExpr::Call { args, span, .. } => {
                *span = Span::default();
                args[0].clear_spans();
                args[1].clear_spans();
            }
        }
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `atan2`
    Atan2,
    /// `==`
    Eql,
    /// `!=`
    Neq,
    /// `>`
    Gtr,
    /// `<`
    Lss,
    /// `>=`
    Gte,
    /// `<=`
    Lte,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
    /// `</`: trims native histogram buckets above a bound.
    TrimUpper,
    /// `>/`: trims native histogram buckets below a bound.
    TrimLower,
}

impl BinaryOp {
    /// The operator as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Atan2 => "atan2",
            BinaryOp::Eql => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::Gtr => ">",
            BinaryOp::Lss => "<",
            BinaryOp::Gte => ">=",
            BinaryOp::Lte => "<=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
            BinaryOp::TrimUpper => "</",
            BinaryOp::TrimLower => ">/",
        }
    }

    /// Binding strength, 1 (`or`) to 6 (`^`).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And | BinaryOp::Unless => 2,
            BinaryOp::Eql
            | BinaryOp::Neq
            | BinaryOp::Gtr
            | BinaryOp::Lss
            | BinaryOp::Gte
            | BinaryOp::Lte
            | BinaryOp::TrimUpper
            | BinaryOp::TrimLower => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Atan2 => 5,
            BinaryOp::Pow => 6,
        }
    }

    /// Only `^` groups to the right.
    pub fn is_right_associative(self) -> bool {
        self == BinaryOp::Pow
    }

    /// `== != > < >= <=`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eql | BinaryOp::Neq | BinaryOp::Gtr | BinaryOp::Lss | BinaryOp::Gte | BinaryOp::Lte
        )
    }

    /// `and or unless`.
    pub fn is_set_operator(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }
}

/// Which side of a vector match is the "one" side's partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupSide {
    /// `group_left`: many series on the left match one on the right.
    Left,
    /// `group_right`: one on the left matches many on the right.
    Right,
}

/// `on(…)`/`ignoring(…)` with an optional `group_left(…)`/`group_right(…)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorMatching {
    /// `on` (true) or `ignoring` (false).
    pub on: bool,
    /// The listed labels.
    pub labels: Vec<String>,
    /// The grouping modifier and its extra labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<(GroupSide, Vec<String>)>,
}

/// `fill(v)`, `fill_left(v)`, `fill_right(v)` (`promql-binop-fill-modifiers`): the value
/// used for a side that has no match.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FillModifier {
    /// Value for a missing left-hand side.
    pub left: Option<f64>,
    /// Value for a missing right-hand side.
    pub right: Option<f64>,
}

impl PartialEq for FillModifier {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => same_float(a, b),
            (None, None) => true,
            _ => false,
        };
        same(self.left, other.left) && same(self.right, other.right)
    }
}

/// `lhs op rhs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryExpr {
    /// The operator.
    pub op: BinaryOp,
    /// Left operand.
    pub lhs: Box<Expr>,
    /// Right operand.
    pub rhs: Box<Expr>,
    /// The `bool` modifier.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_bool: bool,
    /// `on`/`ignoring` and grouping, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<VectorMatching>,
    /// Fill modifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<FillModifier>,
    /// Where it was written.
    pub span: Span,
}

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `group`
    Group,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk`
    Topk,
    /// `bottomk`
    Bottomk,
    /// `quantile`
    Quantile,
    /// `count_values`
    CountValues,
    /// `limitk` (experimental)
    Limitk,
    /// `limit_ratio` (experimental)
    LimitRatio,
}

impl AggregateOp {
    /// Every aggregation, for lookups.
    pub const ALL: [AggregateOp; 14] = [
        AggregateOp::Sum,
        AggregateOp::Avg,
        AggregateOp::Count,
        AggregateOp::Min,
        AggregateOp::Max,
        AggregateOp::Group,
        AggregateOp::Stddev,
        AggregateOp::Stdvar,
        AggregateOp::Topk,
        AggregateOp::Bottomk,
        AggregateOp::Quantile,
        AggregateOp::CountValues,
        AggregateOp::Limitk,
        AggregateOp::LimitRatio,
    ];

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateOp::Sum => "sum",
            AggregateOp::Avg => "avg",
            AggregateOp::Count => "count",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Group => "group",
            AggregateOp::Stddev => "stddev",
            AggregateOp::Stdvar => "stdvar",
            AggregateOp::Topk => "topk",
            AggregateOp::Bottomk => "bottomk",
            AggregateOp::Quantile => "quantile",
            AggregateOp::CountValues => "count_values",
            AggregateOp::Limitk => "limitk",
            AggregateOp::LimitRatio => "limit_ratio",
        }
    }

    /// Looks up a keyword, ignoring ASCII case as Prometheus' lexer does.
    pub fn from_keyword(word: &str) -> Option<AggregateOp> {
        AggregateOp::ALL.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    /// The type of the leading parameter, for those that take one.
    pub fn param_type(self) -> Option<ValueType> {
        match self {
            AggregateOp::Topk
            | AggregateOp::Bottomk
            | AggregateOp::Quantile
            | AggregateOp::Limitk
            | AggregateOp::LimitRatio => Some(ValueType::Scalar),
            AggregateOp::CountValues => Some(ValueType::String),
            _ => None,
        }
    }

    /// Needs `promql-experimental-functions`.
    pub fn is_experimental(self) -> bool {
        matches!(self, AggregateOp::Limitk | AggregateOp::LimitRatio)
    }
}

/// `by (…)` or `without (…)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grouping {
    /// `without` (true) or `by` (false).
    pub without: bool,
    /// The listed labels.
    pub labels: Vec<String>,
}

/// `op [by|without (labels)] ([param,] expr)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateExpr {
    /// The operator.
    pub op: AggregateOp,
    /// The parameter of `topk`, `quantile`, `count_values`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Box<Expr>>,
    /// The aggregated expression.
    pub expr: Box<Expr>,
    /// The grouping clause, as written (before or after the arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouping: Option<Grouping>,
    /// Where it was written.
    pub span: Span,
}

/// A function call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The function, from the function table.
    #[serde(with = "function_by_name")]
    pub func: &'static Function,
    /// The arguments.
    pub args: Vec<Expr>,
    /// Where it was written.
    pub span: Span,
}

mod function_by_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::functions::{self, Function};

    pub fn serialize<S: Serializer>(f: &&'static Function, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static Function, D::Error> {
        let name = String::deserialize(d)?;
        functions::function(&name).ok_or_else(|| D::Error::custom(format!("unknown function {name:?}")))
    }
}
