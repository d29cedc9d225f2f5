//! A server that answers every query at once with the same one-sample vector, without
//! reading it: the least time any server can take, as a benchmark client sees it.
//! `benches/README.md` runs it beside Prometheus through `qbench.py` to show which
//! latency ratios no evaluator can reach with that client on a given machine. Given a
//! file, it answers with that file's bytes instead: a recorded answer of one query, to
//! see what delivering an answer of that size costs.
//!
//! ```text
//! cargo run --release -p adapter-cli --example fixed_answer -- 127.0.0.1:19394 [ANSWER.json]
//! ```

use anyhow::Context;
use axum::http::header;
use axum::routing::get;
use axum::serve::ListenerExt;

/// One sample without labels, the size of a one-workload `sum(rate(…))` answer.
const ANSWER: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1704070800,"3.2222222222222223"]}]}}"#;

fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:19394".to_owned());
    let body: &'static str = match std::env::args().nth(2) {
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading the answer {path}"))?;
            Box::leak(text.into_boxed_str())
        }
        None => ANSWER,
    };
    // The runtime `serve` uses, so that only the evaluation differs.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listening on {listen}"))?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let answer = move || async move { ([(header::CONTENT_TYPE, "application/json")], body) };
        let app = axum::Router::new()
            .route("/api/v1/query", get(answer).post(answer))
            .route("/api/v1/query_range", get(answer).post(answer));
        eprintln!("answering every query on http://{listen} with the same {} bytes", body.len());
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}
