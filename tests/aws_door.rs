//! The AWS door end to end, driven by stock AWS clients nobody here wrote: boto3 and botocore,
//! the AWS CLI and the AWS Encryption SDK from PyPI (installed into target/aws-venv by
//! tests/python/aws-setup.sh, which `make test` runs) against a real daemon serving KMS JSON
//! 1.1 on 127.0.0.1:0.

mod common;

use common::{Backend, TestDaemon};
use keyhaven::proto::v1;
use std::path::PathBuf;
use std::process::Command;

/// The venv's python with boto3, the AWS CLI and the AWS Encryption SDK, or a failure naming
/// the setup step.
fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/aws-venv/bin/python");
    let usable = python.exists()
        && Command::new(&python)
            .args(["-c", "import boto3, awscli, aws_encryption_sdk"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        usable,
        "boto3, awscli or aws-encryption-sdk is not installed in {}: run tests/python/aws-setup.sh (make test runs it)",
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

/// Creates IAM user `name` with `policy` through the gRPC API, and a second access key of
/// it for the AWS clients: its id and secret.
async fn user(daemon: &TestDaemon, name: &str, policy: &str) -> (String, String) {
    daemon.create_user(name, Some(policy)).await;
    let key = daemon
        .client
        .iam()
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
    let daemon = daemon().await;
    // A key the user may use, made through the gRPC door: both doors share keys and policies.
    let user_key = daemon.create_key("the user's key").await;
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
            "Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":"{}"}}]}}"#,
        user_key.arn
    );
    let (user_id, user_secret) = user(&daemon, "aws-door-user", &policy).await;
    let mut env = daemon.aws_root_environment();
    env.extend([
        ("USER_ACCESS_KEY_ID".to_owned(), user_id),
        ("USER_SECRET_ACCESS_KEY".to_owned(), user_secret),
        ("USER_KEY_ID".to_owned(), user_key.key_id.clone()),
    ]);
    run_script("aws_kms_lifecycle.py", env, "lifecycle complete").await;

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

/// Runs a script of tests/python with the venv's python and `env`; its stdout, or a failure
/// with both streams.
async fn run_script(name: &str, env: Vec<(String, String)>, done: &str) -> String {
    common::run_aws_script(name, env, done).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_encryption_sdk_encrypts_and_decrypts_a_100_kb_file() {
    let daemon = daemon().await;
    let key = daemon.create_key("files").await;
    let mut env = daemon.aws_root_environment();
    env.push(("KEY_ARN".into(), key.arn.clone()));
    run_script("aws_encryption_sdk_file.py", env, "encryption sdk complete").await;
    let records = audit_lines(&daemon);
    for operation in ["kms:GenerateDataKey", "kms:Decrypt"] {
        assert!(
            records.iter().any(|r| r["door"] == "aws"
                && r["operation"] == operation
                && r["outcome"]["code"] == "Ok"
                && r["keys"][0] == key.arn.as_str()),
            "no successful {operation} on the key through the AWS door"
        );
    }
}

/// A `keyhaven serve --dev` child, stopped with SIGTERM when dropped.
struct DevDaemon(std::process::Child);

impl Drop for DevDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `serve --dev` prints AWS_* lines that, pasted, are all boto3 and the AWS CLI need: the
/// README's example runs with them and nothing else, in a region other than the default too
/// (which the gRPC client's KEYHAVEN_REGION line also names).
#[tokio::test(flavor = "multi_thread")]
async fn serve_dev_prints_aws_settings_the_readme_example_runs_with() {
    use std::io::BufRead;
    let work = tempfile::tempdir().expect("tempdir");
    // Another region than the default: the printed lines must carry it for signatures to work.
    let config = work.path().join("keyhaven.toml");
    std::fs::write(&config, "region = \"eu-west-1\"\n").expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("TMPDIR", work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("keyhaven serve --dev starts");
    let stdout = child.stdout.take().expect("stdout");
    let _daemon = DevDaemon(child);
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut env = Vec::new();
    let mut keyhaven_region = None;
    while !env
        .iter()
        .any(|(name, _): &(String, String)| name == "AWS_DEFAULT_REGION")
    {
        let line = received
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("serve --dev prints export AWS_DEFAULT_REGION=… within a minute");
        if let Some(region) = line.strip_prefix("export KEYHAVEN_REGION=") {
            keyhaven_region = Some(region.to_owned());
        }
        if let Some((name, value)) = line
            .strip_prefix("export AWS_")
            .and_then(|rest| rest.split_once('='))
        {
            env.push((format!("AWS_{name}"), value.to_owned()));
        }
    }
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION"
        ]
    );
    assert!(env[0].1.starts_with("http://127.0.0.1:"), "{env:?}");
    assert_eq!(keyhaven_region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        (env[3].1.as_str(), env[4].1.as_str()),
        ("eu-west-1", "eu-west-1")
    );
    let stdout = run_script(
        "aws_readme_example.py",
        env.clone(),
        "readme example complete",
    )
    .await;
    let key = stdout
        .split_whitespace()
        .last()
        .expect("the key id")
        .to_owned();

    // The AWS CLI (from PyPI) with the same settings and nothing else.
    let aws = python().with_file_name("aws");
    let output = Command::new(&aws)
        .args([
            "kms",
            "describe-key",
            "--key-id",
            "alias/orders",
            "--output",
            "json",
        ])
        .env_clear()
        .envs(env.clone())
        .output()
        .expect("aws runs");
    assert!(
        output.status.success(),
        "aws kms describe-key: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let described: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the CLI's JSON");
    assert_eq!(described["KeyMetadata"]["KeyId"], key.as_str());
    assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
    let output = Command::new(&aws)
        .args(["kms", "create-key", "--description", "from the cli"])
        .env_clear()
        .envs(env)
        .output()
        .expect("aws runs");
    assert!(
        output.status.success(),
        "aws kms create-key: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// With TLS configured, the AWS door serves HTTPS with the daemon's certificate: boto3
/// verifying against the CA works, and plaintext HTTP to the same port gets no answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_aws_door_serves_tls_with_the_daemons_certificate() {
    let files = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = common::localhost_certificate(files.path());
    let client_tls = keyhaven::client::ClientTls {
        ca_cert: Some(std::fs::read(&ca).expect("CA")),
        identity: None,
    };
    let daemon = TestDaemon::start_with_tls(
        Backend::Sealed,
        |config| {
            config.tls = Some(keyhaven::server::config::TlsSettings {
                cert,
                key,
                client_ca: None,
            });
            config.set_aws_listen("127.0.0.1:0").expect("aws_listen");
        },
        client_tls,
    )
    .await;
    let port = daemon.aws_addr().expect("the AWS door listens").port();
    let mut env = daemon.aws_root_environment();
    env[0].1 = format!("https://localhost:{port}");
    env.push(("AWS_CA_BUNDLE".into(), ca.display().to_string()));
    run_script(
        "aws_readme_example.py",
        env.clone(),
        "readme example complete",
    )
    .await;
    let records = audit_lines(&daemon);
    assert!(
        records
            .iter()
            .any(|r| r["door"] == "aws" && r["operation"] == "kms:Encrypt"),
        "no AWS-door Encrypt over TLS"
    );

    env[0].1 = format!("http://localhost:{port}");
    let mut command = Command::new(python());
    command
        .arg(script("aws_readme_example.py"))
        .env_clear()
        .envs(env);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("python runs");
    assert!(
        !output.status.success(),
        "plaintext HTTP to the TLS port was answered"
    );
}

/// Creates role `app`, trusting `trusted` and allowed kms:Encrypt and kms:Decrypt on `key_arn`
/// only; its ARN.
async fn encrypting_role(daemon: &TestDaemon, trusted: &str, key_arn: &str) -> String {
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{trusted}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let iam = daemon.client.iam();
    let role = iam
        .clone()
        .create_role(daemon.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "app".into(),
                assume_role_policy_document: trust,
            },
        ))
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .expect("role");
    let policy = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"{key_arn}"}}]}}"#
    );
    iam.clone()
        .put_entity_policy(daemon.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::Role as i32,
                entity_name: "app".into(),
                policy_name: "encrypt".into(),
                policy_document: policy,
            },
        ))
        .await
        .expect("PutEntityPolicy");
    role.arn
}

/// An assumed role's temporary credentials (made through the gRPC API) work on the AWS door
/// with their session token, within the role's policy, and not without the token.
#[tokio::test(flavor = "multi_thread")]
async fn assumed_role_credentials_work_on_the_aws_door() {
    let daemon = daemon().await;
    let key = daemon.create_key("the role's key").await;
    let alice = daemon.create_user("alice", None).await;
    let alice_arn = format!("arn:keyhaven:iam::{}:user/alice", daemon.account_id);
    encrypting_role(&daemon, &alice_arn, &key.arn).await;
    let session = alice
        .iam()
        .assume_role(alice.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: format!("arn:keyhaven:iam::{}:role/app", daemon.account_id),
                role_session_name: "aws-door".into(),
                duration_seconds: None,
                ..Default::default()
            },
        ))
        .await
        .expect("AssumeRole")
        .into_inner();
    let credentials = session.credentials.expect("credentials");
    let mut env = daemon.aws_root_environment();
    env[1].1 = credentials.access_key_id;
    env[2].1 = credentials.secret_access_key;
    env.push(("AWS_SESSION_TOKEN".into(), credentials.session_token));
    env.push(("KEY_ID".into(), key.key_id.clone()));
    run_script("aws_session.py", env, "session complete").await;
    let records = audit_lines(&daemon);
    assert!(
        records.iter().any(|r| r["door"] == "aws"
            && r["operation"] == "kms:Encrypt"
            && r["principal"] == session.assumed_role_arn.as_str()),
        "no Encrypt by the role session through the AWS door"
    );
}

/// STS over the Query protocol: boto3's GetCallerIdentity and AssumeRole, the session used on
/// KMS, the role's trust policy refusing another user, and refusals in `<ErrorResponse>`s.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_uses_sts_over_the_query_protocol() {
    let daemon = daemon().await;
    let key = daemon.create_key("the role's key").await;
    let alice_arn = format!("arn:keyhaven:iam::{}:user/alice", daemon.account_id);
    let (alice_id, alice_secret) = user(
        &daemon,
        "alice",
        r#"{"Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#,
    )
    .await;
    let (bob_id, bob_secret) = user(
        &daemon,
        "bob",
        r#"{"Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#,
    )
    .await;
    let role_arn = encrypting_role(&daemon, &alice_arn, &key.arn).await;
    let mut env = daemon.aws_root_environment();
    env.retain(|(name, _)| !name.starts_with("AWS_ACCESS") && !name.starts_with("AWS_SECRET"));
    env.extend(
        [
            ("ALICE_ACCESS_KEY_ID", alice_id),
            ("ALICE_SECRET_ACCESS_KEY", alice_secret),
            ("BOB_ACCESS_KEY_ID", bob_id),
            ("BOB_SECRET_ACCESS_KEY", bob_secret),
            ("ALICE_ARN", alice_arn.clone()),
            ("ROLE_ARN", role_arn),
            ("KEY_ID", key.key_id.clone()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    run_script("aws_sts.py", env, "sts complete").await;
    let records = audit_lines(&daemon);
    let through = |operation: &str, reason: Option<&str>| {
        records.iter().any(|r| {
            r["door"] == "aws"
                && r["operation"] == operation
                && r["outcome"]["reason"].as_str() == reason
        })
    };
    assert!(
        through("sts:AssumeRole", None),
        "no AssumeRole through the AWS door"
    );
    assert!(through("sts:AssumeRole", Some("AccessDeniedException")));
    assert!(through("sts:GetCallerIdentity", None));
}

/// IAM over the Query protocol: boto3's IAM client makes a user, its policy and access key,
/// which then work on KMS within the policy; AWS's IAM refusals in `<ErrorResponse>`s.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_manages_identities_over_the_query_protocol() {
    let daemon = daemon().await;
    let key = daemon.create_key("carol's key").await;
    let mut env = daemon.aws_root_environment();
    env.push(("KEY_ARN".into(), key.arn.clone()));
    run_script("aws_iam.py", env, "iam complete").await;
    let records = audit_lines(&daemon);
    let through = |operation: &str| {
        records.iter().any(|r| {
            r["door"] == "aws" && r["operation"] == operation && r["outcome"]["code"] == "Ok"
        })
    };
    for operation in [
        "iam:CreateUser",
        "iam:PutEntityPolicy",
        "iam:CreateAccessKey",
    ] {
        assert!(
            through(operation) || operation == "iam:PutEntityPolicy",
            "{operation}"
        );
    }
    assert!(
        through("iam:PutUserPolicy"),
        "no PutUserPolicy through the AWS door"
    );
}

/// Grants through boto3: create_grant with a constraint and an idempotent Name, list_grants
/// paged, the grantee's calls with and without the token (a forged one refused), and
/// retire_grant ending the grant; the audit names the grant on the grantee's call.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_creates_lists_and_retires_grants() {
    let daemon = daemon().await;
    let key = daemon.create_key("granted through the AWS door").await;
    let nothing = r#"{"Statement":[{"Effect":"Allow","Action":"iam:GetUser","Resource":"*"}]}"#;
    let (bob_id, bob_secret) = user(&daemon, "bob", nothing).await;
    let (carol_id, carol_secret) = user(&daemon, "carol", nothing).await;
    let bob_arn = format!("arn:keyhaven:iam::{}:user/bob", daemon.account_id);
    let mut env = daemon.aws_root_environment();
    env.extend(
        [
            ("KEY_ID", key.key_id.clone()),
            ("BOB_ACCESS_KEY_ID", bob_id),
            ("BOB_SECRET_ACCESS_KEY", bob_secret),
            ("BOB_ARN", bob_arn.clone()),
            ("CAROL_ACCESS_KEY_ID", carol_id),
            ("CAROL_SECRET_ACCESS_KEY", carol_secret),
            (
                "CAROL_ARN",
                format!("arn:keyhaven:iam::{}:user/carol", daemon.account_id),
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    run_script("aws_grants.py", env, "grants complete").await;
    let records = audit_lines(&daemon);
    let granted = records
        .iter()
        .find(|r| {
            r["door"] == "aws"
                && r["operation"] == "kms:Encrypt"
                && r["principal"] == bob_arn
                && r["outcome"]["code"] == "Ok"
        })
        .expect("bob's Encrypt through the AWS door");
    assert_eq!(
        granted["grants"].as_array().map(Vec::len),
        Some(1),
        "{granted}"
    );
    for operation in ["kms:CreateGrant", "kms:ListGrants", "kms:RetireGrant"] {
        assert!(
            records.iter().any(|r| r["door"] == "aws"
                && r["operation"] == operation
                && r["outcome"]["code"] == "Ok"),
            "{operation}"
        );
    }
}

/// boto3 signs and verifies (P-256, P-521, secp256k1), makes and checks MACs, encrypts and
/// decrypts with RSA keys, derives shared secrets and makes data key pairs through the AWS
/// door; the `cryptography` package checks every answer against the public keys.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_uses_asymmetric_and_hmac_keys_through_the_aws_door() {
    let daemon = daemon().await;
    run_script(
        "aws_key_types.py",
        daemon.aws_root_environment(),
        "key types complete",
    )
    .await;
    let records = audit_lines(&daemon);
    for operation in [
        "kms:Sign",
        "kms:Verify",
        "kms:GetPublicKey",
        "kms:GenerateMac",
        "kms:VerifyMac",
        "kms:DeriveSharedSecret",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["door"] == "aws" && r["operation"] == operation),
            "no AWS-door record of {operation}"
        );
    }
    // Messages and plaintexts are never in the audit log.
    let log = std::fs::read_to_string(&daemon.config.audit_log).expect("audit log");
    assert!(!log.contains("for keyhaven only") && !log.contains("round trip"));
}

/// boto3's `get_parameters_for_import`, `import_key_material` (with a `ValidTo` as boto3 sends
/// it) and `delete_imported_key_material` through the AWS door; the script opens Keyhaven's
/// ciphertext under the material it imported, and checks the refusals' AWS error codes.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_imports_key_material_through_the_aws_door() {
    let daemon = daemon().await;
    let env = daemon.aws_root_environment();
    run_script("aws_kms_import.py", env, "import complete").await;
    let records = audit_lines(&daemon);
    for operation in [
        "kms:GetParametersForImport",
        "kms:ImportKeyMaterial",
        "kms:DeleteImportedKeyMaterial",
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["door"] == "aws" && r["operation"] == operation),
            "no AWS-door {operation} record"
        );
    }
    let refused_token = records.iter().any(|r| {
        r["operation"] == "kms:ImportKeyMaterial"
            && r["outcome"]["reason"] == "InvalidImportTokenException"
    });
    assert!(refused_token, "the forged token's refusal is not recorded");
}

/// Virtual MFA over the Query protocol with boto3: create_virtual_mfa_device (the seed and
/// QR code as IAM's blobs), enable_mfa_device with two codes, list_*mfa_devices, and STS
/// get_session_token with SerialNumber and TokenCode, whose session may schedule the deletion
/// the user's long-term key is refused.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_enables_a_virtual_mfa_device_and_signs_in_with_a_code() {
    let daemon = daemon().await;
    let key = daemon.create_key("needs MFA to delete").await;
    let mut env = daemon.aws_root_environment();
    env.push(("KEY_ID".into(), key.key_id.clone()));
    run_script("aws_mfa.py", env, "mfa complete").await;
    assert_eq!(
        daemon.state(&key.key_id).await,
        v1::KeyState::PendingDeletion
    );
    let records = audit_lines(&daemon);
    let through = |operation: &str, reason: Option<&str>| {
        records.iter().any(|r| {
            r["door"] == "aws"
                && r["operation"] == operation
                && r["outcome"]["reason"].as_str() == reason
        })
    };
    assert!(through("iam:EnableMFADevice", None));
    assert!(through(
        "iam:EnableMFADevice",
        Some("InvalidAuthenticationCodeException")
    ));
    assert!(through("sts:GetSessionToken", None));
    assert!(
        through("sts:GetSessionToken", Some("AccessDeniedException")),
        "the replayed code is not in the audit log"
    );
}

/// Sign, Verify, GetPublicKey, GenerateMac and VerifyMac through the AWS door with boto3;
/// Keyhaven's signatures verified by the `cryptography` package against GetPublicKey's key;
/// AWS's refusals (`KMSInvalidSignatureException`, `KMSInvalidMacException`,
/// `InvalidKeyUsageException`, `DisabledException`, `UnsupportedOperationException`).
#[tokio::test(flavor = "multi_thread")]
async fn boto3_signs_verifies_and_macs_through_the_aws_door() {
    let daemon = daemon().await;
    run_script(
        "aws_sign_mac.py",
        daemon.aws_root_environment(),
        "sign and mac complete",
    )
    .await;
    let records = audit_lines(&daemon);
    let outcome = |operation: &str, reason: Option<&str>| {
        records.iter().any(|r| {
            r["door"] == "aws"
                && r["operation"] == operation
                && match reason {
                    None => r["outcome"]["code"] == "Ok",
                    Some(reason) => r["outcome"]["reason"] == reason,
                }
        })
    };
    for operation in [
        "kms:Sign",
        "kms:Verify",
        "kms:GetPublicKey",
        "kms:GenerateMac",
        "kms:VerifyMac",
    ] {
        assert!(outcome(operation, None), "no served {operation} record");
    }
    assert!(outcome("kms:Verify", Some("KMSInvalidSignatureException")));
    assert!(outcome("kms:VerifyMac", Some("KMSInvalidMacException")));
    // The messages signed and MACed never reach the audit log.
    let log = std::fs::read_to_string(&daemon.config.audit_log).expect("audit log");
    assert!(!log.contains("release v1.2.3") && !log.contains("cmVsZWFzZSB2MS4yLjM"));
}

/// A signed Encrypt request for the AWS door, made by botocore's own SigV4 signer: its
/// header lines (with `Host` and `Content-Length`) and its body, to be written by hand.
fn presigned_encrypt(daemon: &TestDaemon, key_id: &str) -> (String, Vec<u8>) {
    const SIGN: &str = r#"
import json, os
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
body = json.dumps({"KeyId": os.environ["KEY_ID"], "Plaintext": "aW4gZmxpZ2h0"})
request = AWSRequest(method="POST", url=os.environ["AWS_ENDPOINT_URL"] + "/", data=body,
                     headers={"X-Amz-Target": "TrentService.Encrypt",
                              "Content-Type": "application/x-amz-json-1.1"})
credentials = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
SigV4Auth(credentials, "kms", os.environ["AWS_REGION"]).add_auth(request)
print(json.dumps({"headers": dict(request.headers.items()), "body": body}))
"#;
    let output = Command::new(python())
        .args(["-c", SIGN])
        .env_clear()
        .envs(daemon.aws_root_environment())
        .env("KEY_ID", key_id)
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{output:?}");
    let signed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let body = signed["body"].as_str().expect("body").as_bytes().to_vec();
    let mut head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        daemon.aws_addr().expect("AWS door"),
        body.len()
    );
    for (name, value) in signed["headers"].as_object().expect("headers") {
        head.push_str(&format!("{name}: {}\r\n", value.as_str().expect("text")));
    }
    head.push_str("\r\n");
    (head, body)
}

/// Reads an HTTP answer until the daemon closes the connection.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Shutting down drains the AWS door: it stops accepting at once, a request in flight (its
/// body still arriving) is answered and recorded, an idle keep-alive connection is closed,
/// and shutdown then completes without waiting for the drain deadline.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_answers_aws_requests_in_flight_and_refuses_new_ones() {
    use tokio::io::AsyncWriteExt;
    let mut daemon = daemon().await;
    let key = daemon.create_key("drain").await;
    let aws = daemon.aws_addr().expect("AWS door");
    let audit_log = daemon.config.audit_log.clone();
    let (head, body) = presigned_encrypt(&daemon, &key.key_id);

    // An idle keep-alive connection that has had its answer.
    let mut idle = tokio::net::TcpStream::connect(aws).await.expect("connect");
    idle.write_all(head.as_bytes()).await.expect("write");
    idle.write_all(&body).await.expect("write");
    let mut first = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut idle, &mut first)
        .await
        .expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200");

    // A request in flight: its head and half its body sent.
    let mut in_flight = tokio::net::TcpStream::connect(aws).await.expect("connect");
    in_flight.write_all(head.as_bytes()).await.expect("write");
    let half = body.len() / 2;
    in_flight.write_all(&body[..half]).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let stopping = tokio::spawn(async move {
        daemon.stop().await;
        daemon
    });
    // New connections are refused at once.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(aws).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the AWS door still accepts connections while draining"
    );
    // The idle connection is closed; the daemon waits for the request in flight.
    // (The rest of its first answer, then nothing more.)
    let rest = read_until_closed(&mut idle).await;
    assert!(rest.ends_with("\"SYMMETRIC_DEFAULT\"}"), "{rest}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the request in flight"
    );

    in_flight.write_all(&body[half..]).await.expect("write");
    let answer = read_until_closed(&mut in_flight).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"CiphertextBlob\""), "{answer}");
    let _daemon = stopping.await.expect("shutdown");
    assert!(
        started.elapsed() < keyhaven::api::aws::DRAIN_DEADLINE,
        "shutdown waited for the deadline: {:?}",
        started.elapsed()
    );
    let encrypts = std::fs::read_to_string(&audit_log)
        .expect("audit log")
        .lines()
        .filter(|l| l.contains("\"operation\":\"kms:Encrypt\"") && l.contains("\"code\":\"Ok\""))
        .count();
    assert_eq!(encrypts, 2, "both answered Encrypts are recorded");
}

/// The drain is bounded: a request whose body never finishes arriving holds shutdown for the
/// drain deadline and no longer; its connection is then dropped.
#[tokio::test(flavor = "multi_thread")]
async fn the_aws_doors_drain_is_bounded() {
    use tokio::io::AsyncWriteExt;
    let mut daemon = daemon().await;
    let key = daemon.create_key("stalled").await;
    let (head, body) = presigned_encrypt(&daemon, &key.key_id);
    let mut stalled = tokio::net::TcpStream::connect(daemon.aws_addr().expect("AWS door"))
        .await
        .expect("connect");
    stalled.write_all(head.as_bytes()).await.expect("write");
    stalled.write_all(&body[..4]).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    daemon.stop().await;
    let took = started.elapsed();
    let deadline = keyhaven::api::aws::DRAIN_DEADLINE;
    assert!(
        took >= deadline - std::time::Duration::from_millis(500),
        "{took:?}"
    );
    assert!(
        took < deadline + std::time::Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        read_until_closed(&mut stalled).await,
        "",
        "no answer: dropped"
    );
}

/// IAM's SimulatePrincipalPolicy over the Query protocol: boto3 reads its decisions, the
/// statements that decided and the effect of context entries, and IAM's refusals.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_simulates_principal_policies_over_the_query_protocol() {
    let daemon = daemon().await;
    let key = daemon.create_key("simulated").await;
    let mut env = daemon.aws_root_environment();
    env.push(("KEY_ARN".into(), key.arn.clone()));
    run_script("aws_simulate.py", env, "simulate complete").await;
    let records = audit_lines(&daemon);
    let simulated = records.iter().any(|r| {
        r["door"] == "aws"
            && r["operation"] == "iam:SimulatePrincipalPolicy"
            && r["outcome"]["code"] == "Ok"
    });
    assert!(simulated, "no SimulatePrincipalPolicy record");
    // A simulation changes nothing: the key is as it was.
    assert_eq!(daemon.state(&key.key_id).await, v1::KeyState::Enabled);
}

/// A member account of the organisation through the AWS door (see `aws_accounts.py`).
#[tokio::test(flavor = "multi_thread")]
async fn boto3_in_a_member_account_meets_its_keys_a_shared_key_and_its_guardrails() {
    let daemon = daemon().await;
    let made = daemon
        .client
        .iam()
        .create_account(daemon.client.signed_iam(
            "CreateAccount",
            v1::CreateAccountRequest {
                account_name: "boto3".into(),
            },
        ))
        .await
        .expect("CreateAccount")
        .into_inner();
    let member_id = made.account.expect("account").id;
    let shared = daemon.create_key("shared").await;
    let private = daemon.create_key("private").await;
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{own}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Allow","Principal":{{"AWS":"arn:keyhaven:iam::{member_id}:root"}},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}}]}}"#,
        own = daemon.account_id
    );
    daemon
        .client
        .kms()
        .put_key_policy(daemon.client.signed(
            "PutKeyPolicy",
            v1::PutKeyPolicyRequest {
                key_id: shared.key_id.clone(),
                policy,
                ..Default::default()
            },
        ))
        .await
        .expect("PutKeyPolicy");
    daemon
        .client
        .iam()
        .create_guardrail_policy(daemon.client.signed_iam(
            "CreateGuardrailPolicy",
            v1::CreateGuardrailPolicyRequest {
                policy_name: "MinimumWindow".into(),
                description: String::new(),
                document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*","Condition":{"NumericLessThan":{"kms:ScheduleKeyDeletionPendingWindowInDays":"30"}}}]}"#.into(),
            },
        ))
        .await
        .expect("CreateGuardrailPolicy");
    daemon
        .client
        .iam()
        .attach_guardrail_policy(daemon.client.signed_iam(
            "AttachGuardrailPolicy",
            v1::AttachGuardrailPolicyRequest {
                policy_name: "MinimumWindow".into(),
                target_id: "root".into(),
            },
        ))
        .await
        .expect("AttachGuardrailPolicy");
    let mut env = daemon.aws_root_environment();
    for (name, value) in env.iter_mut() {
        match name.as_str() {
            "AWS_ACCESS_KEY_ID" => *value = made.root_access_key_id.clone(),
            "AWS_SECRET_ACCESS_KEY" => *value = made.root_secret_access_key.clone(),
            _ => {}
        }
    }
    env.push(("MEMBER_ID".into(), member_id.clone()));
    env.push(("SHARED_KEY_ARN".into(), shared.arn.clone()));
    env.push(("PRIVATE_KEY_ARN".into(), private.arn.clone()));
    run_script("aws_accounts.py", env, "accounts complete").await;
    // What the member did is in the organisation's log under its own ARNs.
    let records = audit_lines(&daemon);
    let member_root = format!("arn:keyhaven:iam::{member_id}:root");
    let across = records.iter().any(|r| {
        r["door"] == "aws"
            && r["operation"] == "kms:Encrypt"
            && r["principal"] == member_root.as_str()
            && r["outcome"]["code"] == "Ok"
    });
    assert!(
        across,
        "no record of the member's Encrypt with the shared key"
    );
    assert_eq!(daemon.state(&shared.key_id).await, v1::KeyState::Enabled);
}
