//! Every query the parser accepts prints as PromQL that parses back to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promql::{parser::parse_syntax, Features};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(mut expr) = parse_syntax(query, Features::all()) else { return };
    let printed = expr.to_string();
    let mut again = match parse_syntax(&printed, Features::all()) {
        Ok(e) => e,
        Err(e) => panic!("printed form of {query:?} does not parse: {printed:?}\n{e:#}"),
    };
    expr.clear_spans();
    again.clear_spans();
    assert_eq!(expr, again, "query {query:?} printed as {printed:?}");
});
