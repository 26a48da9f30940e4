//! A wrong PKCS#11 PIN is refused at start even when the token is already logged in.
//!
//! A file of its own: SoftHSM2 reads its tokens when the module is first initialised in a
//! process, so the private token this test makes must exist before any other test of the
//! process loads the module.

mod common;

use common::device::PrivateToken;
use common::{PASSPHRASE, pkcs11_settings};
use keyhaven::clock::{OffsetClock, SystemClock};
use keyhaven::keystore::pkcs11::{Pkcs11Settings, TokenSelector};
use keyhaven::seal::KdfParams;
use keyhaven::secret::SecretString;
use keyhaven::server::{Daemon, DaemonConfig, init_data_dir};
use std::path::Path;
use std::sync::Arc;

/// A daemon's configuration on `token` with `pin`, in a fresh data directory.
fn daemon_on(dir: &Path, token: &PrivateToken, pin: &str) -> DaemonConfig {
    init_data_dir(
        dir,
        &SecretString::new(PASSPHRASE.into()),
        KdfParams::MINIMUM,
        "keyhaven",
        &SystemClock,
    )
    .expect("init");
    let mut config = DaemonConfig::new(dir.to_path_buf());
    config.set_listen("127.0.0.1:0").expect("listen");
    config
        .add_pkcs11(Pkcs11Settings {
            name: "pinned".into(),
            module: token.module.clone(),
            token: TokenSelector::Label(token.label.clone()),
            pin: SecretString::new(pin.into()),
            max_idle_sessions: 4,
            init_parameters: None,
        })
        .expect("PKCS#11 keystore");
    config.keystore = "pkcs11:pinned".into();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_even_when_the_token_is_already_logged_in() {
    let _ = pkcs11_settings();
    let token = PrivateToken::create("pin-check");
    // Another session of this process has logged in with the right PIN.
    let other = token.session();
    let dir = tempfile::tempdir().expect("data directory");
    let started = Daemon::start(
        daemon_on(dir.path(), &token, "00000000"),
        SecretString::new(PASSPHRASE.into()),
        Arc::new(OffsetClock::new()),
    )
    .await;
    let Err(error) = started else {
        panic!("a daemon started with a wrong PIN");
    };
    assert_eq!(
        error.to_string(),
        "keystore pkcs11:pinned: keystore failure: the token refused the PIN (CKR_PIN_INCORRECT)"
    );
    drop(other);

    // The right PIN still starts, with the token logged in by another session again.
    let other = token.session();
    let dir = tempfile::tempdir().expect("data directory");
    let daemon = Daemon::start(
        daemon_on(dir.path(), &token, &token.pin),
        SecretString::new(PASSPHRASE.into()),
        Arc::new(OffsetClock::new()),
    )
    .await
    .expect("the right PIN starts");
    daemon.shutdown().await.expect("clean shutdown");
    drop(other);
}
