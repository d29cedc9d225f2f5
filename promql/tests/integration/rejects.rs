//! Inputs Prometheus rejects, with the message and the `line:col` it reports (one
//! message says more than Prometheus': where `holt_winters` went).

use promql::{parse, parse_with, Features};

/// `(query, expected "line:col: parse error: message")`, with no features enabled.
const REJECTS: &[(&str, &str)] = &[
    ("", "1:1: parse error: no expression found in input"),
    ("  # just a comment\n", "1:1: parse error: no expression found in input"),
    ("foo bar", "1:5: parse error: unexpected identifier \"bar\""),
    ("sum(foo", "1:8: parse error: unclosed left parenthesis"),
    ("foo)", "1:4: parse error: unexpected right parenthesis ')'"),
    ("foo[5m", "1:7: parse error: unclosed left bracket"),
    ("foo{a=\"b\"", "1:10: parse error: unexpected end of input inside braces"),
    ("foo{a}", "1:6: parse error: unexpected \"}\" in label matching, expected label matching operator"),
    ("foo{a=b}", "1:7: parse error: unexpected identifier \"b\" in label matching, expected string"),
    ("foo{a=\"b\" c=\"d\"}", "1:11: parse error: unexpected identifier \"c\" in label matching, expected \",\" or \"}\""),
    ("foo{a==\"b\"}", "1:6: parse error: unexpected <op:==> in label matching, expected label matching operator"),
    ("foo{a=~\"(\"}", "1:5: parse error: error parsing regexp: unclosed group: `(`"),
    // Go refuses a repetition of a repetition, and a matcher's pattern that closes the
    // group Prometheus wraps it in.
    ("foo{a=~\"a**\"}", "1:5: parse error: error parsing regexp: invalid nested repetition operator: `**`: `a**`"),
    ("foo{a=~\"5|)(\"}", "1:5: parse error: error parsing regexp: unopened group: `5|)(`"),
    ("\"unterminated", "1:1: parse error: unterminated quoted string"),
    ("'a\\qb'", "1:3: parse error: unknown escape sequence 'q'"),
    ("5x", "1:1: parse error: bad number or duration syntax: \"5x\""),
    ("1.5h", "1:1: parse error: bad number or duration syntax: \"1.5h\""),
    ("foo[30m1h]", "1:5: parse error: not a valid duration string: \"30m1h\""),
    ("$", "1:1: parse error: unexpected character: '$'"),
    ("foo{__name__=\"bar\"}", "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\""),
    ("{__name__=~\".*\"}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ("{job=\"\"}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ("rate(foo)", "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"),
    ("rate(foo[5m], 1)", "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2"),
    ("round()", "1:1: parse error: expected at least 1 argument(s) in call to \"round\", got 0"),
    ("round(foo, 1, 2)", "1:1: parse error: expected at most 2 argument(s) in call to \"round\", got 3"),
    ("label_join(foo, \"a\", \"b\",)", "1:25: parse error: trailing commas not allowed in function call args"),
    ("nonexistent(foo)", "1:1: parse error: unknown function with name \"nonexistent\""),
    // Prometheus 3 says only what comes before the parenthesis; this engine adds where
    // the function went.
    ("holt_winters(foo[5m], 0.5, 0.5)", "1:1: parse error: unknown function with name \"holt_winters\" (renamed \"double_exponential_smoothing\" in Prometheus 3, an experimental function: enable promql-experimental-functions)"),
    ("sort_by_label(foo, \"a\")", "1:1: parse error: function \"sort_by_label\" is not enabled"),
    ("limitk(1, foo)", "1:1: parse error: limitk() is experimental and must be enabled with --enable-feature=promql-experimental-functions"),
    ("sum(foo, bar)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, got 2"),
    ("topk(foo)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1"),
    ("sum()", "1:1: parse error: no arguments for aggregate expression provided"),
    ("topk(\"a\", foo)", "1:1: parse error: expected type scalar in aggregation parameter, got string"),
    ("count_values(1, foo)", "1:1: parse error: expected type string in aggregation parameter, got scalar"),
    ("sum(foo[5m])", "1:1: parse error: expected type instant vector in aggregation expression, got range vector"),
    ("sum by (a) (foo) by (b)", "1:18: parse error: unexpected <by>"),
    ("sum by (a b) (foo)", "1:11: parse error: unexpected identifier \"b\" in grouping opts, expected \",\" or \")\""),
    ("sum by a (foo)", "1:8: parse error: unexpected identifier \"a\" in grouping opts, expected \"(\""),
    ("1 > 2", "1:2: parse error: comparisons between scalars must use BOOL modifier"),
    ("foo + bool bar", "1:4: parse error: bool modifier can only be used on comparison operators"),
    ("foo and 1", "1:1: parse error: set operator \"and\" not allowed in binary scalar expression"),
    ("foo and on(a) group_left bar", "1:1: parse error: no grouping allowed for \"and\" operation"),
    ("foo + on(a) group_left(a) bar", "1:4: parse error: label \"a\" must not occur in ON and GROUP clause at once"),
    ("1 + on(a) foo", "1:1: parse error: vector matching only allowed between instant vectors"),
    ("foo[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"),
    ("-foo[5m]", "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"range vector\""),
    ("sum(foo)[5m]", "1:9: parse error: ranges only allowed for vector selectors"),
    ("foo offset 5m [1m]", "1:15: parse error: no offset modifiers allowed before range"),
    ("foo @ 10 [1m]", "1:10: parse error: no @ modifiers allowed before range"),
    ("foo[5m][1m:]", "1:1: parse error: subquery is only allowed on instant vector, got matrix instead"),
    ("foo offset 5m offset 1m", "1:1: parse error: offset may not be set multiple times"),
    ("foo @ 1 @ 2", "1:1: parse error: @ <timestamp> may not be set multiple times"),
    ("sum(foo) offset 5m", "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"),
    ("sum(foo) @ 5", "1:1: parse error: @ modifier must be preceded by an instant vector selector or range vector selector or a subquery"),
    ("foo @ Inf", "1:1: parse error: timestamp out of bounds for @ modifier: +Inf"),
    ("foo @ bar", "1:7: parse error: unexpected identifier \"bar\" in @, expected timestamp"),
    ("foo offset bar", "1:12: parse error: unexpected identifier \"bar\" in offset, expected number, duration, step(), or range()"),
    ("foo[0s]", "1:5: parse error: duration must be greater than 0"),
    ("foo[5m:0]", "1:8: parse error: duration must be greater than 0"),
    ("foo[5m * 2]", "1:5: parse error: experimental duration expression is not enabled"),
    ("foo offset (5m)", "1:12: parse error: experimental duration expression is not enabled"),
    ("foo[5m] anchored", "1:1: parse error: anchored modifier is experimental and not enabled"),
    ("foo + fill(0) bar", "1:1: parse error: binop fill modifiers are experimental and not enabled"),
    ("on", "1:1: parse error: unexpected <on>"),
    ("foo{a:b=\"c\"}", "1:5: parse error: unexpected metric identifier \"a:b\" in label matching, expected identifier or \"}\""),
    ("info(foo, bar)", "1:1: parse error: function \"info\" is not enabled"),
];

/// Rejected even with every feature on (the promqltest engine's settings).
const REJECTS_ALL_FEATURES: &[(&str, &str)] = &[
    ("foo[5m / 0]", "1:8: parse error: division by zero"),
    // With experimental functions on, nothing to enable.
    ("holt_winters(foo[5m], 0.5, 0.5)", "1:1: parse error: unknown function with name \"holt_winters\" (renamed \"double_exponential_smoothing\" in Prometheus 3)"),
    ("foo[5m % 0]", "1:8: parse error: modulo by zero"),
    (
        "foo[5m] anchored smoothed",
        "1:1: parse error: anchored and smoothed modifiers cannot be used together",
    ),
    ("foo[5m:] anchored", "1:1: parse error: anchored modifier is not supported for subqueries"),
    ("sum(foo) smoothed", "1:1: parse error: smoothed modifier not implemented"),
    ("1 + fill(0) foo", "1:1: parse error: filling in missing series only allowed between instant vectors"),
    ("foo or fill(0) bar", "1:1: parse error: filling in missing series not allowed for set operators"),
    ("info(foo, bar)", "1:11: parse error: expected label selectors only, got vector selector instead"),
    ("info(foo, sum(bar))", "1:11: parse error: expected label selectors only"),
];

fn check_table(table: &[(&str, &str)], features: Features) {
    let mut wrong = Vec::new();
    for (query, want) in table {
        match parse_with(query, features) {
            Ok(e) => wrong.push(format!("{query:?}: accepted as {e}")),
            Err(e) if e.to_string() != *want => wrong.push(format!("{query:?}:\n  want {want}\n  got  {e}")),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases differ:\n{}", wrong.len(), table.len(), wrong.join("\n"));
}

#[test]
fn rejected_without_features() {
    check_table(REJECTS, Features::none());
}

#[test]
fn rejected_with_all_features() {
    check_table(REJECTS_ALL_FEATURES, Features::all());
}

#[test]
fn caret_points_at_the_culprit() {
    let err = parse("sum by (job) (rate(http_requests_total[5m])) > on(job) group_left(a) b\n  + rate(x)")
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "2:10: parse error: expected type range vector in call to function \"rate\", got instant vector\n  + rate(x)\n         ^"
    );
}

#[test]
fn accepted_edge_cases() {
    for q in [
        "sum",
        "by",
        "start",
        "offset",
        "and",
        "Inf",
        "-inf",
        "nan",
        "010",
        "0x1f",
        "1_000",
        "1e-3",
        ".5",
        "5.",
        "1h30m",
        "foo offset -5m",
        "foo @ start()",
        "foo @ -1.5 offset 1m",
        "foo offset 1m @ 2",
        "foo[5m:]",
        "foo[300]",
        "rate(foo[5m])[30m:1m] offset 1h @ end()",
        "{\"my.metric\", \"a.b\"=\"c\"}",
        "foo{on=\"x\", bool=\"y\", inf=\"z\",}",
        "sum without (instance) (foo)",
        "sum(foo) by (job,)",
        "SUM BY (x) (foo)",
        "a > bool on(x) group_left(y) b",
        "2 ^ -1",
        "-2 ^ 2",
        "a atan2 b",
        "`raw\\string`",
        "'single \\' quote'",
        "\"\\u00e9\\U0001F600\\x41\\101\"",
        "foo # trailing comment",
        "sum(\n  rate(foo[5m]) # per second\n)",
        "{__name__=\"a\", __name__=\"b\"}",
        "{job=~\".+\"}",
        "count_values(\"v\", foo)",
        "quantile(0.9, foo)",
        "1 + on() foo",
    ] {
        if let Err(e) = parse(q) {
            panic!("{q:?} rejected: {e:#}");
        }
    }
}

#[test]
fn values_follow_go_rules() {
    let num = |q: &str| match parse(q).unwrap() {
        promql::Expr::Number(n) => n.value,
        e => panic!("{q}: not a number: {e:?}"),
    };
    assert_eq!(num("010"), 8.0);
    assert_eq!(num("09"), 9.0);
    assert_eq!(num("0x1F"), 31.0);
    assert_eq!(num("1_000"), 1000.0);
    assert_eq!(num("1h30m"), 5400.0);
    assert_eq!(num("1ms"), 0.001);
    assert_eq!(num("-2"), -2.0);
    assert!(num("-Inf").is_infinite());
    assert!(num("NaN").is_nan());
}
