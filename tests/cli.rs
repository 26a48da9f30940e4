//! End-to-end tests of the `keyhaven` binary, run the way a user runs it: `init` a data
//! directory, start `serve` as a child process on an ephemeral port, and drive it with the
//! client subcommands, checking exit codes, stdout and stderr.
//!
//! Every test has its own temporary directory and its own daemon, and every spawned command
//! starts from an environment without `KEYHAVEN_*` variables, so nothing leaks in from the
//! shell that runs the tests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_keyhaven");
const PASSPHRASE: &str = "correct horse battery staple";
/// How long a daemon may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any one client command, or a graceful shutdown, may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const ENV_VARS: [&str; 6] = [
    "KEYHAVEN_ENDPOINT",
    "KEYHAVEN_ACCESS_KEY_ID",
    "KEYHAVEN_SECRET_ACCESS_KEY",
    "KEYHAVEN_SESSION_TOKEN",
    "KEYHAVEN_REGION",
    "KEYHAVEN_PASSPHRASE",
];

// ------------------------------------------------------------------------------ processes

/// `keyhaven` with a clean environment: no inherited `KEYHAVEN_*` (nor `RUST_LOG`).
fn keyhaven() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    for name in ENV_VARS {
        command.env_remove(name);
    }
    command.env_remove("RUST_LOG");
    command.env("NO_COLOR", "1");
    command
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for child {}: {e}", child.id()),
        }
    }
}

/// The outcome of one finished command.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|_| panic!("{:?}: stdout is not UTF-8: {:?}", self.args, self.stdout))
    }

    /// Asserts exit 0 and a silent stderr.
    fn success(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "{:?} failed\nstdout: {}\nstderr: {}",
            self.args,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        assert_eq!(self.stderr, "", "{:?} wrote to stderr", self.args);
        self
    }

    /// Asserts a non-zero exit (not a crash by signal), nothing on stdout and exactly one line
    /// on stderr; returns that line without the trailing newline.
    fn failure(&self) -> String {
        assert!(
            self.code.is_some_and(|code| code != 0),
            "{:?} should have failed with an exit code, got {:?}\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "{:?} failed but wrote to stdout: {}",
            self.args,
            String::from_utf8_lossy(&self.stdout)
        );
        let line = self
            .stderr
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{:?}: stderr {:?} is not one line", self.args, self.stderr));
        assert!(
            !line.contains('\n'),
            "{:?}: stderr is more than one line: {:?}",
            self.args,
            self.stderr
        );
        line.to_owned()
    }

    /// Asserts a failure reported as `keyhaven: <reason>: <message>`; returns the message.
    fn fails_with(&self, reason: &str) -> String {
        let line = self.failure();
        let prefix = format!("keyhaven: {reason}: ");
        let message = line.strip_prefix(&prefix).unwrap_or_else(|| {
            panic!(
                "{:?}: expected stderr to start with {prefix:?}, got {line:?}",
                self.args
            )
        });
        assert!(!message.is_empty(), "{:?}: empty error message", self.args);
        message.to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{:?}: stdout is not one JSON value ({e}): {}",
                self.args,
                String::from_utf8_lossy(&self.stdout)
            )
        })
    }
}

/// Runs `command` to completion with `stdin` as its standard input, within COMMAND_TIMEOUT.
fn run(mut command: Command, stdin: &[u8]) -> Run {
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN} {args:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        // The command may exit without reading everything (e.g. on a usage error).
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = err.read_to_end(&mut bytes);
        bytes
    });
    let Some(status) = wait_timeout(&mut child, COMMAND_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{BIN} {args:?} did not finish within {COMMAND_TIMEOUT:?}");
    };
    writer.join().expect("stdin writer");
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = String::from_utf8(err_reader.join().expect("stderr reader"))
        .unwrap_or_else(|e| panic!("{args:?}: stderr is not UTF-8: {e}"));
    Run {
        args,
        code: status.code(),
        stdout,
        stderr,
    }
}

/// `export NAME=VALUE` lines of `text`, by name.
fn exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------- daemon

/// A `keyhaven serve` child process: started, ready (its listening line read), killed on drop.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    stdout: Vec<String>,
    /// `127.0.0.1:PORT`, from the listening line.
    addr: String,
    log: PathBuf,
}

impl Daemon {
    /// `serve --data-dir DIR --listen 127.0.0.1:0` with the passphrase in KEYHAVEN_PASSPHRASE;
    /// its stderr (the logs) goes to `log`.
    fn start(data_dir: &Path, passphrase: &str, log: &Path) -> Daemon {
        let mut command = keyhaven();
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("KEYHAVEN_PASSPHRASE", passphrase);
        Daemon::spawn(command, log)
    }

    fn spawn(mut command: Command, log: &Path) -> Daemon {
        let log_file = File::create(log).expect("create the daemon's log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = command.spawn().expect("spawn keyhaven serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            lines,
            stdout: Vec::new(),
            addr: String::new(),
            log: log.to_path_buf(),
        };
        let line = daemon.wait_for_line(|line| line.starts_with("# listening on "));
        let addr = line["# listening on ".len()..].to_owned();
        let port: u16 = addr
            .strip_prefix("127.0.0.1:")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("listening line {line:?} is not 127.0.0.1:PORT"));
        assert_ne!(port, 0, "the daemon reports port 0: {line:?}");
        daemon.addr = addr;
        daemon
    }

    /// Reads stdout lines until one satisfies `wanted`; panics after READY_TIMEOUT or if the
    /// daemon exits first.
    fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the daemon printed no expected line within {READY_TIMEOUT:?}\nstdout: {:?}\nlog:\n{}",
                    self.stdout,
                    self.log()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = wait_timeout(&mut self.child, COMMAND_TIMEOUT);
                    panic!(
                        "the daemon exited ({status:?}) before printing the expected line\nstdout: {:?}\nlog:\n{}",
                        self.stdout,
                        self.log()
                    )
                }
            }
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        wait_timeout(&mut self.child, COMMAND_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "the daemon did not stop within {COMMAND_TIMEOUT:?} of SIGTERM\nlog:\n{}",
                self.log()
            )
        })
    }

    /// SIGKILL (`kill -9`): no chance to flush or close anything.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        let status = self.child.wait().expect("reap the daemon");
        assert_eq!(status.code(), None, "the daemon was not killed by a signal");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------- client

/// Root credentials as `init` prints them.
#[derive(Debug, Clone)]
struct Root {
    access_key_id: String,
    secret_access_key: String,
}

/// `keyhaven init --data-dir DIR` (human output); returns the printed credentials.
fn init(data_dir: &Path) -> Root {
    let mut command = keyhaven();
    command
        .arg("init")
        .arg("--data-dir")
        .arg(data_dir)
        .env("KEYHAVEN_PASSPHRASE", PASSPHRASE);
    let out = run(command, b"").success();
    let text = out.stdout_text();
    let vars = exports(&text);
    assert_eq!(
        vars.keys().collect::<Vec<_>>(),
        ["KEYHAVEN_ACCESS_KEY_ID", "KEYHAVEN_SECRET_ACCESS_KEY"],
        "init output: {text}"
    );
    Root {
        access_key_id: vars["KEYHAVEN_ACCESS_KEY_ID"].clone(),
        secret_access_key: vars["KEYHAVEN_SECRET_ACCESS_KEY"].clone(),
    }
}

/// A configured client: what a user exports before running client subcommands.
#[derive(Debug, Clone)]
struct Client {
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Client {
    fn new(daemon: &Daemon, root: &Root) -> Client {
        Client {
            endpoint: daemon.endpoint(),
            access_key_id: root.access_key_id.clone(),
            secret_access_key: root.secret_access_key.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = keyhaven();
        command
            .args(args)
            .env("KEYHAVEN_ENDPOINT", &self.endpoint)
            .env("KEYHAVEN_ACCESS_KEY_ID", &self.access_key_id)
            .env("KEYHAVEN_SECRET_ACCESS_KEY", &self.secret_access_key);
        command
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(self.command(args), stdin)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        self.run(args, stdin).success().stdout
    }

    /// Runs a command with `--output json` that must succeed; returns its JSON.
    fn json(&self, args: &[&str], stdin: &[u8]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        self.run(&args, stdin).success().json()
    }

    /// `encrypt --key KEY [--context …]`: the base64 blob printed (one line).
    fn encrypt(&self, key: &str, context: &[&str], plaintext: &[u8]) -> String {
        let mut args = vec!["encrypt", "--key", key];
        for pair in context {
            args.extend(["--context", pair]);
        }
        let out = self.run(&args, plaintext).success();
        let text = out.stdout_text();
        let blob = text
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("encrypt output {text:?} does not end in a newline"));
        assert!(
            !blob.contains('\n'),
            "encrypt printed several lines: {text:?}"
        );
        let raw = B64
            .decode(blob)
            .unwrap_or_else(|e| panic!("encrypt printed {blob:?}, not base64: {e}"));
        assert_eq!(raw.len(), 33 + plaintext.len() + 16, "blob length");
        blob.to_owned()
    }

    /// `decrypt [--context …]` of `blob`: the raw plaintext printed.
    fn decrypt(&self, blob: &str, context: &[&str]) -> Vec<u8> {
        self.ok(&decrypt_args(context), format!("{blob}\n").as_bytes())
    }

    fn describe(&self, key: &str) -> Value {
        let value = self.json(&["key", "describe", key], b"");
        value["KeyMetadata"].clone()
    }

    fn create_key(&self, extra: &[&str]) -> String {
        let mut args = vec!["key", "create"];
        args.extend(extra);
        let metadata = self.json(&args, b"")["KeyMetadata"].clone();
        assert_eq!(metadata["KeyState"], "Enabled", "{metadata}");
        key_id(&metadata)
    }
}

fn decrypt_args<'a>(context: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["decrypt"];
    for pair in context {
        args.extend(["--context", pair]);
    }
    args
}

/// `KeyMetadata.KeyId`, checked to be a UUID in its canonical (lower-case, hyphenated) form.
fn key_id(metadata: &Value) -> String {
    let id = metadata["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no KeyId in {metadata}"));
    let uuid = Uuid::parse_str(id).unwrap_or_else(|e| panic!("KeyId {id:?} is not a UUID: {e}"));
    assert_eq!(uuid.hyphenated().to_string(), id, "KeyId is not canonical");
    id.to_owned()
}

fn b64(value: &Value) -> Vec<u8> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    B64.decode(text)
        .unwrap_or_else(|e| panic!("{text:?} is not base64: {e}"))
}

fn rfc3339(value: &Value) -> OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a date string"));
    OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not an RFC 3339 date: {e}"))
}

/// The key id (bytes 1–16) and key version (bytes 17–20) in a version-1 ciphertext blob.
fn blob_header(blob: &str) -> (Uuid, u32) {
    let raw = B64.decode(blob.trim()).expect("blob is base64");
    assert!(raw.len() > 33 + 16, "blob too short: {} bytes", raw.len());
    assert_eq!(raw[0], 1, "blob format version");
    let id = Uuid::from_slice(&raw[1..17]).expect("16 bytes");
    let version = u32::from_be_bytes(raw[17..21].try_into().expect("4 bytes"));
    (id, version)
}

// ------------------------------------------------------------------------------- snapshots

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        len: u64,
        sha256: String,
        modified: SystemTime,
    },
    Other,
}

/// Every path under `root` (relative), with each file's size, SHA-256, mode and mtime.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Entry>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                into.insert(relative, Entry::Dir { mode });
                walk(root, &path, into);
            } else if meta.is_file() {
                let bytes = fs::read(&path).expect("read file");
                into.insert(
                    relative,
                    Entry::File {
                        mode,
                        len: meta.len(),
                        sha256: hex::encode(Sha256::digest(&bytes)),
                        modified: meta.modified().expect("mtime"),
                    },
                );
            } else {
                into.insert(relative, Entry::Other);
            }
        }
    }
    let mut entries = BTreeMap::new();
    walk(root, root, &mut entries);
    entries
}

// ----------------------------------------------------------------------------------- tests

/// The walkthrough a new user follows: init, serve, create a key, encrypt and decrypt with an
/// encryption context, data keys, random bytes, and a scheduled deletion taken back.
#[test]
fn readme_walkthrough() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");

    // init, with the global --output flag before the subcommand.
    let mut command = keyhaven();
    command
        .args(["--output", "json", "init", "--data-dir"])
        .arg(&data)
        .env("KEYHAVEN_PASSPHRASE", PASSPHRASE);
    let initialised = run(command, b"").success().json();
    let account = initialised["AccountId"].as_str().expect("AccountId");
    assert_eq!(account.len(), 12, "AccountId {account:?}");
    assert!(account.bytes().all(|b| b.is_ascii_digit()), "{account:?}");
    assert_eq!(
        initialised["Arn"],
        format!("arn:keyhaven:iam::{account}:root")
    );
    let access_key = &initialised["AccessKey"];
    let root = Root {
        access_key_id: access_key["AccessKeyId"].as_str().expect("id").to_owned(),
        secret_access_key: access_key["SecretAccessKey"]
            .as_str()
            .expect("secret")
            .to_owned(),
    };
    assert!(!root.access_key_id.is_empty());
    assert!(root.secret_access_key.len() >= 20, "{access_key}");
    assert_eq!(access_key["Status"], "Active");
    assert!(data.join("seal.json").is_file());

    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);

    // A key with an alias and a tag.
    let created = kh.json(
        &[
            "key",
            "create",
            "--description",
            "walkthrough key",
            "--alias",
            "alias/walkthrough",
            "--tag",
            "team=platform",
        ],
        b"",
    );
    let metadata = &created["KeyMetadata"];
    let key = key_id(metadata);
    assert_eq!(metadata["KeyState"], "Enabled");
    assert_eq!(metadata["Enabled"], true);
    assert_eq!(metadata["Description"], "walkthrough key");
    assert_eq!(metadata["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(metadata["KeySpec"], "SYMMETRIC_DEFAULT");
    assert_eq!(metadata["AWSAccountId"], account);
    let arn = format!("arn:keyhaven:kms:local:{account}:key/{key}");
    assert_eq!(metadata["Arn"], arn);
    assert!(metadata.get("DeletionDate").is_none(), "{metadata}");

    let tags = kh.json(&["key", "tags", &key], b"");
    assert_eq!(
        tags["Tags"],
        serde_json::json!([{"TagKey": "team", "TagValue": "platform"}])
    );
    let aliases = kh.json(&["alias", "list", "--key", &key], b"");
    let aliases = aliases["Aliases"].as_array().expect("Aliases");
    assert_eq!(aliases.len(), 1, "{aliases:?}");
    assert_eq!(aliases[0]["AliasName"], "alias/walkthrough");
    assert_eq!(aliases[0]["TargetKeyId"], key.as_str());
    let listed = kh.json(&["key", "list"], b"");
    assert_eq!(
        listed["Keys"],
        serde_json::json!([{"KeyId": key, "KeyArn": arn}])
    );

    // Encrypt stdin (binary, with a trailing newline) through the alias, with a context.
    let secret: &[u8] = b"attack at dawn\n\x00\xff\xfe tail\n";
    let blob = kh.encrypt("alias/walkthrough", &["purpose=demo", "app=cli"], secret);
    assert_eq!(blob_header(&blob), (Uuid::parse_str(&key).unwrap(), 1));
    // Fresh nonce each time: the same plaintext never gives the same blob.
    let again = kh.encrypt(&key, &["purpose=demo", "app=cli"], secret);
    assert_ne!(blob, again);

    // The same bytes come back, whatever the order of the context pairs.
    assert_eq!(kh.decrypt(&blob, &["purpose=demo", "app=cli"]), secret);
    assert_eq!(kh.decrypt(&again, &["app=cli", "purpose=demo"]), secret);

    // Any other context is the same InvalidCiphertextException.
    for context in [
        &["purpose=other", "app=cli"][..],
        &["purpose=demo"][..],
        &[][..],
        &["purpose=demo", "app=cli", "extra=1"][..],
    ] {
        kh.run(&decrypt_args(context), blob.as_bytes())
            .fails_with("InvalidCiphertextException");
    }
    // So is a tampered blob.
    let mut tampered = B64.decode(&blob).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    kh.run(
        &decrypt_args(&["purpose=demo", "app=cli"]),
        B64.encode(&tampered).as_bytes(),
    )
    .fails_with("InvalidCiphertextException");

    // A data key: 32 plaintext bytes, and a blob that decrypts to them.
    let data_key = kh.json(&["data-key", "--key", "alias/walkthrough"], b"");
    let plaintext = b64(&data_key["Plaintext"]);
    assert_eq!(plaintext.len(), 32);
    assert_eq!(data_key["KeyId"], arn);
    let data_key_blob = data_key["CiphertextBlob"].as_str().expect("blob");
    assert_eq!(blob_header(data_key_blob).0, Uuid::parse_str(&key).unwrap());
    let decrypted = kh.json(&["decrypt"], data_key_blob.as_bytes());
    assert_eq!(decrypted["Plaintext"], data_key["Plaintext"]);
    assert_eq!(b64(&decrypted["Plaintext"]), plaintext);
    assert_eq!(decrypted["KeyId"], arn);
    // Without --output json, decrypt prints the raw bytes.
    assert_eq!(kh.decrypt(data_key_blob, &[]), plaintext);

    let aes_128 = kh.json(&["data-key", "--key", &key, "--spec", "AES_128"], b"");
    assert_eq!(b64(&aes_128["Plaintext"]).len(), 16);
    let aes_128_blob = aes_128["CiphertextBlob"].as_str().expect("blob");
    assert_eq!(
        kh.decrypt(aes_128_blob, &[]),
        b64(&aes_128["Plaintext"]),
        "the AES_128 data key's blob"
    );

    // random 16: one base64 line of 16 bytes, different each time.
    let random = |kh: &Client| {
        let out = kh.run(&["random", "16"], b"").success().stdout_text();
        let line = out.strip_suffix('\n').expect("newline-terminated");
        let bytes = B64.decode(line).expect("base64");
        assert_eq!(bytes.len(), 16, "{out:?}");
        bytes
    };
    assert_ne!(random(&kh), random(&kh));

    // Schedule the deletion: PendingDeletion, with a date seven days out.
    let before = OffsetDateTime::now_utc();
    let scheduled = kh.json(
        &[
            "key",
            "schedule-deletion",
            "alias/walkthrough",
            "--pending-days",
            "7",
        ],
        b"",
    );
    let after = OffsetDateTime::now_utc();
    assert_eq!(scheduled["KeyState"], "PendingDeletion");
    assert_eq!(scheduled["KeyId"], arn);
    assert_eq!(scheduled["PendingWindowInDays"], 7);
    let deletion_date = rfc3339(&scheduled["DeletionDate"]);
    let week = time::Duration::days(7);
    assert!(
        deletion_date >= before + week - time::Duration::seconds(2)
            && deletion_date <= after + week + time::Duration::seconds(2),
        "DeletionDate {deletion_date} is not 7 days after {before}"
    );
    let pending = kh.describe(&key);
    assert_eq!(pending["KeyState"], "PendingDeletion");
    assert_eq!(pending["Enabled"], false);
    assert_eq!(pending["DeletionDate"], scheduled["DeletionDate"]);
    assert_eq!(pending["PendingDeletionWindowInDays"], 7);

    // A key pending deletion neither encrypts nor decrypts.
    let message = kh
        .run(&["encrypt", "--key", "alias/walkthrough"], b"more")
        .fails_with("KMSInvalidStateException");
    assert!(message.contains("PendingDeletion"), "{message}");
    kh.run(&decrypt_args(&["purpose=demo", "app=cli"]), blob.as_bytes())
        .fails_with("KMSInvalidStateException");
    kh.run(&["data-key", "--key", &key], b"")
        .fails_with("KMSInvalidStateException");

    // Cancel: the key comes back Disabled, without a deletion date.
    let cancelled = kh.json(&["key", "cancel-deletion", &key], b"");
    assert_eq!(cancelled["KeyId"], arn);
    let disabled = kh.describe("alias/walkthrough");
    assert_eq!(disabled["KeyState"], "Disabled");
    assert_eq!(disabled["Enabled"], false);
    assert!(disabled.get("DeletionDate").is_none(), "{disabled}");
    kh.run(&["encrypt", "--key", &key], b"more")
        .fails_with("KMSInvalidStateException");

    // Enable: it works again, and the old ciphertext still decrypts.
    let enabled = kh.run(&["key", "enable", &key], b"").success();
    assert_eq!(enabled.stdout_text(), format!("Key {key} enabled\n"));
    assert_eq!(kh.describe(&key)["KeyState"], "Enabled");
    let fresh = kh.encrypt("alias/walkthrough", &[], b"after re-enabling");
    assert_eq!(kh.decrypt(&fresh, &[]), b"after re-enabling");
    assert_eq!(kh.decrypt(&blob, &["purpose=demo", "app=cli"]), secret);

    assert_eq!(daemon.terminate().code(), Some(0), "exit after SIGTERM");
}

/// Refused requests report the right reason and change nothing.
#[test]
fn refusals_keep_state() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);
    let key = kh.create_key(&["--alias", "alias/kept"]);

    for days in ["6", "31", "0"] {
        let message = kh
            .run(
                &["key", "schedule-deletion", &key, "--pending-days", days],
                b"",
            )
            .fails_with("ValidationException");
        assert!(message.contains(days), "{message}");
        let metadata = kh.describe(&key);
        assert_eq!(
            metadata["KeyState"], "Enabled",
            "after --pending-days {days}"
        );
        assert!(metadata.get("DeletionDate").is_none(), "{metadata}");
    }

    let unknown = "0b4b6a45-5e8f-4c2e-9a3b-1c2d3e4f5a6b";
    let message = kh
        .run(&["key", "describe", unknown], b"")
        .fails_with("NotFoundException");
    assert!(message.contains(unknown), "{message}");
    kh.run(&["key", "describe", "alias/missing"], b"")
        .fails_with("NotFoundException");
    kh.run(&["encrypt", "--key", unknown], b"x")
        .fails_with("NotFoundException");

    // Plaintext limit: 4096 bytes pass, 4097 do not; nor does nothing at all.
    let at_limit = vec![0x5a; 4096];
    let blob = kh.encrypt(&key, &[], &at_limit);
    assert_eq!(kh.decrypt(&blob, &[]), at_limit);
    let message = kh
        .run(&["encrypt", "--key", &key], &[0x5a; 4097])
        .fails_with("ValidationException");
    assert!(message.contains("4097"), "{message}");
    kh.run(&["encrypt", "--key", &key], b"")
        .fails_with("ValidationException");

    for bytes in ["0", "1025"] {
        kh.run(&["random", bytes], b"")
            .fails_with("ValidationException");
    }
    kh.run(&["data-key", "--key", &key, "--spec", "AES_512"], b"")
        .fails_with("ValidationException");
    kh.run(&["alias", "create", "alias/kept", "--key", &key], b"")
        .fails_with("AlreadyExistsException");
    kh.run(&["alias", "create", "no-prefix", "--key", &key], b"")
        .fails_with("ValidationException");
    kh.run(&["key", "cancel-deletion", &key], b"")
        .fails_with("KMSInvalidStateException");

    // Nothing changed: still one key, Enabled, reachable by its alias, encrypting.
    let metadata = kh.describe("alias/kept");
    assert_eq!(metadata["KeyState"], "Enabled");
    assert_eq!(metadata["KeyId"], key.as_str());
    assert_eq!(metadata["CurrentKeyVersion"], 1);
    let keys = kh.json(&["key", "list"], b"");
    assert_eq!(keys["Keys"].as_array().map(Vec::len), Some(1), "{keys}");
    let aliases = kh.json(&["alias", "list"], b"");
    assert_eq!(aliases["Aliases"].as_array().map(Vec::len), Some(1));
    let blob = kh.encrypt("alias/kept", &[], b"still fine");
    assert_eq!(kh.decrypt(&blob, &[]), b"still fine");
}

/// Rotation, server-side re-encryption and moving aliases.
#[test]
fn rotation_re_encryption_and_aliases() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);
    let first = kh.create_key(&["--alias", "alias/current"]);
    let second = kh.create_key(&[]);

    let v1 = kh.encrypt("alias/current", &["k=v"], b"version one");
    assert_eq!(blob_header(&v1).1, 1);
    let rotated = kh.json(&["key", "rotate", &first], b"");
    assert_eq!(rotated["KeyVersion"], 2);
    assert_eq!(kh.describe(&first)["CurrentKeyVersion"], 2);
    let v2 = kh.encrypt("alias/current", &["k=v"], b"version two");
    assert_eq!(blob_header(&v2), (Uuid::parse_str(&first).unwrap(), 2));
    assert_eq!(kh.decrypt(&v1, &["k=v"]), b"version one");
    assert_eq!(kh.decrypt(&v2, &["k=v"]), b"version two");

    // Re-encrypt the old ciphertext under the second key with a new context.
    let moved = kh.json(
        &[
            "re-encrypt",
            "--key",
            &second,
            "--context",
            "k=v",
            "--new-context",
            "moved=yes",
        ],
        v1.as_bytes(),
    );
    let moved_blob = moved["CiphertextBlob"].as_str().expect("blob");
    assert_eq!(blob_header(moved_blob).0, Uuid::parse_str(&second).unwrap());
    assert!(moved["SourceKeyId"].as_str().unwrap().ends_with(&first));
    assert!(moved["KeyId"].as_str().unwrap().ends_with(&second));
    assert_eq!(kh.decrypt(moved_blob, &["moved=yes"]), b"version one");
    kh.run(&decrypt_args(&["k=v"]), moved_blob.as_bytes())
        .fails_with("InvalidCiphertextException");

    // Point the alias at the second key; encryption through it follows.
    kh.ok(&["alias", "update", "alias/current", "--key", &second], b"");
    let via_alias = kh.encrypt("alias/current", &[], b"x");
    assert_eq!(blob_header(&via_alias).0, Uuid::parse_str(&second).unwrap());
    kh.ok(&["alias", "create", "alias/extra", "--key", &first], b"");
    let aliases = kh.json(&["alias", "list"], b"");
    let mut pairs: Vec<(String, String)> = aliases["Aliases"]
        .as_array()
        .expect("Aliases")
        .iter()
        .map(|a| {
            (
                a["AliasName"].as_str().unwrap().to_owned(),
                a["TargetKeyId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("alias/current".to_owned(), second.clone()),
            ("alias/extra".to_owned(), first.clone())
        ]
    );
    kh.ok(&["alias", "delete", "alias/current"], b"");
    kh.run(&["encrypt", "--key", "alias/current"], b"x")
        .fails_with("NotFoundException");
    // Deleting an alias leaves its key alone.
    assert_eq!(kh.describe(&second)["KeyState"], "Enabled");

    // data-key --without-plaintext: only a blob, which decrypts to --bytes N bytes.
    let without = kh.json(
        &[
            "data-key",
            "--key",
            "alias/extra",
            "--bytes",
            "7",
            "--without-plaintext",
        ],
        b"",
    );
    assert!(without.get("Plaintext").is_none(), "{without}");
    let blob = without["CiphertextBlob"].as_str().expect("blob");
    assert_eq!(kh.decrypt(blob, &[]).len(), 7);
}

/// A daemon killed with SIGKILL loses nothing it acknowledged.
#[test]
fn restart_after_sigkill_keeps_keys_and_ciphertexts() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve-1.log"));
    let kh = Client::new(&daemon, &root);

    // One key Enabled, with ciphertexts under two versions.
    let enabled = kh.create_key(&["--alias", "alias/survivor", "--description", "enabled"]);
    let mut ciphertexts = Vec::new();
    for i in 0..3 {
        let plaintext = format!("before rotation #{i}").into_bytes();
        let blob = kh.encrypt(&enabled, &[&format!("n={i}")], &plaintext);
        ciphertexts.push((blob, format!("n={i}"), plaintext));
    }
    kh.ok(&["key", "rotate", &enabled], b"");
    for i in 3..5 {
        let plaintext = format!("after rotation #{i}").into_bytes();
        let blob = kh.encrypt("alias/survivor", &[&format!("n={i}")], &plaintext);
        ciphertexts.push((blob, format!("n={i}"), plaintext));
    }
    // One Disabled, with a ciphertext made before it was disabled.
    let disabled = kh.create_key(&["--description", "disabled"]);
    let disabled_blob = kh.encrypt(&disabled, &[], b"under the disabled key");
    kh.ok(&["key", "disable", &disabled], b"");
    // One PendingDeletion; the last acknowledged change before the kill.
    let pending = kh.create_key(&["--description", "pending"]);
    let scheduled = kh.json(
        &["key", "schedule-deletion", &pending, "--pending-days", "10"],
        b"",
    );
    daemon.kill9();

    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve-2.log"));
    let kh = Client::new(&daemon, &root);

    let mut listed: Vec<String> = kh.json(&["key", "list"], b"")["Keys"]
        .as_array()
        .expect("Keys")
        .iter()
        .map(|k| k["KeyId"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = vec![enabled.clone(), disabled.clone(), pending.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let metadata = kh.describe("alias/survivor");
    assert_eq!(metadata["KeyId"], enabled.as_str());
    assert_eq!(metadata["KeyState"], "Enabled");
    assert_eq!(metadata["CurrentKeyVersion"], 2);
    assert_eq!(metadata["Description"], "enabled");
    let metadata = kh.describe(&disabled);
    assert_eq!(metadata["KeyState"], "Disabled");
    let metadata = kh.describe(&pending);
    assert_eq!(metadata["KeyState"], "PendingDeletion");
    assert_eq!(metadata["DeletionDate"], scheduled["DeletionDate"]);
    assert_eq!(metadata["PendingDeletionWindowInDays"], 10);

    for (blob, context, plaintext) in &ciphertexts {
        assert_eq!(&kh.decrypt(blob, &[context]), plaintext, "{context}");
    }
    let next = kh.encrypt(&enabled, &[], b"after the restart");
    assert_eq!(blob_header(&next).1, 2, "encrypts under the newest version");
    assert_eq!(kh.decrypt(&next, &[]), b"after the restart");

    kh.run(&["encrypt", "--key", &disabled], b"x")
        .fails_with("KMSInvalidStateException");
    kh.run(&["encrypt", "--key", &pending], b"x")
        .fails_with("KMSInvalidStateException");
    // The other states' material survived too.
    kh.ok(&["key", "enable", &disabled], b"");
    assert_eq!(
        kh.decrypt(&disabled_blob, &[]),
        b"under the disabled key".to_vec()
    );
    kh.ok(&["key", "cancel-deletion", &pending], b"");
    kh.ok(&["key", "enable", &pending], b"");
    let blob = kh.encrypt(&pending, &[], b"rescued");
    assert_eq!(kh.decrypt(&blob, &[]), b"rescued");

    let log = daemon.log();
    assert!(log.contains("every key's material checked"), "log:\n{log}");
    assert!(!log.contains("key material missing"), "log:\n{log}");
}

/// A wrong passphrase is refused before anything in the data directory is touched.
#[test]
fn wrong_passphrase_refuses_to_start_and_changes_nothing() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    // Put some state in the store first, and stop the daemon cleanly.
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve-1.log"));
    let kh = Client::new(&daemon, &root);
    let key = kh.create_key(&["--alias", "alias/sealed"]);
    let blob = kh.encrypt(&key, &[], b"sealed away");
    assert_eq!(daemon.terminate().code(), Some(0));

    let before = snapshot(&data);
    assert!(before.contains_key(Path::new("seal.json")), "{before:?}");
    assert!(
        before.keys().any(|path| path.starts_with("store")),
        "{before:?}"
    );

    let serve = |configure: &dyn Fn(&mut Command)| {
        let mut command = keyhaven();
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"]);
        configure(&mut command);
        run(command, b"")
    };

    // From the environment.
    let out = serve(&|c| {
        c.env("KEYHAVEN_PASSPHRASE", "not the passphrase");
    });
    let line = out.failure();
    assert!(line.starts_with("keyhaven: "), "{line:?}");
    assert!(line.contains("passphrase"), "{line:?}");
    assert_eq!(
        snapshot(&data),
        before,
        "a wrong passphrase changed the data"
    );

    // From a file.
    let file = work.path().join("passphrase.txt");
    fs::write(&file, "also not it\n").expect("write passphrase file");
    let out = serve(&|c| {
        c.arg("--passphrase-file").arg(&file);
    });
    assert!(out.failure().contains("passphrase"), "{out:?}");
    assert_eq!(snapshot(&data), before);

    // None at all, and no terminal to ask on.
    let out = serve(&|_| {});
    let line = out.failure();
    assert!(
        line.contains("passphrase") && line.contains("KEYHAVEN_PASSPHRASE"),
        "{line:?}"
    );
    assert_eq!(snapshot(&data), before);

    // The right passphrase still opens it, with the key intact.
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve-2.log"));
    let kh = Client::new(&daemon, &root);
    assert_eq!(kh.decrypt(&blob, &[]), b"sealed away");
    assert_eq!(kh.describe("alias/sealed")["KeyId"], key.as_str());
}

/// `serve --dev` with TMPDIR `work/tmp` (its data directory goes there) and its log in
/// `work/serve.log`, once it has printed a line starting with `last`.
fn dev_daemon(work: &TempDir, last: &str) -> Daemon {
    let tmp = work.path().join("tmp");
    fs::create_dir(&tmp).expect("mkdir tmp");
    let mut command = keyhaven();
    command
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("TMPDIR", &tmp);
    let mut daemon = Daemon::spawn(command, &work.path().join("serve.log"));
    daemon.wait_for_line(|line| line.starts_with(last));
    daemon
}

/// `serve --dev`: a throwaway daemon whose export lines are all a client needs.
#[test]
fn serve_dev_prints_working_exports() {
    let work = TempDir::new().expect("tempdir");
    let tmp = work.path().join("tmp");
    let daemon = dev_daemon(&work, "export KEYHAVEN_SECRET_ACCESS_KEY=");
    let stdout = daemon.stdout.join("\n");

    let vars = exports(&stdout);
    // The AWS_* lines that follow are the AWS door's (tests/aws_door.rs).
    assert_eq!(
        vars.keys()
            .filter(|name| name.starts_with("KEYHAVEN_"))
            .collect::<Vec<_>>(),
        [
            "KEYHAVEN_ACCESS_KEY_ID",
            "KEYHAVEN_ENDPOINT",
            "KEYHAVEN_SECRET_ACCESS_KEY"
        ],
        "{stdout}"
    );
    assert_eq!(vars["KEYHAVEN_ENDPOINT"], daemon.endpoint());
    // Its data directory is a fresh one under TMPDIR.
    let dev_dir = stdout
        .lines()
        .find_map(|line| line.split_once("throwaway data in "))
        .and_then(|(_, rest)| rest.split_once(" (removed on exit)"))
        .map(|(dir, _)| PathBuf::from(dir))
        .unwrap_or_else(|| panic!("no data directory in {stdout}"));
    assert!(dev_dir.starts_with(&tmp), "{}", dev_dir.display());
    assert!(dev_dir.join("seal.json").is_file());

    let kh = Client {
        endpoint: vars["KEYHAVEN_ENDPOINT"].clone(),
        access_key_id: vars["KEYHAVEN_ACCESS_KEY_ID"].clone(),
        secret_access_key: vars["KEYHAVEN_SECRET_ACCESS_KEY"].clone(),
    };
    let key = kh.create_key(&["--alias", "alias/dev"]);
    let blob = kh.encrypt("alias/dev", &["env=dev"], b"dev mode works");
    assert_eq!(blob_header(&blob).0, Uuid::parse_str(&key).unwrap());
    assert_eq!(kh.decrypt(&blob, &["env=dev"]), b"dev mode works");

    assert_eq!(daemon.terminate().code(), Some(0));
    assert!(
        !dev_dir.exists(),
        "the dev data directory outlived the daemon"
    );
}

/// One HTTP/1.1 request over a fresh connection; the status line and the body.
fn http(address: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// `serve --dev` prints the console's address and a user to sign in with, who may do
/// everything there.
#[test]
fn serve_dev_prints_a_console_to_sign_in_to() {
    let work = TempDir::new().expect("tempdir");
    let daemon = dev_daemon(&work, "#   sign in with");
    let stdout = daemon.stdout.join("\n");
    let address = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# The web console: http://"))
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no console address in {stdout}"))
        .to_owned();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("#   sign in with account "))
        .unwrap_or_else(|| panic!("no sign-in line in {stdout}"));
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    assert_eq!(words[1..3], ["user", "admin"], "{line}");
    let (account, password) = (words[0], words[4]);
    let form = serde_json::json!({"Account": account, "UserName": "admin", "Password": password})
        .to_string();
    let (status, body) = http(
        &address,
        &format!(
            "POST /api/sign-in HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             X-Keyhaven-Console: 1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert!(status.contains(" 200 "), "{status} {body}");
    let session: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        session["Arn"],
        format!("arn:keyhaven:iam::{account}:user/admin")
    );
    let (status, page) = http(
        &address,
        &format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        status.contains(" 200 ") && page.contains("/assets/core.js"),
        "{status}"
    );
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// Without credentials nothing is sent; with a wrong secret the daemon refuses and does nothing.
#[test]
fn missing_or_wrong_credentials_are_refused() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);

    let mut command = kh.command(&["key", "create"]);
    command.env_remove("KEYHAVEN_ACCESS_KEY_ID");
    let out = run(command, b"");
    let line = out.failure();
    assert!(line.starts_with("keyhaven: "), "{line:?}");
    assert!(line.contains("KEYHAVEN_ACCESS_KEY_ID"), "{line:?}");

    let mut command = kh.command(&["key", "create"]);
    command.env("KEYHAVEN_ACCESS_KEY_ID", "");
    assert!(
        run(command, b"")
            .failure()
            .contains("KEYHAVEN_ACCESS_KEY_ID")
    );

    let mut command = kh.command(&["key", "list"]);
    command.env_remove("KEYHAVEN_SECRET_ACCESS_KEY");
    assert!(
        run(command, b"")
            .failure()
            .contains("KEYHAVEN_SECRET_ACCESS_KEY")
    );

    let wrong_secret = Client {
        secret_access_key: format!("{}x", root.secret_access_key),
        ..kh.clone()
    };
    wrong_secret
        .run(&["key", "create", "--alias", "alias/intruder"], b"")
        .fails_with("InvalidSignatureException");
    wrong_secret
        .run(&["random", "8"], b"")
        .fails_with("InvalidSignatureException");

    let unknown_id = Client {
        access_key_id: "KHAKAAAAAAAAAAAAAAAA".into(),
        ..kh.clone()
    };
    unknown_id
        .run(&["key", "list"], b"")
        .fails_with("UnrecognizedClientException");

    // The refused create made nothing.
    let keys = kh.json(&["key", "list"], b"");
    assert_eq!(keys["Keys"], serde_json::json!([]), "{keys}");
    let aliases = kh.json(&["alias", "list"], b"");
    assert_eq!(aliases["Aliases"], serde_json::json!([]), "{aliases}");
}

/// `init` refuses an initialised directory (leaving it as it was) and a short passphrase.
#[test]
fn init_twice_or_with_a_short_passphrase_fails() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    init(&data);
    let before = snapshot(&data);

    for passphrase in [PASSPHRASE, "a different passphrase"] {
        let mut command = keyhaven();
        command
            .args(["init", "--output", "json", "--data-dir"])
            .arg(&data)
            .env("KEYHAVEN_PASSPHRASE", passphrase);
        let out = run(command, b"");
        let line = out.failure();
        assert_eq!(
            line,
            format!("keyhaven: {} is already initialised", data.display())
        );
        assert_eq!(snapshot(&data), before, "a second init changed the data");
    }

    let short = work.path().join("short");
    // Seven characters (fourteen bytes): too short, counted in characters.
    for passphrase in ["1234567", "ééééééé", ""] {
        let mut command = keyhaven();
        command
            .arg("init")
            .arg("--data-dir")
            .arg(&short)
            .env("KEYHAVEN_PASSPHRASE", passphrase);
        let out = run(command, b"");
        assert_eq!(
            out.failure(),
            "keyhaven: the passphrase must be at least 8 characters",
            "passphrase {passphrase:?}"
        );
        assert!(!short.join("seal.json").exists());
    }
    // Eight is enough.
    let mut command = keyhaven();
    command
        .arg("init")
        .arg("--data-dir")
        .arg(&short)
        .env("KEYHAVEN_PASSPHRASE", "12345678");
    let out = run(command, b"").success();
    let text = out.stdout_text();
    assert!(text.starts_with("# Initialised "), "{text}");
    assert_eq!(exports(&text).len(), 2, "{text}");
    assert!(short.join("seal.json").is_file());
}

/// An `init` that fails part-way must not leave a half-initialised directory behind: the
/// root credentials were never shown, so a retry (once the problem is fixed) must work.
#[test]
fn failed_init_leaves_no_half_initialised_directory() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    fs::create_dir(&data).expect("mkdir data");
    // A regular file where the metadata store's directory must go.
    fs::write(data.join("store"), b"in the way").expect("write obstacle");
    let init_command = || {
        let mut command = keyhaven();
        command
            .arg("init")
            .arg("--data-dir")
            .arg(&data)
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE);
        command
    };
    let out = run(init_command(), b"");
    let line = out.failure();
    assert!(line.contains("store"), "{line:?}");
    assert!(
        !data.join("seal.json").exists(),
        "a failed init left a seal behind"
    );

    fs::remove_file(data.join("store")).expect("remove obstacle");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);
    assert_eq!(
        kh.json(&["key", "list"], b"")["Keys"],
        serde_json::json!([])
    );
}

/// Access control from the command line, as an operator would set it up: a user with an
/// access key, an inline policy, the simulator, a role assumed for temporary credentials, and
/// a key policy guarded by the lockout check.
#[test]
fn access_control_from_the_command_line() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);
    let key = kh.json(&["key", "create", "--description", "shared"], b"")["KeyMetadata"].clone();
    let key_id = key["KeyId"].as_str().unwrap().to_owned();
    let key_arn = key["Arn"].as_str().unwrap().to_owned();

    let user = kh.json(&["user", "create", "alice"], b"");
    let alice_arn = user["User"]["Arn"].as_str().unwrap().to_owned();
    assert!(alice_arn.ends_with(":user/alice"), "{user}");
    let created = kh.json(&["access-key", "create", "--user", "alice"], b"");
    let alice = Client {
        endpoint: daemon.endpoint(),
        access_key_id: created["AccessKey"]["AccessKeyId"].as_str().unwrap().into(),
        secret_access_key: created["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .into(),
    };
    assert_eq!(alice.json(&["whoami"], b"")["Arn"], alice_arn.as_str());
    // A new user can do nothing.
    let denied = alice
        .run(&["key", "list"], b"")
        .fails_with("AccessDeniedException");
    assert!(denied.contains("kms:ListKeys"), "{denied}");
    alice
        .run(&["encrypt", "--key", &key_id], b"x")
        .fails_with("AccessDeniedException");

    let policy = work.path().join("encrypt-only.json");
    fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"EncryptOnly","Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#,
    )
    .unwrap();
    let policy_arg = policy.to_str().unwrap();
    kh.ok(
        &[
            "user",
            "put-policy",
            "alice",
            "--policy-name",
            "encrypt-only",
            "--policy-file",
            policy_arg,
        ],
        b"",
    );
    let blob = alice.encrypt(&key_id, &[], b"for the root's eyes");
    alice
        .run(&["decrypt"], blob.as_bytes())
        .fails_with("AccessDeniedException");
    assert_eq!(kh.ok(&["decrypt"], blob.as_bytes()), b"for the root's eyes");

    let simulate = |action: &str| {
        kh.json(
            &[
                "policy",
                "simulate",
                "--principal",
                &alice_arn,
                "--action",
                action,
                "--resource",
                &key_arn,
            ],
            b"",
        )
    };
    let allowed = simulate("kms:Encrypt");
    assert_eq!(allowed["EvalDecision"], "allowed");
    assert_eq!(allowed["MatchedStatements"][0]["Sid"], "EncryptOnly");
    assert_eq!(
        allowed["MatchedStatements"][0]["SourcePolicyId"],
        "user/alice/encrypt-only"
    );
    assert_eq!(simulate("kms:Decrypt")["EvalDecision"], "implicitDeny");

    // A role alice may assume; its sessions may decrypt.
    let trust = work.path().join("trust.json");
    fs::write(
        &trust,
        format!(r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":"sts:AssumeRole"}}]}}"#),
    )
    .unwrap();
    let role = kh.json(
        &[
            "role",
            "create",
            "reader",
            "--trust-policy-file",
            trust.to_str().unwrap(),
        ],
        b"",
    );
    let role_arn = role["Role"]["Arn"].as_str().unwrap().to_owned();
    let decrypt_policy = work.path().join("decrypt.json");
    fs::write(
        &decrypt_policy,
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#,
    )
    .unwrap();
    kh.ok(
        &[
            "role",
            "put-policy",
            "reader",
            "--policy-name",
            "decrypt",
            "--policy-file",
            decrypt_policy.to_str().unwrap(),
        ],
        b"",
    );
    kh.run(
        &["assume-role", &role_arn, "--session-name", "root-try"],
        b"",
    )
    .fails_with("AccessDeniedException");
    let session = alice.json(
        &["assume-role", &role_arn, "--session-name", "nightly"],
        b"",
    );
    let credentials = &session["Credentials"];
    let mut command = keyhaven();
    command
        .args(["decrypt"])
        .env("KEYHAVEN_ENDPOINT", daemon.endpoint())
        .env(
            "KEYHAVEN_ACCESS_KEY_ID",
            credentials["AccessKeyId"].as_str().unwrap(),
        )
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            credentials["SecretAccessKey"].as_str().unwrap(),
        )
        .env(
            "KEYHAVEN_SESSION_TOKEN",
            credentials["SessionToken"].as_str().unwrap(),
        );
    assert_eq!(
        run(command, blob.as_bytes()).success().stdout,
        b"for the root's eyes"
    );

    // A key policy that would lock the root out is refused; the policy stays as it was.
    let before = kh.json(&["policy", "get", &key_id], b"")["Policy"].clone();
    let lockout = work.path().join("lockout.json");
    fs::write(&lockout, r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}]}"#).unwrap();
    let message = kh
        .run(
            &[
                "policy",
                "put",
                &key_id,
                "--policy-file",
                lockout.to_str().unwrap(),
            ],
            b"",
        )
        .fails_with("MalformedPolicyDocumentException");
    assert!(
        message.contains("will not allow you to update the key policy"),
        "{message}"
    );
    assert_eq!(kh.json(&["policy", "get", &key_id], b"")["Policy"], before);

    // At most two access keys; inactive keys are refused.
    kh.ok(&["access-key", "create", "--user", "alice"], b"");
    kh.run(&["access-key", "create", "--user", "alice"], b"")
        .fails_with("LimitExceededException");
    kh.ok(
        &[
            "access-key",
            "update",
            &alice.access_key_id,
            "--user",
            "alice",
            "--status",
            "Inactive",
        ],
        b"",
    );
    alice
        .run(&["whoami"], b"")
        .fails_with("UnrecognizedClientException");
}

/// `keyhaven bench` through the gRPC door (signed) and the AWS door (JSON 1.1, SigV4) of a
/// dev daemon: every request succeeds and the report names the door; what it cannot run is
/// refused before anything is sent, saying what to set; failures through the AWS door are
/// counted under the HTTP status and AWS exception name, and the run exits 1. (The
/// certificate door's run is in tests/cert_principals/, which has a mutual-TLS daemon.)
#[test]
fn bench_through_each_door() {
    let work = TempDir::new().expect("tempdir");
    let daemon = dev_daemon(&work, "export AWS_DEFAULT_REGION=");
    let vars = exports(&daemon.stdout.join("\n"));
    let bench = |door: &str, operation: &str, secret: &str, aws_endpoint: Option<&str>| {
        let mut command = keyhaven();
        command
            .args(["bench", "--door", door, "--operation", operation])
            .args(["--requests", "40", "--concurrency", "4", "--quiet"])
            .args(["--output", "json"])
            .env("KEYHAVEN_ENDPOINT", &vars["KEYHAVEN_ENDPOINT"])
            .env("KEYHAVEN_ACCESS_KEY_ID", &vars["KEYHAVEN_ACCESS_KEY_ID"])
            .env("KEYHAVEN_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_ENDPOINT_URL");
        if let Some(endpoint) = aws_endpoint {
            command.env("AWS_ENDPOINT_URL", endpoint);
        }
        run(command, b"")
    };
    let secret = vars["KEYHAVEN_SECRET_ACCESS_KEY"].as_str();
    let aws = vars["AWS_ENDPOINT_URL"].as_str();

    for (door, operation, endpoint) in [
        ("grpc", "encrypt", None),
        ("aws", "encrypt", Some(aws)),
        ("aws", "decrypt", Some(aws)),
        ("aws", "generate-data-key", Some(aws)),
        ("aws", "mixed", Some(aws)),
    ] {
        let report = bench(door, operation, secret, endpoint).success().json();
        assert_eq!(report["Door"], door, "{report}");
        assert_eq!(report["Succeeded"], 40, "{door} {operation}: {report}");
        assert_eq!(report["Failed"], 0, "{door} {operation}: {report}");
        assert_eq!(report["KeyCreated"], true, "{report}");
    }
    // Through the AWS door, the key it made is an ordinary key of the daemon.
    let report = bench("aws", "describe-key", secret, Some(aws))
        .success()
        .json();
    let kh = Client {
        endpoint: vars["KEYHAVEN_ENDPOINT"].clone(),
        access_key_id: vars["KEYHAVEN_ACCESS_KEY_ID"].clone(),
        secret_access_key: secret.to_owned(),
    };
    let key = report["KeyId"].as_str().expect("KeyId").to_owned();
    assert_eq!(
        kh.describe(&key)["Description"],
        "created by keyhaven bench"
    );

    // Refused before anything is sent.
    let keys_before = kh.json(&["key", "list"], b"")["Keys"]
        .as_array()
        .map(Vec::len);
    let refused = bench("aws", "encrypt", secret, None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr.trim_end(),
        "keyhaven: bench: --door aws needs the AWS door's address: --aws-endpoint \
         http://HOST:PORT or AWS_ENDPOINT_URL (`keyhaven serve --dev` prints it)"
    );
    let https = aws.replace("http://", "https://");
    let refused = bench("aws", "encrypt", secret, Some(&https));
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr.trim_end(),
        format!(
            "keyhaven: bench: --door aws sends plain HTTP; '{https}' is https (load the AWS door \
             over loopback without TLS, or use an AWS SDK's own benchmark)"
        )
    );
    let refused = bench("certificate", "encrypt", secret, None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr.trim_end(),
        "keyhaven: bench: --door certificate needs a client certificate: set \
         KEYHAVEN_CLIENT_CERT and KEYHAVEN_CLIENT_KEY"
    );
    assert_eq!(
        kh.json(&["key", "list"], b"")["Keys"]
            .as_array()
            .map(Vec::len),
        keys_before,
        "a refused bench created a key"
    );

    // A wrong secret: every request fails, counted under the AWS door's answer.
    let mut command = keyhaven();
    command
        .args(["bench", "--door", "aws", "--key", &key])
        .args(["--requests", "10", "--concurrency", "2", "--quiet"])
        .args(["--output", "json"])
        .env("KEYHAVEN_ACCESS_KEY_ID", &vars["KEYHAVEN_ACCESS_KEY_ID"])
        .env("KEYHAVEN_SECRET_ACCESS_KEY", "not-the-secret")
        .env("AWS_ENDPOINT_URL", aws);
    let failed = run(command, b"");
    assert_eq!(failed.code, Some(1), "{failed:?}");
    let report = failed.json();
    assert_eq!(report["Succeeded"], 0, "{report}");
    assert_eq!(report["Failed"], 10, "{report}");
    assert_eq!(
        report["Failures"][0]["Kind"], "HTTP 400 InvalidSignatureException",
        "{report}"
    );
    assert_eq!(
        failed.stderr.trim_end(),
        "keyhaven: bench: 10 requests failed (see above)"
    );
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// The organisation from the command line: a member account made with `org create-account`
/// (its root credentials printed once), a guardrail made, attached and shown deciding in
/// `policy simulate`, and its refusal of the member's root.
#[test]
fn an_organisation_from_the_command_line() {
    let work = TempDir::new().expect("tempdir");
    let data = work.path().join("data");
    let root = init(&data);
    let daemon = Daemon::start(&data, PASSPHRASE, &work.path().join("serve.log"));
    let kh = Client::new(&daemon, &root);

    // Human output: export lines for the member's root.
    let text = String::from_utf8(kh.ok(&["org", "create-account", "payments"], b"")).unwrap();
    let vars = exports(&text);
    let member = Client {
        endpoint: daemon.endpoint(),
        access_key_id: vars["KEYHAVEN_ACCESS_KEY_ID"].clone(),
        secret_access_key: vars["KEYHAVEN_SECRET_ACCESS_KEY"].clone(),
    };
    let whoami = member.json(&["whoami"], b"");
    let member_id = whoami["Account"].as_str().unwrap().to_owned();
    assert_eq!(whoami["Arn"], format!("arn:keyhaven:iam::{member_id}:root"));
    let listed = kh.json(&["org", "list-accounts"], b"");
    assert_eq!(listed["Accounts"][0]["Id"], member_id.as_str());
    assert_eq!(listed["Accounts"][0]["Name"], "payments");
    assert_eq!(listed["RootGuardrailPolicies"][0], "FullAccess");

    let key = member.create_key(&[]);
    let key_arn = member.describe(&key)["Arn"].as_str().unwrap().to_owned();
    assert!(key_arn.contains(&member_id), "{key_arn}");

    let document = work.path().join("window.json");
    fs::write(
        &document,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"Window","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*","Condition":{"NumericLessThan":{"kms:ScheduleKeyDeletionPendingWindowInDays":"30"}}}]}"#,
    )
    .unwrap();
    let created = kh.json(
        &[
            "org",
            "guardrail",
            "create",
            "MinimumWindow",
            document.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(created["Policy"]["PolicyName"], "MinimumWindow");
    kh.ok(
        &["org", "guardrail", "attach", "MinimumWindow", "root"],
        b"",
    );
    let shown = kh.json(&["org", "guardrail", "show", "MinimumWindow"], b"");
    assert_eq!(shown["Policy"]["Targets"][0], "root");

    let refused = member
        .run(
            &["key", "schedule-deletion", &key, "--pending-days", "7"],
            b"",
        )
        .fails_with("AccessDeniedException");
    assert!(refused.contains("kms:ScheduleKeyDeletion"), "{refused}");
    assert_eq!(member.describe(&key)["KeyState"], "Enabled");

    let simulated = member.json(
        &[
            "policy",
            "simulate",
            "--principal",
            &format!("arn:keyhaven:iam::{member_id}:root"),
            "--action",
            "kms:ScheduleKeyDeletion",
            "--resource",
            &key_arn,
            "--context",
            "kms:ScheduleKeyDeletionPendingWindowInDays=7",
        ],
        b"",
    );
    assert_eq!(simulated["EvalDecision"], "explicitDeny");
    assert_eq!(simulated["DecidingGuardrail"], "organisation root");
    assert_eq!(
        simulated["MatchedStatements"][0]["SourcePolicyId"],
        "guardrail/MinimumWindow"
    );

    // The member cannot make accounts; a guardrail in use cannot be deleted.
    member
        .run(&["org", "create-account", "rogue"], b"")
        .fails_with("AccessDeniedException");
    kh.run(&["org", "guardrail", "delete", "MinimumWindow"], b"")
        .fails_with("PolicyInUseException");
    kh.ok(
        &["org", "guardrail", "detach", "MinimumWindow", "root"],
        b"",
    );
    kh.ok(&["org", "guardrail", "delete", "MinimumWindow"], b"");
    let left = kh.json(&["org", "guardrail", "list"], b"");
    assert_eq!(left["Policies"].as_array().unwrap().len(), 1, "{left}");
    member.ok(
        &["key", "schedule-deletion", &key, "--pending-days", "7"],
        b"",
    );
}
