//! Shared inputs for the benchmarks.

use std::path::PathBuf;

/// The promqltest directory: `PROMQLTEST_DIR`, or `../shared/promqltest` beside the checkout.
pub fn promqltest_dir() -> PathBuf {
    match std::env::var_os("PROMQLTEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/promqltest"),
    }
}

/// Every `eval` query of the promqltest scripts, in file order.
pub fn corpus_queries() -> Result<Vec<String>, String> {
    let dir = promqltest_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e} (set PROMQLTEST_DIR)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let evals = promql::promqltest::eval_queries(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        out.extend(evals.into_iter().map(|e| e.query));
    }
    Ok(out)
}

/// A deterministic xorshift generator for the benches' data: the same inputs every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (not exactly uniform; enough for data).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }
}
