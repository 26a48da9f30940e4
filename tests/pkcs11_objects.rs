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
