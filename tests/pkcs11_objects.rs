//! The PKCS#11 keystore on its own, under threads that change and search a token at once.
//! In a test binary of its own: SoftHSM2 reads its list of tokens once per process, and this
//! test makes a token of its own.

mod common;

use common::device::objects;
use uuid::Uuid;

/// Key generation and destruction while other threads search the token: nothing generated is
/// lost, and no call fails. SoftHSM2's object store can index a file another thread is still
/// creating as a second object; destroying that one removed the first one's file (an
/// acknowledged version gone at the next start) or invalidated an object being generated
/// (`CKR_TEMPLATE_INCONSISTENT`). The keystore keeps object changes apart from searches.
#[test]
fn generating_while_others_search_and_destroy_loses_nothing() {
    use common::device::PrivateToken;
    use keyhaven::keystore::pkcs11::{Pkcs11KeyStore, Pkcs11Settings, TokenSelector};
    use keyhaven::keystore::{KeyStore, MaterialRef};
    use keyhaven::secret::SecretString;
    use std::sync::Mutex;

    const ACCOUNT: &str = "111122223333";
    const PER_THREAD: usize = 40;
    const GENERATORS: usize = 3;
    let token = PrivateToken::create("race");
    let keystore = Pkcs11KeyStore::connect(
        Pkcs11Settings {
            name: "race".into(),
            module: token.module.clone(),
            token: TokenSelector::Label(token.label.clone()),
            pin: SecretString::new(token.pin.clone()),
            max_idle_sessions: 16,
            init_parameters: None,
        },
        ACCOUNT,
    )
    .expect("connect to the private token");
    let kept = Mutex::new(Vec::<MaterialRef>::new());
    let failures = Mutex::new(Vec::<String>::new());
    let fail = |what: String| failures.lock().unwrap().push(what);
    let fresh = || MaterialRef {
        key_id: Uuid::new_v4(),
        version: 1,
    };
    std::thread::scope(|scope| {
        // Three threads generate versions that are kept, and find each one right away.
        for _ in 0..GENERATORS {
            scope.spawn(|| {
                for _ in 0..PER_THREAD {
                    let material = fresh();
                    match keystore.generate(material) {
                        Ok(_) => kept.lock().unwrap().push(material),
                        Err(e) => fail(format!("generate: {e}")),
                    }
                    if let Err(e) = keystore.check(material) {
                        fail(format!("check right after generating: {e}"));
                    }
                }
            });
        }
        // One makes and destroys throwaway versions.
        scope.spawn(|| {
            for _ in 0..PER_THREAD {
                let material = fresh();
                if let Err(e) = keystore.generate(material) {
                    fail(format!("generate a throwaway: {e}"));
                }
                if let Err(e) = keystore.destroy(material) {
                    fail(format!("destroy a throwaway: {e}"));
                }
            }
        });
        // Two search the token all along, and use what they find.
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..PER_THREAD * 2 {
                    if let Err(e) = keystore.list() {
                        fail(format!("list: {e}"));
                    }
                    let some = kept.lock().unwrap().last().copied();
                    if let Some(material) = some {
                        if let Err(e) = keystore.check(material) {
                            fail(format!("check a kept version: {e}"));
                        }
                        if let Err(e) = keystore.encrypt(material, &[7; 12], b"", b"data") {
                            fail(format!("encrypt under a kept version: {e}"));
                        }
                    }
                }
            });
        }
    });
    assert_eq!(failures.into_inner().unwrap(), Vec::<String>::new());
    let kept = kept.into_inner().unwrap();
    assert_eq!(kept.len(), GENERATORS * PER_THREAD);
    // Seen from another session: every kept version is one object, the throwaways are gone.
    let session = token.session();
    for material in &kept {
        let found = objects(&session, ACCOUNT, &material.key_id.to_string(), 1);
        assert_eq!(found.len(), 1, "version {material:?} on the token");
    }
    let mut listed = keystore.list().expect("list");
    listed.sort();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(listed, expected);
}

/// On NSS's softoken (the second token), key pairs generated while other threads generate
/// and destroy objects: every call returns. NSS keeps its objects in SQLite, and a key pair
/// generated while another thread destroyed an object deadlocked both (each waiting for a
/// lock the other held, one in SQLite's busy loop for ever); the keystore keeps object
/// changes on this token apart as it does on SoftHSM2. A watchdog fails the test rather than
/// letting it hang.
#[test]
fn nss_key_pairs_made_while_objects_are_destroyed_all_return() {
    use keyhaven::keys::KeySpec;
    use keyhaven::keystore::pkcs11::Pkcs11KeyStore;
    use keyhaven::keystore::{KeyStore, MaterialRef};
    use std::sync::Mutex;

    const ACCOUNT: &str = "111122223333";
    const ROUNDS: usize = 12;
    let keystore = Pkcs11KeyStore::connect(common::pkcs11_second_settings(), ACCOUNT)
        .expect("connect to NSS's softoken (hsm-sim/nss-setup.sh)");
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let failures = Mutex::new(Vec::<String>::new());
        let fail = |what: String| failures.lock().unwrap().push(what);
        let fresh = || MaterialRef {
            key_id: Uuid::new_v4(),
            version: 1,
        };
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..ROUNDS {
                        let material = fresh();
                        if let Err(e) = keystore.generate_spec(material, KeySpec::EccNistP256) {
                            fail(format!("generate a P-256 pair: {e}"));
                            continue;
                        }
                        if let Err(e) = keystore.destroy(material) {
                            fail(format!("destroy a P-256 pair: {e}"));
                        }
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..ROUNDS * 2 {
                    let material = fresh();
                    if let Err(e) = keystore.generate(material) {
                        fail(format!("generate an AES key: {e}"));
                        continue;
                    }
                    if let Err(e) = keystore.destroy(material) {
                        fail(format!("destroy an AES key: {e}"));
                    }
                }
            });
        });
        let _ = done.send(failures.into_inner().unwrap());
    });
    match finished.recv_timeout(std::time::Duration::from_secs(180)) {
        Ok(failures) => assert_eq!(failures, Vec::<String>::new()),
        Err(_) => panic!(
            "generating key pairs while destroying objects on NSS's softoken did not return \
             within 3 minutes: a deadlock in the token"
        ),
    }
    worker.join().expect("the worker finished");
}
