//! Arbitrary bytes as a fixture of each format (OpenMetrics, Prometheus text, promqltest,
//! Prometheus API JSON): errors are fine, panics are not; a load stays within its
//! sample limit and a failed one leaves the store empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promql::storage::{detect_format, load_reader, FixtureFormat, MemoryStore};

fuzz_target!(|data: &[u8]| {
    let _ = detect_format(data);
    for format in [
        FixtureFormat::OpenMetrics,
        FixtureFormat::PrometheusText,
        FixtureFormat::PromqlTest,
        FixtureFormat::PrometheusJson,
    ] {
        let mut store = MemoryStore::new();
        match load_reader(data, format, &mut store, 10_000) {
            Ok(stats) => {
                assert_eq!(stats.format, format);
                assert_eq!(store.series_count(), stats.series, "{format:?}: {stats:?}");
                assert_eq!(store.sample_count(), stats.samples, "{format:?}: {stats:?}");
                assert!(stats.samples <= 10_000, "{format:?}: over the limit: {stats:?}");
            }
            Err(e) => {
                let _ = e.to_string();
                assert_eq!((store.series_count(), store.sample_count()), (0, 0), "{format:?}: {e}");
            }
        }
    }
});
