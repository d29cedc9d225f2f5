//! Writing a query's answer as the HTTP API's JSON (`promql::api::write_data_json_with`,
//! on the calling thread, as `serve` writes answers under 32,768 points).
//!
//! - `answer/means`: 202 series of 61 points, means of whole numbers over 20 values (the
//!   shape of `avg_over_time(process_resident_memory_bytes[5m])` at 60 s steps over an
//!   hour: mostly sixteen or seventeen digits);
//! - `answer/rates`: the same shape of per-second rates of counters (`0.08333333333333333`);
//! - `answer/counters`: the same shape of whole numbers (a range selector's raw samples);
//! - `answer/vector`: an instant vector of 10,000 samples of Istio-like label sets.
//!
//! Throughput is in points (samples). Under `cargo test --benches` each runs once.

// The allocator promql-cli uses, so that the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use promql::value::{Point, Sample, Series, Value};
use promql::Labels;
use promql_benches::Rng;

const START_MS: i64 = 1_704_067_200_000;

fn pod_labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "process_resident_memory_bytes".to_owned()),
        ("app", format!("svc-{:04}", i / 4)),
        ("instance", format!("10.{}.{}.{}:15090", i / 65536, i / 256 % 256, i % 256)),
        ("job", "kubernetes-pods".to_owned()),
        ("namespace", "test".to_owned()),
        ("pod", format!("svc-{:04}-7d9f8b6c5d-{:05}", i / 4, i)),
    ])
}

/// `series` series of `points` points a minute apart, valued by `value`.
fn matrix(series: usize, points: i64, mut value: impl FnMut(&mut Rng) -> f64) -> Value {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    Value::Matrix(
        (0..series)
            .map(|i| Series {
                labels: pod_labels(i),
                points: (0..points).map(|k| Point { t: START_MS + k * 60_000, v: value(&mut rng) }).collect(),
            })
            .collect(),
    )
}

fn answer(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let (series, points, samples) = if full { (202, 61, 10_000) } else { (2, 3, 10) };
    let means = matrix(series, points, |rng| {
        let sum: u64 = (0..20).map(|_| 100_000_000 + rng.below(50_000_000)).sum();
        sum as f64 / 20.0 + (rng.below(7) as f64) / 7.0
    });
    let rates = matrix(series, points, |rng| rng.below(3_000) as f64 / 60.0);
    let counters = matrix(series, points, |rng| rng.below(1 << 40) as f64);
    let mut rng = Rng(7);
    let vector = Value::Vector(
        (0..samples)
            .map(|i| Sample { labels: pod_labels(i), t: START_MS, v: rng.below(1_000_000) as f64 / 3.0 })
            .collect(),
    );

    let mut g = c.benchmark_group("answer");
    g.measurement_time(Duration::from_secs(5));
    for (name, value, n) in [
        ("means", &means, series * points as usize),
        ("rates", &rates, series * points as usize),
        ("counters", &counters, series * points as usize),
        ("vector", &vector, samples),
    ] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut out = String::new();
                promql::api::write_data_json_with(value, &mut out, false);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::answer);
}

criterion_main!(group::benches);
