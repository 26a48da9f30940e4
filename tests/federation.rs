//! Federation (issue 20): workloads from an OpenID Connect provider get a role's session with
//! no stored secret. Tokens are made here, independently of the daemon: RS256 signed by the
//! `openssl` command line, ES256 with the `p256` crate; the provider's JWKS is written from
//! those keys. Each refusal is the AWS error, and a refused token gets no session.

mod common;

use base64::Engine as _;
use common::{Backend, TestDaemon, assert_refused};
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::Code;

const ISSUER: &str = "https://issuer.keyhaven.test/ci";
const PROVIDER: &str = "issuer.keyhaven.test/ci";
const AUDIENCE: &str = "keyhaven";
const MAIN: &str = "repo:acme/app:ref:refs/heads/main";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is not installed: run `make test`, which installs it");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The token issuer of the tests: an RSA key (kid `rsa-1`, signed by openssl) and a P-256
/// key (kid `ec-1`).
struct Issuer {
    _dir: tempfile::TempDir,
    rsa_key: PathBuf,
    ec_key: p256::ecdsa::SigningKey,
    jwks: String,
}

impl Issuer {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rsa_key = dir.path().join("rsa.pem");
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                rsa_key.to_str().unwrap(),
            ],
            None,
        );
        let modulus = String::from_utf8(openssl(
            &[
                "rsa",
                "-in",
                rsa_key.to_str().unwrap(),
                "-noout",
                "-modulus",
            ],
            None,
        ))
        .unwrap();
        let modulus = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let ec_key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = ec_key.verifying_key().to_encoded_point(false);
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64(&modulus), "e": "AQAB"},
            {"kty": "EC", "kid": "ec-1", "use": "sig", "alg": "ES256", "crv": "P-256",
             "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
        ]})
        .to_string();
        Self {
            _dir: dir,
            rsa_key,
            ec_key,
            jwks,
        }
    }

    fn rsa_sign(&self, input: &[u8]) -> Vec<u8> {
        openssl(
            &["dgst", "-sha256", "-sign", self.rsa_key.to_str().unwrap()],
            Some(input),
        )
    }

    /// A token with `header` and `claims`, signed as its `alg` says (`none`: unsigned).
    fn token(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match header["alg"].as_str() {
            Some("RS256") => self.rsa_sign(input.as_bytes()),
            Some("ES256") => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = self.ec_key.sign(input.as_bytes());
                signature.to_bytes().to_vec()
            }
            Some("HS256") => {
                // The RSA public key misused as an HMAC secret (algorithm confusion).
                use hmac::Mac as _;
                let public = openssl(
                    &["rsa", "-in", self.rsa_key.to_str().unwrap(), "-pubout"],
                    None,
                );
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
                mac.update(input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            _ => Vec::new(),
        };
        format!("{input}.{}", b64(&signature))
    }

    /// A good token for `sub`, signed with `alg`, issued at `now`.
    fn good(&self, alg: &str, sub: &str, now: i64) -> String {
        self.good_from(ISSUER, alg, sub, now)
    }

    /// A good token of issuer `iss`.
    fn good_from(&self, iss: &str, alg: &str, sub: &str, now: i64) -> String {
        let kid = if alg == "RS256" { "rsa-1" } else { "ec-1" };
        self.token(
            json!({"alg": alg, "typ": "JWT", "kid": kid}),
            json!({"iss": iss, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 600}),
        )
    }

    /// The JWKS with only the key `kid`.
    fn jwks_of(&self, kid: &str) -> String {
        let mut set: Value = serde_json::from_str(&self.jwks).unwrap();
        set["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["kid"] == kid);
        set.to_string()
    }
}

async fn register(d: &TestDaemon, issuer: &Issuer) -> String {
    d.client
        .iam()
        .create_open_id_connect_provider(d.client.signed_iam(
            "CreateOpenIDConnectProvider",
            v1::CreateOpenIdConnectProviderRequest {
                url: ISSUER.into(),
                client_id_list: vec![AUDIENCE.into()],
                thumbprint_list: Vec::new(),
                jwks: issuer.jwks.clone(),
            },
        ))
        .await
        .expect("CreateOpenIDConnectProvider")
        .into_inner()
        .open_id_connect_provider_arn
}

/// Role `deployer`, trusting the provider for the main branch's workload only, allowed to
/// encrypt.
async fn deployer(d: &TestDaemon, provider_arn: &str) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            format!("{PROVIDER}:sub"): MAIN,
            format!("{PROVIDER}:aud"): AUDIENCE,
        }}
    }]});
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "deployer".into(),
                assume_role_policy_document: trust.to_string(),
            },
        ))
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .expect("role");
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::Role as i32,
                entity_name: "deployer".into(),
                policy_name: "encrypt".into(),
                policy_document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#.into(),
            },
        ))
        .await
        .expect("PutEntityPolicy");
    role.arn
}

/// Role `name` with trust policy `trust`; its ARN.
async fn role_trusting(d: &TestDaemon, name: &str, trust: &Value) -> String {
    d.client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: name.into(),
                assume_role_policy_document: trust.to_string(),
            },
        ))
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .expect("role")
        .arn
}

async fn assume(
    d: &TestDaemon,
    role_arn: &str,
    token: &str,
) -> Result<v1::AssumeRoleWithWebIdentityResponse, tonic::Status> {
    // Unsigned: the token is the credential.
    Ok(d.client
        .iam()
        .assume_role_with_web_identity(tonic::Request::new(v1::AssumeRoleWithWebIdentityRequest {
            role_arn: role_arn.into(),
            role_session_name: "ci-run-42".into(),
            web_identity_token: token.into(),
            duration_seconds: Some(900),
        }))
        .await?
        .into_inner())
}

async fn session_client(d: &TestDaemon, answer: v1::AssumeRoleWithWebIdentityResponse) -> Client {
    d.session_client(answer.credentials.expect("credentials"))
        .await
}

fn audit_lines(d: &TestDaemon) -> Vec<Value> {
    std::fs::read_to_string(&d.config.audit_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_workloads_token_becomes_a_role_session_and_every_bad_token_is_refused() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let issuer = Issuer::new();
    let provider_arn = register(&d, &issuer).await;
    assert_eq!(
        provider_arn,
        format!(
            "arn:keyhaven:iam::{}:oidc-provider/{PROVIDER}",
            d.account_id
        )
    );
    let role_arn = deployer(&d, &provider_arn).await;
    let key = d.create_key("deployments").await;
    let now = d.now();

    // A good token, either algorithm: a session of the role, which encrypts as the role may.
    for alg in ["RS256", "ES256"] {
        let answer = assume(&d, &role_arn, &issuer.good(alg, MAIN, now))
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(answer.subject_from_web_identity_token, MAIN);
        assert_eq!(answer.provider, PROVIDER);
        assert_eq!(answer.audience, AUDIENCE);
        assert!(
            answer
                .assumed_role_arn
                .ends_with(":assumed-role/deployer/ci-run-42")
        );
        let session = session_client(&d, answer).await;
        session
            .kms()
            .encrypt(session.signed(
                "Encrypt",
                v1::EncryptRequest {
                    key_id: key.key_id.clone(),
                    plaintext: b"built".to_vec(),
                    ..Default::default()
                },
            ))
            .await
            .expect("the session encrypts");
        assert_refused(
            session
                .kms()
                .schedule_key_deletion(session.signed(
                    "ScheduleKeyDeletion",
                    v1::ScheduleKeyDeletionRequest {
                        key_id: key.key_id.clone(),
                        pending_window_in_days: Some(7),
                    },
                ))
                .await,
            Code::PermissionDenied,
            "AccessDeniedException",
        );
    }
    let records = audit_lines(&d);
    let named = records.iter().any(|r| {
        r["operation"] == "sts:AssumeRoleWithWebIdentity"
            && r["outcome"]["code"] == "Ok"
            && r["principal"] == format!("{provider_arn}:{MAIN}").as_str()
    });
    assert!(named, "the response record names the web identity");
    let sessions_before = records
        .iter()
        .filter(|r| {
            r["operation"] == "sts:AssumeRoleWithWebIdentity" && r["outcome"]["code"] == "Ok"
        })
        .count();

    // Another workload of the same provider: the trust policy's condition on sub refuses it.
    let other = issuer.good("RS256", "repo:acme/other:ref:refs/heads/main", now);
    assert_refused(
        assume(&d, &role_arn, &other).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let claims = |changes: Value| {
        let mut base =
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": MAIN, "iat": now, "exp": now + 600});
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let rs = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
    let cases: Vec<(&str, String, Code, &str)> = vec![
        (
            "wrong audience",
            issuer.token(rs.clone(), claims(json!({"aud": "someone-else"}))),
            Code::Unauthenticated,
            "InvalidIdentityToken",
        ),
        (
            "expired",
            issuer.token(rs.clone(), claims(json!({"exp": now - 3600}))),
            Code::Unauthenticated,
            "ExpiredTokenException",
        ),
        (
            "wrong issuer",
            issuer.token(
                rs.clone(),
                claims(json!({"iss": "https://evil.example/ci"})),
            ),
            Code::Unauthenticated,
            "InvalidIdentityToken",
        ),
        (
            "unknown key id",
            issuer.token(json!({"alg": "RS256", "kid": "rsa-2"}), claims(json!({}))),
            Code::Unauthenticated,
            "InvalidIdentityToken",
        ),
        (
            "alg none",
            issuer.token(json!({"alg": "none", "kid": "rsa-1"}), claims(json!({}))),
            Code::Unauthenticated,
            "InvalidIdentityToken",
        ),
        (
            "HS256 keyed with the public key",
            issuer.token(json!({"alg": "HS256", "kid": "rsa-1"}), claims(json!({}))),
            Code::Unauthenticated,
            "InvalidIdentityToken",
        ),
        (
            "not valid yet",
            issuer.token(rs.clone(), claims(json!({"nbf": now + 3600}))),
            Code::PermissionDenied,
            "IDPRejectedClaim",
        ),
        (
            "no subject",
            issuer.token(rs.clone(), claims(json!({"sub": null}))),
            Code::PermissionDenied,
            "IDPRejectedClaim",
        ),
        (
            "not a token",
            "not.a.jwt".into(),
            Code::Unauthenticated,
            "InvalidIdentityToken",
        ),
    ];
    // A valid token whose payload is changed after signing: the signature fails.
    let good = issuer.good("RS256", MAIN, now);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = b64(claims(json!({"sub": "repo:acme/app:ref:refs/heads/evil"}))
        .to_string()
        .as_bytes());
    let tampered = parts.join(".");
    let mut cases = cases;
    cases.push((
        "tampered payload",
        tampered,
        Code::Unauthenticated,
        "InvalidIdentityToken",
    ));
    for (what, token, code, reason) in cases {
        let result = assume(&d, &role_arn, &token).await;
        match result {
            Ok(answer) => panic!(
                "{what}: expected {reason}, got a session {:?}",
                answer.assumed_role_arn
            ),
            Err(status) => {
                assert_eq!(status.code(), code, "{what}: {status:?}");
                assert_eq!(
                    keyhaven::api::reason_of(&status).as_deref(),
                    Some(reason),
                    "{what}: {status:?}"
                );
            }
        }
    }
    // A session name IAM would refuse: refused as invalid, and no session.
    let bad_session = d
        .client
        .iam()
        .assume_role_with_web_identity(tonic::Request::new(v1::AssumeRoleWithWebIdentityRequest {
            role_arn: role_arn.clone(),
            role_session_name: "no spaces allowed".into(),
            web_identity_token: issuer.good("RS256", MAIN, now),
            duration_seconds: Some(900),
        }))
        .await;
    assert_refused(bad_session, Code::InvalidArgument, "ValidationException");
    // A token for a role of no served account, or a role that does not exist: refused alike.
    assert_refused(
        assume(
            &d,
            "arn:keyhaven:iam::999999999999:role/deployer",
            &issuer.good("RS256", MAIN, now),
        )
        .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Nothing refused made a session.
    let sessions_after = audit_lines(&d)
        .iter()
        .filter(|r| {
            r["operation"] == "sts:AssumeRoleWithWebIdentity" && r["outcome"]["code"] == "Ok"
        })
        .count();
    assert_eq!(sessions_after, sessions_before);
}

#[tokio::test]
async fn providers_refuse_what_breaks_their_rules() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let issuer = Issuer::new();
    let create = |url: &str, ids: Vec<String>, jwks: String| {
        let request = v1::CreateOpenIdConnectProviderRequest {
            url: url.into(),
            client_id_list: ids,
            thumbprint_list: Vec::new(),
            jwks,
        };
        let client = d.client.clone();
        async move {
            client
                .iam()
                .create_open_id_connect_provider(
                    client.signed_iam("CreateOpenIDConnectProvider", request),
                )
                .await
                .map(|r| r.into_inner().open_id_connect_provider_arn)
        }
    };
    let ids = || vec![AUDIENCE.to_string()];
    assert_refused(
        create("http://plain.example", ids(), issuer.jwks.clone()).await,
        Code::InvalidArgument,
        "InvalidInputException",
    );
    assert_refused(
        create(ISSUER, Vec::new(), issuer.jwks.clone()).await,
        Code::InvalidArgument,
        "InvalidInputException",
    );
    assert_refused(
        create(ISSUER, ids(), "{}".into()).await,
        Code::InvalidArgument,
        "InvalidInputException",
    );
    assert_refused(
        create(
            ISSUER,
            ids(),
            r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#.into(),
        )
        .await,
        Code::InvalidArgument,
        "InvalidInputException",
    );
    let list = || async {
        d.client
            .iam()
            .list_open_id_connect_providers(d.client.signed_iam(
                "ListOpenIDConnectProviders",
                v1::ListOpenIdConnectProvidersRequest {},
            ))
            .await
            .unwrap()
            .into_inner()
            .open_id_connect_provider_arns
    };
    assert!(list().await.is_empty(), "nothing was registered");
    let arn = create(ISSUER, ids(), issuer.jwks.clone())
        .await
        .expect("registered");
    assert_refused(
        create(ISSUER, ids(), issuer.jwks.clone()).await,
        Code::AlreadyExists,
        "EntityAlreadyExistsException",
    );
    assert_eq!(list().await, vec![arn.clone()]);
    d.client
        .iam()
        .delete_open_id_connect_provider(d.client.signed_iam(
            "DeleteOpenIDConnectProvider",
            v1::DeleteOpenIdConnectProviderRequest {
                open_id_connect_provider_arn: arn.clone(),
            },
        ))
        .await
        .expect("deleted");
    assert!(list().await.is_empty());
    // A user without iam:CreateOpenIDConnectProvider may not register one.
    let mallory = d.create_user("mallory", None).await;
    assert_refused(
        mallory
            .iam()
            .create_open_id_connect_provider(mallory.signed_iam(
                "CreateOpenIDConnectProvider",
                v1::CreateOpenIdConnectProviderRequest {
                    url: ISSUER.into(),
                    client_id_list: ids(),
                    thumbprint_list: Vec::new(),
                    jwks: issuer.jwks.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert!(list().await.is_empty());
}

/// The command line: `keyhaven assume-role-with-web-identity` with no credentials in the
/// environment prints a session's export lines, and those credentials work.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_turns_a_token_file_into_exports_without_credentials() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let issuer = Issuer::new();
    let provider_arn = register(&d, &issuer).await;
    let role_arn = deployer(&d, &provider_arn).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, issuer.good("ES256", MAIN, d.now())).unwrap();
    let endpoint = d.endpoint();
    let output = tokio::task::spawn_blocking(move || run_cli(&endpoint, &role_arn, &token_file))
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let vars: std::collections::BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let session = d
        .client_with(ClientCredentials {
            access_key_id: vars["KEYHAVEN_ACCESS_KEY_ID"].clone(),
            secret_access_key: SecretString::new(vars["KEYHAVEN_SECRET_ACCESS_KEY"].clone()),
            session_token: Some(SecretString::new(vars["KEYHAVEN_SESSION_TOKEN"].clone())),
            region: d.config.region.clone(),
        })
        .await;
    let who = session
        .iam()
        .get_caller_identity(
            session.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await
        .expect("GetCallerIdentity")
        .into_inner();
    assert!(
        who.arn.ends_with(":assumed-role/deployer/cli"),
        "{}",
        who.arn
    );
}

fn run_cli(endpoint: &str, role_arn: &str, token_file: &Path) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    command
        .args([
            "assume-role-with-web-identity",
            "--role-arn",
            role_arn,
            "--session-name",
            "cli",
            "--token-file",
        ])
        .arg(token_file)
        .env("KEYHAVEN_ENDPOINT", endpoint)
        .output()
        .expect("keyhaven runs")
}

/// The AWS door: boto3's unsigned AssumeRoleWithWebIdentity (see `aws_web_identity.py`).
#[tokio::test(flavor = "multi_thread")]
async fn boto3_assumes_a_role_with_a_web_identity_over_the_query_protocol() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.set_aws_listen("127.0.0.1:0").expect("aws_listen");
    })
    .await;
    let issuer = Issuer::new();
    let provider_arn = register(&d, &issuer).await;
    let role_arn = deployer(&d, &provider_arn).await;
    let key = d.create_key("boto3").await;
    let now = d.now();
    let good = issuer.good("RS256", MAIN, now);
    let other = issuer.good("ES256", "repo:acme/other:ref:refs/heads/main", now);
    let mut bad: Vec<String> = good.split('.').map(str::to_owned).collect();
    bad[2] = b64(b"not the signature");
    let aws = d.aws_addr().expect("the AWS door listens");
    let env = [
        ("AWS_ENDPOINT_URL", format!("http://{aws}")),
        ("AWS_REGION", d.config.region.clone()),
        ("AWS_DEFAULT_REGION", d.config.region.clone()),
        ("ROLE_ARN", role_arn),
        ("KEY_ARN", key.arn),
        ("GOOD_TOKEN", good),
        ("OTHER_TOKEN", other),
        ("BAD_TOKEN", bad.join(".")),
    ];
    common::run_aws_script(
        "aws_web_identity.py",
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        "web identity complete",
    )
    .await;
    let through_aws = audit_lines(&d).iter().any(|r| {
        r["door"] == "aws"
            && r["operation"] == "sts:AssumeRoleWithWebIdentity"
            && r["outcome"]["code"] == "Ok"
    });
    assert!(
        through_aws,
        "no record of the AWS door's AssumeRoleWithWebIdentity"
    );
}

/// What the test's issuer serves, and how often its keys were fetched.
#[derive(Default)]
struct Served {
    /// The `issuer` of its discovery document.
    issuer: String,
    jwks_uri: String,
    jwks: String,
    jwks_fetches: usize,
    /// Answers the keys with HTTP 503.
    keys_fail: bool,
    /// Waits this long before answering the keys.
    keys_delay: Duration,
}

/// An OpenID Connect issuer over HTTPS on loopback (`https://localhost:PORT/ci`), with a
/// certificate from a CA of the test's (written to `ca.pem` in its directory).
struct HttpsIssuer {
    url: String,
    ca: PathBuf,
    served: std::sync::Arc<std::sync::Mutex<Served>>,
    _dir: tempfile::TempDir,
}

impl HttpsIssuer {
    async fn start(jwks: String) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use tokio_rustls::rustls;
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "issuer CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &Issuer::new(ca, ca_key))
            .unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_pem).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("https://localhost:{port}/ci");
        let served = std::sync::Arc::new(std::sync::Mutex::new(Served {
            issuer: url.clone(),
            jwks_uri: format!("{url}/keys"),
            jwks,
            ..Default::default()
        }));
        let state = served.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                let delay = {
                                    let mut served = state.lock().unwrap();
                                    if request.uri().path() == "/ci/keys" {
                                        served.jwks_fetches += 1;
                                        served.keys_delay
                                    } else {
                                        Duration::ZERO
                                    }
                                };
                                tokio::time::sleep(delay).await;
                                let (status, body) = {
                                    let served = state.lock().unwrap();
                                    match request.uri().path() {
                                        "/ci/.well-known/openid-configuration" => (
                                            200,
                                            json!({"issuer": served.issuer, "jwks_uri": served.jwks_uri})
                                                .to_string(),
                                        ),
                                        "/ci/keys" if served.keys_fail => (503, String::new()),
                                        "/ci/keys" => (200, served.jwks.clone()),
                                        _ => (404, String::new()),
                                    }
                                };
                                let mut answer = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body),
                                ));
                                *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(answer)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            ca: ca_path,
            served,
            _dir: dir,
        }
    }

    fn jwks_fetches(&self) -> usize {
        self.served.lock().unwrap().jwks_fetches
    }
}

async fn register_fetching(d: &TestDaemon, url: &str) -> Result<String, tonic::Status> {
    Ok(d.client
        .iam()
        .create_open_id_connect_provider(d.client.signed_iam(
            "CreateOpenIDConnectProvider",
            v1::CreateOpenIdConnectProviderRequest {
                url: url.into(),
                client_id_list: vec![AUDIENCE.into()],
                thumbprint_list: Vec::new(),
                jwks: String::new(),
            },
        ))
        .await?
        .into_inner()
        .open_id_connect_provider_arn)
}

async fn provider_count(d: &TestDaemon) -> usize {
    d.client
        .iam()
        .list_open_id_connect_providers(d.client.signed_iam(
            "ListOpenIDConnectProviders",
            v1::ListOpenIdConnectProvidersRequest {},
        ))
        .await
        .unwrap()
        .into_inner()
        .open_id_connect_provider_arns
        .len()
}

/// A provider registered without keys has them fetched from its issuer over HTTPS (its
/// discovery document's jwks_uri); when the issuer rotates in a new key, a token naming it
/// makes the daemon fetch again, at most once per five minutes. An issuer that cannot be
/// reached, is not trusted, or whose discovery document names another issuer or a plain-HTTP
/// jwks_uri is refused, and nothing is registered.
#[tokio::test(flavor = "multi_thread")]
async fn an_issuers_keys_are_fetched_and_fetched_again_when_it_rotates() {
    let issuer = Issuer::new();
    let https = HttpsIssuer::start(issuer.jwks_of("rsa-1")).await;

    // A daemon that does not trust the issuer's CA refuses it.
    let untrusting = TestDaemon::start(Backend::Sealed).await;
    assert_refused(
        register_fetching(&untrusting, &https.url).await,
        Code::FailedPrecondition,
        "OpenIdIdpCommunicationErrorException",
    );
    assert_eq!(provider_count(&untrusting).await, 0);
    drop(untrusting);

    let ca = https.ca.clone();
    let d = TestDaemon::start_with(Backend::Sealed, move |config| {
        config.oidc_ca_file = Some(ca);
    })
    .await;

    // Unreachable, another issuer named, a jwks_uri over plain HTTP: refused, nothing kept.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    assert_refused(
        register_fetching(&d, &format!("https://localhost:{closed}/ci")).await,
        Code::FailedPrecondition,
        "OpenIdIdpCommunicationErrorException",
    );
    https.served.lock().unwrap().issuer = "https://elsewhere.example/ci".into();
    assert_refused(
        register_fetching(&d, &https.url).await,
        Code::FailedPrecondition,
        "OpenIdIdpCommunicationErrorException",
    );
    {
        let mut served = https.served.lock().unwrap();
        served.issuer = https.url.clone();
        served.jwks_uri = served.jwks_uri.replace("https://", "http://");
    }
    assert_refused(
        register_fetching(&d, &https.url).await,
        Code::FailedPrecondition,
        "OpenIdIdpCommunicationErrorException",
    );
    assert_eq!(provider_count(&d).await, 0);
    assert_eq!(https.jwks_fetches(), 0);
    {
        let mut served = https.served.lock().unwrap();
        served.jwks_uri = served.jwks_uri.replace("http://", "https://");
    }

    // Registered with the keys fetched.
    let provider = register_fetching(&d, &https.url).await.expect("registered");
    assert_eq!(https.jwks_fetches(), 1);
    let shown = d
        .client
        .iam()
        .get_open_id_connect_provider(d.client.signed_iam(
            "GetOpenIDConnectProvider",
            v1::GetOpenIdConnectProviderRequest {
                open_id_connect_provider_arn: provider.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.jwks.contains("rsa-1") && !shown.jwks.contains("ec-1"));

    let name = https.url.trim_start_matches("https://").to_owned();
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{name}:sub"): MAIN}}
    }]});
    let role = role_trusting(&d, "fetched", &trust).await;
    let now = d.now();
    assume(&d, &role, &issuer.good_from(&https.url, "RS256", MAIN, now))
        .await
        .expect("a token under the fetched key");

    // The issuer rotates in its EC key. Within five minutes of the last fetch, a token under
    // it is refused without fetching; after, the daemon fetches and accepts it.
    https.served.lock().unwrap().jwks = issuer.jwks.clone();
    assert_refused(
        assume(&d, &role, &issuer.good_from(&https.url, "ES256", MAIN, now)).await,
        Code::Unauthenticated,
        "InvalidIdentityToken",
    );
    assert_eq!(https.jwks_fetches(), 1);
    d.clock.advance(301);
    let now = d.now();
    assume(&d, &role, &issuer.good_from(&https.url, "ES256", MAIN, now))
        .await
        .expect("a token under the rotated-in key");
    assert_eq!(https.jwks_fetches(), 2);
    // A key nobody has is refused, and fetches nothing more within the interval.
    let stranger = issuer.token(
        json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-9"}),
        json!({"iss": https.url, "aud": AUDIENCE, "sub": MAIN, "iat": now, "exp": now + 600}),
    );
    assert_refused(
        assume(&d, &role, &stranger).await,
        Code::Unauthenticated,
        "InvalidIdentityToken",
    );
    assert_eq!(https.jwks_fetches(), 2);
}

/// The token's `amr` (multi-valued) and `azp` are condition keys of the trust policy, as
/// `<issuer>:amr` and `<issuer>:azp`: a role may demand that the person behind the token used
/// MFA, or that it was issued to one party.
#[tokio::test]
async fn trust_policies_read_the_amr_and_azp_claims() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let issuer = Issuer::new();
    let provider = register(&d, &issuer).await;
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "ForAnyValue:StringEquals": {format!("{PROVIDER}:amr"): "mfa"},
            "StringEquals": {format!("{PROVIDER}:azp"): "deploy-bot"}
        }
    }]});
    let role = role_trusting(&d, "strict", &trust).await;
    let now = d.now();
    let token = |extra: Value| {
        let mut claims =
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": MAIN, "iat": now, "exp": now + 600});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        issuer.token(json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}), claims)
    };
    assume(
        &d,
        &role,
        &token(json!({"amr": ["pwd", "mfa"], "azp": "deploy-bot"})),
    )
    .await
    .expect("MFA, issued to deploy-bot");
    for (case, extra) in [
        (
            "no MFA among the methods",
            json!({"amr": ["pwd"], "azp": "deploy-bot"}),
        ),
        ("no amr at all", json!({"azp": "deploy-bot"})),
        (
            "another party",
            json!({"amr": "mfa", "azp": "someone-else"}),
        ),
        ("no azp", json!({"amr": ["mfa"]})),
    ] {
        let refused = assume(&d, &role, &token(extra)).await;
        assert!(
            matches!(&refused, Err(s) if s.code() == Code::PermissionDenied),
            "{case}: {refused:?}"
        );
    }
}

/// Tokens naming keys the provider lacks need no valid signature, so they must not make the
/// daemon fetch at will: while the issuer fails, its keys are tried once per interval however
/// many such tokens come; concurrent ones are judged on the keys held at once rather than
/// queued behind a fetch; and a fetch finishing after the provider was deleted does not
/// bring it back.
#[tokio::test(flavor = "multi_thread")]
async fn refetches_are_bounded_and_never_bring_a_deleted_provider_back() {
    let issuer = Issuer::new();
    let https = HttpsIssuer::start(issuer.jwks_of("rsa-1")).await;
    let ca = https.ca.clone();
    let d = TestDaemon::start_with(Backend::Sealed, move |config| {
        config.oidc_ca_file = Some(ca);
    })
    .await;
    let provider = register_fetching(&d, &https.url).await.expect("registered");
    let name = https.url.trim_start_matches("https://").to_owned();
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": provider},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{name}:sub"): MAIN}}}]});
    let role = role_trusting(&d, "bounded", &trust).await;
    assert_eq!(https.jwks_fetches(), 1);

    // The issuer fails; past the interval, twenty tokens under an unknown key: one try.
    https.served.lock().unwrap().keys_fail = true;
    d.clock.advance(301);
    let now = d.now();
    let unknown = issuer.good_from(&https.url, "ES256", MAIN, now);
    assert_refused(
        assume(&d, &role, &unknown).await,
        Code::FailedPrecondition,
        "IDPCommunicationError",
    );
    for _ in 0..19 {
        assert_refused(
            assume(&d, &role, &unknown).await,
            Code::Unauthenticated,
            "InvalidIdentityToken",
        );
    }
    assert_eq!(https.jwks_fetches(), 2, "one try for twenty tokens");

    // A slow issuer: a token arriving while a fetch runs is answered at once.
    {
        let mut served = https.served.lock().unwrap();
        served.keys_fail = false;
        served.keys_delay = Duration::from_secs(2);
    }
    d.clock.advance(301);
    let now = d.now();
    let unknown = issuer.good_from(&https.url, "ES256", MAIN, now);
    let fetching = {
        let (client, role, token) = (d.client.clone(), role.clone(), unknown.clone());
        tokio::spawn(async move {
            client
                .iam()
                .assume_role_with_web_identity(tonic::Request::new(
                    v1::AssumeRoleWithWebIdentityRequest {
                        role_arn: role,
                        role_session_name: "slow".into(),
                        web_identity_token: token,
                        duration_seconds: Some(900),
                    },
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert_refused(
        assume(&d, &role, &unknown).await,
        Code::Unauthenticated,
        "InvalidIdentityToken",
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a token waited on another's fetch"
    );
    // The provider is deleted while that fetch is under way; it stays deleted.
    d.client
        .iam()
        .delete_open_id_connect_provider(d.client.signed_iam(
            "DeleteOpenIDConnectProvider",
            v1::DeleteOpenIdConnectProviderRequest {
                open_id_connect_provider_arn: provider.clone(),
            },
        ))
        .await
        .expect("DeleteOpenIDConnectProvider");
    let _ = fetching.await.unwrap();
    assert_eq!(
        provider_count(&d).await,
        0,
        "the deleted provider came back"
    );
}
