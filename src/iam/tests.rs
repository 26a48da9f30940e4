use super::*;
use crate::auth::{AuthError, Caller};
use crate::clock::SystemClock;
use crate::seal::{self, KdfParams};
use crate::secret::SecretString;
use crate::store::SledBackend;

const ACCOUNT: &str = "111122223333";

/// An identity service over a fresh store, with its credential store.
fn service() -> (tempfile::TempDir, IamService) {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = SecretString::new("unit test passphrase".into());
    let (_, master, _) =
        seal::prepare(dir.path(), &passphrase, KdfParams::MINIMUM, ACCOUNT, 0).unwrap();
    let backend = SledBackend::open(&dir.path().join("store")).unwrap();
    let barrier = crate::store::Barrier::new(master.record_integrity_key());
    let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let credentials = CredentialStore::open(
        Arc::new(master),
        store.clone(),
        clock.clone(),
        "keyhaven",
        "local",
        ACCOUNT,
    )
    .unwrap();
    let iam = IamService::open(
        "keyhaven",
        ACCOUNT,
        clock,
        store,
        Arc::new(credentials),
        IamQuotas::default(),
    );
    (dir, iam.unwrap())
}

fn caller(stored_principal: &str, key: &NewAccessKey) -> Caller {
    Caller {
        principal: Arc::new(crate::auth::principal(stored_principal, "keyhaven", ACCOUNT).unwrap()),
        access_key_id: key.credentials.access_key_id.clone(),
        certificate: None,
        credential_kind: Default::default(),
    }
}

#[tokio::test]
async fn credentials_issued_to_an_earlier_principal_of_the_name_are_refused() {
    let (_dir, iam) = service();
    let credentials = iam.credentials().clone();
    let alice = iam.create(EntityType::User, "alice", None).await.unwrap();
    // A key issued to another user once called alice (as a key made while that one was
    // being deleted would be): refused, though alice exists.
    let stale = credentials
        .create_access_key("alice", "AIDAEARLIERALICE00000")
        .await
        .unwrap();
    let refused = credentials.still_accepted(&caller("user/alice", &stale));
    assert_eq!(
        refused,
        Err(AuthError::UnknownAccessKey(
            stale.credentials.access_key_id.clone()
        ))
    );
    // Hers works, until she is deleted.
    let key = iam.create_access_key("alice").await.unwrap();
    assert_eq!(
        credentials.still_accepted(&caller("user/alice", &key)),
        Ok(())
    );
    assert_ne!(alice.id, "AIDAEARLIERALICE00000");
    iam.delete(EntityType::User, "alice").await.unwrap();
    assert!(matches!(
        credentials.still_accepted(&caller("user/alice", &key)),
        Err(AuthError::UnknownAccessKey(_))
    ));
    assert!(matches!(
        iam.create_access_key("alice").await,
        Err(IamError::NotFound(_))
    ));

    // A role authorised, then deleted and made again before the session is issued: the
    // session is refused, not issued to the new role.
    let trust = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"}]}"#;
    iam.create(EntityType::Role, "app", Some(trust.into()))
        .await
        .unwrap();
    let (authorised_id, _) = iam.role_trust("app").unwrap();
    iam.delete(EntityType::Role, "app").await.unwrap();
    let again = iam
        .create(EntityType::Role, "app", Some(trust.into()))
        .await
        .unwrap();
    assert!(matches!(
        iam.assume_role("app", &authorised_id, "s1", None).await,
        Err(IamError::NotFound(_))
    ));
    // And a session of the earlier role, had one been issued, is refused too.
    let stale = credentials
        .create_session("app", &authorised_id, "s1", 900, 1_000)
        .await
        .unwrap();
    assert!(matches!(
        credentials.still_accepted(&caller("assumed-role/app/s1", &stale)),
        Err(AuthError::UnknownAccessKey(_))
    ));
    let session = iam.assume_role("app", &again.id, "s2", None).await.unwrap();
    assert_eq!(
        credentials.still_accepted(&caller("assumed-role/app/s2", &session)),
        Ok(())
    );
}

/// A call misses the policy cache and reads alice's policies; DeleteUserPolicy lands;
/// the call then stores what it read. The next call must see the policy gone.
#[tokio::test]
async fn policies_read_before_a_revocation_are_not_kept_after_it() {
    let (_dir, iam) = service();
    iam.create(EntityType::User, "alice", None).await.unwrap();
    let allow = r#"{"Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;
    iam.put_policy(EntityType::User, "alice", "encrypt", allow.into())
        .await
        .unwrap();
    let alice = crate::auth::principal("user/alice", "keyhaven", ACCOUNT).unwrap();
    // The slow call: missed, and read the policy, before the change.
    let miss = iam.policies.get(&alice.arn).unwrap_err();
    let read_before = iam.read_identity_policies(&alice);
    assert_eq!(read_before.len(), 1);
    iam.delete_policy(EntityType::User, "alice", "encrypt")
        .await
        .unwrap();
    assert!(!iam.policies.insert(miss, &alice.arn, read_before));
    assert_eq!(iam.identity_policies(&alice).unwrap().len(), 0);
    // Cached from now on, and still without the policy.
    assert_eq!(iam.identity_policies(&alice).unwrap().len(), 0);
}

/// Keys stored before principal ids were recorded are bound, once and durably, to the id
/// their user has when the identity service opens; a key whose user is gone is deleted.
#[tokio::test]
async fn keys_from_before_principal_ids_are_bound_to_their_users_id_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = SecretString::new("unit test passphrase".into());
    let (_, master, _) =
        seal::prepare(dir.path(), &passphrase, KdfParams::MINIMUM, ACCOUNT, 0).unwrap();
    let master = Arc::new(master);
    let backend = SledBackend::open(&dir.path().join("store")).unwrap();
    let barrier = crate::store::Barrier::new(master.record_integrity_key());
    let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let open = || {
        let credentials = Arc::new(
            CredentialStore::open(
                master.clone(),
                store.clone(),
                clock.clone(),
                "keyhaven",
                "local",
                ACCOUNT,
            )
            .unwrap(),
        );
        IamService::open(
            "keyhaven",
            ACCOUNT,
            clock.clone(),
            store.clone(),
            credentials,
            IamQuotas::default(),
        )
        .unwrap()
    };
    let credential = |key: &NewAccessKey| {
        let name = format!("credential/{}", key.credentials.access_key_id);
        store
            .get(name.as_bytes())
            .unwrap()
            .map(|v| serde_json::from_slice::<serde_json::Value>(&v).unwrap())
    };
    let strip_id = |key: &NewAccessKey| {
        let mut record = credential(key).unwrap();
        assert!(record["principal_id"].is_string());
        record.as_object_mut().unwrap().remove("principal_id");
        let mut batch = WriteBatch::new();
        batch.put(
            format!("credential/{}", key.credentials.access_key_id).into_bytes(),
            serde_json::to_vec(&record).unwrap(),
        );
        store.commit_blocking(batch).unwrap();
    };

    let iam = open();
    let alice = iam.create(EntityType::User, "alice", None).await.unwrap();
    let alices = iam.create_access_key("alice").await.unwrap();
    iam.create(EntityType::User, "carol", None).await.unwrap();
    let carols = iam.create_access_key("carol").await.unwrap();
    drop(iam);
    // As a store from before ids would hold them: no principal_id, and carol's key left
    // behind by a user record removed without it.
    strip_id(&alices);
    strip_id(&carols);
    let mut batch = WriteBatch::new();
    batch.delete(format!("{USER_PREFIX}carol").into_bytes());
    store.commit_blocking(batch).unwrap();
    assert!(
        store
            .get(format!("{USER_PREFIX}carol").as_bytes())
            .unwrap()
            .is_none()
    );

    let iam = open();
    assert_eq!(
        credential(&alices).unwrap()["principal_id"],
        alice.id.as_str()
    );
    assert_eq!(
        credential(&carols),
        None,
        "the key of a user who is gone is deleted"
    );
    iam.credentials()
        .still_accepted(&caller("user/alice", &alices))
        .unwrap();
    assert!(matches!(
        iam.credentials()
            .still_accepted(&caller("user/carol", &carols)),
        Err(AuthError::UnknownAccessKey(_))
    ));
    // Bound by id now: a second open has nothing left to bind, and a user of the name
    // with another id (one made after alice was deleted) is not served by the key.
    drop(iam);
    let credentials = CredentialStore::open(
        master.clone(),
        store.clone(),
        clock.clone(),
        "keyhaven",
        "local",
        ACCOUNT,
    )
    .unwrap();
    struct Everyone;
    impl PrincipalDirectory for Everyone {
        fn current_id(&self, _: &crate::auth::PrincipalKind) -> Option<String> {
            Some("AIDASOMEONEELSE000000".into())
        }
    }
    assert_eq!(credentials.bind_directory(Arc::new(Everyone)).unwrap(), 0);
    assert_eq!(
        credential(&alices).unwrap()["principal_id"],
        alice.id.as_str()
    );
}
