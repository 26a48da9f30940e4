//! What `keyhaven bench` prints: a human summary or one JSON object per run.

use super::{Door, LoadReport, Operation};
use serde_json::{Value, json};
use std::time::Duration;

/// What was run, for the report.
pub(super) struct Description {
    pub(super) endpoint: String,
    pub(super) door: Door,
    pub(super) operation: Operation,
    pub(super) key_id: String,
    pub(super) key_created: bool,
    pub(super) payload_size: usize,
    pub(super) connections: usize,
}

pub(super) fn report_json(description: &Description, report: &LoadReport) -> Value {
    let failures: Vec<Value> = report
        .failures
        .iter()
        .map(|(kind, failure)| {
            json!({"Kind": kind, "Count": failure.count, "Example": failure.example})
        })
        .collect();
    let mut value = json!({
        "Endpoint": description.endpoint,
        "Door": description.door.name(),
        "Operation": description.operation.name(),
        "PayloadSize": description.payload_size,
        "Concurrency": report.concurrency,
        "Connections": description.connections,
        "Seconds": (report.elapsed.as_secs_f64() * 1e3).round() / 1e3,
        "Requests": report.succeeded + report.failed,
        "Succeeded": report.succeeded,
        "Failed": report.failed,
        "Failures": failures,
        "OpsPerSecond": (report.ops_per_second() * 10.0).round() / 10.0,
        "LatencyMs": report.latency_json(),
    });
    if description.operation != Operation::CreateKey {
        value["KeyId"] = json!(description.key_id);
        value["KeyCreated"] = json!(description.key_created);
    }
    value
}

/// "1.23 ms", "456 µs".
pub fn format_latency(latency: Duration) -> String {
    let micros = latency.as_secs_f64() * 1e6;
    if micros >= 1000.0 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{micros:.0} µs")
    }
}

pub(super) fn report_human(description: &Description, report: &LoadReport) -> String {
    let on = if description.operation == Operation::CreateKey {
        String::new()
    } else {
        format!(" on key {}", description.key_id)
    };
    let payload = if description.operation.needs_plaintext() {
        format!(", {}-byte plaintext", description.payload_size)
    } else {
        String::new()
    };
    let mut lines = vec![
        format!(
            "{}{on} at {} ({} door): {} in flight over {} connection{}{payload}",
            description.operation.name(),
            description.endpoint,
            description.door.name(),
            report.concurrency,
            description.connections,
            if description.connections == 1 {
                ""
            } else {
                "s"
            },
        ),
        format!(
            "  requests    {} in {:.2} s: {} succeeded, {} failed",
            report.succeeded + report.failed,
            report.elapsed.as_secs_f64(),
            report.succeeded,
            report.failed
        ),
        format!("  throughput  {:.1} ops/s", report.ops_per_second()),
        format!(
            "  latency     p50 {}  p90 {}  p99 {}  max {}  (mean {})",
            format_latency(report.latency.percentile(0.50)),
            format_latency(report.latency.percentile(0.90)),
            format_latency(report.latency.percentile(0.99)),
            format_latency(report.latency.max()),
            format_latency(report.latency.mean()),
        ),
    ];
    if report.failed > 0 {
        lines.push(format!("  FAILURES    {}", report.failure_summary()));
        for (kind, failure) in &report.failures {
            lines.push(format!("    {kind}: {}", failure.example));
        }
    }
    lines.join("\n")
}
