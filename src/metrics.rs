//! Prometheus metrics, served on an optional listener (`--metrics-listen`) at `/metrics`.
//!
//! The registry is process-wide (every daemon in a process shares it), so that code deep in
//! the store or a keystore can count without being handed a handle.
//!
//! Every label value comes from a closed set the daemon defines (its operations, gRPC codes,
//! key states, keystore names, log paths), never from what a caller sends: each new value is a
//! series kept for the life of the process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub keystore_seconds: HistogramVec,
    pub keystore_errors: IntCounterVec,
    pub keys: IntGaugeVec,
    pub keystore_orphans: IntGaugeVec,
    pub flush_batch: Histogram,
    pub cipher_cache: IntCounterVec,
    pub key_cache: IntCounterVec,
    pub pending_deletion_uses: IntCounter,
    pub audit_records: IntCounter,
    pub audit_disk_free_bytes: IntGaugeVec,
    pub audit_disk_below_floor: IntGaugeVec,
    pub unauthenticated_throttled: IntCounter,
    pub store_catch_up_reads: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("keyhaven".into()), None)?;
    let latency = vec![
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5,
    ];
    let requests = IntCounterVec::new(
        Opts::new(
            "requests_total",
            "API calls by operation and outcome (gRPC code)",
        ),
        &["operation", "code"],
    )?;
    let request_seconds = HistogramVec::new(
        HistogramOpts::new("request_duration_seconds", "API call latency by operation")
            .buckets(latency.clone()),
        &["operation"],
    )?;
    let keystore_seconds = HistogramVec::new(
        HistogramOpts::new(
            "keystore_operation_duration_seconds",
            "Keystore operation latency by keystore and operation",
        )
        .buckets(latency),
        &["keystore", "operation"],
    )?;
    let keystore_errors = IntCounterVec::new(
        Opts::new(
            "keystore_errors_total",
            "Keystore operations that failed (not counting ciphertexts that did not authenticate)",
        ),
        &["keystore"],
    )?;
    let keys = IntGaugeVec::new(Opts::new("keys", "Keys by state"), &["state"])?;
    let keystore_orphans = IntGaugeVec::new(
        Opts::new(
            "keystore_orphans",
            "Key material a keystore holds that no key record names (left in place; see \
             `keyhaven keystore orphans`)",
        ),
        &["keystore"],
    )?;
    let flush_batch = Histogram::with_opts(
        HistogramOpts::new(
            "store_flush_batch_size",
            "Commits made durable by one flush (group commit)",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
    )?;
    let cipher_cache = IntCounterVec::new(
        Opts::new(
            "keystore_cipher_cache_total",
            "Lookups of the sealed keystore's unwrapped-cipher cache, by outcome (hit, miss)",
        ),
        &["outcome"],
    )?;
    let key_cache = IntCounterVec::new(
        Opts::new(
            "key_cache_total",
            "Lookups of the key service's cache of key entries, by outcome (hit, miss: read from the store); a call may look its key up more than once",
        ),
        &["outcome"],
    )?;
    let pending_deletion_uses = IntCounter::new(
        "pending_deletion_use_total",
        "Calls that tried to use a key pending deletion",
    )?;
    let audit_records = IntCounter::new("audit_records_total", "Audit records written")?;
    // By the log's path: one value per configured log, never a caller's choice.
    let audit_disk_free_bytes = IntGaugeVec::new(
        Opts::new(
            "audit_disk_free_bytes",
            "Free bytes on the audit log's file system, at the last sync",
        ),
        &["log"],
    )?;
    let audit_disk_below_floor = IntGaugeVec::new(
        Opts::new(
            "audit_disk_below_floor",
            "1 while the audit log's file system has less free space than audit_min_free_bytes",
        ),
        &["log"],
    )?;
    let unauthenticated_throttled = IntCounter::new(
        "unauthenticated_throttled_total",
        "Requests that failed authentication and were refused by their source's rate limit",
    )?;
    let store_catch_up_reads = IntCounter::new(
        "store_catch_up_reads_total",
        "Quorum reads of a shared store's revision made to catch up with it (failed ones \
         too): a call named something this daemon had not heard of (at most one read a \
         call), or a write met another daemon's newer change",
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_seconds.clone()))?;
    registry.register(Box::new(keystore_seconds.clone()))?;
    registry.register(Box::new(keystore_errors.clone()))?;
    registry.register(Box::new(keys.clone()))?;
    registry.register(Box::new(keystore_orphans.clone()))?;
    registry.register(Box::new(flush_batch.clone()))?;
    registry.register(Box::new(cipher_cache.clone()))?;
    registry.register(Box::new(key_cache.clone()))?;
    registry.register(Box::new(pending_deletion_uses.clone()))?;
    registry.register(Box::new(audit_records.clone()))?;
    registry.register(Box::new(audit_disk_free_bytes.clone()))?;
    registry.register(Box::new(audit_disk_below_floor.clone()))?;
    registry.register(Box::new(unauthenticated_throttled.clone()))?;
    registry.register(Box::new(store_catch_up_reads.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        request_seconds,
        keystore_seconds,
        keystore_errors,
        keys,
        keystore_orphans,
        flush_batch,
        cipher_cache,
        key_cache,
        pending_deletion_uses,
        audit_records,
        audit_disk_free_bytes,
        audit_disk_below_floor,
        unauthenticated_throttled,
        store_catch_up_reads,
    })
}

/// The process's metrics; `None` only if registration failed (it cannot with these names).
pub fn metrics() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(error) => {
                tracing::error!(%error, "metrics unavailable");
                None
            }
        })
        .as_ref()
}

/// The text exposition of every metric, after `refresh` has updated the gauges.
pub fn render(refresh: &dyn Fn(&Metrics)) -> String {
    let Some(metrics) = metrics() else {
        return String::new();
    };
    refresh(metrics);
    let mut buffer = Vec::new();
    if TextEncoder::new()
        .encode(&metrics.registry.gather(), &mut buffer)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// Serves `/metrics` on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    refresh: Arc<dyn Fn(&Metrics) + Send + Sync>,
) -> tokio::task::JoinHandle<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let refresh = refresh.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let refresh = refresh.clone();
                    async move {
                        if request.uri().path() == "/metrics" {
                            http::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(bytes::Bytes::from(render(&*refresh))))
                        } else {
                            http::Response::builder()
                                .status(404)
                                .body(Full::new(bytes::Bytes::from_static(b"not found\n")))
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The address a metrics listener is bound to.
pub fn local_addr(listener: &tokio::net::TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
