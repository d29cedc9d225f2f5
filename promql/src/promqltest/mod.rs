//! Prometheus' promqltest scripts: parsing ([`script`]), running them against the
//! engine ([`run`]), and baselines of known failures for conformance runs.

pub mod run;
pub mod script;

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

/// Known failures of a conformance run: `file:line reason` lines, `#` comments.
///
/// ```
/// use promql::promqltest::Baseline;
/// let b = Baseline::parse("# known\nfunctions.test:12 native histogram\n").unwrap();
/// assert_eq!(b.reason("functions.test", 12), Some("native histogram"));
/// assert_eq!(b.reason("functions.test", 13), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    entries: std::collections::BTreeMap<(String, usize), String>,
}

impl Baseline {
    /// Reads a baseline file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = std::collections::BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = || format!("baseline line {}: expected `file:line reason`, got {line:?}", i + 1);
            let (place, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let (file, num) = place.rsplit_once(':').ok_or_else(err)?;
            let num: usize = num.parse().map_err(|_| err())?;
            entries.insert((file.to_owned(), num), reason.trim().to_owned());
        }
        Ok(Baseline { entries })
    }

    /// The recorded reason if `file:line` is a known failure.
    pub fn reason(&self, file: &str, line: usize) -> Option<&str> {
        self.entries.get(&(file.to_owned(), line)).map(String::as_str)
    }

    /// Records a known failure.
    pub fn insert(&mut self, file: &str, line: usize, reason: &str) {
        self.entries.insert((file.to_owned(), line), reason.to_owned());
    }

    /// The entries, sorted by file and line.
    pub fn entries(&self) -> impl Iterator<Item = (&str, usize, &str)> + '_ {
        self.entries.iter().map(|((f, l), r)| (f.as_str(), *l, r.as_str()))
    }

    /// The baseline file's text.
    pub fn render(&self) -> String {
        let mut out =
            String::from("# Known conformance failures: file:line reason. Regenerate with PROMQL_BLESS=1.\n");
        for ((file, line), reason) in &self.entries {
            out.push_str(&format!("{file}:{line} {reason}\n"));
        }
        out
    }
}
