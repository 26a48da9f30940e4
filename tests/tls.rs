//! TLS on the gRPC listener (rustls): clients verify the server, mutual TLS verifies clients,
//! and a network listener without TLS refuses to start.

mod common;

use common::{Backend, TestDaemon};
use keyhaven::client::{Client, ClientCredentials, ClientTls};
use keyhaven::proto::v1;
use keyhaven::secret::SecretBytes;
use keyhaven::server::config::TlsSettings;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use std::path::PathBuf;

/// A CA, a server certificate for localhost signed by it, and a client certificate.
struct Pki {
    ca_pem: String,
    files: tempfile::TempDir,
    client: (String, String),
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = issue(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = issue(
            vec!["client.example".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(files.path().join("server.pem"), &server.0).unwrap();
        std::fs::write(files.path().join("server.key"), &server.1).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            files,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    fn settings(&self, mutual: bool) -> TlsSettings {
        TlsSettings {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mutual.then(|| self.path("ca.pem")),
        }
    }

    fn client_tls(&self, with_identity: bool) -> ClientTls {
        ClientTls {
            ca_cert: Some(self.ca_pem.clone().into_bytes()),
            identity: with_identity.then(|| {
                (
                    self.client.0.clone().into_bytes(),
                    SecretBytes::new(self.client.1.clone().into_bytes()),
                )
            }),
        }
    }
}

async fn whoami(client: &Client) -> Result<String, tonic::Status> {
    let request = client.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {});
    Ok(client
        .iam()
        .get_caller_identity(request)
        .await?
        .into_inner()
        .arn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_verify_the_server() {
    let pki = Pki::new();
    let settings = pki.settings(false);
    let d = TestDaemon::start_with_tls(
        Backend::Sealed,
        |c| c.tls = Some(settings),
        pki.client_tls(false),
    )
    .await;
    let key = d.create_key("over TLS").await.key_id;
    let blob = d.encrypt(&key, b"wire-protected", &[]).await.unwrap();
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"wire-protected");
    let endpoint = d.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    // No CA given: refused with the fix named.
    let error = Client::connect_with_tls(&endpoint, d.credentials.clone(), &ClientTls::default())
        .await
        .err()
        .expect("no CA");
    assert!(error.contains("--ca-cert"), "{error}");
    // Another CA: the handshake fails.
    let other = Pki::new();
    let result =
        Client::connect_with_tls(&endpoint, d.credentials.clone(), &other.client_tls(false)).await;
    match result {
        Err(_) => {}
        Ok(client) => assert!(
            whoami(&client).await.is_err(),
            "a server signed by another CA was trusted"
        ),
    }
    // Plaintext to the TLS port does not work.
    let plain = format!("http://127.0.0.1:{}", endpoint.rsplit(':').next().unwrap());
    match Client::connect(&plain, d.credentials.clone()).await {
        Err(_) => {}
        Ok(client) => assert!(
            whoami(&client).await.is_err(),
            "plaintext reached a TLS listener"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = Pki::new();
    let settings = pki.settings(true);
    let d = TestDaemon::start_with_tls(
        Backend::Sealed,
        |c| c.tls = Some(settings),
        pki.client_tls(true),
    )
    .await;
    assert!(whoami(&d.client).await.unwrap().ends_with(":root"));
    let credentials: ClientCredentials = d.credentials.clone();
    match Client::connect_with_tls(&d.endpoint(), credentials, &pki.client_tls(false)).await {
        Err(_) => {}
        Ok(client) => assert!(
            whoami(&client).await.is_err(),
            "a client without a certificate got in"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_transport_is_a_condition_key() {
    let pki = Pki::new();
    let settings = pki.settings(false);
    let d = TestDaemon::start_with_tls(
        Backend::Sealed,
        |c| c.tls = Some(settings),
        pki.client_tls(false),
    )
    .await;
    let key = d.create_key("tls only").await;
    // The daemon sees the transport as secure: a key policy that denies everything not over TLS still lets this client in.
    let policy = format!(
        r#"{{"Statement":[
            {{"Sid":"Root","Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"TlsOnly","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{{"Bool":{{"aws:SecureTransport":"false"}}}}}}]}}"#,
        d.account_id
    );
    let request = v1::PutKeyPolicyRequest {
        key_id: key.key_id.clone(),
        policy_name: "default".into(),
        policy,
        bypass_policy_lockout_safety_check: false,
    };
    d.client
        .kms()
        .put_key_policy(d.client.signed("PutKeyPolicy", request))
        .await
        .unwrap();
    d.encrypt(&key.key_id, b"x", &[]).await.unwrap();
}

#[test]
fn a_network_listener_without_tls_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"))
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "0.0.0.0:0"])
            .args(extra)
            .env_remove("KEYHAVEN_PASSPHRASE")
            .env_remove("KEYHAVEN_PKCS11_MODULE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without TLS"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-tls"), "{stderr}");
    // With the waiver it gets past that check (and stops at the missing seal instead).
    let waived = run(&["--insecure-no-tls"]);
    assert!(!waived.status.success());
    let stderr = String::from_utf8_lossy(&waived.stderr);
    assert!(!stderr.contains("without TLS"), "{stderr}");
}
