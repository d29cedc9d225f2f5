//! `parse(print(e)) == e`: for generated trees (proptest) and for every corpus query.

use promql::ast::*;
use promql::parser::parse_syntax;
use promql::{functions::FUNCTIONS, Features};
use proptest::prelude::*;

use super::corpus::corpus_queries;

fn reparse(e: &Expr) -> Result<Expr, String> {
    let printed = e.to_string();
    let mut back = parse_syntax(&printed, Features::all()).map_err(|err| format!("{printed}\n{err:#}"))?;
    back.clear_spans();
    Ok(back)
}

#[test]
fn corpus_queries_round_trip() {
    let mut n = 0;
    for (file, line, q) in corpus_queries() {
        let mut e = parse_syntax(&q, Features::all()).unwrap();
        e.clear_spans();
        let back = reparse(&e)
            .unwrap_or_else(|err| panic!("{file}:{line}: {q}\nprinted form does not parse: {err}"));
        assert_eq!(back, e, "{file}:{line}: {q}\nprinted: {e}");
        n += 1;
    }
    println!("round-tripped {n} corpus queries");
}

// ---- generators of trees the parser can produce ----

const SPAN: Span = Span { start: 0, end: 0 };

fn number(value: f64) -> NumberLiteral {
    NumberLiteral { value, duration: false, span: SPAN }
}

fn paren(e: Expr) -> Expr {
    Expr::Paren(ParenExpr { expr: Box::new(e), span: SPAN })
}

fn arb_label() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "job", "le", "a_b", "on", "bool", "sum", "offset", "inf", "a.b", "ünï", "__name__",
    ])
    .prop_map(str::to_owned)
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["", "a", "x\"y", "back\\slash", "tab\tnew\nline", "é😀", "\u{7f}\u{1}"])
            .prop_map(str::to_owned),
        "[ -~]{0,8}",
        any::<String>(),
    ]
}

fn arb_metric_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "foo",
        "http_requests_total",
        "a:b:c",
        ":x",
        "sum",
        "offset",
        "by",
        "start",
        "anchored",
        "fill",
        "and",
    ])
    .prop_map(str::to_owned)
}

fn arb_matcher() -> impl Strategy<Value = Matcher> {
    let plain = (arb_label(), prop::sample::select(vec![MatchOp::Equal, MatchOp::NotEqual]), arb_string());
    let regex = (
        arb_label(),
        prop::sample::select(vec![MatchOp::Regex, MatchOp::NotRegex]),
        prop::sample::select(vec![".*", "a|b", "foo.+", "[0-9]+", "\\d"]).prop_map(str::to_owned),
    );
    prop_oneof![plain, regex].prop_map(|(name, op, value)| Matcher { name, op, value, span: SPAN })
}

fn arb_positive_literal() -> impl Strategy<Value = NumberLiteral> {
    prop_oneof![
        (1i64..10_000_000_000).prop_map(|ms| NumberLiteral {
            value: ms as f64 / 1000.0,
            duration: true,
            span: SPAN
        }),
        (1u32..100_000).prop_map(|s| number(f64::from(s))),
        (1u32..1000).prop_map(|s| number(f64::from(s) / 8.0)),
    ]
}

fn arb_duration_atom() -> impl Strategy<Value = DurationExpr> {
    prop_oneof![
        4 => arb_positive_literal().prop_map(DurationExpr::Number),
        1 => Just(DurationExpr::Step { span: SPAN }),
        1 => Just(DurationExpr::Range { span: SPAN }),
        1 => (prop::sample::select(vec![DurationFunc::MinOf, DurationFunc::MaxOf]), arb_positive_literal(), arb_positive_literal())
            .prop_map(|(func, a, b)| DurationExpr::Call {
                func,
                args: Box::new([DurationExpr::Number(a), DurationExpr::Number(b)]),
                span: SPAN,
            }),
    ]
}

/// A range or step: an atom, or arithmetic over two atoms.
fn arb_range() -> impl Strategy<Value = DurationExpr> {
    prop_oneof![
        3 => arb_duration_atom(),
        1 => (arb_duration_atom(), prop::sample::select(vec![BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul]), arb_duration_atom())
            .prop_map(|(lhs, op, rhs)| DurationExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span: SPAN }),
    ]
}

/// An offset: a signed atom, or a parenthesised expression.
fn arb_offset() -> impl Strategy<Value = DurationExpr> {
    prop_oneof![
        3 => (arb_positive_literal(), any::<bool>()).prop_map(|(mut n, neg)| {
            if neg {
                n.value = -n.value;
            }
            DurationExpr::Number(n)
        }),
        1 => arb_duration_atom().prop_filter("literal", |d| !matches!(d, DurationExpr::Number(_))).prop_map(|d| {
            DurationExpr::Unary { op: UnaryOp::Neg, expr: Box::new(d), span: SPAN }
        }),
        1 => arb_range().prop_map(|d| DurationExpr::Paren { expr: Box::new(d), span: SPAN }),
    ]
}

fn arb_at() -> impl Strategy<Value = AtModifier> {
    prop_oneof![
        (-10_000_000i64..10_000_000).prop_map(AtModifier::Timestamp),
        Just(AtModifier::Start),
        Just(AtModifier::End),
    ]
}

fn arb_selector() -> impl Strategy<Value = VectorSelector> {
    (
        prop::option::of(arb_metric_name()),
        prop::collection::vec(arb_matcher(), 0..3),
        prop::option::of(arb_offset()),
        prop::option::of(arb_at()),
        prop::option::of(prop::sample::select(vec![RangeAnchoring::Anchored, RangeAnchoring::Smoothed])),
    )
        .prop_map(|(name, mut matchers, offset, at, anchoring)| {
            if name.is_none() && matchers.is_empty() {
                matchers.push(Matcher {
                    name: "job".into(),
                    op: MatchOp::Equal,
                    value: "x".into(),
                    span: SPAN,
                });
            }
            VectorSelector { name, matchers, offset, at, anchoring, span: SPAN }
        })
}

fn arb_leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        prop_oneof![
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            Just(-0.0),
            -1e6..1e6f64,
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ]
        .prop_map(|v| Expr::Number(number(v))),
        arb_positive_literal().prop_map(Expr::Number),
        arb_string().prop_map(|value| Expr::String(StringLiteral { value, bytes: None, span: SPAN })),
        arb_selector().prop_map(Expr::VectorSelector),
        (arb_selector(), arb_range()).prop_map(|(selector, range)| {
            Expr::MatrixSelector(MatrixSelector { selector, range, span: SPAN })
        }),
    ]
}

fn is_negative_number(e: &Expr) -> bool {
    matches!(e, Expr::Number(n) if n.value.is_sign_negative() || n.value.is_nan())
}

/// Wraps `e` in parentheses where the grammar would otherwise group it differently.
fn binary(
    op: BinaryOp,
    lhs: Expr,
    rhs: Expr,
    modifiers: (bool, Option<VectorMatching>, Option<FillModifier>),
) -> Expr {
    let prec = op.precedence();
    let lhs = match &lhs {
        Expr::Binary(b)
            if b.op.precedence() < prec || (b.op.precedence() == prec && op.is_right_associative()) =>
        {
            paren(lhs)
        }
        Expr::Unary(_) if op == BinaryOp::Pow => paren(lhs),
        _ if op == BinaryOp::Pow && is_negative_number(&lhs) => paren(lhs),
        _ => lhs,
    };
    let rhs = match &rhs {
        Expr::Binary(b)
            if b.op.precedence() < prec || (b.op.precedence() == prec && !op.is_right_associative()) =>
        {
            paren(rhs)
        }
        _ => rhs,
    };
    let (return_bool, matching, fill) = modifiers;
    Expr::Binary(BinaryExpr {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool,
        matching,
        fill,
        span: SPAN,
    })
}

fn unary(op: UnaryOp, e: Expr) -> Expr {
    let e = match &e {
        Expr::Number(_) => paren(e),
        Expr::Binary(b) if b.op != BinaryOp::Pow => paren(e),
        _ => e,
    };
    Expr::Unary(UnaryExpr { op, expr: Box::new(e), span: SPAN })
}

fn subquery(
    e: Expr,
    range: DurationExpr,
    step: Option<DurationExpr>,
    offset: Option<DurationExpr>,
    at: Option<AtModifier>,
) -> Expr {
    let e = match &e {
        Expr::Binary(_) | Expr::Unary(_) => paren(e),
        _ if is_negative_number(&e) => paren(e),
        _ => e,
    };
    Expr::Subquery(SubqueryExpr { expr: Box::new(e), range, step, offset, at, span: SPAN })
}

fn arb_binary_op() -> impl Strategy<Value = BinaryOp> {
    use BinaryOp::*;
    prop::sample::select(vec![
        Add, Sub, Mul, Div, Mod, Pow, Atan2, Eql, Neq, Gtr, Lss, Gte, Lte, And, Or, Unless, TrimUpper,
        TrimLower,
    ])
}

fn arb_modifiers() -> impl Strategy<Value = (bool, Option<VectorMatching>, Option<FillModifier>)> {
    let labels = || prop::collection::vec(arb_label(), 0..3);
    let group = prop::option::of((prop::sample::select(vec![GroupSide::Left, GroupSide::Right]), labels()));
    let matching =
        prop::option::of((any::<bool>(), labels(), group).prop_map(|(on, labels, group)| VectorMatching {
            on,
            labels,
            group,
        }));
    let value = prop_oneof![Just(0.0), Just(f64::NAN), Just(f64::NEG_INFINITY), -100.0..100.0f64];
    let fill = prop::option::of(prop_oneof![
        value.clone().prop_map(|v| FillModifier { left: Some(v), right: Some(v) }),
        (prop::option::of(value.clone()), prop::option::of(value))
            .prop_map(|(left, right)| FillModifier { left, right }),
    ])
    .prop_map(|f| f.filter(|f| f.left.is_some() || f.right.is_some()));
    (any::<bool>(), matching, fill)
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    arb_leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(paren),
            (prop::sample::select(vec![UnaryOp::Neg, UnaryOp::Pos]), inner.clone())
                .prop_map(|(op, e)| unary(op, e)),
            (arb_binary_op(), inner.clone(), inner.clone(), arb_modifiers())
                .prop_map(|(op, l, r, m)| binary(op, l, r, m)),
            (
                prop::sample::select(AggregateOp::ALL.to_vec()),
                inner.clone(),
                inner.clone(),
                prop::option::of((any::<bool>(), prop::collection::vec(arb_label(), 0..3))),
            )
                .prop_map(|(op, param, expr, grouping)| Expr::Aggregate(AggregateExpr {
                    op,
                    param: op.param_type().map(|_| Box::new(param)),
                    expr: Box::new(expr),
                    grouping: grouping.map(|(without, labels)| Grouping { without, labels }),
                    span: SPAN,
                })),
            (
                prop::sample::select(FUNCTIONS.iter().collect::<Vec<_>>()),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(func, args)| Expr::Call(Call { func, args, span: SPAN })),
            (
                inner,
                arb_range(),
                prop::option::of(arb_range()),
                prop::option::of(arb_offset()),
                prop::option::of(arb_at())
            )
                .prop_map(|(e, range, step, offset, at)| subquery(e, range, step, offset, at)),
        ]
    })
}

#[test]
fn generated_trees_round_trip() {
    // Composed strategies use deep stacks in unoptimised builds: give them room.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
                cases: 2000,
                ..ProptestConfig::default()
            });
            let result = runner.run(&arb_expr(), |e| {
                let back = reparse(&e).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&back, &e, "printed: {}", e);
                Ok(())
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
