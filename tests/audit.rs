//! The audit log end to end: every call on the record in order, a hash chain that `audit
//! verify` checks, tampering named by line, an unwritable log refusing calls, key-use
//! tracking, and nothing secret in the log.

mod common;

use common::{Backend, TestDaemon, assert_refused};
use keyhaven::audit::{AuditRecord, Phase, chain_files, verify_files};
use keyhaven::client::ClientCredentials;
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use std::path::{Path, PathBuf};
use tonic::Code;

fn records(path: &Path) -> Vec<AuditRecord> {
    chain_files(path)
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

fn summary(records: &[AuditRecord]) -> Vec<(Phase, String, Option<String>, Option<String>)> {
    records
        .iter()
        .map(|r| {
            (
                r.phase,
                r.operation.clone(),
                r.outcome.as_ref().map(|o| o.code.clone()),
                r.outcome.as_ref().and_then(|o| o.reason.clone()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_recorded_in_order_and_the_chain_verifies() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let log = d.config.audit_log.clone();
    let key = d.create_key("audited").await;
    let blob = d
        .encrypt(
            &key.key_id,
            b"canary-plaintext-7731",
            &[("tenant", "canary-context-value")],
        )
        .await
        .unwrap();
    assert_refused(
        d.decrypt(&blob, &[("tenant", "other")]).await,
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    let unsigned = d
        .client
        .kms()
        .describe_key(tonic::Request::new(v1::DescribeKeyRequest {
            key_id: key.key_id.clone(),
        }))
        .await;
    assert_eq!(unsigned.unwrap_err().code(), Code::Unauthenticated);
    // The request id in the response metadata is the one in the log.
    let response = d
        .client
        .kms()
        .describe_key(d.client.signed(
            "DescribeKey",
            v1::DescribeKeyRequest {
                key_id: key.key_id.clone(),
            },
        ))
        .await
        .unwrap();
    let request_id = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    d.stop().await;

    let all = records(&log);
    let ok = || (Some("Ok".to_string()), None);
    let expected = vec![
        (Phase::Request, "kms:CreateKey".to_string(), None, None),
        (Phase::Response, "kms:CreateKey".into(), ok().0, ok().1),
        // Calls that change nothing have one record, written before their answer leaves.
        (Phase::Call, "kms:Encrypt".into(), ok().0, ok().1),
        (
            Phase::Call,
            "kms:Decrypt".into(),
            Some("InvalidArgument".into()),
            Some("InvalidCiphertextException".into()),
        ),
        (
            Phase::Unauthenticated,
            "kms:DescribeKey".into(),
            Some("Unauthenticated".into()),
            Some("MissingAuthenticationTokenException".into()),
        ),
        (Phase::Call, "kms:DescribeKey".into(), ok().0, ok().1),
    ];
    assert_eq!(summary(&all), expected);
    let root = format!("arn:keyhaven:iam::{}:root", d.account_id);
    for record in &all {
        if record.phase != Phase::Unauthenticated {
            assert_eq!(record.principal.as_deref(), Some(root.as_str()));
            assert!(
                record
                    .source
                    .as_deref()
                    .is_some_and(|s| s.starts_with("127.0.0.1:")),
                "{record:?}"
            );
        }
    }
    // Requests and responses pair by request id; the keys used are named.
    assert_eq!(all[0].request_id, all[1].request_id);
    assert_ne!(all[2].request_id, all[3].request_id);
    assert_eq!(all[1].keys, vec![key.arn.clone()]);
    assert_eq!(all[2].keys, vec![key.arn.clone()]);
    assert_eq!(all[3].keys, vec![key.arn.clone()]);
    assert_eq!(all[5].request_id, request_id);
    // Encryption-context keys appear; their values only as HMACs.
    let hmac = &all[2].encryption_context["tenant"];
    assert_eq!(hmac.len(), 64);
    assert_ne!(
        hmac, &all[3].encryption_context["tenant"],
        "different values, different HMACs"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        "canary-plaintext-7731",
        "canary-context-value",
        d.credentials.secret_access_key.expose(),
    ] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }
    // The chain verifies, with the head the store recorded.
    let files = chain_files(&log);
    let report = verify_files(&files, Some((all.len() as u64, head_hash(&log)))).unwrap();
    assert_eq!(report.records, all.len() as u64);
}

fn head_hash(log: &Path) -> String {
    use sha2::Digest;
    let text = std::fs::read_to_string(log).unwrap();
    let last = text.lines().last().unwrap();
    hex::encode(sha2::Sha256::digest(last.as_bytes()))
}

/// Runs `keyhaven audit verify --data-dir DIR`; returns (success, stderr).
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

async fn session_with_records(calls: usize) -> (TestDaemon, PathBuf) {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("tamper").await.key_id;
    for i in 0..calls {
        d.encrypt(&key, format!("{i}").as_bytes(), &[])
            .await
            .unwrap();
    }
    d.stop().await;
    let log = d.config.audit_log.clone();
    (d, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_bad_line() {
    // Untouched: passes, and compares the chain head.
    let (d, log) = session_with_records(8).await;
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
    assert!(
        output.contains("ok: 10 records") && output.contains("chain head compared"),
        "{output}"
    );
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let write = |lines: &[String]| std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    // (a) One byte changed in record 4 (a digit of its duration): line 5 no longer chains.
    let mut changed = owned.clone();
    let at = changed[3].find("\"duration").map(|i| i + 2).unwrap_or(10);
    let mut bytes = changed[3].clone().into_bytes();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    changed[3] = String::from_utf8(bytes).unwrap();
    write(&changed);
    let (ok, output) = verify_cli(d.dir.path());
    assert!(!ok);
    assert!(
        output.contains("audit.log:4") || output.contains("audit.log:5"),
        "{output}"
    );
    // …and the last record changed: the head no longer matches.
    let mut last = owned.clone();
    let end = last.len() - 1;
    last[end] = last[end].replace("\"Ok\"", "\"OK\"");
    write(&last);
    let (ok, output) = verify_cli(d.dir.path());
    assert!(
        !ok && output.contains(&format!("audit.log:{}", owned.len())) && output.contains("altered"),
        "{output}"
    );

    // (b) Record 6 removed: line 6 (what was 7) is named.
    let mut removed = owned.clone();
    removed.remove(5);
    write(&removed);
    let (ok, output) = verify_cli(d.dir.path());
    assert!(!ok && output.contains("audit.log:6:"), "{output}");

    // (c) The last three records cut off: named as cut off after the new end.
    write(&owned[..owned.len() - 3]);
    let (ok, output) = verify_cli(d.dir.path());
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("audit.log:{}", owned.len() - 2)) && output.contains("cut off"),
        "{output}"
    );

    // Restored: passes again.
    std::fs::write(&log, &original).unwrap();
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_refuses_calls_and_nothing_changes() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("before").await.key_id;
    d.stop().await;
    // Point the log at a device that refuses every write.
    d.config.audit_log = PathBuf::from("/dev/full");
    d.start_again().await;
    for result in [
        d.client
            .kms()
            .create_key(
                d.client
                    .signed("CreateKey", v1::CreateKeyRequest::default()),
            )
            .await
            .map(|_| ()),
        d.disable(&key).await,
        d.encrypt(&key, b"x", &[]).await.map(|_| ()),
    ] {
        assert_refused(result, Code::Unavailable, "AuditLogUnavailableException");
    }
    d.stop().await;
    d.config.audit_log = d.dir.path().join("audit").join("audit.log");
    d.start_again().await;
    assert_eq!(d.list_all_keys().await, vec![key.clone()]);
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_through_the_daemon_is_guarded() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("tailed").await;
    let tail = |client: &keyhaven::client::Client, lines: u32| {
        let mut audit = client.audit();
        let request = client.signed_audit(
            "TailAuditLog",
            v1::TailAuditLogRequest {
                lines,
                follow: false,
            },
        );
        async move {
            let mut stream = audit.tail_audit_log(request).await?.into_inner();
            let mut lines = Vec::new();
            while let Some(line) = stream.message().await? {
                lines.push(serde_json::from_str::<AuditRecord>(&line.line).unwrap());
            }
            Ok::<_, tonic::Status>(lines)
        }
    };
    // The tail's own request is already on the record when it reads.
    let last = tail(&d.client, 3).await.unwrap();
    assert_eq!(
        summary(&last)[..2],
        [
            (Phase::Request, "kms:CreateKey".to_string(), None, None),
            (
                Phase::Response,
                "kms:CreateKey".to_string(),
                Some("Ok".into()),
                None
            ),
        ]
    );
    assert_eq!(last[1].keys, vec![key.arn.clone()]);
    assert_eq!(
        (last[2].phase, last[2].operation.as_str()),
        (Phase::Request, "audit:TailAuditLog")
    );
    // A user without audit:ReadAudit is refused.
    d.client
        .iam()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: "eve".into(),
            },
        ))
        .await
        .unwrap();
    let created = d
        .client
        .iam()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: "eve".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let eve = d
        .client_with(ClientCredentials {
            access_key_id: created.access_key.unwrap().access_key_id,
            secret_access_key: SecretString::new(created.secret_access_key),
            session_token: None,
            region: d.config.region.clone(),
        })
        .await;
    assert_refused(
        tail(&eve, 5).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_rotates_by_size_and_the_chain_continues() {
    let mut d = TestDaemon::start_with(Backend::Sealed, |c| c.audit_max_bytes = 4096).await;
    let key = d.create_key("rotating log").await.key_id;
    for _ in 0..60 {
        d.encrypt(&key, b"x", &[]).await.unwrap();
    }
    // A tail reaches back across the rotated files: the last 40 lines in order, ending with
    // the tail's own request record (CreateKey's two, 60 Encrypts, then that one: 63).
    let mut stream = d
        .client
        .audit()
        .tail_audit_log(d.client.signed_audit(
            "TailAuditLog",
            v1::TailAuditLogRequest {
                lines: 40,
                follow: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(line) = stream.message().await.unwrap() {
        seqs.push(serde_json::from_str::<AuditRecord>(&line.line).unwrap().seq);
    }
    assert_eq!(seqs, (24..=63).collect::<Vec<u64>>());
    d.stop().await;
    let files = chain_files(&d.config.audit_log);
    assert!(files.len() >= 4, "{files:?}");
    let report = verify_files(&files, None).unwrap();
    // The tail's response record last.
    assert_eq!(report.records, 64);
    assert_eq!((report.first_seq, report.last_seq), (1, 64));
    let (ok, output) = verify_cli(d.dir.path());
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_when_a_key_was_last_used() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("used").await.key_id;
    assert_eq!(d.describe(&key).await.unwrap().last_used_date, None);
    let blob = d.encrypt(&key, b"x", &[]).await.unwrap();
    let described = d.describe(&key).await.unwrap();
    assert!(
        described
            .last_used_date
            .is_some_and(|t| (t - d.now()).abs() < 60)
    );
    assert_eq!(described.last_used_operation, "Encrypt");
    d.clock.advance(3600);
    d.decrypt(&blob, &[]).await.unwrap();
    let decrypted_at = d.now();
    // Survives a restart.
    d.restart().await;
    let described = d.describe(&key).await.unwrap();
    assert_eq!(described.last_used_operation, "Decrypt");
    assert_eq!(described.last_used_date, Some(decrypted_at));
    // A key pending deletion that something still uses: refused, and counted.
    d.schedule_deletion(&key, Some(7)).await.unwrap();
    assert_refused(
        d.decrypt(&blob, &[]).await,
        Code::FailedPrecondition,
        "KMSInvalidStateException",
    );
    assert_eq!(d.pending_deletion_uses(), 1);
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

/// The value of the first sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_calls_keys_and_flushes() {
    let d = TestDaemon::start_with(Backend::Sealed, |c| {
        c.set_metrics_listen("127.0.0.1:0").unwrap();
    })
    .await;
    let address = d.metrics_addr().expect("metrics listener");
    let key = d.create_key("measured").await.key_id;
    let blob = d.encrypt(&key, b"x", &[]).await.unwrap();
    d.decrypt(&blob, &[("wrong", "context")]).await.unwrap_err();
    let text = scrape(address);
    // The registry is shared by every daemon of this test binary: counts are at least ours.
    assert!(
        sample(
            &text,
            r#"keyhaven_requests_total{code="Ok",operation="kms:Encrypt"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            r#"keyhaven_requests_total{code="InvalidArgument",operation="kms:Decrypt"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            r#"keyhaven_request_duration_seconds_count{operation="kms:CreateKey"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            r#"keyhaven_keystore_operation_duration_seconds_count{keystore="sealed",operation="encrypt"}"#
        ) >= 1.0
    );
    assert!(sample(&text, "keyhaven_store_flush_batch_size_count") >= 1.0);
    assert!(sample(&text, "keyhaven_audit_records_total") >= 6.0);
    assert_eq!(sample(&text, r#"keyhaven_keys{state="Enabled"}"#), 1.0);
    d.disable(&key).await.unwrap();
    let text = scrape(address);
    assert_eq!(sample(&text, r#"keyhaven_keys{state="Enabled"}"#), 0.0);
    assert_eq!(sample(&text, r#"keyhaven_keys{state="Disabled"}"#), 1.0);
}
