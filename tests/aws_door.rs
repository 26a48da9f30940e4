//! The AWS door end to end, driven by stock AWS clients nobody here wrote: boto3 and botocore
//! from PyPI (installed into target/aws-venv by tests/python/aws-setup.sh, which `make test`
//! runs) against a real daemon serving KMS JSON 1.1 on 127.0.0.1:0.

mod common;

use common::{Backend, TestDaemon};
use keyhaven::proto::v1;
use std::path::PathBuf;
use std::process::Command;

/// The venv's python with boto3, or a failure naming the setup step.
fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/aws-venv/bin/python");
    let usable = python.exists()
        && Command::new(&python)
            .args(["-c", "import boto3"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        usable,
        "boto3 is not installed in {}: run tests/python/aws-setup.sh (make test runs it)",
        python.display()
    );
    python
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// A daemon with the AWS door on; refusals on purpose are many, so the per-source limit on
/// failed authentication is raised.
async fn daemon() -> TestDaemon {
    TestDaemon::start_with(Backend::Sealed, |config| {
        config.set_aws_listen("127.0.0.1:0").expect("aws_listen");
        config.unauthenticated_rate_per_second = 1000;
        config.unauthenticated_burst = 1000;
    })
    .await
}

/// Creates IAM user `name` with `policy` through the gRPC API; its access key id and secret.
async fn user(daemon: &TestDaemon, name: &str, policy: &str) -> (String, String) {
    let iam = daemon.client.iam();
    iam.clone()
        .create_user(daemon.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateUser");
    iam.clone()
        .put_entity_policy(daemon.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::User as i32,
                entity_name: name.into(),
                policy_name: "inline".into(),
                policy_document: policy.into(),
            },
        ))
        .await
        .expect("PutEntityPolicy");
    let key = iam
        .clone()
        .create_access_key(daemon.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateAccessKey")
        .into_inner();
    (
        key.access_key.expect("access key").access_key_id,
        key.secret_access_key,
    )
}

fn audit_lines(daemon: &TestDaemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&daemon.config.audit_log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit record"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_drives_the_kms_lifecycle_through_the_aws_door() {
    let python = python();
    let daemon = daemon().await;
    let aws = daemon.aws_addr().expect("the AWS door listens");
    // A key the user may use, made through the gRPC door: both doors share keys and policies.
    let user_key = daemon.create_key("the user's key").await;
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
            "Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":"{}"}}]}}"#,
        user_key.arn
    );
    let (user_id, user_secret) = user(&daemon, "aws-door-user", &policy).await;
    let mut command = Command::new(python);
    command
        .arg(script("aws_kms_lifecycle.py"))
        .env_clear()
        .env("AWS_ENDPOINT_URL", format!("http://{aws}"))
        .env("AWS_ACCESS_KEY_ID", &daemon.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            daemon.credentials.secret_access_key.expose(),
        )
        .env("AWS_REGION", &daemon.config.region)
        .env("USER_ACCESS_KEY_ID", &user_id)
        .env("USER_SECRET_ACCESS_KEY", &user_secret)
        .env("USER_KEY_ID", &user_key.key_id);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("lifecycle complete"),
        "boto3 lifecycle failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The calls are in the audit log, naming the door they came through.
    let records = audit_lines(&daemon);
    let through = |door: &str, operation: &str| {
        records
            .iter()
            .any(|r| r["door"] == door && r["operation"] == operation)
    };
    assert!(through("aws", "kms:Encrypt"), "no AWS-door Encrypt record");
    assert!(through("aws", "kms:CreateKey"));
    assert!(through("grpc", "kms:CreateKey"), "no gRPC-door record");
    let denied = records.iter().any(|r| {
        r["door"] == "aws"
            && r["operation"] == "kms:DescribeKey"
            && r["outcome"]["reason"] == "AccessDeniedException"
    });
    assert!(denied, "the user's refusal is not recorded");
    let unauthenticated = records.iter().any(|r| {
        r["door"] == "aws"
            && r["phase"] == "unauthenticated"
            && r["outcome"]["reason"] == "InvalidSignatureException"
    });
    assert!(unauthenticated, "the wrong secret is not recorded");
    // The AWS door's records never carry plaintext or context values.
    let log = std::fs::read_to_string(&daemon.config.audit_log).expect("audit log");
    assert!(!log.contains("secret payload") && !log.contains("c2VjcmV0IHBheWxvYWQ"));
}
