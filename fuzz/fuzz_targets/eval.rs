//! Queries the parser accepts, evaluated over a small store (counters that reset,
//! gauges with NaN, infinities and signed zeros, gaps, classic histogram buckets):
//! errors are fine, panics are not, and the fast paths (a range query's range functions
//! and their aggregations over all steps at once, an instant query's range functions
//! straight from the samples) give what evaluation node by node at each step gives, bit
//! for bit but for NaN payloads, under both compat modes, with every feature and with
//! none (delayed name removal on and off).
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use promql::eval::{Compat, Engine, EngineOptions, EvalError, QueryResult};
use promql::storage::{load_reader, FixtureFormat, MemoryStore};
use promql::value::Value;
use promql::{Features, ValueType};

/// Ten minutes at 30 s, as `load` blocks write them; names also in `fuzz/eval.dict`.
const SERIES: &str = r#"
load 30s
  http_requests_total{job="api",code="200",instance="a"} 0+10x10 0 5+10x9
  http_requests_total{job="api",code="500",instance="a"} 0+1x6 _x3 7+1x10
  http_requests_total{job="web",code="200",instance="b"} 100 200 NaN 300+5x17
  http_requests_total{job="web",code="200",instance="c"} _x8 1+1x12
  memory_bytes{job="api",instance="a"} 1e9+1.5e6x12 Inf -Inf 3 1e308 1e308 -1e308 4 5
  memory_bytes{job="web",instance="b"} 0 -0 1 1.5 _ 2+0.25x15
  memory_bytes{job="web",instance="c"} 0.1 0.2 0.30000000000000004 NaN 0.1x16
  duration_seconds_bucket{le="0.1",job="api"} 0+1x20
  duration_seconds_bucket{le="0.5",job="api"} 0+3x20
  duration_seconds_bucket{le="+Inf",job="api"} 0+4x20
  duration_seconds_bucket{le="0.1",job="web"} 0+2x10 0+1x9
  duration_seconds_bucket{le="+Inf",job="web"} 0+2x10 0+3x9
  up{job="api",instance="a"} 1x20
  up{job="web",instance="b"} 1x6 0x6 1x7
  info_metric{job="api",instance="a",version="1.2"} 1x20
"#;

static STORE: LazyLock<MemoryStore> = LazyLock::new(|| {
    let mut store = MemoryStore::new();
    if let Err(e) = load_reader(SERIES.as_bytes(), FixtureFormat::PromqlTest, &mut store, usize::MAX) {
        panic!("the fuzz target's own series do not load: {e}");
    }
    store
});

/// Query evaluation's limits: inputs that ask for millions of inner steps end in an
/// error instead of holding the fuzzer up (on these few series a query takes well
/// under a millisecond, but the node-by-node path walks a subquery's inner steps anew
/// at every step).
fn engine(compat: Compat, features: Features) -> Engine {
    Engine::new(EngineOptions {
        compat,
        features,
        max_samples: 200_000,
        timeout: Some(Duration::from_millis(100)),
        parallel: false,
        ..EngineOptions::default()
    })
}

/// A result as comparable text: series or samples with their labels, values by bit
/// pattern with every NaN alike (a NaN's payload never reaches an answer).
fn canonical(result: &Result<QueryResult, EvalError>) -> Option<String> {
    let bits = |v: f64| if v.is_nan() { u64::MAX } else { v.to_bits() };
    match result {
        Ok(r) => Some(match &r.value {
            Value::Matrix(series) => series
                .iter()
                .map(|s| {
                    let points: Vec<_> = s.points.iter().map(|p| (p.t, bits(p.v))).collect();
                    format!("{} {points:?}\n", s.labels)
                })
                .collect(),
            Value::Vector(samples) => {
                samples.iter().map(|s| format!("{} {} {:x}\n", s.labels, s.t, bits(s.v))).collect()
            }
            Value::Scalar { t, v } => format!("scalar {t} {:x}", bits(*v)),
            Value::String { t, v } => format!("string {t} {v}"),
        }),
        // Limits may strike on one path and not on the other.
        Err(EvalError::Timeout | EvalError::Cancelled | EvalError::TooManySamples) => None,
        // Both fail, but not always naming the same cause: the fast paths evaluate a
        // subquery's inner steps ahead, so an error of a later step can come first.
        Err(_) => Some("error".to_owned()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(expr) = promql::parse_with(query, Features::all()) else { return };
    let Ok(ty) = promql::check::check(&expr) else { return };
    for compat in [Compat::Prometheus3, Compat::Prometheus2] {
        for features in [Features::all(), Features::none()] {
            let engine = engine(compat, features);
            // Instant queries inside the data and past its end (`step` 0), and range
            // queries on the scrape grid and off it.
            for (start, end, step) in [
                (290_000, 290_000, 0),
                (700_000, 700_000, 0),
                (0, 600_000, 30_000),
                (-45_000, 660_000, 45_000),
            ] {
                if step > 0 && !matches!(ty, ValueType::Scalar | ValueType::Vector) {
                    continue;
                }
                let fast = canonical(&engine.eval(&*STORE, &expr, start, end, step));
                let reference = canonical(&engine.eval_reference(&*STORE, &expr, start, end, step));
                if let (Some(fast), Some(reference)) = (fast, reference) {
                    assert!(
                        fast == reference,
                        "{query:?} from {start} to {end} every {step} ms under {compat:?}, \
                         features {features:?}:\nfast paths:\n{fast}\nnode by node at each step:\n{reference}"
                    );
                }
            }
        }
    }
});
