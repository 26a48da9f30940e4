//! Certificate principals: users and roles bound to client-certificate identities, so that a
//! gRPC call over mutual TLS with no signature acts as them (the certificate door). Judged by
//! the same policies and conditions, refused with the same errors and recorded in the same
//! audit log (naming the door) as a signed call; certificates bound to nothing, unbound,
//! expired or of a deleted principal are refused `UNAUTHENTICATED`; a signed call on such a
//! connection is judged by its signature. A stock Python gRPC client proves it end to end.

mod common;

use common::{Backend, TestDaemon, assert_refused};
use keyhaven::audit::{AuditRecord, Phase, chain_files};
use keyhaven::client::{Client, ClientCredentials, ClientTls};
use keyhaven::proto::v1;
use keyhaven::secret::{SecretBytes, SecretString};
use keyhaven::server::config::TlsSettings;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};
use std::path::{Path, PathBuf};
use tonic::{Code, Request};

const APP_URI: &str = "spiffe://example.org/ns/prod/app";

/// A client CA, a server certificate for 127.0.0.1 signed by it, and client certificates
/// issued on demand.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    files: tempfile::TempDir,
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished = DistinguishedName::new();
    distinguished.push(DnType::CommonName, name);
    distinguished
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
struct ClientCertificate {
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name = common_name("Keyhaven test client CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let files = tempfile::tempdir().unwrap();
        let pki = Self {
            ca_pem: ca_cert.pem(),
            issuer,
            files,
        };
        // Named apart from the CA: OpenSSL-based clients take a certificate whose subject is
        // its issuer's for a self-signed one.
        let mut server =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        server.distinguished_name = common_name("localhost");
        let server = pki.issue(server, ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("server.pem"), &server.cert).unwrap();
        std::fs::write(pki.path("server.key"), &server.key).unwrap();
        pki
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
    ) -> ClientCertificate {
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCertificate {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate with subject common name `common_name` and, if given, a URI
    /// subject alternative name; valid from `not_before` to `not_after`.
    fn client_valid(
        &self,
        common_name: &str,
        uri: Option<&str>,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> ClientCertificate {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = self::common_name(common_name);
        if let Some(uri) = uri {
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        }
        params.not_before = not_before;
        params.not_after = not_after;
        self.issue(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn client(&self, common_name: &str, uri: Option<&str>) -> ClientCertificate {
        let now = time::OffsetDateTime::now_utc();
        self.client_valid(
            common_name,
            uri,
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: Some(self.path("ca.pem")),
        }
    }

    fn client_tls(&self, certificate: &ClientCertificate) -> ClientTls {
        ClientTls {
            ca_cert: Some(self.ca_pem.clone().into_bytes()),
            identity: Some((
                certificate.cert.clone().into_bytes(),
                SecretBytes::new(certificate.key.clone().into_bytes()),
            )),
        }
    }
}

/// A daemon serving mutual TLS; its root client presents a certificate bound to nothing
/// (`operator`) and signs, as every client of a mutual-TLS daemon presents one.
async fn start(pki: &Pki) -> TestDaemon {
    let settings = pki.settings();
    let operator = pki.client("operator", None);
    TestDaemon::start_with_tls(
        Backend::Sealed,
        |c| {
            c.tls = Some(settings);
            c.unauthenticated_burst = 1_000;
        },
        pki.client_tls(&operator),
    )
    .await
}

/// A connection presenting `certificate`; its calls are sent unsigned (`Request::new`).
async fn connect_as(d: &TestDaemon, pki: &Pki, certificate: &ClientCertificate) -> Client {
    Client::connect_with_tls(
        &d.endpoint(),
        d.credentials.clone(),
        &pki.client_tls(certificate),
    )
    .await
    .expect("connect with a client certificate")
}

fn subject(name: &str) -> v1::CertificateIdentity {
    v1::CertificateIdentity {
        subject: name.into(),
        uri: String::new(),
    }
}

fn uri(uri: &str) -> v1::CertificateIdentity {
    v1::CertificateIdentity {
        subject: String::new(),
        uri: uri.into(),
    }
}

async fn bind(
    signed: &Client,
    kind: v1::EntityType,
    name: &str,
    identity: v1::CertificateIdentity,
) -> Result<v1::CertificateBinding, tonic::Status> {
    let request = v1::BindCertificateRequest {
        entity_type: kind as i32,
        entity_name: name.into(),
        identity: Some(identity),
    };
    Ok(signed
        .iam()
        .bind_certificate(signed.signed_iam("BindCertificate", request))
        .await?
        .into_inner()
        .binding
        .expect("binding"))
}

async fn unbind(
    signed: &Client,
    kind: v1::EntityType,
    name: &str,
    identity: v1::CertificateIdentity,
) -> Result<(), tonic::Status> {
    let request = v1::UnbindCertificateRequest {
        entity_type: kind as i32,
        entity_name: name.into(),
        identity: Some(identity),
    };
    signed
        .iam()
        .unbind_certificate(signed.signed_iam("UnbindCertificate", request))
        .await?;
    Ok(())
}

async fn list(
    signed: &Client,
    kind: v1::EntityType,
    name: &str,
) -> Result<Vec<v1::CertificateBinding>, tonic::Status> {
    let request = v1::ListCertificatesRequest {
        entity_type: kind as i32,
        entity_name: name.into(),
    };
    Ok(signed
        .iam()
        .list_certificates(signed.signed_iam("ListCertificates", request))
        .await?
        .into_inner()
        .bindings)
}

async fn unsigned_whoami(client: &Client) -> Result<String, tonic::Status> {
    Ok(client
        .iam()
        .get_caller_identity(Request::new(v1::GetCallerIdentityRequest {}))
        .await?
        .into_inner()
        .arn)
}

fn encrypt_request(key_id: &str, plaintext: &[u8]) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key_id: key_id.into(),
        plaintext: plaintext.to_vec(),
        encryption_context: common::pairs(&[("purpose", "cert-test")]),
        ..Default::default()
    }
}

async fn unsigned_encrypt(client: &Client, key_id: &str) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .encrypt(Request::new(encrypt_request(key_id, b"certificate door")))
        .await?
        .into_inner()
        .ciphertext_blob)
}

async fn key_count(d: &TestDaemon) -> usize {
    d.list_all_keys().await.len()
}

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

/// Alice may encrypt and decrypt from 127.0.0.1 over TLS as herself, and may generate data
/// keys only from 10.0.0.0/8: each condition key must be set for the certificate call as for
/// a signed one.
fn alice_policy(alice_arn: &str) -> String {
    format!(
        r#"{{"Statement":[
            {{"Sid":"HereOverTls","Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*",
              "Condition":{{"StringEquals":{{"aws:PrincipalArn":"{alice_arn}"}},
                            "IpAddress":{{"aws:SourceIp":"127.0.0.1/32"}},
                            "Bool":{{"aws:SecureTransport":"true"}}}}}},
            {{"Sid":"OfficeOnly","Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"*",
              "Condition":{{"IpAddress":{{"aws:SourceIp":"10.0.0.0/8"}}}}}}]}}"#
    )
}

fn alice_arn(d: &TestDaemon) -> String {
    format!("arn:keyhaven:iam::{}:user/alice", d.account_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_certificate_calls_as_its_user_under_her_policies_and_is_audited() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let arn = alice_arn(&d);
    let signed_alice = d.create_user("alice", Some(&alice_policy(&arn))).await;
    let key = d.create_key("certificate door").await.key_id;
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    let alice = connect_as(&d, &pki, &pki.client("app", Some(APP_URI))).await;

    assert_eq!(unsigned_whoami(&alice).await.unwrap(), arn);
    let blob = unsigned_encrypt(&alice, &key).await.unwrap();
    let decrypted = alice
        .kms()
        .decrypt(Request::new(v1::DecryptRequest {
            ciphertext_blob: blob.clone(),
            encryption_context: common::pairs(&[("purpose", "cert-test")]),
            key_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&decrypted.plaintext[..], b"certificate door");
    // What her policies do not allow is refused exactly as her signed calls are.
    let data_key = v1::GenerateDataKeyRequest {
        key_id: key.clone(),
        key_spec: "AES_256".into(),
        ..Default::default()
    };
    let by_certificate = alice
        .kms()
        .generate_data_key(Request::new(data_key.clone()))
        .await;
    let by_signature = signed_alice
        .kms()
        .generate_data_key(signed_alice.signed("GenerateDataKey", data_key))
        .await;
    assert_refused(
        by_signature,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let by_certificate = by_certificate.unwrap_err();
    assert_eq!(by_certificate.code(), Code::PermissionDenied);
    assert_eq!(
        keyhaven::api::reason_of(&by_certificate).as_deref(),
        Some("AccessDeniedException")
    );
    assert!(
        by_certificate.message().contains(&arn),
        "{by_certificate:?}"
    );
    let describe = v1::DescribeKeyRequest {
        key_id: key.clone(),
    };
    let by_certificate = alice
        .kms()
        .describe_key(Request::new(describe.clone()))
        .await
        .unwrap_err();
    let by_signature = signed_alice
        .kms()
        .describe_key(signed_alice.signed("DescribeKey", describe))
        .await
        .unwrap_err();
    assert_eq!(by_certificate.code(), by_signature.code());
    assert_eq!(by_certificate.message(), by_signature.message());

    // The audit log names the door, the certificate and the principal, and no access key.
    let log = records(&d.config.audit_log);
    let encrypt = log
        .iter()
        .find(|r| r.operation == "kms:Encrypt" && r.principal.as_deref() == Some(arn.as_str()))
        .expect("the certificate call's record");
    assert_eq!(encrypt.door.as_deref(), Some("certificate"));
    assert_eq!(
        encrypt.certificate.as_deref(),
        Some(&*format!("uri:{APP_URI}"))
    );
    assert_eq!(encrypt.access_key_id, None);
    assert_eq!(encrypt.keys.len(), 1);
    assert_eq!(encrypt.outcome.as_ref().unwrap().code, "Ok");
    let refused = log
        .iter()
        .find(|r| r.operation == "kms:GenerateDataKey" && r.door.as_deref() == Some("certificate"))
        .expect("the refused certificate call's record");
    assert_eq!(
        refused.outcome.as_ref().unwrap().reason.as_deref(),
        Some("AccessDeniedException")
    );
    // Signed calls' records name the gRPC door and an access key.
    let signed = log
        .iter()
        .find(|r| r.operation == "kms:GenerateDataKey" && r.door.as_deref() == Some("grpc"))
        .expect("the signed call's record");
    assert!(signed.access_key_id.is_some());
    assert_eq!(signed.certificate, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_certificate_acts_as_a_session_named_after_the_certificate() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
        d.account_id
    );
    d.client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "app".into(),
                assume_role_policy_document: trust,
            },
        ))
        .await
        .unwrap();
    let role_arn = format!("arn:keyhaven:iam::{}:role/app", d.account_id);
    // The role's policy names the role, as `aws:PrincipalArn` does for its sessions.
    let policy = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*",
            "Condition":{{"StringEquals":{{"aws:PrincipalArn":"{role_arn}"}}}}}}]}}"#
    );
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::Role as i32,
                entity_name: "app".into(),
                policy_name: "encrypt".into(),
                policy_document: policy,
            },
        ))
        .await
        .unwrap();
    let key = d.create_key("role door").await.key_id;
    bind(&d.client, v1::EntityType::Role, "app", uri(APP_URI))
        .await
        .unwrap();
    let app = connect_as(&d, &pki, &pki.client("app", Some(APP_URI))).await;
    assert_eq!(
        unsigned_whoami(&app).await.unwrap(),
        format!(
            "arn:keyhaven:sts::{}:assumed-role/app/spiffe---example.org-ns-prod-app",
            d.account_id
        )
    );
    unsigned_encrypt(&app, &key).await.unwrap();
    assert_refused(
        app.kms()
            .describe_key(Request::new(v1::DescribeKeyRequest { key_id: key }))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Deleting the role removes its bindings: a role made again under the name is not bound.
    d.client
        .iam()
        .delete_role(d.client.signed_iam(
            "DeleteRole",
            v1::DeleteRoleRequest {
                role_name: "app".into(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        unsigned_whoami(&app).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_unbound_and_orphaned_certificates_are_refused_and_change_nothing() {
    let pki = Pki::new();
    let d = start(&pki).await;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    let key = d.create_key("refusals").await.key_id;
    let certificate = pki.client("billing", None);
    let billing = connect_as(&d, &pki, &certificate).await;
    let keys_before = key_count(&d).await;

    // Bound to nothing: refused as an unknown access key is, for reads and changes alike.
    assert_refused(
        unsigned_encrypt(&billing, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert_refused(
        billing
            .kms()
            .create_key(Request::new(v1::CreateKeyRequest::default()))
            .await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert_eq!(key_count(&d).await, keys_before, "nothing was created");
    let refusal = records(&d.config.audit_log)
        .into_iter()
        .find(|r| r.phase == Phase::Unauthenticated)
        .expect("the first refusal's record (later ones of the source are summarised)");
    assert_eq!(refusal.operation, "kms:Encrypt");
    assert_eq!(refusal.door.as_deref(), Some("certificate"));
    assert_eq!(refusal.certificate.as_deref(), Some("subject:billing"));
    assert_eq!(refusal.principal, None);

    // Bound: accepted. Unbound: refused again, on the same connection.
    bind(&d.client, v1::EntityType::User, "alice", subject("billing"))
        .await
        .unwrap();
    unsigned_encrypt(&billing, &key).await.unwrap();
    unbind(&d.client, v1::EntityType::User, "alice", subject("billing"))
        .await
        .unwrap();
    assert_refused(
        unsigned_encrypt(&billing, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .is_empty()
    );

    // Bound, then the user deleted and made again: the new alice is not bound.
    bind(&d.client, v1::EntityType::User, "alice", subject("billing"))
        .await
        .unwrap();
    d.client
        .iam()
        .delete_user(d.client.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap();
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    assert_refused(
        unsigned_encrypt(&billing, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .is_empty()
    );

    // A call with neither a signature nor a bound certificate on a connection of the
    // operator's (unbound) certificate: refused the same way.
    assert_refused(
        d.client
            .kms()
            .encrypt(Request::new(encrypt_request(&key, b"x")))
            .await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_names_are_bound_to_two_principals_is_refused() {
    let pki = Pki::new();
    let d = start(&pki).await;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    d.create_user("bob", None).await;
    let key = d.create_key("ambiguous").await.key_id;
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    let both = connect_as(&d, &pki, &pki.client("shared-name", Some(APP_URI))).await;
    unsigned_encrypt(&both, &key).await.unwrap();
    // Its common name bound to Bob too: which one the CA meant cannot be known.
    bind(
        &d.client,
        v1::EntityType::User,
        "bob",
        subject("shared-name"),
    )
    .await
    .unwrap();
    assert_refused(
        unsigned_encrypt(&both, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    // Both names bound to Alice: hers.
    unbind(
        &d.client,
        v1::EntityType::User,
        "bob",
        subject("shared-name"),
    )
    .await
    .unwrap();
    bind(
        &d.client,
        v1::EntityType::User,
        "alice",
        subject("shared-name"),
    )
    .await
    .unwrap();
    assert!(
        unsigned_whoami(&both)
            .await
            .unwrap()
            .ends_with(":user/alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_are_refused() {
    let pki = Pki::new();
    let mut d = start(&pki).await;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    let key = d.create_key("expiry").await.key_id;
    bind(&d.client, v1::EntityType::User, "alice", subject("old"))
        .await
        .unwrap();
    bind(&d.client, v1::EntityType::User, "alice", subject("short"))
        .await
        .unwrap();

    // Expired by every clock: rustls refuses the handshake (it checks validity against the
    // system clock), so the connection or its first call fails, and never as alice.
    let expired = pki.client_valid(
        "old",
        None,
        rcgen::date_time_ymd(2020, 1, 1),
        rcgen::date_time_ymd(2021, 1, 1),
    );
    match Client::connect_with_tls(
        &d.endpoint(),
        d.credentials.clone(),
        &pki.client_tls(&expired),
    )
    .await
    {
        Err(_) => {}
        // TLS 1.3: the client learns of the refusal when its first call finds the connection
        // closed.
        Ok(client) => {
            let refused = unsigned_encrypt(&client, &key).await.unwrap_err();
            // A transport failure (closed, cancelled, broken pipe), never an answer.
            assert!(
                matches!(
                    refused.code(),
                    Code::Unavailable | Code::Cancelled | Code::Unknown
                ),
                "{refused:?}"
            );
            assert_eq!(keyhaven::api::reason_of(&refused), None, "{refused:?}");
        }
    }

    // Valid by the system's clock but expired by the daemon's: refused by the daemon.
    let now = time::OffsetDateTime::now_utc();
    let short = pki.client_valid(
        "short",
        None,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    );
    let client = connect_as(&d, &pki, &short).await;
    unsigned_encrypt(&client, &key).await.unwrap();
    d.clock.advance(2 * common::DAY);
    assert_refused(
        unsigned_encrypt(&client, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    // And after a restart (on a new port, so a new connection).
    d.restart().await;
    let client = connect_as(&d, &pki, &short).await;
    assert_refused(
        unsigned_encrypt(&client, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_call_over_a_certificate_connection_is_judged_by_its_signature() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let key = d.create_key("signature wins").await.key_id;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    d.create_user("bob", None).await;
    let bob_key = d
        .client
        .iam()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: "bob".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let bob = ClientCredentials {
        access_key_id: bob_key.access_key.unwrap().access_key_id,
        secret_access_key: SecretString::new(bob_key.secret_access_key),
        session_token: None,
        region: d.config.region.clone(),
    };
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    // Alice's certificate, Bob's signature: Bob, who may do nothing.
    let alice_certificate = pki.client("app", Some(APP_URI));
    let as_bob = Client::connect_with_tls(&d.endpoint(), bob, &pki.client_tls(&alice_certificate))
        .await
        .unwrap()
        .with_clock(std::sync::Arc::new(d.clock.clone()));
    let whoami = as_bob
        .iam()
        .get_caller_identity(
            as_bob.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await
        .unwrap()
        .into_inner()
        .arn;
    assert!(whoami.ends_with(":user/bob"), "{whoami}");
    assert_refused(
        as_bob
            .kms()
            .encrypt(as_bob.signed("Encrypt", encrypt_request(&key, b"x")))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // A bad signature is refused as one, not passed on to the certificate.
    let mut forged = as_bob.signed("Encrypt", encrypt_request(&key, b"x"));
    let authorization = forged
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let tampered = format!("{}0", &authorization[..authorization.len() - 1]);
    let tampered = if tampered == authorization {
        format!("{}1", &authorization[..authorization.len() - 1])
    } else {
        tampered
    };
    forged
        .metadata_mut()
        .insert("authorization", tampered.parse().unwrap());
    assert_refused(
        as_bob.kms().encrypt(forged).await,
        Code::Unauthenticated,
        "InvalidSignatureException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_authorised_validated_bounded_audited_and_durable() {
    let pki = Pki::new();
    let mut d = start(&pki).await;
    d.create_user("alice", None).await;
    let mallory = d
        .create_user(
            "mallory",
            Some(r#"{"Statement":[{"Effect":"Allow","Action":"iam:ListCertificates","Resource":"*"}]}"#),
        )
        .await;

    // Authorised as iam:BindCertificate on the user's ARN: Mallory may not bind herself in.
    assert_refused(
        bind(&mallory, v1::EntityType::User, "alice", subject("mallory")).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert!(
        list(&mallory, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .is_empty(),
        "nothing was bound"
    );

    let binding = bind(
        &d.client,
        v1::EntityType::User,
        "alice",
        subject("alice-laptop"),
    )
    .await
    .unwrap();
    assert_eq!(binding.entity_name, "alice");
    assert_eq!(binding.identity, Some(subject("alice-laptop")));
    // One identity names one principal.
    d.create_user("bob", None).await;
    assert_refused(
        bind(
            &d.client,
            v1::EntityType::User,
            "bob",
            subject("alice-laptop"),
        )
        .await,
        Code::AlreadyExists,
        "EntityAlreadyExistsException",
    );
    // Exactly one of subject and URI; URIs have a scheme; groups are not principals;
    // the user must exist.
    for (name, identity, code, reason) in [
        (
            "alice",
            v1::CertificateIdentity::default(),
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "alice",
            v1::CertificateIdentity {
                subject: "a".into(),
                uri: "spiffe://x".into(),
            },
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "alice",
            uri("not a uri"),
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "nobody",
            subject("n"),
            Code::NotFound,
            "NoSuchEntityException",
        ),
    ] {
        assert_refused(
            bind(&d.client, v1::EntityType::User, name, identity).await,
            code,
            reason,
        );
    }
    d.client
        .iam()
        .create_group(d.client.signed_iam(
            "CreateGroup",
            v1::CreateGroupRequest {
                group_name: "devs".into(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        bind(&d.client, v1::EntityType::Group, "devs", subject("g")).await,
        Code::InvalidArgument,
        "ValidationException",
    );
    // At most ten per principal.
    for n in 1..10 {
        bind(
            &d.client,
            v1::EntityType::User,
            "alice",
            uri(&format!("spiffe://example.org/{n}")),
        )
        .await
        .unwrap();
    }
    assert_refused(
        bind(
            &d.client,
            v1::EntityType::User,
            "alice",
            uri("spiffe://example.org/10"),
        )
        .await,
        Code::ResourceExhausted,
        "LimitExceededException",
    );
    assert_eq!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .len(),
        10
    );
    assert_refused(
        unbind(
            &d.client,
            v1::EntityType::User,
            "bob",
            subject("alice-laptop"),
        )
        .await,
        Code::NotFound,
        "NoSuchEntityException",
    );

    // Audited as the iam: actions they are.
    let log = records(&d.config.audit_log);
    for operation in ["iam:BindCertificate", "iam:ListCertificates"] {
        assert!(
            log.iter().any(|r| r.operation == operation),
            "{operation} not in the audit log"
        );
    }
    assert!(log.iter().any(|r| {
        r.operation == "iam:BindCertificate"
            && r.phase == Phase::Request
            && r.principal
                .as_deref()
                .is_some_and(|p| p.ends_with(":user/mallory"))
    }));

    // Durable across a restart, and usable after it.
    d.restart().await;
    assert_eq!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .len(),
        10
    );
    let laptop = connect_as(&d, &pki, &pki.client("alice-laptop", None)).await;
    assert!(
        unsigned_whoami(&laptop)
            .await
            .unwrap()
            .ends_with(":user/alice")
    );
}

/// The `keyhaven` binary, with no `KEYHAVEN_*` settings of the environment it runs in.
fn keyhaven(d: &TestDaemon, pki: &Pki, operator: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    command
        .env("KEYHAVEN_ENDPOINT", d.endpoint())
        .env("KEYHAVEN_ACCESS_KEY_ID", &d.credentials.access_key_id)
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            d.credentials.secret_access_key.expose(),
        )
        .env("KEYHAVEN_REGION", &d.config.region)
        .env("KEYHAVEN_CA_CERT", pki.path("ca.pem"))
        .env("KEYHAVEN_CLIENT_CERT", operator.join("operator.pem"))
        .env("KEYHAVEN_CLIENT_KEY", operator.join("operator.key"))
        .env("NO_COLOR", "1");
    command
}

fn run(mut command: std::process::Command) -> (bool, String, String) {
    let output = command.output().expect("run keyhaven");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_binds_lists_and_unbinds_certificates() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let operator = pki.client("operator", None);
    std::fs::write(pki.path("operator.pem"), &operator.cert).unwrap();
    std::fs::write(pki.path("operator.key"), &operator.key).unwrap();
    let files = pki.files.path().to_path_buf();
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    let key = d.create_key("cli").await.key_id;
    let cli = |args: &[&str]| {
        let mut command = keyhaven(&d, &pki, &files);
        command.args(args);
        run(command)
    };

    let (ok, out, err) = cli(&["user", "bind-certificate", "alice", "--uri", APP_URI]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("Bound user alice to certificate uri {APP_URI}")),
        "{out}"
    );
    let (ok, out, err) = cli(&[
        "user",
        "bind-certificate",
        "alice",
        "--subject",
        "alice-laptop",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["--output", "json", "user", "list-certificates", "alice"]);
    assert!(ok, "{out}{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bindings = listed["CertificateBindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2, "{out}");
    assert!(
        bindings
            .iter()
            .any(|b| b["Uri"] == APP_URI && b["UserName"] == "alice")
    );
    assert!(bindings.iter().any(|b| b["Subject"] == "alice-laptop"));
    // Both or neither of --subject and --uri: refused before any call.
    let (ok, _, err) = cli(&["user", "bind-certificate", "alice"]);
    assert!(!ok && err.contains("--subject"), "{err}");
    let (ok, _, err) = cli(&[
        "user",
        "bind-certificate",
        "alice",
        "--subject",
        "a",
        "--uri",
        "x:y",
    ]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");

    let app = connect_as(&d, &pki, &pki.client("app", Some(APP_URI))).await;
    unsigned_encrypt(&app, &key).await.unwrap();
    let (ok, out, err) = cli(&["user", "unbind-certificate", "alice", "--uri", APP_URI]);
    assert!(ok, "{out}{err}");
    assert_refused(
        unsigned_encrypt(&app, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    let (ok, out, _) = cli(&["user", "list-certificates", "alice"]);
    assert!(ok);
    assert_eq!(out.trim(), "subject alice-laptop");
    // Roles too.
    let trust = pki.path("trust.json");
    std::fs::write(
        &trust,
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
            d.account_id
        ),
    )
    .unwrap();
    let (ok, out, err) = cli(&[
        "role",
        "create",
        "app",
        "--trust-policy-file",
        trust.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["role", "bind-certificate", "app", "--uri", APP_URI]);
    assert!(ok, "{out}{err}");
    assert!(
        unsigned_whoami(&app)
            .await
            .unwrap()
            .contains(":assumed-role/app/")
    );
}

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
    let b = a.join().await;
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
