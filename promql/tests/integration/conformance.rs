//! Runs every promqltest script against the engine, gated by a committed baseline of
//! known failures (`tests/conformance-baseline.txt`). An unexpected failure or an
//! unexpected pass fails; `PROMQL_BLESS=1` rewrites the baseline. The census is printed
//! on every run.

use std::path::PathBuf;

use promql::promqltest::run::{run_script, Outcome};
use promql::promqltest::Baseline;

use super::corpus::promqltest_dir;

/// The files whose float cases must all pass (native histogram cases aside).
const FLOAT_CORE: [&str; 14] = [
    "aggregators.test",
    "at_modifier.test",
    "collision.test",
    "functions.test",
    "histograms.test",
    "literals.test",
    "limit.test",
    "name_label_dropping.test",
    "operators.test",
    "range_queries.test",
    "selectors.test",
    "staleness.test",
    "subquery.test",
    "trig_functions.test",
];

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-baseline.txt")
}

#[test]
fn conformance() {
    let dir = promqltest_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (set PROMQLTEST_DIR)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let baseline_text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    let baseline = Baseline::parse(&baseline_text).unwrap();
    let bless = std::env::var_os("PROMQL_BLESS").is_some();

    let mut blessed = Baseline::default();
    let mut surprises = Vec::new();
    let (mut total_pass, mut total_fail, mut core_pass, mut core_fail, mut core_other) = (0, 0, 0, 0, 0);
    println!("conformance census (file: passed, failed):");
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let results = run_script(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mut pass, mut fail) = (0, 0);
        for r in &results {
            let known = baseline.reason(&name, r.line);
            match (&r.outcome, known) {
                (Outcome::Pass, None) => pass += 1,
                (Outcome::Pass, Some(reason)) => {
                    pass += 1;
                    surprises.push(format!("{name}:{} passes now but the baseline says: {reason}", r.line));
                }
                (Outcome::Fail(msg), known) => {
                    fail += 1;
                    let reason = r.reason.as_deref().unwrap_or("failed");
                    blessed.insert(&name, r.line, reason);
                    if known.is_none() {
                        surprises.push(format!("{name}:{}: {}\n{msg}", r.line, r.query));
                    }
                    if FLOAT_CORE.contains(&name.as_str()) && reason != "native histogram" {
                        core_other += 1;
                    }
                }
            }
        }
        if FLOAT_CORE.contains(&name.as_str()) {
            core_pass += pass;
            core_fail += fail;
        }
        println!("  {name}: {pass} passed, {fail} failed");
        total_pass += pass;
        total_fail += fail;
    }
    println!(
        "float-core files: {core_pass} passed, {core_fail} failed ({core_other} failures not due to native histograms)"
    );
    println!("conformance: {total_pass} passed, {total_fail} failed");
    if bless {
        std::fs::write(baseline_path(), blessed.render()).unwrap();
        println!("baseline rewritten: {}", baseline_path().display());
        return;
    }
    assert!(
        surprises.is_empty(),
        "{} cases differ from the baseline (PROMQL_BLESS=1 rewrites it):\n{}",
        surprises.len(),
        surprises.join("\n\n")
    );
}
