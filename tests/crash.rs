//! Crash consistency of the real daemon binary under SIGKILL, on each keystore.
//!
//! Each cycle: start `keyhaven serve` (the real binary, as a child process, passphrase in
//! `KEYHAVEN_PASSPHRASE`) on the data directory the previous cycle left behind;
//! check it against everything acknowledged so far; drive concurrent CreateKey, Encrypt,
//! RotateKeyOnDemand, ScheduleKeyDeletion / CancelKeyDeletion and Enable / Disable calls from
//! several tasks; SIGKILL the daemon at a random moment; then, with the daemon dead, open its
//! store ourselves and check it. What is checked, against what was acknowledged before the kill:
//!
//! - the store opens cleanly and every key record decodes, and the daemon starts again;
//! - every acknowledged key exists in its acknowledged state and version — where a call was in
//!   flight at the kill, either outcome is accepted and the observed one becomes the truth;
//!   keys nobody acknowledged may appear only as many as CreateKeys were in flight;
//! - every acknowledged ciphertext decrypts to its plaintext (each one after the crash that
//!   follows it, a sample of the older ones every cycle, all of them at the end);
//! - each key version's `nonces_reserved` never goes backwards, and goes up across a cycle in
//!   which an encryption under that version was acknowledged (the reservation is on disk before
//!   Encrypt answers, so a restart never reuses a count);
//! - nothing half-created: every sealed key version has its wrapped material record and no
//!   material record lacks a key version; on PKCS#11, right after the kill no acknowledged
//!   version's object is missing and strays number at most the generations the kill cut
//!   short, each named by a pending generation in the journal, and once the daemon is back
//!   (it destroys what the journal names at start-up) the objects labelled
//!   `keyhaven:<account>:<uuid>:<version>` are exactly the key versions, once each;
//! - a CreateKey acknowledged before the kill, sent again unchanged after the restart, is
//!   refused as a replay (its signature was stored with the key it made);
//! - at the end, `keyhaven audit verify` passes: every restart continued the audit chain from
//!   the log's last record, though the stored chain head lags it by up to a second.
//!
//! The cluster variant (built with `--features etcd`) keeps the store on an etcd of its own with
//! a second daemon of the cluster serving beside the one that is killed, untouched all along:
//! after every kill the store is read from etcd, and at the end every acknowledged ciphertext
//! decrypts through the other daemon too.
//!
//! The PKCS#11 variant makes a token of its own (beside the one `hsm-sim/setup.sh` made, in
//! the same SoftHSM2 configuration) so that every object on it belongs to this daemon, and
//! starts afresh (token and data directory) every 25 cycles: SoftHSM2 slows down with the
//! square of its objects (see `PKCS11_CYCLES_PER_TOKEN`).
//!
//! 50 cycles per keystore by default; `KEYHAVEN_CRASH_CYCLES=1000` for the long run.
//! `KEYHAVEN_CRASH_SEED=N` replays the same random choices (the kill timing still varies);
//! `KEYHAVEN_CRASH_VERBOSE=1` prints where each cycle's time goes.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::device::PrivateToken;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyhaven::api::reason_of;
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::clock::SystemClock;
use keyhaven::keys::{KeyRecord, KeyState};
use keyhaven::keystore::pkcs11::parse_label;
use keyhaven::proto::v1;
use keyhaven::seal::KdfParams;
use keyhaven::secret::SecretString;
use keyhaven::store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_keyhaven");
const PASSPHRASE: &str = "crash test passphrase, not a secret";
const DEFAULT_CYCLES: usize = 50;
/// Concurrent client tasks per cycle; each owns a disjoint set of keys.
const WORKERS: usize = 4;
/// How long a daemon may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any one call of the checking phase may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptions of the keys this harness creates, to recognise unacknowledged ones.
const DESCRIPTION: &str = "crash harness";
/// Already-verified ciphertexts decrypted again each cycle.
const RECHECK_SAMPLE: usize = 8;

fn cycles() -> usize {
    match std::env::var("KEYHAVEN_CRASH_CYCLES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("KEYHAVEN_CRASH_CYCLES={text:?} is not a number")),
        Err(_) => DEFAULT_CYCLES,
    }
}

fn seed() -> u64 {
    match std::env::var("KEYHAVEN_CRASH_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("KEYHAVEN_CRASH_SEED={text:?} is not a number")),
        Err(_) => rand::random(),
    }
}

// ------------------------------------------------------------------------------ keystores

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keystore {
    Sealed,
    Pkcs11,
    /// The sealed keystore, the store on etcd, a second daemon of the cluster beside.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    SealedCluster,
}

impl PrivateToken {
    /// How many secret-key objects carry each `keyhaven:<uuid>:<version>` label, the labels
    /// that do not parse, and how many objects have no label at all.
    fn objects(&self, account_id: &str) -> TokenObjects {
        let session = self.session();
        let handles = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .expect("C_FindObjects");
        let mut objects = TokenObjects::default();
        for handle in handles {
            let label = session
                .get_attributes(handle, &[AttributeType::Label])
                .ok()
                .and_then(|attributes| {
                    attributes.into_iter().find_map(|a| match a {
                        Attribute::Label(bytes) => {
                            Some(String::from_utf8_lossy(&bytes).into_owned())
                        }
                        _ => None,
                    })
                })
                .unwrap_or_default();
            if label.is_empty() {
                objects.unlabelled += 1;
                continue;
            }
            match parse_label(account_id, &label) {
                Some(m) => *objects.labelled.entry((m.key_id, m.version)).or_insert(0) += 1,
                None => objects.strange.push(label),
            }
        }
        objects
    }
}

#[derive(Debug, Default)]
struct TokenObjects {
    labelled: BTreeMap<(Uuid, u32), usize>,
    strange: Vec<String>,
    /// SoftHSM2 writes a new object's attributes one by one, in the daemon's process: a kill
    /// inside C_GenerateKey can leave an object without its label. A real HSM does not share
    /// the daemon's fate; here such objects are counted, and must be no more than the key
    /// generations the kill interrupted.
    unlabelled: usize,
}

/// Parses a sealed material record name: `material/<uuid>/` + big-endian u32 version.
fn parse_material_record(name: &[u8]) -> Option<(Uuid, u32)> {
    let rest = name.strip_prefix(b"material/")?;
    if rest.len() != 36 + 1 + 4 || rest[36] != b'/' {
        return None;
    }
    let id = Uuid::parse_str(std::str::from_utf8(&rest[..36]).ok()?).ok()?;
    let version = u32::from_be_bytes(rest[37..].try_into().ok()?);
    Some((id, version))
}

// ------------------------------------------------------------------------------ processes

/// `keyhaven` with no inherited `KEYHAVEN_*` variables (nor `RUST_LOG`).
fn keyhaven() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// A data directory, how to serve it, and the root credentials.
struct Deployment {
    keystore: Keystore,
    /// The account; PKCS#11 objects are labelled in its namespace.
    account_id: String,
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    log: PathBuf,
    token: Option<PrivateToken>,
    credentials: ClientCredentials,
    /// Where the metadata is (sled in the data directory, or an etcd prefix).
    store: keyhaven::server::StoreSettings,
    /// The cluster variant's etcd, and the other daemon's data directory and log.
    #[cfg(feature = "etcd")]
    cluster: Option<(common::etcd::EtcdProcess, PathBuf, PathBuf)>,
}

impl Deployment {
    async fn new(keystore: Keystore) -> Deployment {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        let log = dir.path().join("daemon.log");
        #[cfg(feature = "etcd")]
        let etcd = match keystore {
            Keystore::SealedCluster => Some(common::etcd::EtcdProcess::start().await),
            _ => None,
        };
        #[cfg(feature = "etcd")]
        let store = etcd
            .as_ref()
            .map(|etcd| etcd.store_settings("keyhaven/"))
            .unwrap_or_default();
        #[cfg(not(feature = "etcd"))]
        let store = match keystore {
            Keystore::SealedCluster => panic!("the cluster variant needs --features etcd"),
            _ => keyhaven::server::StoreSettings::default(),
        };
        // The library's init rather than `keyhaven init`: the command always seals with the
        // production Argon2id parameters (64 MiB, 3 passes), and every one of the cycles'
        // restarts pays for that again — about half of this test's time. The daemon itself is
        // the real binary, unsealing the way it always does (`tests/cli.rs` covers `init`).
        let initialised = keyhaven::server::init_with_store(
            &data_dir,
            &store,
            &SecretString::new(PASSPHRASE.into()),
            KdfParams::MINIMUM,
            "keyhaven",
            &SystemClock,
        )
        .expect("initialise the data directory");
        // The other daemon of the cluster: its data directory made from what etcd keeps.
        #[cfg(feature = "etcd")]
        let cluster = etcd.map(|etcd| {
            let other = dir.path().join("other");
            keyhaven::server::join_data_dir(&other, &store, &SecretString::new(PASSPHRASE.into()))
                .expect("join the cluster");
            (etcd, other, dir.path().join("other.log"))
        });
        let account_id = initialised.account_id;
        let root = initialised.root.credentials;
        let credentials = ClientCredentials {
            access_key_id: root.access_key_id,
            secret_access_key: root.secret_access_key,
            session_token: None,
            region: "local".into(),
        };
        let token = (keystore == Keystore::Pkcs11).then(|| PrivateToken::create("kh-crash"));
        Deployment {
            keystore,
            account_id,
            _dir: dir,
            data_dir,
            log,
            token,
            credentials,
            store,
            #[cfg(feature = "etcd")]
            cluster,
        }
    }

    fn serve(&self) -> Daemon {
        self.serve_dir(&self.data_dir, &self.log)
    }

    /// The other daemon of the cluster variant, serving until dropped.
    #[cfg(feature = "etcd")]
    fn serve_other(&self) -> Option<Daemon> {
        let (_, dir, log) = self.cluster.as_ref()?;
        Some(self.serve_dir(dir, log))
    }

    fn serve_dir(&self, data_dir: &Path, log_path: &Path) -> Daemon {
        // The traffic rotates keys on demand far more often than the default quota allows.
        let config = log_path.with_extension("toml");
        #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
        let mut settings = String::from("on_demand_rotation_quota = 1000000\n");
        #[cfg(feature = "etcd")]
        if let Some((etcd, _, _)) = &self.cluster {
            settings.push_str(&format!(
                "store = \"etcd\"\netcd_endpoints = [\"{}\"]\n",
                etcd.endpoint
            ));
        }
        std::fs::write(&config, settings).expect("write the config");
        let mut command = keyhaven();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE);
        if let Some(token) = &self.token {
            command
                .args(["--keystore", "pkcs11"])
                .env("KEYHAVEN_PKCS11_MODULE", &token.module)
                .env("KEYHAVEN_PKCS11_TOKEN_LABEL", &token.label)
                .env("KEYHAVEN_PKCS11_PIN", &token.pin);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open the daemon log");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn keyhaven serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("# listening on ") {
                        return Daemon {
                            child,
                            endpoint: format!("http://{addr}"),
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "the daemon did not start ({status:?}); log:\n{}",
                        self.log_tail()
                    );
                }
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn mark_log(&self, text: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(log, "===== crash harness: {text}");
        }
    }
}

struct Daemon {
    child: Child,
    endpoint: String,
}

impl Daemon {
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        let status = self.child.wait().expect("reap the daemon");
        assert_eq!(status.code(), None, "the daemon exited before the kill");
    }

    /// SIGTERM and wait: the graceful path must still work on the crash-worn store.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------ the model

/// What the harness knows about one key.
#[derive(Debug, Clone)]
struct ModelKey {
    id: Uuid,
    /// The state of the last acknowledged transition.
    state: KeyState,
    /// The last acknowledged current version.
    version: u32,
    /// A transition whose answer was lost at the kill: it may or may not have happened.
    maybe_state: Option<KeyState>,
    maybe_version: Option<u32>,
    /// Touched in the last cycle (DescribeKey it after the restart).
    touched: bool,
}

impl ModelKey {
    fn new(id: Uuid) -> ModelKey {
        ModelKey {
            id,
            state: KeyState::Enabled,
            version: 1,
            maybe_state: None,
            maybe_version: None,
            touched: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Ciphertext {
    key: Uuid,
    version: u32,
    blob: Vec<u8>,
    plaintext: Vec<u8>,
    context: HashMap<String, String>,
    verified: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    creates: usize,
    encrypts: usize,
    rotations: usize,
    schedules: usize,
    cancels: usize,
    enables: usize,
    disables: usize,
    in_flight: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.creates += other.creates;
        self.encrypts += other.encrypts;
        self.rotations += other.rotations;
        self.schedules += other.schedules;
        self.cancels += other.cancels;
        self.enables += other.enables;
        self.disables += other.disables;
        self.in_flight += other.in_flight;
    }
}

/// Everything acknowledged so far, and what the store said last time.
struct Model {
    keys: BTreeMap<Uuid, ModelKey>,
    ciphertexts: Vec<Ciphertext>,
    /// CreateKeys in flight at the last kill.
    uncertain_creates: usize,
    /// CreateKeys and rotations in flight at the last kill (key generations cut short).
    interrupted_generations: usize,
    /// The same, over every kill so far.
    all_interrupted_generations: usize,
    /// Token objects without a label, as found after the last kill.
    unlabelled_objects: usize,
    /// `nonces_reserved` per key version, as stored after the last kill.
    reserved: BTreeMap<(Uuid, u32), u64>,
    /// Key versions with an acknowledged encryption since the last kill.
    encrypted_since: BTreeSet<(Uuid, u32)>,
    counts: Counts,
}

// ---------------------------------------------------------------------------- calls

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Encrypt(Uuid),
    Rotate(Uuid),
    Schedule(Uuid, u32),
    Cancel(Uuid),
    Enable(Uuid),
    Disable(Uuid),
}

fn choose(rng: &mut StdRng, keys: &[ModelKey]) -> Op {
    let create_chance = if keys.len() < 12 { 0.15 } else { 0.02 };
    if keys.is_empty() || rng.gen_bool(create_chance) {
        return Op::Create;
    }
    let key = &keys[rng.gen_range(0..keys.len())];
    let roll: f64 = rng.r#gen();
    match key.state {
        KeyState::Enabled if roll < 0.65 => Op::Encrypt(key.id),
        KeyState::Enabled if roll < 0.80 => Op::Rotate(key.id),
        KeyState::Enabled if roll < 0.92 => Op::Schedule(key.id, rng.gen_range(7..=30)),
        KeyState::Enabled => Op::Disable(key.id),
        KeyState::Disabled if roll < 0.7 => Op::Enable(key.id),
        KeyState::Disabled => Op::Schedule(key.id, rng.gen_range(7..=30)),
        KeyState::PendingDeletion => Op::Cancel(key.id),
        KeyState::Deleted => unreachable!("the harness never waits out a deletion"),
        KeyState::PendingImport => unreachable!("the harness makes no keys of imported material"),
    }
}

fn proto_state(state: KeyState) -> v1::KeyState {
    match state {
        KeyState::Enabled => v1::KeyState::Enabled,
        KeyState::Disabled => v1::KeyState::Disabled,
        KeyState::PendingDeletion => v1::KeyState::PendingDeletion,
        KeyState::Deleted => v1::KeyState::Deleted,
        KeyState::PendingImport => v1::KeyState::PendingImport,
    }
}

fn blob_version(blob: &[u8]) -> Option<(Uuid, u32)> {
    let id = Uuid::from_slice(blob.get(1..17)?).ok()?;
    let version = u32::from_be_bytes(blob.get(17..21)?.try_into().ok()?);
    Some((id, version))
}

/// What one client task did in one cycle.
#[derive(Default)]
struct WorkerReport {
    keys: Vec<ModelKey>,
    ciphertexts: Vec<Ciphertext>,
    uncertain_creates: usize,
    interrupted_generations: usize,
    encrypted: BTreeSet<(Uuid, u32)>,
    counts: Counts,
    failures: Vec<String>,
    /// The last acknowledged CreateKey, as it was sent: after the restart, sent again, it must
    /// be refused as a replay (its signature was stored with the key it made).
    replayable: Option<(tonic::metadata::MetadataMap, v1::CreateKeyRequest)>,
}

/// Issues calls on its own keys, one at a time, until the daemon is killed.
async fn worker(
    client: Client,
    mut keys: Vec<ModelKey>,
    killed: Arc<AtomicBool>,
    mut rng: StdRng,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    let kms = client.kms();
    while !killed.load(Ordering::SeqCst) {
        let op = choose(&mut rng, &keys);
        let index = |id: Uuid, keys: &[ModelKey]| {
            keys.iter()
                .position(|k| k.id == id)
                .expect("the worker's key")
        };
        let outcome: Result<(), tonic::Status> = match op {
            Op::Create => {
                let request = v1::CreateKeyRequest {
                    description: DESCRIPTION.into(),
                    ..Default::default()
                };
                let signed = client.signed("CreateKey", request.clone());
                let sent = (signed.metadata().clone(), request);
                match kms.clone().create_key(signed).await {
                    Ok(response) => {
                        report.replayable = Some(sent);
                        let metadata = response.into_inner().key_metadata.unwrap_or_default();
                        match Uuid::parse_str(&metadata.key_id) {
                            Ok(id) => {
                                keys.push(ModelKey::new(id));
                                report.counts.creates += 1;
                            }
                            Err(_) => report
                                .failures
                                .push(format!("CreateKey answered a bad id: {metadata:?}")),
                        }
                        Ok(())
                    }
                    Err(status) => {
                        if killed.load(Ordering::SeqCst) && reason_of(&status).is_none() {
                            report.uncertain_creates += 1;
                        }
                        Err(status)
                    }
                }
            }
            Op::Encrypt(id) => {
                let i = index(id, &keys);
                let mut plaintext = vec![0u8; rng.gen_range(1..=256)];
                rng.fill(&mut plaintext[..]);
                let context: HashMap<String, String> = if rng.gen_bool(0.5) {
                    HashMap::from([("cycle-key".into(), B64.encode(&plaintext[..1]))])
                } else {
                    HashMap::new()
                };
                let request = v1::EncryptRequest {
                    key_id: id.to_string(),
                    plaintext: plaintext.clone(),
                    encryption_context: context.clone(),
                    ..Default::default()
                };
                match kms.clone().encrypt(client.signed("Encrypt", request)).await {
                    Ok(response) => {
                        let blob = response.into_inner().ciphertext_blob;
                        match blob_version(&blob) {
                            Some((key, version)) if key == id && version == keys[i].version => {
                                report.encrypted.insert((key, version));
                                report.ciphertexts.push(Ciphertext {
                                    key,
                                    version,
                                    blob,
                                    plaintext,
                                    context,
                                    verified: false,
                                });
                                report.counts.encrypts += 1;
                            }
                            other => report.failures.push(format!(
                                "Encrypt under {id} (current version {}) made a blob for {other:?}",
                                keys[i].version
                            )),
                        }
                        keys[i].touched = true;
                        Ok(())
                    }
                    Err(status) => Err(status),
                }
            }
            Op::Rotate(id) => {
                let i = index(id, &keys);
                let request = v1::RotateKeyOnDemandRequest {
                    key_id: id.to_string(),
                };
                keys[i].touched = true;
                match kms
                    .clone()
                    .rotate_key_on_demand(client.signed("RotateKeyOnDemand", request))
                    .await
                {
                    Ok(response) => {
                        let version = response.into_inner().key_version;
                        if version != keys[i].version + 1 {
                            report.failures.push(format!(
                                "rotating {id} at version {} answered version {version}",
                                keys[i].version
                            ));
                        }
                        keys[i].version = version;
                        report.counts.rotations += 1;
                        Ok(())
                    }
                    Err(status) => {
                        keys[i].maybe_version = Some(keys[i].version + 1);
                        Err(status)
                    }
                }
            }
            Op::Schedule(id, days) => {
                let i = index(id, &keys);
                keys[i].touched = true;
                let request = v1::ScheduleKeyDeletionRequest {
                    key_id: id.to_string(),
                    pending_window_in_days: Some(days),
                };
                match kms
                    .clone()
                    .schedule_key_deletion(client.signed("ScheduleKeyDeletion", request))
                    .await
                {
                    Ok(_) => {
                        keys[i].state = KeyState::PendingDeletion;
                        report.counts.schedules += 1;
                        Ok(())
                    }
                    Err(status) => {
                        keys[i].maybe_state = Some(KeyState::PendingDeletion);
                        Err(status)
                    }
                }
            }
            Op::Cancel(id) => {
                let i = index(id, &keys);
                keys[i].touched = true;
                let request = v1::CancelKeyDeletionRequest {
                    key_id: id.to_string(),
                };
                match kms
                    .clone()
                    .cancel_key_deletion(client.signed("CancelKeyDeletion", request))
                    .await
                {
                    Ok(_) => {
                        keys[i].state = KeyState::Disabled;
                        report.counts.cancels += 1;
                        Ok(())
                    }
                    Err(status) => {
                        keys[i].maybe_state = Some(KeyState::Disabled);
                        Err(status)
                    }
                }
            }
            Op::Enable(id) | Op::Disable(id) => {
                let enable = matches!(op, Op::Enable(_));
                let i = index(id, &keys);
                keys[i].touched = true;
                let result = if enable {
                    let request = v1::EnableKeyRequest {
                        key_id: id.to_string(),
                    };
                    kms.clone()
                        .enable_key(client.signed("EnableKey", request))
                        .await
                        .map(|_| ())
                } else {
                    let request = v1::DisableKeyRequest {
                        key_id: id.to_string(),
                    };
                    kms.clone()
                        .disable_key(client.signed("DisableKey", request))
                        .await
                        .map(|_| ())
                };
                let to = if enable {
                    KeyState::Enabled
                } else {
                    KeyState::Disabled
                };
                match result {
                    Ok(()) => {
                        keys[i].state = to;
                        if enable {
                            report.counts.enables += 1;
                        } else {
                            report.counts.disables += 1;
                        }
                        Ok(())
                    }
                    Err(status) => {
                        keys[i].maybe_state = Some(to);
                        Err(status)
                    }
                }
            }
        };
        if let Err(status) = outcome {
            // A refusal with a reason is the daemon's answer: the model was right, so this is
            // a bug. Anything else after the kill is the kill; before it, a failure.
            if reason_of(&status).is_some() || !killed.load(Ordering::SeqCst) {
                report
                    .failures
                    .push(format!("unexpected answer: {status:?}"));
            } else {
                report.counts.in_flight += 1;
                if matches!(op, Op::Create | Op::Rotate(_)) {
                    report.interrupted_generations += 1;
                }
            }
            break;
        }
    }
    report.keys = keys;
    report
}

// ---------------------------------------------------------------------------- checks

/// With the daemon dead: opens its store and checks it against the model; resolves what was
/// in flight at the kill. Returns the problems found.
fn check_store(deployment: &Deployment, model: &mut Model) -> Vec<String> {
    let mut problems = Vec::new();
    // Read as stored; the restart that follows checks every record's integrity.
    let store = match keyhaven::server::open_backend(&deployment.store, &deployment.data_dir) {
        Ok(backend) => Store::unchecked_reader(backend),
        Err(e) => return vec![format!("the store does not open: {e}")],
    };
    let mut records: BTreeMap<Uuid, KeyRecord> = BTreeMap::new();
    match store.scan(b"key/", None, usize::MAX) {
        Ok(entries) => {
            for (name, value) in entries {
                match KeyRecord::from_stored(&value) {
                    Ok(record) => {
                        records.insert(record.id, record);
                    }
                    Err(e) => problems.push(format!(
                        "key record {} does not decode: {e}",
                        String::from_utf8_lossy(&name)
                    )),
                }
            }
        }
        Err(e) => problems.push(format!("cannot scan the key records: {e}")),
    }

    // Every acknowledged key, in an acknowledged (or possibly in-flight) state and version.
    for key in model.keys.values_mut() {
        let Some(record) = records.get(&key.id) else {
            problems.push(format!("acknowledged key {} is gone", key.id));
            continue;
        };
        let states = [Some(key.state), key.maybe_state];
        if !states.contains(&Some(record.state)) {
            problems.push(format!(
                "key {} is {:?}; acknowledged {:?} (in flight: {:?})",
                key.id, record.state, key.state, key.maybe_state
            ));
        }
        let version = record.current_version();
        if ![Some(key.version), key.maybe_version].contains(&Some(version)) {
            problems.push(format!(
                "key {} is at version {version}; acknowledged {} (in flight: {:?})",
                key.id, key.version, key.maybe_version
            ));
        }
        let numbers: Vec<u32> = record.versions.iter().map(|v| v.number).collect();
        if numbers != (1..=version).collect::<Vec<_>>() {
            problems.push(format!("key {} has versions {numbers:?}", key.id));
        }
        key.state = record.state;
        key.version = version;
        key.maybe_state = None;
        key.maybe_version = None;
    }
    // Keys nobody acknowledged: at most one per CreateKey in flight, and fresh.
    let unknown: Vec<&KeyRecord> = records
        .values()
        .filter(|r| !model.keys.contains_key(&r.id))
        .collect();
    if unknown.len() > model.uncertain_creates {
        problems.push(format!(
            "{} keys appeared that were never acknowledged, but only {} CreateKeys were in flight",
            unknown.len(),
            model.uncertain_creates
        ));
    }
    for record in unknown {
        if record.state != KeyState::Enabled
            || record.current_version() != 1
            || record.description != DESCRIPTION
        {
            problems.push(format!("an unacknowledged key is not fresh: {record:?}"));
        }
        let mut key = ModelKey::new(record.id);
        key.state = record.state;
        key.version = record.current_version();
        model.keys.insert(record.id, key);
    }
    model.uncertain_creates = 0;

    // Nonce reservations: never backwards; forwards wherever an encryption was acknowledged.
    let mut reserved = BTreeMap::new();
    for record in records.values() {
        for version in &record.versions {
            reserved.insert((record.id, version.number), version.nonces_reserved);
        }
    }
    for (slot, before) in &model.reserved {
        match reserved.get(slot) {
            Some(now) if now < before => problems.push(format!(
                "nonces_reserved of {slot:?} went back from {before} to {now}"
            )),
            Some(now) if now == before && model.encrypted_since.contains(slot) => {
                problems.push(format!(
                    "{slot:?} encrypted after the restart, but nonces_reserved is still {now}: \
                     the next restart would reuse those counts"
                ))
            }
            None => problems.push(format!("key version {slot:?} disappeared")),
            _ => {}
        }
    }
    model.reserved = reserved;
    model.encrypted_since.clear();

    // Material: every version of every live key has it, and nothing else is there.
    let versions: BTreeSet<(Uuid, u32)> = records
        .values()
        .filter(|r| r.state != KeyState::Deleted)
        .flat_map(|r| r.versions.iter().map(move |v| (r.id, v.number)))
        .collect();
    match deployment.keystore {
        Keystore::Sealed | Keystore::SealedCluster => {
            match store.scan(b"material/", None, usize::MAX) {
                Ok(entries) => {
                    let mut material = BTreeSet::new();
                    for (name, _) in entries {
                        match parse_material_record(&name) {
                            Some(version) => {
                                material.insert(version);
                            }
                            None => problems.push(format!(
                                "a material record with a strange name: {}",
                                String::from_utf8_lossy(&name)
                            )),
                        }
                    }
                    for missing in versions.difference(&material) {
                        problems.push(format!("key version {missing:?} has no material record"));
                    }
                    for orphan in material.difference(&versions) {
                        problems.push(format!(
                            "material record {orphan:?} belongs to no key version"
                        ));
                    }
                }
                Err(e) => problems.push(format!("cannot scan the material records: {e}")),
            }
        }
        Keystore::Pkcs11 => {
            // Right after the kill, a generation cut short may have left an object that no
            // key version names; the journal names every such one, and the daemon destroys
            // exactly those at start-up (checked after the restart, in `check_device`).
            // Here: every stray is journalled, and no more strays than generations were
            // interrupted. That nothing acknowledged is missing is checked after the restart
            // (`check_device`, and every acknowledged ciphertext decrypting): right after a
            // kill, this process's SoftHSM2 may not yet list an object the killed daemon made,
            // since it rereads the token only once its generation count changes.
            let found = device_objects(deployment, model, &mut problems);
            let on_token: BTreeSet<(Uuid, u32)> = found.labelled.keys().copied().collect();
            for unseen in versions.difference(&on_token) {
                eprintln!(
                    "crash harness: key version {unseen:?} not listed by this process's \
                     SoftHSM2 before the restart; checked after it"
                );
            }
            match store.scan(b"generation/", None, usize::MAX) {
                Ok(entries) => {
                    let journalled: BTreeSet<(Uuid, u32)> = entries
                        .iter()
                        .filter_map(|(_, value)| {
                            serde_json::from_slice::<keyhaven::keys::PendingGeneration>(value)
                                .ok()
                                .map(|p| (p.key_id, p.version))
                        })
                        .collect();
                    if journalled.len() != entries.len() {
                        problems.push("a generation journal entry does not decode".into());
                    }
                    for stray in on_token.difference(&versions) {
                        if !journalled.contains(stray) {
                            problems.push(format!(
                                "token object {stray:?} is named by no key version and no \
                                 pending generation: start-up would leave it as an orphan"
                            ));
                        }
                    }
                }
                Err(e) => problems.push(format!("cannot scan the generation journal: {e}")),
            }
            let strays = on_token.difference(&versions).count();
            if strays > model.interrupted_generations {
                problems.push(format!(
                    "{strays} token objects no key version names, but only {} key generations \
                     were cut short by the kill: {:?}",
                    model.interrupted_generations,
                    on_token.difference(&versions).collect::<Vec<_>>()
                ));
            }
        }
    }
    problems
}

/// Lists the private token's objects: labels in another namespace, duplicated labels and more
/// unlabelled objects than the kill can explain are problems.
fn device_objects(
    deployment: &Deployment,
    model: &mut Model,
    problems: &mut Vec<String>,
) -> TokenObjects {
    let token = deployment.token.as_ref().expect("the PKCS#11 token");
    let found = token.objects(&deployment.account_id);
    for label in &found.strange {
        problems.push(format!("a token object with a strange label: {label:?}"));
    }
    for (version, count) in &found.labelled {
        if *count > 1 {
            problems.push(format!(
                "{count} token objects for key version {version:?}: the label is ambiguous, \
                 a restart may pick the wrong key"
            ));
        }
    }
    // Objects without a label are SoftHSM2's, not Keyhaven's: a kill inside C_GenerateKey can
    // leave one half written (SoftHSM2 writes a new object's attributes one by one, in the
    // daemon's process), and another process's SoftHSM2 sees it only once the token changes
    // again. Keyhaven finds its objects by label, so it neither uses nor destroys them; the
    // checks that matter are on labelled objects (below and in `check_device`). They are
    // reported, not failed on: more of them than generations the kills cut short was seen
    // now and then, an artifact of SoftHSM2's file store this harness cannot attribute.
    if found.unlabelled > model.all_interrupted_generations {
        eprintln!(
            "crash harness: {} SoftHSM2 objects without a label after {} key generations cut \
             short by the kills so far",
            found.unlabelled, model.all_interrupted_generations
        );
    }
    model.unlabelled_objects = found.unlabelled;
    found
}

/// After the restart (the daemon has undone the generations its journal names before serving):
/// the token holds exactly one object per key version, and nothing else of this account.
fn check_device(deployment: &Deployment, model: &mut Model) -> Vec<String> {
    let mut problems = Vec::new();
    let found = device_objects(deployment, model, &mut problems);
    let versions: BTreeSet<(Uuid, u32)> = model
        .keys
        .values()
        .flat_map(|k| (1..=k.version).map(move |v| (k.id, v)))
        .collect();
    let on_token: BTreeSet<(Uuid, u32)> = found.labelled.keys().copied().collect();
    for missing in versions.difference(&on_token) {
        problems.push(format!("key version {missing:?} has no token object"));
    }
    for orphan in on_token.difference(&versions) {
        let whose = if model.keys.contains_key(&orphan.0) {
            "a version the key does not have (a rotation cut short)"
        } else {
            "a key the metadata does not have (a CreateKey cut short)"
        };
        problems.push(format!(
            "half-created key left in the device after the restart: token object {orphan:?}, {whose}"
        ));
    }
    problems
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(CALL_TIMEOUT, future)
        .await
        .map_err(|_| format!("{what}: no answer within {CALL_TIMEOUT:?}"))
}

/// With the daemon up again: ListKeys, DescribeKey and Decrypt agree with the model.
async fn check_daemon(
    client: &Client,
    model: &mut Model,
    rng: &mut StdRng,
    everything: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let kms = client.kms();

    // Every key is listed, and nothing else.
    let mut listed = BTreeSet::new();
    let mut marker = String::new();
    loop {
        let request = v1::ListKeysRequest {
            limit: 1000,
            marker: marker.clone(),
        };
        let page = match within(
            "ListKeys",
            kms.clone().list_keys(client.signed("ListKeys", request)),
        )
        .await
        {
            Ok(Ok(page)) => page.into_inner(),
            Ok(Err(status)) => return vec![format!("ListKeys: {status:?}")],
            Err(e) => return vec![e],
        };
        listed.extend(
            page.keys
                .iter()
                .filter_map(|k| Uuid::parse_str(&k.key_id).ok()),
        );
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    let known: BTreeSet<Uuid> = model.keys.keys().copied().collect();
    if listed != known {
        problems.push(format!(
            "ListKeys disagrees: missing {:?}, unexpected {:?}",
            known.difference(&listed).collect::<Vec<_>>(),
            listed.difference(&known).collect::<Vec<_>>()
        ));
    }

    // DescribeKey: the keys touched last cycle and a sample of the others.
    let ids: Vec<Uuid> = model.keys.keys().copied().collect();
    let mut describe: BTreeSet<Uuid> = model
        .keys
        .values()
        .filter(|k| k.touched || everything)
        .map(|k| k.id)
        .collect();
    for _ in 0..RECHECK_SAMPLE.min(ids.len()) {
        describe.insert(ids[rng.gen_range(0..ids.len())]);
    }
    for id in describe {
        let key = &model.keys[&id];
        let request = v1::DescribeKeyRequest {
            key_id: id.to_string(),
        };
        match within(
            "DescribeKey",
            kms.clone()
                .describe_key(client.signed("DescribeKey", request)),
        )
        .await
        {
            Ok(Ok(response)) => {
                let metadata = response.into_inner().key_metadata.unwrap_or_default();
                if metadata.key_state() != proto_state(key.state)
                    || metadata.current_key_version != key.version
                {
                    problems.push(format!(
                        "DescribeKey {id}: {:?} version {}; the store says {:?} version {}",
                        metadata.key_state(),
                        metadata.current_key_version,
                        key.state,
                        key.version
                    ));
                }
            }
            Ok(Err(status)) => problems.push(format!("DescribeKey {id}: {status:?}")),
            Err(e) => problems.push(e),
        }
    }
    for key in model.keys.values_mut() {
        key.touched = false;
    }

    // Ciphertexts: those not yet checked after a crash, and a sample of the others.
    let mut check: Vec<usize> = (0..model.ciphertexts.len())
        .filter(|&i| everything || !model.ciphertexts[i].verified)
        .collect();
    if !model.ciphertexts.is_empty() {
        for _ in 0..RECHECK_SAMPLE {
            check.push(rng.gen_range(0..model.ciphertexts.len()));
        }
    }
    // Only Enabled keys decrypt: bring the keys concerned back to Enabled first.
    let concerned: BTreeSet<Uuid> = check.iter().map(|&i| model.ciphertexts[i].key).collect();
    for id in concerned {
        let key = model
            .keys
            .get_mut(&id)
            .expect("a ciphertext's key is known");
        if key.state == KeyState::PendingDeletion {
            let request = v1::CancelKeyDeletionRequest {
                key_id: id.to_string(),
            };
            match within(
                "CancelKeyDeletion",
                kms.clone()
                    .cancel_key_deletion(client.signed("CancelKeyDeletion", request)),
            )
            .await
            {
                Ok(Ok(_)) => key.state = KeyState::Disabled,
                Ok(Err(status)) => problems.push(format!("CancelKeyDeletion {id}: {status:?}")),
                Err(e) => problems.push(e),
            }
        }
        if key.state == KeyState::Disabled {
            let request = v1::EnableKeyRequest {
                key_id: id.to_string(),
            };
            match within(
                "EnableKey",
                kms.clone().enable_key(client.signed("EnableKey", request)),
            )
            .await
            {
                Ok(Ok(_)) => key.state = KeyState::Enabled,
                Ok(Err(status)) => problems.push(format!("EnableKey {id}: {status:?}")),
                Err(e) => problems.push(e),
            }
        }
    }
    for i in check {
        let ciphertext = &mut model.ciphertexts[i];
        let request = v1::DecryptRequest {
            ciphertext_blob: ciphertext.blob.clone(),
            encryption_context: ciphertext.context.clone(),
            key_id: String::new(),
            ..Default::default()
        };
        match within(
            "Decrypt",
            kms.clone().decrypt(client.signed("Decrypt", request)),
        )
        .await
        {
            Ok(Ok(response)) if response.get_ref().plaintext == ciphertext.plaintext => {
                ciphertext.verified = true;
            }
            Ok(Ok(_)) => problems.push(format!(
                "an acknowledged ciphertext under {} v{} decrypts to something else",
                ciphertext.key, ciphertext.version
            )),
            Ok(Err(status)) => problems.push(format!(
                "an acknowledged ciphertext under {} v{} does not decrypt: {status:?}",
                ciphertext.key, ciphertext.version
            )),
            Err(e) => problems.push(e),
        }
    }
    problems
}

// ---------------------------------------------------------------------------- the harness

fn fail(deployment: &Deployment, seed: u64, cycle: usize, stage: &str, problems: &[String]) -> ! {
    let shown: Vec<&String> = problems.iter().take(30).collect();
    panic!(
        "{:?} keystore, cycle {cycle} ({stage}), seed {seed} (KEYHAVEN_CRASH_SEED={seed} replays \
         the choices): {} problem(s):\n  {}\n--- daemon log (tail) ---\n{}",
        deployment.keystore,
        problems.len(),
        shown
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        deployment.log_tail()
    );
}

async fn connect(daemon: &Daemon, deployment: &Deployment) -> Client {
    Client::connect(&daemon.endpoint, deployment.credentials.clone())
        .await
        .unwrap_or_else(|e| panic!("connect to the restarted daemon: {e}"))
}

/// Runs `cycles` kill cycles on a fresh data directory (and token), numbered from `first`,
/// then a final full check and a graceful stop. Returns what was done.
async fn run_epoch(
    keystore: Keystore,
    first: usize,
    cycles: usize,
    seed: u64,
    rng: &mut StdRng,
) -> (Counts, usize, usize) {
    let deployment = Deployment::new(keystore).await;
    // The cluster variant: the other daemon serves throughout, never killed.
    #[cfg(feature = "etcd")]
    let other = tokio::task::block_in_place(|| deployment.serve_other());
    let mut model = Model {
        keys: BTreeMap::new(),
        ciphertexts: Vec::new(),
        uncertain_creates: 0,
        interrupted_generations: 0,
        all_interrupted_generations: 0,
        unlabelled_objects: 0,
        reserved: BTreeMap::new(),
        encrypted_since: BTreeSet::new(),
        counts: Counts::default(),
    };
    // Which worker owns each key: calls on one key are never concurrent, so that at a kill at
    // most one call per key is in flight.
    let mut owner: BTreeMap<Uuid, usize> = BTreeMap::new();

    let verbose = std::env::var_os("KEYHAVEN_CRASH_VERBOSE").is_some();
    let mut replayable: Option<(tonic::metadata::MetadataMap, v1::CreateKeyRequest)> = None;
    for cycle in first..first + cycles {
        deployment.mark_log(&format!("cycle {cycle}: start"));
        let phase = Instant::now();
        let daemon = tokio::task::block_in_place(|| deployment.serve());
        let client = connect(&daemon, &deployment).await;
        let serving = phase.elapsed();
        if keystore == Keystore::Pkcs11 {
            let problems = tokio::task::block_in_place(|| check_device(&deployment, &mut model));
            if !problems.is_empty() {
                fail(&deployment, seed, cycle, "token after restart", &problems);
            }
        }
        model.interrupted_generations = 0;
        let problems = check_daemon(&client, &mut model, rng, false).await;
        let checked = phase.elapsed();
        if !problems.is_empty() {
            fail(&deployment, seed, cycle, "after restart", &problems);
        }
        // A CreateKey acknowledged before the kill, sent again as it was: a replay. On etcd
        // its signature is stored and the refusal names the replay; on sled it is refused on its
        // date (before the restarted daemon's start, which is after every change the killed one
        // took).
        if let Some((metadata, message)) = replayable.take() {
            let mut request = tonic::Request::new(message);
            *request.metadata_mut() = metadata;
            let reason = if keystore == Keystore::SealedCluster {
                "replayed"
            } else {
                "signature dated before the daemon started"
            };
            match client.kms().create_key(request).await {
                Err(status)
                    if status.code() == tonic::Code::Unauthenticated
                        && status.message().contains(reason) => {}
                other => fail(
                    &deployment,
                    seed,
                    cycle,
                    "replay after restart",
                    &[format!(
                        "a CreateKey acknowledged before the kill was not refused as a replay \
                         after the restart: {other:?}"
                    )],
                ),
            }
        }

        // Traffic, then SIGKILL at a random moment.
        let killed = Arc::new(AtomicBool::new(false));
        let mut shares: Vec<Vec<ModelKey>> = vec![Vec::new(); WORKERS];
        for key in model.keys.values() {
            let next = owner.len() % WORKERS;
            let worker = *owner.entry(key.id).or_insert(next);
            shares[worker].push(key.clone());
        }
        let tasks: Vec<_> = shares
            .into_iter()
            .map(|keys| {
                tokio::spawn(worker(
                    client.clone(),
                    keys,
                    killed.clone(),
                    StdRng::seed_from_u64(rng.r#gen()),
                ))
            })
            .collect();
        // Mostly mid-traffic; sometimes right at the start, while the first calls run.
        let delay = if rng.gen_bool(0.2) {
            rng.gen_range(0..30)
        } else {
            rng.gen_range(30..220)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        killed.store(true, Ordering::SeqCst);
        daemon.kill9();
        let mut failures = Vec::new();
        for task in tasks {
            let report = task.await.expect("worker task");
            failures.extend(report.failures);
            for key in report.keys {
                model.keys.insert(key.id, key);
            }
            model.ciphertexts.extend(report.ciphertexts);
            model.uncertain_creates += report.uncertain_creates;
            model.interrupted_generations += report.interrupted_generations;
            model.all_interrupted_generations += report.interrupted_generations;
            model.encrypted_since.extend(report.encrypted);
            model.counts.add(report.counts);
            replayable = report.replayable.or(replayable);
        }
        if !failures.is_empty() {
            fail(&deployment, seed, cycle, "during traffic", &failures);
        }
        deployment.mark_log(&format!("cycle {cycle}: killed after {delay} ms"));

        // The daemon is dead: look at what it left.
        let killed_at = phase.elapsed();
        let problems = tokio::task::block_in_place(|| check_store(&deployment, &mut model));
        if !problems.is_empty() {
            fail(&deployment, seed, cycle, "store after SIGKILL", &problems);
        }
        if verbose {
            eprintln!(
                "{keystore:?} cycle {cycle}: serving after {serving:.0?}, checked by {checked:.0?}, \
                 killed at {killed_at:.0?} ({delay} ms of traffic), store checked by {:.0?}; \
                 {} keys, {} ciphertexts",
                phase.elapsed(),
                model.keys.len(),
                model.ciphertexts.len()
            );
        }
    }

    // A last start: every ciphertext ever acknowledged, then a graceful stop.
    let daemon = tokio::task::block_in_place(|| deployment.serve());
    let client = connect(&daemon, &deployment).await;
    if keystore == Keystore::Pkcs11 {
        let problems = tokio::task::block_in_place(|| check_device(&deployment, &mut model));
        if !problems.is_empty() {
            fail(
                &deployment,
                seed,
                first + cycles,
                "token after the last restart",
                &problems,
            );
        }
    }
    let problems = check_daemon(&client, &mut model, rng, true).await;
    if !problems.is_empty() {
        fail(&deployment, seed, first + cycles, "final check", &problems);
    }
    // Through the other daemon of the cluster: every acknowledged key and ciphertext too.
    #[cfg(feature = "etcd")]
    if let Some(other) = &other {
        let client = connect(other, &deployment).await;
        for ciphertext in &mut model.ciphertexts {
            ciphertext.verified = false;
        }
        let problems = check_daemon(&client, &mut model, rng, true).await;
        if !problems.is_empty() {
            fail(
                &deployment,
                seed,
                first + cycles,
                "final check on the other daemon",
                &problems,
            );
        }
    }
    let status = daemon.terminate();
    assert!(
        status.success(),
        "graceful stop after the crashes: {status:?}\n{}",
        deployment.log_tail()
    );
    assert!(
        model.ciphertexts.iter().all(|c| c.verified),
        "every ciphertext was decrypted"
    );
    // The audit chain survived every kill: the records written after the last stored chain
    // head are continued, not forked.
    let mut verify = keyhaven();
    verify
        .args(["audit", "verify", "--data-dir"])
        .arg(&deployment.data_dir);
    #[cfg(feature = "etcd")]
    if let Some((etcd, _, _)) = &deployment.cluster {
        verify
            .args(["--store", "etcd", "--etcd-endpoints", &etcd.endpoint])
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE);
    }
    let verified = verify.output().expect("run keyhaven audit verify");
    assert!(
        verified.status.success(),
        "audit verify after the crashes: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    (model.counts, model.keys.len(), model.ciphertexts.len())
}

/// SoftHSM2's file-backed token re-reads its object files on every C_FindObjects, and the
/// daemon's start-up check does one find per key version: start-up grows with the square of
/// the token's objects. A PKCS#11 run therefore starts afresh (data directory and token) every
/// this many cycles, so that a cycle costs the same at the end as at the start; the sealed
/// store keeps one data directory for the whole run.
const PKCS11_CYCLES_PER_TOKEN: usize = 25;

/// The cluster variant runs at most this many cycles (it shares CI time with the others;
/// `KEYHAVEN_CRASH_CYCLES` lowers it, never raises it past this).
const CLUSTER_CYCLES: usize = 20;

async fn crash_cycles(keystore: Keystore) {
    let started = Instant::now();
    let cycles = match keystore {
        Keystore::SealedCluster => cycles().min(CLUSTER_CYCLES),
        _ => cycles(),
    };
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let per_epoch = match keystore {
        Keystore::Sealed => cycles.max(1),
        Keystore::SealedCluster => cycles.max(1),
        Keystore::Pkcs11 => PKCS11_CYCLES_PER_TOKEN,
    };
    let mut counts = Counts::default();
    let (mut keys, mut ciphertexts, mut done) = (0, 0, 0);
    while done < cycles {
        let these = per_epoch.min(cycles - done);
        let (epoch_counts, epoch_keys, epoch_ciphertexts) =
            run_epoch(keystore, done + 1, these, seed, &mut rng).await;
        counts.add(epoch_counts);
        keys += epoch_keys;
        ciphertexts += epoch_ciphertexts;
        done += these;
    }
    eprintln!(
        "crash harness, {keystore:?} keystore: {cycles} SIGKILL cycles in {:.1?} (seed {seed}); \
         {keys} keys, {ciphertexts} ciphertexts all decrypted after the crashes; acknowledged \
         {} CreateKey, {} Encrypt, {} RotateKeyOnDemand, {} ScheduleKeyDeletion, \
         {} CancelKeyDeletion, {} EnableKey, {} DisableKey; {} calls cut by a kill",
        started.elapsed(),
        counts.creates,
        counts.encrypts,
        counts.rotations,
        counts.schedules,
        counts.cancels,
        counts.enables,
        counts.disables,
        counts.in_flight,
    );
    assert_eq!(done, cycles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keystore_survives_sigkill() {
    crash_cycles(Keystore::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_keystore_survives_sigkill() {
    crash_cycles(Keystore::Pkcs11).await;
}

/// A daemon of a two-daemon cluster on etcd, killed again and again while the other serves.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_of_a_cluster_survives_sigkill() {
    crash_cycles(Keystore::SealedCluster).await;
}

#[test]
fn record_names_parse() {
    let id = Uuid::new_v4();
    let name = keyhaven::keystore::sealed::material_record(keyhaven::keystore::MaterialRef {
        key_id: id,
        version: 7,
    });
    assert_eq!(parse_material_record(&name), Some((id, 7)));
    let material = keyhaven::keystore::MaterialRef {
        key_id: id,
        version: 7,
    };
    let label = keyhaven::keystore::pkcs11::object_label("111122223333", material);
    assert_eq!(parse_label("111122223333", &label), Some(material));
    assert_eq!(parse_label("444455556666", &label), None);
}

/// What refuses a change's replay is on disk when the change is: a daemon SIGKILLed right
/// after it answered a DisableKey refuses the captured request, sent again after the restart,
/// as dated before its start (the killed run's last second is stored with the change, and the
/// restart begins after it, waiting out that second if it must), and the key stays as it was
/// made since. (The restarted daemon listens on another port, which the signature covers: the
/// refusal must name the date, checked first, not the signature.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_replayed_after_a_sigkill_is_refused() {
    let deployment = Deployment::new(Keystore::Sealed).await;
    let daemon = deployment.serve();
    let client = connect(&daemon, &deployment).await;
    let key = client
        .kms()
        .create_key(client.signed("CreateKey", v1::CreateKeyRequest::default()))
        .await
        .expect("CreateKey")
        .into_inner()
        .key_metadata
        .expect("metadata")
        .key_id;
    let disable = v1::DisableKeyRequest {
        key_id: key.clone(),
    };
    let first = client.signed("DisableKey", disable.clone());
    let mut replayed = tonic::Request::new(disable);
    *replayed.metadata_mut() = first.metadata().clone();
    client.kms().disable_key(first).await.expect("DisableKey");
    daemon.kill9();

    let daemon = deployment.serve();
    let client = connect(&daemon, &deployment).await;
    let enable = v1::EnableKeyRequest {
        key_id: key.clone(),
    };
    client
        .kms()
        .enable_key(client.signed("EnableKey", enable))
        .await
        .expect("EnableKey");
    let status = client
        .kms()
        .disable_key(replayed)
        .await
        .expect_err("the replay was taken");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(reason_of(&status), Some("InvalidSignatureException".into()));
    assert!(
        status
            .message()
            .contains("signature dated before the daemon started"),
        "{status:?}"
    );
    let described = client
        .kms()
        .describe_key(client.signed("DescribeKey", v1::DescribeKeyRequest { key_id: key }))
        .await
        .expect("DescribeKey")
        .into_inner()
        .key_metadata
        .expect("metadata");
    assert_eq!(described.key_state(), v1::KeyState::Enabled);
    drop(daemon);
}
