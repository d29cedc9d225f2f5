//! Prometheus' HTTP API JSON for query results: the `data` object of `/api/v1/query`
//! and `/api/v1/query_range` responses.

use serde_json::{json, Map, Number, Value as Json};

use crate::eval::kernels::go_format_float;
use crate::labels::Labels;
use crate::value::{Timestamp, Value};

/// A timestamp as the API writes it: seconds, with up to three decimals.
fn time(ms: Timestamp) -> Json {
    if ms % 1000 == 0 {
        Json::Number(Number::from(ms / 1000))
    } else {
        Number::from_f64(ms as f64 / 1000.0).map_or(Json::Null, Json::Number)
    }
}

fn metric(labels: &Labels) -> Json {
    let map: Map<String, Json> =
        labels.iter().map(|l| (l.name.to_string(), Json::String(l.value.to_string()))).collect();
    Json::Object(map)
}

fn point(t: Timestamp, v: f64) -> Json {
    json!([time(t), go_format_float(v)])
}

/// The `data` object for a value: `{"resultType": …, "result": …}`.
///
/// ```
/// use promql::value::{Sample, Value};
/// use promql::Labels;
/// let v = Value::Vector(vec![Sample { labels: Labels::from_pairs([("job", "api")]), t: 1_500, v: 2.0 }]);
/// assert_eq!(
///     promql::api::data_json(&v).to_string(),
///     r#"{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[1.5,"2"]}]}"#
/// );
/// ```
pub fn data_json(value: &Value) -> Json {
    match value {
        Value::Scalar { t, v } => json!({"resultType": "scalar", "result": point(*t, *v)}),
        Value::String { t, v } => json!({"resultType": "string", "result": [time(*t), v]}),
        Value::Vector(samples) => {
            let result: Vec<Json> = samples
                .iter()
                .map(|s| json!({"metric": metric(&s.labels), "value": point(s.t, s.v)}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Value::Matrix(series) => {
            let result: Vec<Json> = series
                .iter()
                .map(|s| {
                    let values: Vec<Json> = s.points.iter().map(|p| point(p.t, p.v)).collect();
                    json!({"metric": metric(&s.labels), "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    }
}
