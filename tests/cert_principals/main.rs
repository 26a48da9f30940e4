//! Certificate principals: users and roles bound to client-certificate identities, so that a
//! gRPC call over mutual TLS with no signature acts as them (the certificate door). Judged by
//! the same policies and conditions, refused with the same errors and recorded in the same
//! audit log (naming the door) as a signed call; certificates bound to nothing, unbound,
//! expired or of a deleted principal are refused `UNAUTHENTICATED`; a signed call on such a
//! connection is judged by its signature. A stock Python gRPC client proves it end to end.
//!
//! By concern: who a certificate calls as and what is refused (`calls`), binding certificates
//! (`bindings`), clients nobody here wrote and the daemon's own (`clients`); the test PKI and
//! the helpers they share are here.

mod bindings;
mod calls;
mod clients;
#[path = "../common/mod.rs"]
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
