//! The `query` step: a PromQL instant query against Prometheus's HTTP API.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::ServiceConfig;

/// One sample of an instant vector (or a scalar, with no labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Runs `promql` as an instant query.
pub async fn instant_query(
    client: &reqwest::Client,
    prom: &ServiceConfig,
    promql: &str,
) -> Result<Vec<Sample>, String> {
    let resp = client
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[("query", promql)])
        .timeout(prom.timeout)
        .send()
        .await
        .map_err(|e| format!("Prometheus {}: {e}", prom.url))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        format!("Prometheus answered {status} with something that is not JSON: {e}")
    })?;
    parse(&v)
}

/// Parses an API answer: `vector` and `scalar` results; anything else is an error.
pub fn parse(v: &Value) -> Result<Vec<Sample>, String> {
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus: {}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("unknown error")
        ));
    }
    let value_of = |pair: &Value| -> Result<f64, String> {
        pair.get(1)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| format!("Prometheus: unexpected sample {pair}"))
    };
    let data = &v["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        let labels = item["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| {
                                        (k.clone(), v.as_str().unwrap_or_default().to_string())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        Ok(Sample {
                            labels,
                            value: value_of(&item["value"])?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_else(|| Ok(Vec::new())),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value_of(&data["result"])?,
        }]),
        other => Err(format!(
            "Prometheus: unsupported result type {other:?}; query must return a vector or a scalar"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_vectors_scalars_and_errors() {
        let v = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "instance": "a:9100"}, "value": [1700000000.1, "1"]},
            {"metric": {"instance": "b:9100"}, "value": [1700000000.1, "NaN"]}
        ]}});
        let s = parse(&v).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["instance"], "a:9100");
        assert_eq!(s[0].value, 1.0);
        assert!(s[1].value.is_nan());
        let v =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "42"]}});
        assert_eq!(parse(&v).unwrap()[0].value, 42.0);
        let v = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert_eq!(parse(&v).unwrap_err(), "Prometheus: bad_data: parse error");
        let v = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(parse(&v).unwrap_err().contains("matrix"));
    }
}
