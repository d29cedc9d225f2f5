//! Loading fixtures with a progress bar on stderr, for big recordings.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use promql::storage::{load_fixture, load_fixture_with_progress, MemoryStore};

/// Loads fixture files into one store like `load_fixture`, showing a byte progress bar
/// on stderr when it is a terminal.
pub fn load_with_progress(paths: &[PathBuf], max_samples: usize) -> anyhow::Result<MemoryStore> {
    if !io::stderr().is_terminal() {
        let mut store = MemoryStore::new();
        for path in paths {
            load_fixture(path, None, &mut store, max_samples)?;
        }
        return Ok(store);
    }
    let total = paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(bar_style()?);
    let loaded = load_all(paths, max_samples, &bar);
    bar.finish_and_clear();
    loaded
}

/// The bar: file name, bytes read of all files, rate and time left.
fn bar_style() -> anyhow::Result<ProgressStyle> {
    Ok(ProgressStyle::with_template(
        "{spinner} loading {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )?
    .progress_chars("=> "))
}

/// Loads every file, moving `bar` by the bytes read.
fn load_all(paths: &[PathBuf], max_samples: usize, bar: &ProgressBar) -> anyhow::Result<MemoryStore> {
    let mut store = MemoryStore::new();
    for path in paths {
        bar.set_message(
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into()),
        );
        load_fixture_with_progress(path, None, &mut store, max_samples, |n| bar.inc(n))?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Dump = Vec<(String, Vec<i64>, Vec<u64>)>;

    /// Every series with its samples, in store order (values by bit pattern).
    fn dump(store: &MemoryStore) -> Dump {
        store
            .series()
            .map(|(l, ps)| {
                (l.to_string(), ps.iter().map(|p| p.t).collect(), ps.iter().map(|p| p.v.to_bits()).collect())
            })
            .collect()
    }

    fn with_load_fixture(paths: &[PathBuf], max_samples: usize) -> Result<Dump, String> {
        let mut store = MemoryStore::new();
        for p in paths {
            load_fixture(p, None, &mut store, max_samples).map_err(|e| e.to_string())?;
        }
        Ok(dump(&store))
    }

    /// Through the bar (hidden) and through plain `load_fixture`: the same store and
    /// the same error.
    fn both(paths: &[PathBuf], max_samples: usize) -> (Result<Dump, String>, Result<Dump, String>, u64) {
        let bar = ProgressBar::hidden();
        bar.set_length(u64::MAX);
        let ours = load_all(paths, max_samples, &bar).map(|s| dump(&s)).map_err(|e| format!("{e:#}"));
        (ours, with_load_fixture(paths, max_samples), bar.position())
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("promql-cli-progress-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    const OM: &str = "# TYPE up gauge\nup{job=\"api\"} 1 1700000000.000\nup{job=\"api\"} 0 1700000015.000\n\
                      up{job=\"db\"} 1 1700000000.500\n# TYPE http_requests counter\n\
                      http_requests_total{code=\"200\"} 10 1700000000\nhttp_requests_total{code=\"200\"} 15 1700000015\n# EOF\n";

    #[test]
    fn same_store_as_load_fixture_for_every_text_format() {
        let d = dir("formats");
        let files = [
            ("a.om", OM.to_owned()),
            // Classic-looking head (millisecond timestamps are classic), `# EOF` at the end.
            ("b.prom", "up{job=\"x\"} 1 1700000000000\nup{job=\"x\"} 2 1700000001000\n".to_owned()),
            ("c.test", "load 1m\n  up{job=\"api\"} 1+1x5\n  other 0 _ 3\n\neval instant at 1m up\n  up{job=\"api\"} 2\n".to_owned()),
            (
                "d.json",
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"j"},"values":[[1700000000,"1"],[1700000015.5,"NaN"]]}]}}"#
                    .to_owned(),
            ),
            // A later file overwrites a sample of an earlier one.
            ("e.om", "up{job=\"api\"} 7 1700000000.000\n# EOF\n".to_owned()),
        ];
        let mut paths = Vec::new();
        let mut total = 0;
        for (name, text) in &files {
            let p = d.0.join(name);
            std::fs::write(&p, text).unwrap();
            total += text.len() as u64;
            paths.push(p);
        }
        let (ours, reference, position) = both(&paths, 1_000);
        let reference = reference.unwrap();
        assert_eq!(ours.unwrap(), reference);
        assert!(reference.len() >= 6, "{reference:?}");
        assert_eq!(position, total, "the bar counts every byte once");
    }

    #[test]
    fn eof_marker_at_the_end_makes_it_openmetrics() {
        let d = dir("eof");
        // Integer timestamps are seconds in OpenMetrics: detection alone would say
        // classic text (which reads them as milliseconds) without the tail check.
        let p = d.0.join("x.txt");
        std::fs::write(&p, "up 1 1700000000\nup 2 1700000015\n# EOF\n").unwrap();
        let (ours, reference, _) = both(std::slice::from_ref(&p), 100);
        assert_eq!(ours, reference);
        assert_eq!(ours.unwrap()[0].1, vec![1_700_000_000_000, 1_700_000_015_000]);
    }

    #[test]
    fn errors_name_file_and_line_like_load_fixture() {
        let d = dir("errors");
        let bad = d.0.join("bad.om");
        std::fs::write(&bad, "# TYPE up gauge\nup 1 1700000000\nup{ 2 1700000001\n# EOF\n").unwrap();
        let missing = d.0.join("missing.om");
        let binary = d.0.join("binary.dat");
        std::fs::write(&binary, b"\0\x01\x02").unwrap();
        let big_json = d.0.join("big.json");
        std::fs::write(&big_json, format!("{{\"status\":\"success\",\"pad\":\"{}\"}}", " ".repeat(2 << 20)))
            .unwrap();
        let ok = d.0.join("ok.om");
        std::fs::write(&ok, OM).unwrap();
        for (path, limit) in [(&bad, 100), (&missing, 100), (&binary, 100), (&big_json, 1), (&ok, 2)] {
            // After a good file, unless the limit is too small for it.
            let paths = if limit >= 100 { vec![ok.clone(), path.clone()] } else { vec![path.clone()] };
            let (ours, reference, _) = both(&paths, limit);
            let (ours, reference) = (ours.unwrap_err(), reference.unwrap_err());
            assert_eq!(ours, reference);
            assert!(ours.starts_with(&path.display().to_string()), "{ours}");
        }
        let (ours, _, _) = both(std::slice::from_ref(&bad), 100);
        assert!(ours.unwrap_err().contains(": line 3: "));
    }

    #[test]
    fn bar_template_is_valid() {
        bar_style().unwrap();
    }

    #[test]
    fn without_a_terminal_loads_plainly() {
        // Tests run with stderr captured or redirected, usually not a terminal; either
        // way the store is the same.
        let d = dir("plain");
        let p = d.0.join("a.om");
        std::fs::write(&p, OM).unwrap();
        let store = load_with_progress(std::slice::from_ref(&p), 100).unwrap();
        assert_eq!(Ok(dump(&store)), with_load_fixture(&[p], 100));
        assert!(load_with_progress(&[d.0.join("nope.om")], 100).is_err());
    }
}
