//! Soak: the real `keyhaven` binary under mixed traffic for a set time, its resident memory
//! sampled every second. Passes when no call failed and resident memory after warm-up grew by
//! less than [`GROWTH_FRACTION`] plus [`GROWTH_SLACK_MIB`].
//!
//! Opt-in, because it runs for as long as it is told (this is a load test, not a check of
//! behaviour): without `KEYHAVEN_SOAK_SECONDS` it returns at once, saying so.
//!
//! ```sh
//! KEYHAVEN_SOAK_SECONDS=120 cargo test --release --test soak -- --nocapture
//! KEYHAVEN_SOAK_BACKEND=pkcs11 ...   # on a SoftHSM2 token (after `eval "$(hsm-sim/setup.sh)"`)
//! ```
//!
//! `KEYHAVEN_SOAK_TASKS` sets the concurrent clients (default 8), `KEYHAVEN_SOAK_CONFIG` a
//! config file for the daemon (`serve --config`). The traffic: Encrypt 40 %, Decrypt 30 %,
//! GenerateDataKey 20 %, DescribeKey 9.96 %, CreateKey and RotateKeyOnDemand 0.02 % each.
//! Warm-up is the first fifth of the run, or `KEYHAVEN_SOAK_WARMUP_SECONDS`; the baseline is
//! the mean of the tenth of the run after it, compared with the mean of the last third.
//!
//! Memory that legitimately fills over minutes counts as growth in a short run: the replay
//! cache holds every request signature for five minutes (tens of bytes each), and each key
//! version made adds its record (and, on SoftHSM2, its objects). A steady-state check needs a
//! warm-up past the five minutes: `KEYHAVEN_SOAK_SECONDS=900 KEYHAVEN_SOAK_WARMUP_SECONDS=330`.

mod common;

use common::device::PrivateToken;
use keyhaven::api::reason_of;
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::clock::SystemClock;
use keyhaven::proto::v1;
use keyhaven::seal::KdfParams;
use keyhaven::secret::SecretString;
use rand::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keyhaven");
const PASSPHRASE: &str = "soak test passphrase, not a secret";
/// Allowed growth of resident memory after warm-up: this fraction of the baseline…
const GROWTH_FRACTION: f64 = 0.10;
/// …plus this much.
const GROWTH_SLACK_MIB: f64 = 8.0;
/// Keys made before the traffic starts.
const INITIAL_KEYS: usize = 8;
/// Ciphertexts each client keeps to decrypt (older ones are replaced).
const KEPT_BLOBS: usize = 64;

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The daemon process; killed if the test ends early.
struct Daemon {
    child: Child,
    endpoint: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(data_dir: &Path, log: &Path, token: Option<&PrivateToken>) -> Daemon {
        let mut command = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYHAVEN_") {
                command.env_remove(&name);
            }
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE)
            .env("RUST_LOG", "warn")
            .args(setting("KEYHAVEN_SOAK_CONFIG").map(|file| format!("--config={file}")))
            .env("NO_COLOR", "1");
        if let Some(token) = token {
            command
                .args(["--keystore", "pkcs11"])
                .env("KEYHAVEN_PKCS11_MODULE", &token.module)
                .env("KEYHAVEN_PKCS11_TOKEN_LABEL", &token.label)
                .env("KEYHAVEN_PKCS11_PIN", &token.pin);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("daemon log"))
            .spawn()
            .expect("spawn keyhaven serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let endpoint = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("# listening on ") {
                        break format!("http://{addr}");
                    }
                }
                _ => panic!(
                    "the daemon did not start: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon { child, endpoint }
    }

    /// VmRSS of the daemon, in KiB.
    fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "the daemon exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon ignored SIGTERM for 30 s");
    }
}

/// Calls made and failures seen, by operation.
#[derive(Default)]
struct Tally {
    calls: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, u64>,
    first_errors: Vec<String>,
}

impl Tally {
    fn record<T>(&mut self, operation: &'static str, outcome: &Result<T, tonic::Status>) {
        *self.calls.entry(operation).or_default() += 1;
        if let Err(status) = outcome {
            *self.errors.entry(operation).or_default() += 1;
            if self.first_errors.len() < 10 {
                self.first_errors.push(format!(
                    "{operation}: {:?} {:?} {}",
                    status.code(),
                    reason_of(status),
                    status.message()
                ));
            }
        }
    }
}

async fn create_key(client: &Client, description: &str) -> Result<String, tonic::Status> {
    let request = v1::CreateKeyRequest {
        description: description.into(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .create_key(client.signed("CreateKey", request))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata")
        .key_id)
}

/// One client's loop until `stop`.
async fn traffic(client: Client, keys: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    // Ciphertexts with their plaintexts and the round that made them (their context).
    let mut blobs: Vec<(Vec<u8>, Vec<u8>, usize)> = Vec::new();
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (roll, pick, size) = {
            let mut rng = rand::thread_rng();
            (
                rng.gen_range(0..10_000u32),
                rng.r#gen::<usize>(),
                rng.gen_range(1..=1024usize),
            )
        };
        let key = {
            let keys = keys.lock().expect("keys");
            keys[pick % keys.len()].clone()
        };
        match roll {
            0..4000 => {
                let plaintext = vec![(round % 251) as u8; size];
                let request = v1::EncryptRequest {
                    key_id: key,
                    plaintext: plaintext.clone(),
                    encryption_context: [("round".to_string(), round.to_string())].into(),
                    ..Default::default()
                };
                let outcome = client
                    .kms()
                    .encrypt(client.signed("Encrypt", request))
                    .await
                    .map(|r| r.into_inner().ciphertext_blob);
                tally.record("Encrypt", &outcome);
                if let Ok(blob) = outcome {
                    let kept = (blob, plaintext, round);
                    if blobs.len() < KEPT_BLOBS {
                        blobs.push(kept);
                    } else {
                        blobs[pick % KEPT_BLOBS] = kept;
                    }
                }
            }
            4000..7000 if !blobs.is_empty() => {
                let (blob, plaintext, made_in) = &blobs[pick % blobs.len()];
                let request = v1::DecryptRequest {
                    ciphertext_blob: blob.clone(),
                    encryption_context: [("round".to_string(), made_in.to_string())].into(),
                    key_id: String::new(),
                    ..Default::default()
                };
                let outcome = client
                    .kms()
                    .decrypt(client.signed("Decrypt", request))
                    .await
                    .and_then(|r| {
                        let opened = r.into_inner().plaintext;
                        if opened == plaintext {
                            Ok(())
                        } else {
                            Err(tonic::Status::data_loss(
                                "Decrypt returned another plaintext",
                            ))
                        }
                    });
                tally.record("Decrypt", &outcome);
            }
            4000..9000 => {
                let request = v1::GenerateDataKeyRequest {
                    key_id: key,
                    key_spec: "AES_256".into(),
                    ..Default::default()
                };
                let outcome = client
                    .kms()
                    .generate_data_key(client.signed("GenerateDataKey", request))
                    .await;
                tally.record("GenerateDataKey", &outcome);
            }
            9000..9996 => {
                let request = v1::DescribeKeyRequest { key_id: key };
                let outcome = client
                    .kms()
                    .describe_key(client.signed("DescribeKey", request))
                    .await;
                tally.record("DescribeKey", &outcome);
            }
            9996..9998 => {
                let outcome = create_key(&client, "soak").await;
                tally.record("CreateKey", &outcome);
                if let Ok(id) = outcome {
                    keys.lock().expect("keys").push(id);
                }
            }
            _ => {
                let request = v1::RotateKeyOnDemandRequest { key_id: key };
                let outcome = client
                    .kms()
                    .rotate_key_on_demand(client.signed("RotateKeyOnDemand", request))
                    .await;
                tally.record("RotateKeyOnDemand", &outcome);
            }
        }
    }
    tally
}

fn mean(samples: &[u64]) -> f64 {
    samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_for_a_set_time_without_errors_or_memory_growth() {
    let Some(seconds) = setting("KEYHAVEN_SOAK_SECONDS") else {
        println!(
            "soak: opt-in; set KEYHAVEN_SOAK_SECONDS=N (and KEYHAVEN_SOAK_BACKEND=pkcs11 for \
             SoftHSM2) to run it"
        );
        return;
    };
    let seconds: u64 = seconds
        .parse()
        .unwrap_or_else(|_| panic!("KEYHAVEN_SOAK_SECONDS={seconds:?} is not a number"));
    assert!(seconds >= 10, "KEYHAVEN_SOAK_SECONDS must be at least 10");
    let tasks: usize = setting("KEYHAVEN_SOAK_TASKS").map_or(8, |t| {
        t.parse()
            .unwrap_or_else(|_| panic!("KEYHAVEN_SOAK_TASKS={t:?} is not a number"))
    });
    let backend = setting("KEYHAVEN_SOAK_BACKEND").unwrap_or_else(|| "sealed".into());
    let token = match backend.as_str() {
        "sealed" => None,
        "pkcs11" => Some(PrivateToken::create("kh-soak")),
        other => panic!("KEYHAVEN_SOAK_BACKEND={other:?}: sealed or pkcs11"),
    };

    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir: PathBuf = dir.path().join("data");
    let log = dir.path().join("daemon.log");
    let initialised = keyhaven::server::init_data_dir(
        &data_dir,
        &SecretString::new(PASSPHRASE.into()),
        KdfParams::MINIMUM,
        "keyhaven",
        &SystemClock,
    )
    .expect("initialise the data directory");
    let root = initialised.root.credentials;
    let credentials = ClientCredentials {
        access_key_id: root.access_key_id,
        secret_access_key: root.secret_access_key,
        session_token: None,
        region: "local".into(),
    };
    let daemon = Daemon::start(&data_dir, &log, token.as_ref());
    let clients = [
        Client::connect(&daemon.endpoint, credentials.clone())
            .await
            .expect("connect"),
        Client::connect(&daemon.endpoint, credentials)
            .await
            .expect("connect"),
    ];
    let mut keys = Vec::new();
    for i in 0..INITIAL_KEYS {
        keys.push(
            create_key(&clients[0], &format!("soak {i}"))
                .await
                .expect("CreateKey"),
        );
    }
    let keys = Arc::new(Mutex::new(keys));
    println!(
        "soak: {seconds} s on the {backend} keystore, {tasks} clients over 2 connections, \
         daemon pid {}",
        daemon.child.id()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..tasks {
        workers.spawn(traffic(
            clients[i % clients.len()].clone(),
            keys.clone(),
            stop.clone(),
        ));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        samples.push(daemon.resident_kib());
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut tally = Tally::default();
    for worker in workers.join_all().await {
        for (operation, n) in worker.calls {
            *tally.calls.entry(operation).or_default() += n;
        }
        for (operation, n) in worker.errors {
            *tally.errors.entry(operation).or_default() += n;
        }
        tally.first_errors.extend(worker.first_errors);
    }
    let resident_at_end = daemon.resident_kib();
    daemon.terminate();

    let calls: u64 = tally.calls.values().sum();
    let errors: u64 = tally.errors.values().sum();
    println!(
        "soak: {calls} calls in {:.0} s ({:.0}/s), {errors} errors; by operation: {:?}",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        tally.calls
    );
    println!("soak: VmRSS each second (MiB):");
    for row in samples.chunks(10) {
        let row: Vec<String> = row
            .iter()
            .map(|kib| format!("{:6.1}", *kib as f64 / 1024.0))
            .collect();
        println!("  {}", row.join(" "));
    }
    let warm = setting("KEYHAVEN_SOAK_WARMUP_SECONDS").map_or(samples.len() / 5, |w| {
        w.parse()
            .unwrap_or_else(|_| panic!("KEYHAVEN_SOAK_WARMUP_SECONDS={w:?} is not a number"))
    });
    assert!(
        warm + samples.len() / 3 < samples.len(),
        "the warm-up leaves too little of the run to compare"
    );
    let baseline = mean(&samples[warm..warm + (samples.len() / 10).max(1)]);
    let last_third = mean(&samples[samples.len() - samples.len() / 3..]);
    let limit = baseline * (1.0 + GROWTH_FRACTION) + GROWTH_SLACK_MIB * 1024.0;
    println!(
        "soak: baseline after warm-up {:.1} MiB, mean of the last third {:.1} MiB ({:+.1} %), \
         limit {:.1} MiB; at the end {:.1} MiB",
        baseline / 1024.0,
        last_third / 1024.0,
        (last_third / baseline - 1.0) * 100.0,
        limit / 1024.0,
        resident_at_end as f64 / 1024.0
    );
    assert_eq!(
        errors, 0,
        "calls failed: {:?}; first: {:#?}",
        tally.errors, tally.first_errors
    );
    assert!(
        last_third <= limit,
        "resident memory grew after warm-up: {:.1} MiB → {:.1} MiB (limit {:.1} MiB)",
        baseline / 1024.0,
        last_third / 1024.0,
        limit / 1024.0
    );
}
