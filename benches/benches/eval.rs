//! Evaluation cost against series count, on synthetic Istio-like data: the autoscaling
//! queries at 1k, 10k and 100k series (`PROMQL_BENCH_SIZES` for others), and a gauge's
//! `avg_over_time` (also Prometheus 2's incremental mean) and sum over a range. Cost
//! should grow linearly.
//!
//! Under `cargo test --benches` only the smallest size runs, once.

// The allocator promql-cli uses, so that the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use promql::eval::{Compat, Engine, EngineOptions};
use promql::storage::MemoryStore;
use promql::Labels;

const SCRAPE_MS: i64 = 15_000;
/// Ten minutes of samples.
const SAMPLES: i64 = 41;
const BUCKETS: [&str; 12] = ["1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "+Inf"];

/// `n` counter series of `istio_requests_total` (100 per workload) and about `n`
/// bucket series of `istio_request_duration_milliseconds_bucket`.
fn istio_store(n: usize) -> MemoryStore {
    let mut store = MemoryStore::new();
    for i in 0..n {
        let workload = format!("svc-{:04}", i / 100);
        let pod = format!("{workload}-pod-{}", i % 25);
        let code = ["200", "200", "404", "503"][i % 4];
        let labels = Labels::from_pairs([
            ("__name__", "istio_requests_total"),
            ("destination_workload", workload.as_str()),
            ("pod", pod.as_str()),
            ("response_code", code),
            ("reporter", "destination"),
        ]);
        let rate = 1.0 + (i % 7) as f64;
        for s in 0..SAMPLES {
            store.append(&labels, s * SCRAPE_MS, s as f64 * rate * 15.0);
        }
    }
    for g in 0..n / BUCKETS.len() {
        let workload = format!("svc-{:04}", g / 10);
        let pod = format!("{workload}-pod-{}", g % 10);
        for (b, le) in BUCKETS.iter().enumerate() {
            let labels = Labels::from_pairs([
                ("__name__", "istio_request_duration_milliseconds_bucket"),
                ("destination_workload", workload.as_str()),
                ("pod", pod.as_str()),
                ("le", le),
            ]);
            for s in 0..SAMPLES {
                store.append(&labels, s * SCRAPE_MS, (s * (b as i64 + 1) * 3) as f64);
            }
        }
    }
    // A gauge per ten counters, wandering up and down as memory use does.
    let mut seed: u64 = 1;
    for i in 0..n / 10 {
        let labels = Labels::from_pairs([
            ("__name__", "process_resident_memory_bytes"),
            ("pod", format!("svc-{:04}-pod-{}", i / 10, i % 10).as_str()),
        ]);
        for s in 0..SAMPLES {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            store.append(&labels, s * SCRAPE_MS, 5e7 + (seed >> 40) as f64);
        }
    }
    store
}

const QUERIES: [(&str, &str); 3] = [
    ("rate", "rate(istio_requests_total[1m])"),
    ("sum_by_rate", "sum by (destination_workload) (rate(istio_requests_total[1m]))"),
    ("p99", "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[1m])))"),
];

fn eval(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    // PROMQL_BENCH_SIZES=1000,1000000 picks other sizes (1M series take about 2 GB).
    let sizes: Vec<usize> = match std::env::var("PROMQL_BENCH_SIZES") {
        Ok(list) if full => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        _ if full => vec![1_000, 10_000, 100_000],
        _ => vec![1_000],
    };
    let engine = Engine::default();
    let engine_2 = Engine::new(EngineOptions { compat: Compat::Prometheus2, ..EngineOptions::default() });
    let now = (SAMPLES - 1) * SCRAPE_MS;
    let mut g = c.benchmark_group("eval");
    g.sample_size(10);
    for n in sizes {
        let store = istio_store(n);
        g.throughput(Throughput::Elements(n as u64));
        for (name, q) in QUERIES {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(engine.instant_query(&store, q, now).map(|r| r.value)))
            });
        }
        // Range queries over five minutes at a 15 s step: 21 steps.
        let mut range_of = |engine: &Engine, name: &str, q: &str| {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    black_box(engine.range_query(&store, q, now - 300_000, now, SCRAPE_MS).map(|r| r.value))
                })
            });
        };
        range_of(
            &engine_2,
            "range_avg_over_time_gauge_compat2",
            "avg_over_time(process_resident_memory_bytes[5m])",
        );
        let mut range = |name: &str, q: &str| range_of(&engine, name, q);
        range("range_sum_by_rate", QUERIES[1].1);
        // The same sums through an operation on each value (bytes to bits, say): fused
        // as well, each window's rate multiplied on its way into its group.
        range(
            "range_sum_by_rate_times",
            "sum by (destination_workload) (rate(istio_requests_total[1m]) * 8)",
        );
        // The same windows' rates, each series its own result.
        range("range_rate", QUERIES[0].1);
        // A gauge's windows over the same steps (a tenth as many series).
        range("range_avg_over_time_gauge", "avg_over_time(process_resident_memory_bytes[5m])");
        // A subquery at each of the same steps: its inner steps shared between them.
        range(
            "range_subquery_max",
            "max_over_time(sum by (destination_workload) (rate(istio_requests_total[1m]))[5m:15s])",
        );
        // The gauge's maximum over windows of 20 steps (folded: over 21 steps a sample is
        // in 10 windows on average, too few for the queue of `promql::eval::sliding`).
        range("range_max_over_time_gauge", "max_over_time(process_resident_memory_bytes[5m])");
        // The gauge's latest values, summed at each of the same steps.
        range("range_sum_gauge", "sum(process_resident_memory_bytes)");
        // Welford's variance over the gauge's windows: a chain of divisions a window.
        range("range_stddev_over_time_gauge", "stddev_over_time(process_resident_memory_bytes[5m])");
        // The least-squares slope over the same windows: four compensated sums a window.
        range("range_deriv_gauge", "deriv(process_resident_memory_bytes[5m])");
        // A quantile of the same windows: their values kept sorted as they slide.
        range("range_quantile_over_time_gauge", "quantile_over_time(0.9, process_resident_memory_bytes[5m])");
        // The gauge's five least at each of the same steps: a heap of values a step.
        range("range_bottomk_gauge", "bottomk(5, process_resident_memory_bytes)");
        // The ten greatest rates at each step, from the windows' values straight.
        range("range_topk_rate", "topk(10, rate(istio_requests_total[1m]))");
        // The gauge's median at each of the same steps: a quantile fused like a sum.
        range("range_quantile_gauge", "quantile(0.5, process_resident_memory_bytes)");
        // The HPA idiom: a sum that defaults to 0 where nothing matched, from the sum's
        // whole result and the literal's (set operations are not step by step).
        range("range_sum_rate_or_vector", "sum(rate(istio_requests_total[1m])) or vector(0)");
        // The 5xx ratio of each workload: two fused sums, joined series by series.
        range(
            "range_error_ratio",
            "sum by (destination_workload) (rate(istio_requests_total{response_code=~\"5..\"}[1m])) \
             / sum by (destination_workload) (rate(istio_requests_total[1m]))",
        );
        // Each step's rates against those pinned at the end: the pinned sum is step
        // invariant, evaluated once (at each step it would cost an instant query).
        range(
            "range_rate_over_pinned",
            "sum by (destination_workload) (rate(istio_requests_total[1m])) / on (destination_workload) \
             sum by (destination_workload) (rate(istio_requests_total[1m] @ end()))",
        );
    }
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::eval);
}

criterion_main!(group::benches);
