//! Deep nesting is an error with a position, never a stack overflow.

use promql::{parse_with, ErrorKind, Features};

/// Runs `f` on a thread with a 2 MiB stack, the default for test threads, so the
/// limit is checked against a realistic stack.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap();
}

#[test]
fn deep_parentheses_are_rejected() {
    on_small_stack(|| {
        let q = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        let err = parse_with(&q, Features::all()).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::TooDeep(_)), "{err}");
    });
}

#[test]
fn long_operator_chains_are_rejected() {
    on_small_stack(|| {
        let q = vec!["a"; 50_000].join(" + ");
        let err = parse_with(&q, Features::all()).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::TooDeep(_)), "{err}");
        let q = format!("{}a", "-".repeat(50_000));
        assert!(matches!(parse_with(&q, Features::all()).unwrap_err().kind, ErrorKind::TooDeep(_)));
        let q = format!("a{}", "[1m:]".repeat(50_000));
        assert!(parse_with(&q, Features::all()).is_err());
    });
}

#[test]
fn nesting_just_below_the_limit_works_everywhere() {
    on_small_stack(|| {
        let depth = promql::parser::MAX_DEPTH - 8;
        let q = format!("{}rate(x[5m]){}", "sum(".repeat(depth), ")".repeat(depth));
        let e = parse_with(&q, Features::all()).unwrap();
        let printed = e.to_string();
        let again = parse_with(&printed, Features::all()).unwrap();
        assert_eq!(printed, again.to_string());
        let _json = serde_json::to_string(&e).unwrap();
        drop(e);
        let q = vec!["a"; promql::parser::MAX_DEPTH - 2].join(" or ");
        let e = parse_with(&q, Features::all()).unwrap();
        assert_eq!(e.to_string(), q);
    });
}
