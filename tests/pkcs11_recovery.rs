//! PKCS#11 recovery, in a test binary of its own: logging out is per process and token, so it
//! would disturb the other PKCS#11 tests if they shared the process.

mod common;

use common::device::{independent_session, objects};
use common::{Backend, TestDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_login_is_recovered() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let key = d.create_key("login").await.key_id;
    let blob = d.encrypt(&key, b"before", &[]).await.unwrap();
    // Logging out is per application and token: the daemon's sessions lose the login too.
    let session = independent_session();
    session.logout().expect("C_Logout");
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"before");
    let after = d.encrypt(&key, b"after", &[]).await.unwrap();
    assert_eq!(d.decrypt(&after, &[]).await.unwrap(), b"after");
    let fresh = d.create_key("created after the logout").await.key_id;
    assert_eq!(
        objects(&independent_session(), &d.account_id, &fresh, 1).len(),
        1
    );
}
