//! An autoscaler embedding the engine: it keeps recent Istio request counters in a
//! `MemoryStore`, asks for the mesh-wide request rate of a workload, and turns the
//! number into a replica count the way a HorizontalPodAutoscaler does.
//!
//! Run: `cargo run -p promql --example autoscaler`

use promql::eval::Engine;
use promql::storage::MemoryStore;
use promql::value::Value;
use promql::Labels;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 4 pods of podinfo, each serving 12.5 req/s, scraped every 15 s for 10 minutes.
    let mut store = MemoryStore::new();
    for pod in 0..4 {
        let labels = Labels::from_pairs([
            ("__name__", "istio_requests_total"),
            ("destination_workload", "podinfo"),
            ("reporter", "destination"),
            ("pod", &format!("podinfo-{pod}")),
        ]);
        for i in 0..=40 {
            store.append(&labels, i * 15_000, i as f64 * 15.0 * 12.5);
        }
    }

    let engine = Engine::default();
    let now = 600_000; // ms since the epoch of this toy clock
    let query =
        r#"sum(rate(istio_requests_total{destination_workload="podinfo",reporter="destination"}[1m]))"#;
    let result = engine.instant_query(&store, query, now)?;
    let Value::Vector(samples) = result.value else {
        return Err("expected an instant vector".into());
    };
    let Some(rate) = samples.first().map(|s| s.v) else {
        return Err("no data for podinfo".into());
    };

    // The HPA's rule for an AverageValue target: desired = ceil(current * value / target),
    // here with the total rate spread over the current replicas.
    let (current_replicas, target_per_pod) = (4.0_f64, 10.0_f64);
    let desired = (current_replicas * (rate / current_replicas) / target_per_pod).ceil();
    println!("{query}\n= {rate:.3} req/s -> scale podinfo from {current_replicas} to {desired} replicas");
    Ok(())
}
