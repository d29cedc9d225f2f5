//! Parsing speed on Prometheus' promqltest corpus, against the `promql-parser` crate.
//!
//! `parse/ours/corpus` parses every eval query (2,214) with the test engine's features.
//! The `common` pair parses only the queries both parsers accept, so that the ratio
//! compares like with like.

// The allocator promql-cli uses, so that the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use promql::Features;

fn parse(c: &mut Criterion) {
    let corpus = match promql_benches::corpus_queries() {
        Ok(q) => q,
        Err(e) => panic!("benchmark corpus: {e}"),
    };
    let features = Features::all();
    let common: Vec<&str> = corpus
        .iter()
        .map(String::as_str)
        .filter(|q| promql_parser::parser::parse(q).is_ok() && promql::parse_with(q, features).is_ok())
        .collect();
    let bytes = |qs: &[&str]| qs.iter().map(|q| q.len() as u64).sum::<u64>();
    eprintln!("corpus: {} queries; accepted by both parsers: {}", corpus.len(), common.len());

    let mut g = c.benchmark_group("parse");
    let all: Vec<&str> = corpus.iter().map(String::as_str).collect();
    g.throughput(Throughput::Bytes(bytes(&all)));
    g.bench_function("ours/corpus", |b| {
        b.iter(|| {
            for q in &all {
                let _ = black_box(promql::parse_with(black_box(q), features));
            }
        })
    });
    g.throughput(Throughput::Bytes(bytes(&common)));
    g.bench_function("ours/common", |b| {
        b.iter(|| {
            for q in &common {
                let _ = black_box(promql::parse_with(black_box(q), features));
            }
        })
    });
    g.bench_function("promql-parser/common", |b| {
        b.iter(|| {
            for q in &common {
                let _ = black_box(promql_parser::parser::parse(black_box(q)));
            }
        })
    });
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::parse);
}

criterion_main!(group::benches);
