//! Fixture loading speed: OpenMetrics text of an Istio-like mesh (the shape
//! `gen_istio.py` writes: a counter family, a 20-bucket histogram family with buckets
//! grouped per timestamp, a gauge family), about 30 MB generated in memory.
//!
//! `load/parse` only parses (`ExpositionParser`); `load/store` parses and loads into a
//! `MemoryStore` (`load_reader`), as `load_fixture` does. Throughput is in input bytes.
//!
//! Under `cargo test --benches` a tiny input runs, once.

// The allocator promql-cli uses, so that the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use promql::storage::{load_reader, Dialect, ExpositionParser, FixtureFormat, MemoryStore};
use promql_benches::Rng;

const LE: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000",
    "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];
const CODES: [&str; 4] = ["200", "404", "500", "503"];
const START_MS: i64 = 1_704_067_200_000;
const STEP_MS: i64 = 15_000;

struct Pod {
    workload: String,
    namespace: &'static str,
    name: String,
    offset_ms: i64,
}

/// OpenMetrics text: `workloads` workloads of 4 pods, 2 source workloads each, `points`
/// scrapes 15 s apart.
fn istio_openmetrics(workloads: usize, points: i64) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut pods = Vec::new();
    for w in 0..workloads {
        let workload = format!("svc-{w:04}");
        let hash: String = (0..10).map(|_| alphabet[rng.below(27) as usize] as char).collect();
        for _ in 0..4 {
            let suffix: String = (0..5).map(|_| alphabet[rng.below(27) as usize] as char).collect();
            pods.push(Pod {
                name: format!("{workload}-{hash}-{suffix}"),
                workload: workload.clone(),
                namespace: if w % 2 == 0 { "test" } else { "prod" },
                offset_ms: 51 + rng.below(14_000) as i64,
            });
        }
    }
    let ts = |pod: &Pod, k: i64| {
        let ms = START_MS + k * STEP_MS + pod.offset_ms;
        format!("{}.{:03}", ms / 1000, ms % 1000)
    };
    let sources = |pod: &Pod| {
        let w: usize = pod.workload[4..].parse().unwrap_or(0);
        [format!("svc-{:04}", (w + 1) % workloads.max(2)), "istio-ingressgateway".to_owned()]
    };
    let mut out = String::with_capacity(workloads * 2_000_000);
    out.push_str("# HELP istio_requests Total number of requests handled by the Istio proxy.\n");
    out.push_str("# TYPE istio_requests counter\n");
    for pod in &pods {
        for src in sources(pod) {
            for code in CODES {
                let mut v = rng.below(1_000_000);
                for k in 0..points {
                    v += rng.below(if code == "200" { 3000 } else { 30 });
                    let _ = writeln!(
                        out,
                        "istio_requests_total{{reporter=\"destination\",source_workload=\"{src}\",\
                         destination_workload=\"{}\",destination_workload_namespace=\"{}\",\
                         response_code=\"{code}\",pod=\"{}\"}} {v} {}",
                        pod.workload,
                        pod.namespace,
                        pod.name,
                        ts(pod, k)
                    );
                }
            }
        }
    }
    out.push_str("# HELP istio_request_duration_milliseconds Request duration in milliseconds.\n");
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for pod in &pods {
        for src in sources(pod) {
            let common = format!(
                "reporter=\"destination\",source_workload=\"{src}\",destination_workload=\"{}\",\
                 destination_workload_namespace=\"{}\",pod=\"{}\"",
                pod.workload, pod.namespace, pod.name
            );
            let mut buckets = [0u64; 20];
            let mut sum_us = 0u64;
            for k in 0..points {
                let t = ts(pod, k);
                let n = rng.below(4000);
                for (i, b) in buckets.iter_mut().enumerate() {
                    *b += n * (i as u64 + 1) / 20;
                }
                sum_us += n * (1000 + rng.below(50_000));
                for (le, b) in LE.iter().zip(buckets) {
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_bucket{{{common},le=\"{le}\"}} {b} {t}"
                    );
                }
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_count{{{common}}} {} {t}",
                    buckets[19]
                );
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_sum{{{common}}} {}.{:03} {t}",
                    sum_us / 1000,
                    sum_us % 1000
                );
            }
        }
    }
    out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
    out.push_str("# TYPE process_resident_memory_bytes gauge\n");
    for pod in &pods {
        let mut v = 40_000_000 + rng.below(100_000_000);
        for k in 0..points {
            v = v + rng.below(300_000) - 150_000;
            let _ = writeln!(
                out,
                "process_resident_memory_bytes{{namespace=\"{}\",workload=\"{}\",pod=\"{}\"}} {v} {}",
                pod.namespace,
                pod.workload,
                pod.name,
                ts(pod, k)
            );
        }
    }
    out.push_str("# EOF\n");
    out
}

fn load(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let text = if full { istio_openmetrics(16, 40) } else { istio_openmetrics(1, 4) };
    let data = text.as_bytes();
    let samples = ExpositionParser::new(data, Dialect::OpenMetrics).count();
    eprintln!("load: {:.1} MB of OpenMetrics, {samples} samples", data.len() as f64 / 1e6);

    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut n = 0usize;
            let mut sum = 0.0;
            for s in ExpositionParser::new(data, Dialect::OpenMetrics) {
                match s {
                    Ok(s) => {
                        n += 1;
                        sum += s.value;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            black_box((n, sum))
        })
    });
    g.bench_function("store", |b| {
        b.iter(|| {
            let mut store = MemoryStore::new();
            match load_reader(data, FixtureFormat::OpenMetrics, &mut store, usize::MAX) {
                Ok(stats) => black_box(stats.samples),
                Err(e) => panic!("{e}"),
            }
        })
    });
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::load);
}

criterion_main!(group::benches);
