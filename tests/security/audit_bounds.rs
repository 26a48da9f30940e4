//! Unauthenticated traffic has a bounded cost: metrics labels, audit records, disk.
//!
//! Also what the audit log's files promise: retention that `audit verify` still passes, a
//! stored chain start that tells retention from records cut off by hand, and files only the
//! daemon's user can read.

use super::common::{Backend, TestDaemon, assert_refused};
use keyhaven::audit::{AuditRecord, Phase, chain_files, verify_files};
use keyhaven::proto::v1;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tonic::Code;

/// One DescribeKey sent to `path` (served or not), with `authorization` as the only
/// credential, on a connection of its own.
async fn raw_call(
    d: &TestDaemon,
    path: &str,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    raw_call_on(channel, path, authorization).await
}

async fn raw_call_on(
    channel: tonic::transport::Channel,
    path: &str,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let mut request = tonic::Request::new(v1::DescribeKeyRequest {
        key_id: "alias/nothing".into(),
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let codec =
        tonic_prost::ProstCodec::<v1::DescribeKeyRequest, v1::DescribeKeyResponse>::default();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(request, path, codec).await.map(|_| ())
}

async fn channel(d: &TestDaemon) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

const DESCRIBE: &str = "/keyhaven.v1.KeyManagementService/DescribeKey";

/// A signature header naming an 800-byte access key id, as the flood in the review did.
fn long_key_authorization() -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={}/20261204/local/kms/aws4_request, \
         SignedHeaders=host;x-amz-date;x-keyhaven-nonce, Signature={}",
        "A".repeat(800),
        "0".repeat(64)
    )
}

fn scrape(address: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Every value the label `name` takes in the samples of metrics named `metric…`.
fn label_values(text: &str, metric: &str, name: &str) -> BTreeSet<String> {
    let marker = format!("{name}=\"");
    text.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| {
            let at = l.find(&marker)? + marker.len();
            let end = l[at..].find('"')?;
            Some(l[at..at + end].to_owned())
        })
        .collect()
}

fn records(log: &Path) -> Vec<AuditRecord> {
    chain_files(log)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<AuditRecord>>()
        })
        .collect()
}

fn log_bytes(log: &Path) -> u64 {
    chain_files(log)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

/// Runs `keyhaven audit verify --data-dir DIR`; returns (success, stderr and stdout).
fn verify_cli(data_dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------- item 4: metrics labels

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_random_paths_leave_the_metrics_label_set_bounded() {
    let d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.set_metrics_listen("127.0.0.1:0").unwrap();
        // The label set is the point here, not the rate limit.
        c.unauthenticated_rate_per_second = 100_000;
        c.unauthenticated_burst = 100_000;
    })
    .await;
    let address = d.metrics_addr().expect("metrics listener");
    let key = d.create_key("labelled").await.key_id;
    d.encrypt(&key, b"x", &[]).await.unwrap();
    let channel = channel(&d).await;
    for i in 0..300 {
        let path = match i % 3 {
            0 => format!("/keyhaven.v1.KeyManagementService/Random{i}x{}", i * 7919),
            1 => format!("/keyhaven.evil{i}.Service/Method{i}"),
            _ => format!("/keyhaven.v1.IdentityService/%1B%5B2J{i}"),
        };
        let refused = raw_call_on(channel.clone(), &path, None).await;
        assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated, "{path}");
    }
    // A signed call to a method the daemon does not serve counts as unknown too.
    let signed = d.client.signed(
        "NoSuchMethod",
        v1::DescribeKeyRequest {
            key_id: key.clone(),
        },
    );
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<v1::DescribeKeyRequest, v1::DescribeKeyResponse>::default();
    let unserved = grpc
        .unary(
            signed,
            http::uri::PathAndQuery::from_static("/keyhaven.v1.KeyManagementService/NoSuchMethod"),
            codec,
        )
        .await;
    assert!(unserved.is_err());

    let text = scrape(address);
    let mut operations = label_values(&text, "keyhaven_requests_total", "operation");
    operations.extend(label_values(
        &text,
        "keyhaven_request_duration_seconds",
        "operation",
    ));
    // The registry is shared by every daemon of this test binary: whatever they called, the
    // names come from the daemon's own closed set.
    for operation in &operations {
        let named = ["kms:", "iam:", "sts:", "audit:"].iter().any(|p| {
            operation
                .strip_prefix(p)
                .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_alphanumeric()))
        });
        assert!(
            named || operation == "unknown",
            "label value {operation:?} is not one of the daemon's operations"
        );
        assert!(!operation.contains("Random") && !operation.contains("Method"));
    }
    assert!(operations.contains("unknown"), "{operations:?}");
    assert!(operations.contains("kms:Encrypt"), "{operations:?}");
    assert!(operations.len() < 150, "{operations:?}");
    let unknown = text
        .lines()
        .filter(|l| {
            l.starts_with("keyhaven_requests_total{") && l.contains("operation=\"unknown\"")
        })
        .count();
    assert!(unknown <= 3, "unknown calls by code: {unknown}");
    // The records name the same closed set.
    let log = d.config.audit_log.clone();
    assert!(
        records(&log)
            .iter()
            .all(|r| !r.operation.contains("Random") && !r.operation.contains("evil"))
    );
}

// ------------------------------------------------------------ item 5: the audit flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_refusals_with_long_key_ids_write_a_few_short_records_and_a_count() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let log = d.config.audit_log.clone();
    let before = log_bytes(&log);
    let records_before = records(&log).len();
    let authorization = long_key_authorization();
    let channel = channel(&d).await;
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let refused = raw_call_on(channel.clone(), DESCRIBE, Some(&authorization))
            .await
            .unwrap_err();
        *codes.entry(format!("{:?}", refused.code())).or_insert(0u64) += 1;
    }
    // Default limits (20/s, burst 40): most of the flood is throttled.
    assert!(
        codes.get("ResourceExhausted").copied().unwrap_or(0) >= 800,
        "{codes:?}"
    );
    assert!(
        codes.get("Unauthenticated").copied().unwrap_or(0) >= 40,
        "{codes:?}"
    );
    let written_during = log_bytes(&log) - before;
    // A signed call from the same source is served all the same.
    d.create_key("still served").await;
    // Shutdown closes the windows still open: their counts are written.
    d.stop().await;

    let after: Vec<AuditRecord> = records(&log).split_off(records_before);
    let refusals: Vec<&AuditRecord> = after
        .iter()
        .filter(|r| r.phase == Phase::Unauthenticated)
        .collect();
    let summaries: Vec<&AuditRecord> = after
        .iter()
        .filter(|r| r.phase == Phase::UnauthenticatedSummary)
        .collect();
    // One record per ten-second window (the flood takes a few seconds at most), the rest in
    // summaries that carry the count.
    assert!(
        !refusals.is_empty() && refusals.len() <= 3,
        "{} refusals recorded",
        refusals.len()
    );
    let counted: u64 = summaries.iter().map(|s| s.count.unwrap()).sum();
    assert_eq!(counted + refusals.len() as u64, 1000);
    let throttled: u64 = summaries.iter().map(|s| s.throttled.unwrap()).sum();
    assert_eq!(throttled, codes["ResourceExhausted"]);
    for summary in &summaries {
        assert_eq!(summary.source.as_deref(), Some("127.0.0.1"));
        assert!(summary.since.is_some());
    }
    // The access key id is not kept verbatim: marked, and no longer than one.
    for refusal in &refusals {
        let id = refusal.access_key_id.as_deref().unwrap();
        assert_eq!(id, format!("malformed:{}", "A".repeat(20)));
        let line = serde_json::to_string(refusal).unwrap();
        assert!(line.len() < 600, "{line}");
    }
    assert!(
        written_during < 4 * 1024,
        "{written_during} bytes of audit log for 1,000 refusals"
    );
    assert!(log_bytes(&log) - before < 8 * 1024);
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_rate_limit_are_throttled_with_the_exact_status() {
    let mut d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.unauthenticated_rate_per_second = 1;
        c.unauthenticated_burst = 5;
    })
    .await;
    let log = d.config.audit_log.clone();
    let records_before = records(&log).len();
    let channel = channel(&d).await;
    // The burst: refused as unauthenticated, with their own reason.
    for _ in 0..5 {
        let refused = raw_call_on(channel.clone(), DESCRIBE, None).await;
        assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    }
    // Then throttled.
    let mut throttled = 0;
    for _ in 0..15 {
        match raw_call_on(channel.clone(), DESCRIBE, None).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert_refused::<()>(Err(status), Code::ResourceExhausted, "ThrottlingException");
                throttled += 1;
            }
            other => assert_eq!(other.unwrap_err().code(), Code::Unauthenticated),
        }
    }
    // At 1 a second, at most a token or two came back meanwhile.
    assert!(throttled >= 12, "{throttled} throttled");
    // A correctly signed call from the throttled source is served, and changes what it should.
    let key = d.create_key("served while throttled").await.key_id;
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    d.stop().await;
    let after: Vec<AuditRecord> = records(&log).split_off(records_before);
    let refusals = after
        .iter()
        .filter(|r| r.phase == Phase::Unauthenticated)
        .count();
    assert_eq!(
        refusals, 1,
        "only the first refusal of the window is recorded"
    );
    let summary = after
        .iter()
        .find(|r| r.phase == Phase::UnauthenticatedSummary)
        .expect("a summary");
    assert_eq!(summary.count, Some(19));
    assert_eq!(summary.throttled, Some(throttled));
    assert!(after.iter().any(|r| r.operation == "kms:CreateKey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_its_window_writes_the_summary_then_itself() {
    let mut d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.unauthenticated_rate_per_second = 1000;
        c.unauthenticated_burst = 1000;
    })
    .await;
    let log = d.config.audit_log.clone();
    let records_before = records(&log).len();
    for _ in 0..10 {
        raw_call(&d, DESCRIBE, None).await.unwrap_err();
    }
    d.clock.advance(11);
    raw_call(&d, DESCRIBE, None).await.unwrap_err();
    d.stop().await;
    let after: Vec<AuditRecord> = records(&log).split_off(records_before);
    let phases: Vec<(Phase, Option<u64>)> = after.iter().map(|r| (r.phase, r.count)).collect();
    assert_eq!(
        phases,
        vec![
            (Phase::Unauthenticated, None),
            (Phase::UnauthenticatedSummary, Some(9)),
            (Phase::Unauthenticated, None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_the_oldest_files_and_verify_still_passes() {
    let mut d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.audit_max_bytes = 4096;
        c.audit_max_files = 2;
    })
    .await;
    let log = d.config.audit_log.clone();
    let key = d.create_key("retained").await.key_id;
    for _ in 0..60 {
        d.encrypt(&key, b"x", &[]).await.unwrap();
    }
    d.stop().await;
    let rotated = keyhaven::audit::rotated_files(&log);
    let numbers: Vec<u64> = rotated.iter().map(|(n, _)| *n).collect();
    // More than two files were rotated; the two newest are kept.
    assert_eq!(numbers.len(), 2, "{numbers:?}");
    assert!(numbers[0] > 1, "{numbers:?}");
    assert!(!PathBuf::from(format!("{}.1", log.display())).exists());
    let kept = records(&log);
    assert!(kept[0].seq > 1, "the oldest records went");
    assert_eq!(kept.last().unwrap().seq, 62);
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
    assert!(output.contains("chain start compared"), "{output}");
    assert!(
        output.contains(&format!("sequence {}–62", kept[0].seq)),
        "{output}"
    );

    // Cutting records off the start of what is kept is still noticed.
    let oldest = &rotated[0].1;
    let text = std::fs::read_to_string(oldest).unwrap();
    let rest: String = text.lines().skip(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(oldest, rest).unwrap();
    let (ok, output) = verify_cli(d.dir.path());
    assert!(!ok, "{output}");
    assert!(output.contains("cut off its start"), "{output}");
    std::fs::write(oldest, text).unwrap();
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_older_than_the_age_limit_are_removed() {
    let mut d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.audit_max_bytes = 4096;
        c.audit_max_age_days = Some(7);
    })
    .await;
    let log = d.config.audit_log.clone();
    let key = d.create_key("aged").await.key_id;
    for _ in 0..40 {
        d.encrypt(&key, b"x", &[]).await.unwrap();
    }
    d.stop().await;
    let rotated = keyhaven::audit::rotated_files(&log);
    assert!(rotated.len() >= 3, "{rotated:?}");
    // The two oldest last written eight days ago.
    let eight_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400);
    for (_, path) in &rotated[..2] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(eight_days_ago)
            .unwrap();
    }
    d.start_again().await;
    d.stop().await;
    let left = keyhaven::audit::rotated_files(&log);
    assert_eq!(left, rotated[2..].to_vec());
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_under_the_free_space_floor_is_reported_before_it_is_full() {
    let d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.set_metrics_listen("127.0.0.1:0").unwrap();
        c.audit_min_free_bytes = u64::MAX;
    })
    .await;
    let address = d.metrics_addr().expect("metrics listener");
    let log = d.config.audit_log.display().to_string();
    let below = format!("keyhaven_audit_disk_below_floor{{log=\"{log}\"}} ");
    let free = format!("keyhaven_audit_disk_free_bytes{{log=\"{log}\"}} ");
    // The watch runs at the once-a-second sync.
    let mut text = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = scrape(address);
        if text.contains(&below) {
            break;
        }
    }
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value(&below), 1.0);
    assert!(value(&free) > 0.0);
    // Calls are still served: the floor warns, it does not refuse.
    d.create_key("still room").await;
}

// ------------------------------------------------- item 17: records cut off the start

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_cut_off_the_start_are_reported_by_verify() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("cut").await.key_id;
    for i in 0..8 {
        d.encrypt(&key, format!("{i}").as_bytes(), &[])
            .await
            .unwrap();
    }
    d.stop().await;
    let log = d.config.audit_log.clone();
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
    let original = std::fs::read_to_string(&log).unwrap();
    // `sed -i '1,5d' audit.log`
    let cut: String = original.lines().skip(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, cut).unwrap();
    // Every remaining link holds: only the stored start tells.
    assert!(verify_files(&chain_files(&log), None).is_ok());
    let (ok, output) = verify_cli(d.dir.path());
    assert!(!ok, "{output}");
    assert!(
        output.contains("audit.log:1:")
            && output.contains("the log starts at sequence 6 but the chain starts at 1")
            && output.contains("cut off its start"),
        "{output}"
    );
    // The daemon still starts on it (and warns); the chain goes on.
    d.start_again().await;
    d.create_key("after the cut").await;
    d.stop().await;
    std::fs::write(&log, {
        let now = std::fs::read_to_string(&log).unwrap();
        original.clone()
            + &now
                .lines()
                .skip(original.lines().count() - 5)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
    })
    .unwrap();
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
}

// ------------------------------------------------------------- item 18: file modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_files_are_readable_by_the_daemon_alone() {
    let elsewhere = tempfile::tempdir().unwrap();
    let path = elsewhere.path().join("logs").join("keyhaven-audit.log");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A file someone made world-readable before the daemon started.
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.audit_log = path.clone();
        c.audit_max_bytes = 4096;
    })
    .await;
    assert_eq!(mode(&path), 0o600);
    let key = d.create_key("private").await.key_id;
    for _ in 0..30 {
        d.encrypt(&key, b"x", &[]).await.unwrap();
    }
    d.stop().await;
    let files = chain_files(&path);
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // The default place, in a directory the daemon makes.
    let d = TestDaemon::start(Backend::Sealed).await;
    d.create_key("default place").await;
    assert_eq!(mode(&d.config.audit_log), 0o600);
    assert_eq!(mode(d.config.audit_log.parent().unwrap()), 0o700);
}
