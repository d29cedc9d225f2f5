//! Parses every `eval` query of ../shared/promqltest (override: `PROMQLTEST_DIR`) with
//! the features Prometheus' test engine enables. Prometheus' runner aborts a file on a
//! parse error, so every one of them must be accepted.

use std::path::PathBuf;

use promql::{parse_with, promqltest::eval_queries, Features};

/// The promqltest directory: `PROMQLTEST_DIR` or `../shared/promqltest` beside the checkout.
pub fn promqltest_dir() -> PathBuf {
    match std::env::var_os("PROMQLTEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/promqltest"),
    }
}

/// `(file, line, query)` for every eval command in the corpus.
pub fn corpus_queries() -> Vec<(String, usize, String)> {
    let dir = promqltest_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read promqltest dir {}: {e} (set PROMQLTEST_DIR)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let evals = eval_queries(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.extend(evals.into_iter().map(|e| (name.clone(), e.line, e.query)));
    }
    out
}

#[test]
fn every_corpus_query_parses() {
    let queries = corpus_queries();
    let mut failures = Vec::new();
    for (file, line, q) in &queries {
        if let Err(e) = parse_with(q, Features::all()) {
            failures.push(format!("{file}:{line}: {q}\n  {e:#}"));
        }
    }
    println!(
        "promqltest corpus: {} queries, {} parsed, {} rejected",
        queries.len(),
        queries.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} corpus queries rejected:\n{}", failures.len(), failures.join("\n"));
    assert!(queries.len() >= 2213, "expected at least 2213 corpus queries, found {}", queries.len());
}
