//! Clients nobody here wrote and the daemon's own: a stock Python gRPC client, a followed
//! `audit tail`, `keyhaven bench`, and a binding made through another daemon of a cluster.

use super::*;

/// The Python virtual environment `tests/python/setup.sh` makes (run by `make test`).
fn python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let python = target.join("python-grpc/bin/python");
    let ready = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ready,
        "{} has no grpcio / grpcio-tools: run `tests/python/setup.sh` (make test runs it)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_python_grpc_client_with_only_a_certificate_encrypts_and_is_refused_by_policy() {
    let python = python();
    let pki = Pki::new();
    let d = start(&pki).await;
    let arn = alice_arn(&d);
    let signed_alice = d.create_user("alice", Some(&alice_policy(&arn))).await;
    let key = d.create_key("python").await.key_id;
    let certificate = pki.client("app", Some(APP_URI));
    std::fs::write(pki.path("app.pem"), &certificate.cert).unwrap();
    std::fs::write(pki.path("app.key"), &certificate.key).unwrap();
    let example = |expect_bound: bool| {
        let output = std::process::Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/any_grpc_client.py"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"))
            .env(
                "KEYHAVEN_ENDPOINT",
                d.endpoint().trim_start_matches("https://"),
            )
            .env("KEYHAVEN_CA_CERT", pki.path("ca.pem"))
            .env("KEYHAVEN_CLIENT_CERT", pki.path("app.pem"))
            .env("KEYHAVEN_CLIENT_KEY", pki.path("app.key"))
            .env("KEYHAVEN_KEY_ID", &key)
            .output()
            .expect("run the Python example");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.success(), expect_bound, "{stdout}\n{stderr}");
        (stdout, stderr)
    };

    // Not bound yet: the first call fails, as unknown credentials do.
    let (_, stderr) = example(false);
    assert!(stderr.contains("StatusCode.UNAUTHENTICATED"), "{stderr}");
    assert!(stderr.contains("UnrecognizedClientException"), "{stderr}");

    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    let (stdout, stderr) = example(true);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{stderr}");
    assert_eq!(lines[0], format!("caller: {arn}"));
    assert_eq!(lines[1], "decrypted: hello from python");
    // Refused as alice's signed DescribeKey is: same status, same reason, same message.
    let signed = signed_alice
        .kms()
        .describe_key(signed_alice.signed(
            "DescribeKey",
            v1::DescribeKeyRequest {
                key_id: key.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(signed.code(), Code::PermissionDenied);
    assert!(
        signed.message().starts_with("AccessDeniedException: "),
        "{signed:?}"
    );
    assert_eq!(
        lines[2],
        format!("refused: PERMISSION_DENIED {}", signed.message())
    );
    // The Python calls are on the record as alice's, through the certificate door.
    let log = records(&d.config.audit_log);
    let decrypts: Vec<&AuditRecord> = log
        .iter()
        .filter(|r| r.operation == "kms:Decrypt" && r.door.as_deref() == Some("certificate"))
        .collect();
    assert_eq!(decrypts.len(), 1);
    assert_eq!(decrypts[0].principal.as_deref(), Some(arn.as_str()));
}

/// Follows the audit log over `client`'s connection, unsigned, until the stream ends; returns
/// the status it ended with, after checking it saw a `kms:CreateKey` record first.
async fn tail_until_refused(
    d: &TestDaemon,
    client: &Client,
    revoke: impl std::future::Future<Output = ()>,
) -> tonic::Status {
    let mut stream = client
        .audit()
        .tail_audit_log(Request::new(v1::TailAuditLogRequest {
            lines: 0,
            follow: true,
        }))
        .await
        .expect("TailAuditLog")
        .into_inner();
    d.create_key("seen by the tail").await;
    let within = std::time::Duration::from_secs(10);
    tokio::time::timeout(within, async {
        loop {
            let line = stream.message().await.unwrap().expect("open").line;
            if line.contains("\"kms:CreateKey\"") {
                return;
            }
        }
    })
    .await
    .expect("the tail sees the call");
    revoke.await;
    tokio::time::timeout(within, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the tail ended without a refusal"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the tail ends within seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_tail_ends_when_its_certificate_is_unbound_or_expires() {
    let pki = Pki::new();
    let d = start(&pki).await;
    d.create_user(
        "auditor",
        Some(r#"{"Statement":[{"Effect":"Allow","Action":"audit:ReadAudit","Resource":"*"}]}"#),
    )
    .await;
    bind(
        &d.client,
        v1::EntityType::User,
        "auditor",
        subject("auditor"),
    )
    .await
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let certificate = pki.client_valid(
        "auditor",
        None,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    );
    let auditor = connect_as(&d, &pki, &certificate).await;

    let unbound = tail_until_refused(&d, &auditor, async {
        unbind(
            &d.client,
            v1::EntityType::User,
            "auditor",
            subject("auditor"),
        )
        .await
        .unwrap();
    })
    .await;
    assert_refused::<()>(
        Err(unbound),
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );

    bind(
        &d.client,
        v1::EntityType::User,
        "auditor",
        subject("auditor"),
    )
    .await
    .unwrap();
    let expired = tail_until_refused(&d, &auditor, async {
        d.clock.advance(2 * common::DAY);
    })
    .await;
    assert_eq!(expired.code(), Code::Unauthenticated, "{expired:?}");
    assert!(
        expired.message().contains("not valid"),
        "ended for the certificate's expiry: {expired:?}"
    );
}

/// `keyhaven bench --door certificate`: the load runs unsigned as the principal the client
/// certificate is bound to, under her policies. What they allow succeeds; what they do not is
/// counted under its code and reason (exit 1); a certificate bound to nothing is refused
/// UNAUTHENTICATED on every request; a key it may not create is reported before any load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyhaven_bench_loads_the_certificate_door_as_the_bound_principal() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let files = pki.files.path().to_path_buf();
    for (name, certificate) in [
        ("operator", pki.client("operator", None)),
        ("app", pki.client("app", Some(APP_URI))),
    ] {
        std::fs::write(files.join(format!("{name}.pem")), &certificate.cert).unwrap();
        std::fs::write(files.join(format!("{name}.key")), &certificate.key).unwrap();
    }
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    let key = d.create_key("bench").await.key_id;
    let bench = |certificate: &str, args: &[&str]| {
        let mut command = keyhaven(&d, &pki, &files);
        command
            .env(
                "KEYHAVEN_CLIENT_CERT",
                files.join(format!("{certificate}.pem")),
            )
            .env(
                "KEYHAVEN_CLIENT_KEY",
                files.join(format!("{certificate}.key")),
            )
            // Nothing is signed on this door: no credentials are needed.
            .env_remove("KEYHAVEN_ACCESS_KEY_ID")
            .env_remove("KEYHAVEN_SECRET_ACCESS_KEY")
            .args([
                "--output",
                "json",
                "bench",
                "--door",
                "certificate",
                "--quiet",
            ])
            .args(["--requests", "30", "--concurrency", "3"])
            .args(args);
        let (ok, out, err) = run(command);
        let report = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        (ok, report, err)
    };

    for operation in ["encrypt", "decrypt"] {
        let (ok, report, err) = bench("app", &["--key", &key, "--operation", operation]);
        assert!(ok, "{operation}: {report}{err}");
        assert_eq!(report["Door"], "certificate", "{report}");
        assert_eq!(report["Succeeded"], 30, "{operation}: {report}");
        assert_eq!(report["Failed"], 0, "{operation}: {report}");
    }
    // Her policies allow GenerateDataKey only from 10.0.0.0/8.
    let (ok, report, err) = bench("app", &["--key", &key, "--operation", "generate-data-key"]);
    assert!(!ok, "{report}");
    assert_eq!(report["Failed"], 30, "{report}");
    assert_eq!(
        report["Failures"][0]["Kind"], "PermissionDenied AccessDeniedException",
        "{report}"
    );
    assert_eq!(
        err.trim_end(),
        "keyhaven: bench: 30 requests failed (see above)"
    );
    // A certificate bound to nothing is nobody.
    let (ok, report, _) = bench("operator", &["--key", &key]);
    assert!(!ok, "{report}");
    assert_eq!(report["Succeeded"], 0, "{report}");
    assert_eq!(
        report["Failures"][0]["Kind"]
            .as_str()
            .map(|kind| kind.starts_with("Unauthenticated")),
        Some(true),
        "{report}"
    );
    // Without --key the bench creates one, which her policies do not allow: nothing runs.
    let keys = key_count(&d).await;
    let (ok, report, err) = bench("app", &[]);
    assert!(!ok && report.is_null(), "{report}");
    assert!(
        err.starts_with("keyhaven: bench: cannot create a key to use: AccessDeniedException"),
        "{err}"
    );
    assert_eq!(key_count(&d).await, keys);
}

/// A certificate bound through one daemon of a cluster calls at once through another: a
/// daemon that finds no binding for a certificate catches up with the store before it refuses
/// it. A certificate bound to nothing is still refused.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_through_one_daemon_calls_at_once_through_another() {
    let pki = Pki::new();
    let settings = pki.settings();
    let a = TestDaemon::start_with_tls(
        Backend::SealedOnEtcd,
        |c| {
            c.tls = Some(settings);
            c.unauthenticated_burst = 1_000;
        },
        pki.client_tls(&pki.client("operator", None)),
    )
    .await;
    // B hears of every change 100 ms late: only catching up finds a new binding at once.
    let b = a.join_lagging(std::time::Duration::from_millis(100)).await;
    for round in 0..10u32 {
        let name = format!("fresh-{round}");
        // Connected first, so that the call follows the binding at once.
        let through_b = connect_as(&b, &pki, &pki.client(&name, None)).await;
        a.create_user(&name, None).await;
        bind(&a.client, v1::EntityType::User, &name, subject(&name))
            .await
            .expect("BindCertificate");
        let arn = unsigned_whoami(&through_b)
            .await
            .unwrap_or_else(|s| panic!("round {round}: a new binding on B: {s:?}"));
        assert!(
            arn.ends_with(&format!(":user/{name}")),
            "round {round}: {arn}"
        );
    }
    let unbound = connect_as(&b, &pki, &pki.client("bound-to-nothing", None)).await;
    assert_refused(
        unsigned_whoami(&unbound).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}
