//! Device faults, injected by the PKCS#11 module in `hsm-sim/fault` that stands in front of
//! SoftHSM2: a daemon pointed at it must answer `UNAVAILABLE` / `KeyStoreUnavailableException`
//! promptly while the device fails or hangs, recover by itself when the fault clears, retry
//! what a retry can fix, and never lose or duplicate what it acknowledged.
//!
//! A test binary of its own: the module, its fault plan and SoftHSM2's login state are per
//! process, so the tests here take turns (`SERIAL`) and nothing else shares the process.

mod common;

use common::device::{independent_session, objects};
use common::{Backend, TestDaemon, assert_refused, fault_injecting_pkcs11};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyhaven::keystore::pkcs11::TokenSelector;
use keyhaven::proto::v1;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

/// The daemon's PKCS#11 call timeout in these tests.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Every call made during a fault must answer within this.
const BOUND: Duration = Duration::from_secs(5);
/// Sessions the daemon's pool keeps idle (besides the one that holds the login).
const IDLE_SESSIONS: usize = 4;
/// How long background work (abandoned calls, their undo) may take to settle.
const SETTLE: Duration = Duration::from_secs(40);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The fault plan the module reads, and the record of what it injected.
struct Faults {
    plan: PathBuf,
    record: PathBuf,
    generation: u32,
}

impl Faults {
    fn new(plan: PathBuf) -> Faults {
        let mut record = plan.clone().into_os_string();
        record.push(".injected");
        let mut faults = Faults {
            plan,
            record: record.into(),
            generation: 0,
        };
        faults.clear();
        faults
    }

    /// Puts `plan` in force (atomically: the module never reads half a plan) and empties the
    /// record. A generation line makes every plan new, so `fail_nth` counts start afresh.
    fn set(&mut self, plan: &str) {
        self.generation += 1;
        std::fs::write(&self.record, "").expect("empty the fault record");
        let staged = self.plan.with_extension("staged");
        std::fs::write(
            &staged,
            format!("# generation {}\n{plan}\n", self.generation),
        )
        .expect("write the fault plan");
        std::fs::rename(&staged, &self.plan).expect("install the fault plan");
    }

    fn clear(&mut self) {
        self.set("");
    }

    /// What the module injected since the plan was set: `<function> <error>[ after]` lines.
    fn injected(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        // Never leave a fault behind for the next test.
        let _ = std::fs::write(&self.plan, "");
    }
}

/// A daemon whose PKCS#11 keystore goes through the fault-injecting module.
async fn faulty_daemon() -> (TestDaemon, Faults, PathBuf) {
    faulty_daemon_with(|_| {}).await
}

/// [`faulty_daemon`], its config changed by `more` too.
async fn faulty_daemon_with(
    more: impl FnOnce(&mut keyhaven::server::DaemonConfig),
) -> (TestDaemon, Faults, PathBuf) {
    let (settings, plan) = fault_injecting_pkcs11();
    let module = settings.module.clone();
    let faults = Faults::new(plan);
    let d = TestDaemon::start_with(Backend::Pkcs11, |config| {
        config.pkcs11.clear();
        let mut settings = settings;
        settings.max_idle_sessions = IDLE_SESSIONS;
        config.add_pkcs11(settings).expect("PKCS#11 keystore");
        config.pkcs11_call_timeout = CALL_TIMEOUT;
        more(config);
    })
    .await;
    (d, faults, module)
}

/// Awaits `call`, failing the test if it takes longer than [`BOUND`]; returns its time too.
async fn promptly<T>(what: &str, call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {BOUND:?}"));
    (outcome, started.elapsed())
}

#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) {
    if let Err(status) = &result {
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    }
    assert_refused(result, Code::Unavailable, "KeyStoreUnavailableException");
}

async fn create_key(d: &TestDaemon, description: &str) -> Result<String, tonic::Status> {
    let request = v1::CreateKeyRequest {
        description: description.into(),
        ..Default::default()
    };
    Ok(d.client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata")
        .key_id)
}

async fn generate_data_key(d: &TestDaemon, key: &str) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::GenerateDataKeyRequest {
        key_id: key.into(),
        key_spec: "AES_256".into(),
        ..Default::default()
    };
    Ok(d.client
        .kms()
        .generate_data_key(d.client.signed("GenerateDataKey", request))
        .await?
        .into_inner()
        .ciphertext_blob)
}

/// How many objects carry each label of this account's namespace on the token.
fn token_objects(account: &str) -> BTreeMap<String, usize> {
    let session = independent_session();
    let prefix = format!("keyhaven:{account}:");
    let mut labels = BTreeMap::new();
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            // Token objects only: the daemon's session copies come and go with its connection.
            Attribute::Token(true),
        ])
        .expect("C_FindObjects");
    for handle in handles {
        let attributes = match session.get_attributes(handle, &[AttributeType::Label]) {
            Ok(attributes) => attributes,
            // Destroyed since it was found (the daemon may be undoing an abandoned call).
            Err(CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
            Err(error) => panic!("C_GetAttributeValue: {error}"),
        };
        for attribute in attributes {
            if let Attribute::Label(label) = attribute {
                let label = String::from_utf8_lossy(&label).into_owned();
                if label.starts_with(&prefix) {
                    *labels.entry(label).or_insert(0) += 1;
                }
            }
        }
    }
    labels
}

/// Sessions open through the fault-injecting module (it reports them in `ulSessionCount`).
/// Only call without a fault in force: these calls go through the plan too.
fn sessions_through(module: &Path) -> u64 {
    let pkcs11 = Pkcs11::new(module).expect("load the fault-injecting module");
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let TokenSelector::Label(label) = fault_injecting_pkcs11().0.token else {
        panic!("the test token is chosen by label");
    };
    let slot = pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        })
        .expect("the test token");
    pkcs11
        .get_token_info(slot)
        .expect("C_GetTokenInfo")
        .session_count()
        .expect("the fault-injecting module reports its sessions")
}

/// Waits until `check` holds, for at most [`SETTLE`].
async fn settles(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fault that persists: every call answers `UNAVAILABLE` promptly and changes nothing;
/// once the fault clears the daemon serves again by itself.
async fn persistent_fault(kind: &str, error: &str) {
    let _turn = SERIAL.lock().await;
    let (d, mut faults, _) = faulty_daemon().await;
    let key = create_key(&d, "made before the fault").await.unwrap();
    let blob = d.encrypt(&key, b"before the fault", &[]).await.unwrap();
    let keys_before = d.list_all_keys().await;
    let objects_before = token_objects(&d.account_id);

    faults.set(kind);
    let (result, took) = promptly("Encrypt", d.encrypt(&key, b"during", &[])).await;
    assert_unavailable("Encrypt", result);
    println!("{kind}: Encrypt answered UNAVAILABLE in {took:?}");
    let (result, took) = promptly("Decrypt", d.decrypt(&blob, &[])).await;
    assert_unavailable("Decrypt", result);
    println!("{kind}: Decrypt answered UNAVAILABLE in {took:?}");
    let (result, took) = promptly("GenerateDataKey", generate_data_key(&d, &key)).await;
    assert_unavailable("GenerateDataKey", result);
    println!("{kind}: GenerateDataKey answered UNAVAILABLE in {took:?}");
    let (result, took) = promptly("CreateKey", create_key(&d, "during the fault")).await;
    assert_unavailable("CreateKey", result);
    println!("{kind}: CreateKey answered UNAVAILABLE in {took:?}");
    let injected = faults.injected();
    assert!(!injected.is_empty(), "no fault was injected");
    assert!(
        injected.iter().all(|line| line.ends_with(error)),
        "{injected:?}"
    );
    // The refused CreateKey left no key and no object.
    assert_eq!(d.list_all_keys().await, keys_before);
    assert_eq!(token_objects(&d.account_id), objects_before);

    faults.clear();
    // No restart: the same daemon serves again.
    let (result, _) = promptly("Decrypt after the fault", d.decrypt(&blob, &[])).await;
    assert_eq!(result.unwrap(), b"before the fault");
    let after = d.encrypt(&key, b"after the fault", &[]).await.unwrap();
    assert_eq!(d.decrypt(&after, &[]).await.unwrap(), b"after the fault");
    let fresh = create_key(&d, "made after the fault").await.unwrap();
    assert_eq!(
        objects(&independent_session(), &d.account_id, &fresh, 1).len(),
        1
    );
    let mut expected = keys_before;
    expected.push(fresh);
    expected.sort();
    let mut listed = d.list_all_keys().await;
    listed.sort();
    assert_eq!(listed, expected);
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_error_answers_unavailable_until_it_clears() {
    persistent_fault("device_error", "CKR_DEVICE_ERROR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_answers_unavailable_until_it_returns() {
    persistent_fault("token_not_present", "CKR_TOKEN_NOT_PRESENT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_keep_failing_answer_unavailable_until_they_work() {
    persistent_fault("session_handle_invalid", "CKR_SESSION_HANDLE_INVALID").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_the_caller_never_sees_them() {
    let _turn = SERIAL.lock().await;
    let (d, mut faults, _) = faulty_daemon().await;
    let key = create_key(&d, "transient").await.unwrap();

    faults.set("fail_nth=1:session_handle_invalid only=C_EncryptInit");
    let (blob, _) = promptly("Encrypt", d.encrypt(&key, b"retried", &[])).await;
    let blob = blob.expect("a lost session is retried on another");
    assert_eq!(
        faults.injected(),
        ["C_EncryptInit CKR_SESSION_HANDLE_INVALID"]
    );

    faults.set("fail_nth=1:device_error only=C_Decrypt");
    let (plaintext, _) = promptly("Decrypt", d.decrypt(&blob, &[])).await;
    assert_eq!(plaintext.expect("a device error is retried"), b"retried");
    assert_eq!(faults.injected(), ["C_Decrypt CKR_DEVICE_ERROR"]);

    faults.set("fail_nth=1:token_not_present only=C_GenerateKey");
    let (created, _) = promptly("CreateKey", create_key(&d, "retried")).await;
    let created = created.expect("a vanished token is reconnected");
    assert_eq!(faults.injected(), ["C_GenerateKey CKR_TOKEN_NOT_PRESENT"]);
    assert_eq!(
        objects(&independent_session(), &d.account_id, &created, 1).len(),
        1
    );
    faults.clear();
    let listed = d.list_all_keys().await;
    assert_eq!(listed.iter().filter(|k| **k == created).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_key_generation_leaves_exactly_one_object() {
    let _turn = SERIAL.lock().await;
    let (mut d, mut faults, _) = faulty_daemon().await;

    // The device makes the key, then its answer is lost: the retry must not make a second
    // object with the same label (after a restart either could be found, and ciphertexts made
    // under the other would no longer decrypt).
    faults.set("fail_nth=1:device_error:after only=C_GenerateKey");
    let key = create_key(&d, "lost reply").await.unwrap();
    assert_eq!(faults.injected(), ["C_GenerateKey CKR_DEVICE_ERROR after"]);
    assert_eq!(
        objects(&independent_session(), &d.account_id, &key, 1).len(),
        1
    );
    let first = d.encrypt(&key, b"version 1", &[]).await.unwrap();

    faults.set("fail_nth=1:device_error:after only=C_GenerateKey");
    assert_eq!(d.rotate(&key).await.unwrap(), 2);
    assert_eq!(faults.injected().len(), 1);
    assert_eq!(
        objects(&independent_session(), &d.account_id, &key, 2).len(),
        1
    );
    let second = d.encrypt(&key, b"version 2", &[]).await.unwrap();

    // Every reply lost: CreateKey fails, and leaves no object behind either.
    let objects_before = token_objects(&d.account_id);
    faults.set("device_error:after only=C_GenerateKey");
    let (result, _) = promptly("CreateKey", create_key(&d, "never acknowledged")).await;
    assert_unavailable("CreateKey", result);
    assert!(!faults.injected().is_empty());
    faults.clear();
    // Answered at the deadline, the last attempt may still be undone in the background.
    settles(
        "the objects of the failed CreateKey destroyed",
        async || token_objects(&d.account_id) == objects_before,
    )
    .await;
    assert_eq!(d.list_all_keys().await, std::slice::from_ref(&key));

    // A restart looks every object up by its label again.
    d.restart().await;
    assert_eq!(d.decrypt(&first, &[]).await.unwrap(), b"version 1");
    assert_eq!(d.decrypt(&second, &[]).await.unwrap(), b"version 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_device_answers_unavailable_at_the_call_timeout() {
    let _turn = SERIAL.lock().await;
    let (d, mut faults, module) = faulty_daemon().await;
    let key = create_key(&d, "latency").await.unwrap();
    let blob = d.encrypt(&key, b"before the latency", &[]).await.unwrap();
    let keys_before = d.list_all_keys().await;
    let objects_before = token_objects(&d.account_id);
    let sessions_before = sessions_through(&module);

    faults.set("latency_ms=4000");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let client = d.client.clone();
        let (key, blob) = (key.clone(), blob.clone());
        calls.spawn(async move {
            let started = Instant::now();
            let outcome = match i % 4 {
                0 | 1 => {
                    let request = v1::EncryptRequest {
                        key_id: key,
                        plaintext: b"x".to_vec(),
                        ..Default::default()
                    };
                    client
                        .kms()
                        .encrypt(client.signed("Encrypt", request))
                        .await
                        .map(drop)
                }
                2 => {
                    let request = v1::DecryptRequest {
                        ciphertext_blob: blob,
                        ..Default::default()
                    };
                    client
                        .kms()
                        .decrypt(client.signed("Decrypt", request))
                        .await
                        .map(drop)
                }
                _ => {
                    let request = v1::CreateKeyRequest {
                        description: "during the latency".into(),
                        ..Default::default()
                    };
                    client
                        .kms()
                        .create_key(client.signed("CreateKey", request))
                        .await
                        .map(drop)
                }
            };
            (i, outcome, started.elapsed())
        });
    }
    let (answers, _) = promptly("ten calls during the latency", calls.join_all()).await;
    let mut times = Vec::new();
    for (i, outcome, took) in answers {
        assert_unavailable(&format!("call {i}"), outcome);
        assert!(
            took < CALL_TIMEOUT + Duration::from_millis(1500),
            "call {i} took {took:?} with a call timeout of {CALL_TIMEOUT:?}"
        );
        times.push(took);
    }
    times.sort();
    println!(
        "4 s of latency per device call, call timeout {CALL_TIMEOUT:?}: 10 calls answered \
         UNAVAILABLE in {:?} to {:?}",
        times[0],
        times[times.len() - 1]
    );
    faults.clear();

    // The device answers again: the daemon serves by itself, the keys generated for callers
    // that had given up are destroyed, and the pool holds no more sessions than it keeps.
    let (result, _) = promptly("Decrypt after the latency", d.decrypt(&blob, &[])).await;
    assert_eq!(result.unwrap(), b"before the latency");
    let account = d.account_id.clone();
    settles("the abandoned generations are undone", async || {
        token_objects(&account) == objects_before
    })
    .await;
    assert_eq!(d.list_all_keys().await, keys_before);
    settles("the abandoned calls return their sessions", async || {
        sessions_through(&module) <= 1 + IDLE_SESSIONS as u64
    })
    .await;
    // Object changes on a SoftHSM2 token take turns (see `keystore/pkcs11`): a generation the
    // device was still delaying when the latency ended holds the next one up for the rest of
    // its 4 s, so the first CreateKey may still answer UNAVAILABLE (and change nothing).
    let deadline = Instant::now() + SETTLE;
    let fresh = loop {
        match create_key(&d, "after the latency").await {
            Ok(key) => break key,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("CreateKey after the latency: {status:?}"),
        }
    };
    settles("the abandoned generations are undone", async || {
        token_objects(&account).len() == objects_before.len() + 1
    })
    .await;
    assert_eq!(d.list_all_keys().await.len(), keys_before.len() + 1);
    assert_eq!(
        objects(&independent_session(), &d.account_id, &fresh, 1).len(),
        1
    );
    let sessions_after = sessions_through(&module);
    println!("sessions through the module: {sessions_before} before, {sessions_after} after");
    assert!(sessions_after <= 1 + IDLE_SESSIONS as u64);
}

/// What one worker was told.
#[derive(Default)]
struct Acknowledged {
    /// Key id → its acknowledged current version.
    keys: BTreeMap<String, u32>,
    /// Acknowledged ciphertexts and their plaintexts.
    blobs: Vec<(Vec<u8>, Vec<u8>)>,
    refused: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_or_duplicated_while_faults_come_and_go() {
    let _turn = SERIAL.lock().await;
    let (mut d, mut faults, _) = faulty_daemon().await;
    let plans = [
        "device_error",
        "",
        "fail_nth=2:device_error:after only=C_GenerateKey",
        "token_not_present",
        "fail_nth=3:session_handle_invalid",
        "",
        "latency_ms=2500 only=C_GenerateKey,C_Encrypt",
        "session_handle_invalid",
        "fail_nth=1:device_error:after",
        "",
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let client = d.client.clone();
        let stop = stop.clone();
        workers.spawn(async move {
            let mut told = Acknowledged::default();
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let unavailable = |status: tonic::Status| {
                    assert_eq!(
                        status.code(),
                        Code::Unavailable,
                        "worker {worker}: {status:?}"
                    );
                    assert_eq!(
                        keyhaven::api::reason_of(&status).as_deref(),
                        Some("KeyStoreUnavailableException")
                    );
                };
                let call = async {
                    if told.keys.is_empty() || round.is_multiple_of(3) {
                        let request = v1::CreateKeyRequest {
                            description: format!("worker {worker}"),
                            ..Default::default()
                        };
                        match client
                            .kms()
                            .create_key(client.signed("CreateKey", request))
                            .await
                        {
                            Ok(r) => {
                                let id = r.into_inner().key_metadata.expect("metadata").key_id;
                                assert!(told.keys.insert(id, 1).is_none(), "a key id twice");
                            }
                            Err(status) => {
                                unavailable(status);
                                told.refused += 1;
                            }
                        }
                    } else if round.is_multiple_of(5) {
                        let key = told.keys.keys().nth(round as usize % told.keys.len());
                        let key = key.expect("a key").clone();
                        let request = v1::RotateKeyOnDemandRequest {
                            key_id: key.clone(),
                        };
                        match client
                            .kms()
                            .rotate_key_on_demand(client.signed("RotateKeyOnDemand", request))
                            .await
                        {
                            Ok(r) => {
                                let version = r.into_inner().key_version;
                                let known = told.keys.get_mut(&key).expect("known");
                                assert_eq!(version, *known + 1);
                                *known = version;
                            }
                            Err(status) => {
                                unavailable(status);
                                told.refused += 1;
                            }
                        }
                    } else {
                        let key = told.keys.keys().nth(round as usize % told.keys.len());
                        let plaintext = format!("worker {worker} round {round}").into_bytes();
                        let request = v1::EncryptRequest {
                            key_id: key.expect("a key").clone(),
                            plaintext: plaintext.clone(),
                            ..Default::default()
                        };
                        match client
                            .kms()
                            .encrypt(client.signed("Encrypt", request))
                            .await
                        {
                            Ok(r) => told.blobs.push((r.into_inner().ciphertext_blob, plaintext)),
                            Err(status) => {
                                unavailable(status);
                                told.refused += 1;
                            }
                        }
                    }
                };
                promptly(&format!("worker {worker} round {round}"), call).await;
            }
            told
        });
    }
    for plan in plans {
        faults.set(plan);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    faults.clear();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let told: Vec<Acknowledged> = workers.join_all().await;

    let mut versions = BTreeMap::new();
    let mut blobs = Vec::new();
    let mut refused = 0;
    for worker in told {
        versions.extend(worker.keys);
        blobs.extend(worker.blobs);
        refused += worker.refused;
    }
    println!(
        "{} keys, {} versions, {} ciphertexts acknowledged; {refused} calls refused",
        versions.len(),
        versions.values().sum::<u32>(),
        blobs.len()
    );
    assert!(refused > 0, "the faults refused nothing");
    assert!(!blobs.is_empty(), "nothing was acknowledged");

    // Exactly one object per acknowledged version, and none for anything refused (the undo of
    // abandoned generations may take a moment).
    let account = d.account_id.clone();
    let expected: BTreeMap<String, usize> = versions
        .iter()
        .flat_map(|(key, latest)| {
            let account = account.clone();
            (1..=*latest).map(move |v| (format!("keyhaven:{account}:{key}:{v}"), 1))
        })
        .collect();
    settles(
        "the token holds exactly the acknowledged versions",
        async || token_objects(&account) == expected,
    )
    .await;
    let listed: BTreeSet<String> = d.list_all_keys().await.into_iter().collect();
    assert_eq!(listed, versions.keys().cloned().collect::<BTreeSet<_>>());
    for (key, version) in &versions {
        let described = d.describe(key).await.unwrap();
        assert_eq!(described.current_key_version, *version, "{key}");
    }
    for (blob, plaintext) in &blobs {
        assert_eq!(&d.decrypt(blob, &[]).await.unwrap(), plaintext);
    }
    // And after a restart, which finds every object by its label again.
    d.restart().await;
    for (blob, plaintext) in &blobs {
        assert_eq!(&d.decrypt(blob, &[]).await.unwrap(), plaintext);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_does_not_answer_at_start_up_fails_the_start_in_time() {
    let _turn = SERIAL.lock().await;
    let (mut d, mut faults, _module) = faulty_daemon().await;
    let key = create_key(&d, "before the restart").await.unwrap();
    d.stop().await;

    const LATENCY: Duration = Duration::from_millis(3000);
    faults.set(&format!("latency_ms={}", LATENCY.as_millis()));
    let started = Instant::now();
    let result = keyhaven::server::Daemon::start(
        d.config.clone(),
        keyhaven::secret::SecretString::new(common::PASSPHRASE.into()),
        std::sync::Arc::new(d.clock.clone()),
    )
    .await;
    let elapsed = started.elapsed();
    faults.clear();
    let error = match result {
        Ok(daemon) => {
            let _ = daemon.shutdown().await;
            panic!("the daemon started on a token that does not answer");
        }
        Err(error) => error.to_string(),
    };
    assert!(
        elapsed >= CALL_TIMEOUT && elapsed < LATENCY,
        "the start failed after {elapsed:?}: {error}"
    );
    let expected = format!("did not answer within {} ms", CALL_TIMEOUT.as_millis());
    assert!(error.contains(&expected), "{error}");

    // The attempt finishes in the background; the next start works as usual.
    tokio::time::sleep(LATENCY).await;
    d.start_again().await;
    let blob = d.encrypt(&key, b"after the restart", &[]).await.unwrap();
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"after the restart");
}

/// Gives up on `call`, a CreateKey of a key described as `description`, after 150 ms while
/// every device call takes 400 ms. The call runs to its end in the daemon all the same: the
/// key is made, listed and enabled, and its answer audited once. Returns the key's id.
async fn made_after_giving_up<T>(
    d: &TestDaemon,
    faults: &mut Faults,
    description: &str,
    call: impl Future<Output = T>,
) -> String {
    let keys_before = d.list_all_keys().await;
    let answered = |log: &[serde_json::Value]| {
        log.iter()
            .filter(|r| r["operation"] == "kms:CreateKey" && r["outcome"]["code"] == "Ok")
            .count()
    };
    let audited_before = answered(&d.audit_records());

    faults.set("latency_ms=400");
    let given_up = tokio::time::timeout(Duration::from_millis(150), call).await;
    assert!(
        given_up.is_err(),
        "the call answered before it was given up"
    );

    settles("the key made after its call was given up", async || {
        d.list_all_keys().await.len() == keys_before.len() + 1
    })
    .await;
    faults.clear();
    let made: Vec<String> = d
        .list_all_keys()
        .await
        .into_iter()
        .filter(|k| !keys_before.contains(k))
        .collect();
    let key = d.describe(&made[0]).await.unwrap();
    assert_eq!(key.description, description);
    assert_eq!(key.key_state, v1::KeyState::Enabled as i32);
    settles("its answer audited", async || {
        answered(&d.audit_records()) == audited_before + 1
    })
    .await;
    made[0].clone()
}

/// A client that gives up on a call (its deadline passes, and its stream is reset) does not
/// cut the call short: the call runs to its end in the daemon, so its change, the key
/// service's memory of it and its audit record stay together. Here a CreateKey is given up
/// while the device is slow: the key is made, listed, and its answer audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_its_client_gave_up_on_runs_to_its_end() {
    let _turn = SERIAL.lock().await;
    let (d, mut faults, _) = faulty_daemon().await;
    let request = v1::CreateKeyRequest {
        description: "given up on".into(),
        ..Default::default()
    };
    let mut kms = d.client.kms();
    let call = kms.create_key(d.client.signed("CreateKey", request));
    let made = made_after_giving_up(&d, &mut faults, "given up on", call).await;
    // Served as made: the key works.
    let blob = d.encrypt(&made, b"after", &[]).await.unwrap();
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"after");
}

/// The console's calls run to their end too when their browser goes: a CreateKey given up
/// while the device is slow is made, listed, and its answer audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_call_its_browser_gave_up_on_runs_to_its_end() {
    let _turn = SERIAL.lock().await;
    let (d, mut faults, _) = faulty_daemon_with(|config| {
        config.console_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    const PASSWORD: &str = "Console-fault-7-password";
    d.create_user(
        "carol",
        Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:CreateKey","Resource":"*"}]}"#),
    )
    .await;
    d.create_login_profile("carol", PASSWORD).await;
    let console = d.console_addr().expect("console");
    let carol = common::console::Session::sign_in(console, &d.account_id, "carol", PASSWORD).await;
    let description = "given up on in the console";
    let call = carol.kms("CreateKey", serde_json::json!({"Description": description}));
    made_after_giving_up(&d, &mut faults, description, call).await;
}
