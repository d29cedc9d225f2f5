//! Prometheus' promqltest script format. For now: finding the `eval` commands and
//! their queries, which the corpus tests and benchmarks use.

/// One `eval` command of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalQuery {
    /// 1-based line of the command.
    pub line: usize,
    /// The PromQL expression.
    pub query: String,
}

const EVAL_COMMANDS: [&str; 5] = ["eval", "eval_fail", "eval_warn", "eval_info", "eval_ordered"];

/// The `eval`, `eval_fail`, `eval_warn`, `eval_info` and `eval_ordered` commands of a
/// script, instant (`at T`) and range (`from T to T step D`).
///
/// ```
/// let script = "load 5m\n  up 1\n\neval instant at 5m sum(up)\n  {} 1\n";
/// let evals = promql::promqltest::eval_queries(script).unwrap();
/// assert_eq!(evals[0].line, 4);
/// assert_eq!(evals[0].query, "sum(up)");
/// ```
pub fn eval_queries(script: &str) -> Result<Vec<EvalQuery>, String> {
    let mut out = Vec::new();
    for (i, raw) in script.lines().enumerate() {
        let line = raw.trim();
        let Some((command, rest)) = split_word(line) else { continue };
        if !EVAL_COMMANDS.contains(&command) {
            continue;
        }
        let err = || format!("line {}: malformed eval command: {line}", i + 1);
        // `instant at T` or `range from T to T step D`; the query is the rest.
        let keywords: &[Option<&str>] = match split_word(rest) {
            Some(("instant", _)) => &[Some("instant"), Some("at"), None],
            Some(("range", _)) => &[Some("range"), Some("from"), None, Some("to"), None, Some("step"), None],
            _ => return Err(err()),
        };
        let mut rest = rest;
        for want in keywords {
            let (word, after) = split_word(rest).ok_or_else(err)?;
            if want.is_some_and(|w| w != word) {
                return Err(err());
            }
            rest = after;
        }
        let query = rest.trim();
        if query.is_empty() {
            return Err(err());
        }
        out.push(EvalQuery { line: i + 1, query: query.to_owned() });
    }
    Ok(out)
}

/// The first whitespace-separated word and what follows it.
fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}
