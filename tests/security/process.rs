//! The process: no core dumps, start-up self-tests, signatures bound to the daemon, the systemd unit.

use crate::common::{Backend, PASSPHRASE, TestDaemon, assert_refused};
use keyhaven::client::Client;
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use keyhaven::server::Daemon;
use std::path::Path;
use std::sync::Arc;
use tonic::Code;

// ------------------------------------------------------------------ signatures (item 16)

fn encrypt_request(key: &str) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key_id: key.to_owned(),
        plaintext: b"captured on the wire".to_vec(),
        encryption_context: Default::default(),
    }
}

/// The same signed request again: its message and its metadata.
fn copy_of<T: Clone>(request: &tonic::Request<T>) -> tonic::Request<T> {
    let mut copy = tonic::Request::new(request.get_ref().clone());
    *copy.metadata_mut() = request.metadata().clone();
    copy
}

#[track_caller]
fn assert_message(result: &Result<impl std::fmt::Debug, tonic::Status>, words: &str) {
    assert!(
        result.as_ref().is_err_and(|s| s.message().contains(words)),
        "expected a refusal saying '{words}', got {result:?}"
    );
}

/// Reads leave no stored signature behind, so before this check a captured Encrypt (or
/// Decrypt) could be sent again to a restarted daemon, whose replay cache was empty.
#[tokio::test]
async fn an_encrypt_captured_before_a_restart_is_refused_after_it() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("captured-encrypt").await.key_id;
    let first = d.client.signed("Encrypt", encrypt_request(&key));
    let captured = copy_of(&first);
    d.client
        .kms()
        .encrypt(first)
        .await
        .expect("the original call");

    // The same address and port again, so that only the restart differs.
    let address = d.endpoint().trim_start_matches("http://").to_owned();
    d.stop().await;
    d.config.set_listen(&address).expect("listen");
    d.clock.advance(60);
    d.start_again().await;

    let result = d.client.kms().encrypt(captured).await;
    assert_message(&result, "dated before the daemon started");
    assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");

    // Within the five minutes of skew, a client whose clock is behind is refused the same way
    // until the daemon has run past its request time; a request signed now is answered.
    let slow = d
        .client
        .signed_at("Encrypt", encrypt_request(&key), d.now() - 30);
    let result = d.client.kms().encrypt(slow).await;
    assert_message(&result, "sign the request again");
    assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");
    d.client
        .kms()
        .encrypt(d.client.signed("Encrypt", encrypt_request(&key)))
        .await
        .expect("a request signed after the start");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Two daemons that share credentials (a copy of one data directory: the same root access
/// key): a request signed for one is refused by the other, and the first still answers it.
#[tokio::test]
async fn a_request_signed_for_one_daemon_is_refused_by_another() {
    let mut a = TestDaemon::start(Backend::Sealed).await;
    let key = a.create_key("two-daemons").await.key_id;
    a.stop().await;
    let copy = tempfile::tempdir().expect("temporary directory");
    copy_dir(&a.config.data_dir, copy.path());
    a.start_again().await;
    let mut config_b = keyhaven::server::DaemonConfig::new(copy.path().to_path_buf());
    config_b.set_listen("127.0.0.1:0").expect("listen");
    let b = Daemon::start(
        config_b,
        SecretString::new(PASSPHRASE.into()),
        Arc::new(a.clock.clone()),
    )
    .await
    .expect("daemon B starts");
    let client_b = Client::connect(&format!("http://{}", b.local_addr()), a.credentials.clone())
        .await
        .expect("connect to B")
        .with_clock(Arc::new(a.clock.clone()));
    // B answers its own clients with the shared credentials.
    client_b
        .kms()
        .encrypt(client_b.signed("Encrypt", encrypt_request(&key)))
        .await
        .expect("B answers a request signed for B");

    let for_a = a.client.signed("Encrypt", encrypt_request(&key));
    let sent_to_b = copy_of(&for_a);
    let result = client_b.kms().encrypt(sent_to_b).await;
    assert_message(&result, "does not match");
    assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");
    a.client
        .kms()
        .encrypt(for_a)
        .await
        .expect("A answers the request signed for it");
    // A state change the same way: B's key stays enabled.
    let disable = a.client.signed(
        "DisableKey",
        v1::DisableKeyRequest {
            key_id: key.clone(),
        },
    );
    let result = client_b.kms().disable_key(disable).await;
    assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");
    let described = client_b
        .kms()
        .describe_key(client_b.signed(
            "DescribeKey",
            v1::DescribeKeyRequest {
                key_id: key.clone(),
            },
        ))
        .await
        .expect("describe on B")
        .into_inner();
    assert_eq!(
        described.key_metadata.expect("metadata").key_state,
        v1::KeyState::Enabled as i32
    );
    b.shutdown().await.expect("B stops");
}

/// With `accepted_hosts`, a request signed for (and sent to) a name the daemon does not
/// answer to is refused; one of its names is answered.
#[tokio::test]
async fn a_host_outside_accepted_hosts_is_refused() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.accepted_hosts = vec!["localhost".into(), "kms.example.com:7878".into()];
    })
    .await;
    let port = d
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let random = v1::GenerateRandomRequest { number_of_bytes: 8 };
    // The test client addresses 127.0.0.1: not a listed name.
    let result = d
        .client
        .kms()
        .generate_random(d.client.signed("GenerateRandom", random))
        .await;
    assert_message(&result, "not one of this daemon's accepted_hosts");
    assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");
    let by_name = Client::connect(&format!("http://localhost:{port}"), d.credentials.clone())
        .await
        .expect("connect by name")
        .with_clock(Arc::new(d.clock.clone()));
    let answer = by_name
        .kms()
        .generate_random(by_name.signed("GenerateRandom", random))
        .await
        .expect("a listed name (any port) is answered")
        .into_inner();
    assert_eq!(answer.plaintext.len(), 8);
}
