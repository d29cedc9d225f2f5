//! The places where a PromQL engine can turn quadratic: many-to-one joins, one-to-one
//! matching, `topk` with a large k, regex matchers with long alternations, and
//! `count_values` with many distinct values; and set operators and `label_replace`,
//! which build or match a label set per series. Each runs at 1k, 10k and 100k series;
//! the time per series must stay flat.
//!
//! Under `cargo test --benches` only the smallest size runs, once.

// The allocator promql-cli uses, so that the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use promql::eval::Engine;
use promql::storage::MemoryStore;
use promql::Labels;

const T: i64 = 600_000;

/// `n` series of `requests_total` over n/4 pods, `n/4` series of `pod_info` (one per
/// pod, with a `version` label) and `n` of `limits` matching `requests_total` one to one.
fn store(n: usize) -> MemoryStore {
    let mut s = MemoryStore::new();
    for i in 0..n {
        let pod = format!("pod-{:06}", i / 4);
        let code = ["200", "404", "500", "503"][i % 4];
        let req = Labels::from_pairs([("__name__", "requests_total"), ("pod", pod.as_str()), ("code", code)]);
        let lim = Labels::from_pairs([("__name__", "limits"), ("pod", pod.as_str()), ("code", code)]);
        for k in 0..5 {
            // Distinct rates: count_values sees n values.
            s.append(&req, T - 60_000 + k * 15_000, (k as f64) * (i as f64 + 1.0));
        }
        s.append(&lim, T, 100.0 + i as f64);
        if i % 4 == 0 {
            let info =
                Labels::from_pairs([("__name__", "pod_info"), ("pod", pod.as_str()), ("version", "v1")]);
            s.append(&info, T, 1.0);
        }
    }
    s
}

fn queries(n: usize) -> Vec<(&'static str, String)> {
    // 500 alternatives, the last ones matching nothing.
    let alternation: Vec<String> = (0..500).map(|i| format!("pod-{:06}", i * 7)).collect();
    vec![
        ("group_left", "rate(requests_total[1m]) * on (pod) group_left (version) pod_info".to_owned()),
        ("one_to_one", "requests_total / on (pod, code) limits".to_owned()),
        ("topk_half", format!("topk({}, rate(requests_total[1m]))", n / 2)),
        ("regex_500", format!("requests_total{{pod=~\"{}\"}}", alternation.join("|"))),
        ("not_regex_500", format!("requests_total{{pod!~\"{}\"}}", alternation.join("|"))),
        ("count_values", "count_values(\"rate\", rate(requests_total[1m]))".to_owned()),
        ("unless_on", "requests_total unless on (pod) pod_info".to_owned()),
        ("label_replace", "label_replace(requests_total, \"x\", \"$1\", \"pod\", \"pod-(.*)\")".to_owned()),
    ]
}

fn corners(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[1_000, 10_000, 100_000] } else { &[1_000] };
    let engine = Engine::default();
    let mut g = c.benchmark_group("corners");
    g.sample_size(10);
    for &n in sizes {
        let s = store(n);
        g.throughput(Throughput::Elements(n as u64));
        for (name, q) in queries(n) {
            // Fail loudly rather than time an error.
            if let Err(e) = engine.instant_query(&s, &q, T) {
                panic!("{name}: {e}");
            }
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(engine.instant_query(&s, &q, T).map(|r| r.value)))
            });
        }
    }
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::corners);
}

criterion_main!(group::benches);
