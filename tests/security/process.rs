//! The process: no core dumps, start-up self-tests, signatures bound to the daemon, the systemd unit.

use crate::common::{Backend, PASSPHRASE, TestDaemon, assert_refused};
use keyhaven::client::Client;
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use keyhaven::server::Daemon;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

// ------------------------------------------------------------------ signatures (item 16)

fn encrypt_request(key: &str) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key_id: key.to_owned(),
        plaintext: b"captured on the wire".to_vec(),
        encryption_context: Default::default(),
        ..Default::default()
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

/// A client whose clock runs ahead signs a read dated after the daemon's start; kept only in
/// memory, it would be accepted again after a quick restart. Such reads are remembered as
/// state changes are.
#[tokio::test]
async fn a_read_dated_ahead_of_the_daemon_is_refused_after_a_restart() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("clock-ahead").await.key_id;
    let ahead = d
        .client
        .signed_at("Encrypt", encrypt_request(&key), d.now() + 120);
    let captured = copy_of(&ahead);
    d.client
        .kms()
        .encrypt(ahead)
        .await
        .expect("two minutes ahead is accepted");

    let address = d.endpoint().trim_start_matches("http://").to_owned();
    d.stop().await;
    d.config.set_listen(&address).expect("listen");
    d.clock.advance(10);
    d.start_again().await;

    let result = d.client.kms().encrypt(captured).await;
    assert_message(&result, "replayed");
    assert_refused(result, Code::Unauthenticated, "InvalidSignatureException");
}

// ------------------------------------------------------------------ the process (items 19, 20)

/// How long a spawned daemon may take to print its listening line (the default Argon2id
/// parameters of `--dev` take a moment).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The user the spawned daemon runs as: `nobody` when the tests run as root, so that a
/// non-dumpable daemon shows (its /proc files then belong to root, not to it).
const NOBODY: u32 = 65_534;

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .expect("/proc is mounted")
        .uid()
        == 0
}

/// A directory the daemon's user can use: the binary is copied there (the checkout may sit
/// where `nobody` cannot reach, such as under /root), and `--dev` makes its data directory in it.
fn reachable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("open the directory to the daemon's user");
    let binary = dir.path().join("keyhaven");
    std::fs::copy(env!("CARGO_BIN_EXE_keyhaven"), &binary).expect("copy the binary");
    dir
}

/// `keyhaven serve --dev` on a port of its own, as a user other than root, from a copy of the
/// binary in `dir` (see [`reachable_dir`]).
fn spawn_dev_daemon(dir: &Path, wrapper: &[&str]) -> Child {
    let binary = dir.join("keyhaven");
    let mut command = match wrapper.split_first() {
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(&binary);
            command
        }
        None => Command::new(&binary),
    };
    command
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        // Nothing from the test's environment (a PKCS#11 token set up for other tests is not
        // this user's to open).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if running_as_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    // The copy of the binary was just written: a test thread that forked meanwhile holds the
    // written file open until its child execs, and the kernel refuses to run a file open for
    // writing ("Text file busy"). That passes within milliseconds.
    for _ in 0..100 {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            spawned => return spawned.expect("spawn keyhaven serve --dev"),
        }
    }
    panic!("spawn keyhaven serve --dev: its binary stayed busy for 2 s")
}

/// Reads the child's standard output until its `# listening on` line; None if it exited or
/// stayed silent for [`START_TIMEOUT`].
fn wait_until_listening(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads on after the listening line, so that the daemon never writes to a closed pipe
        // (it would die of it while a test still watches it).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match received.recv_timeout(left) {
            Ok(line) => {
                if let Some(address) = line.strip_prefix("# listening on ") {
                    return Some(address.to_owned());
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// Stops a daemon this test started, and returns what it wrote to standard error.
fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{name}: {e}"))
}

/// The value of `Key:` in /proc/<pid>/status, first word.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"))
        .to_owned()
}

/// A root secret and plaintexts were found in the core of a daemon that had handled calls
/// (`ulimit -c unlimited`, then SIGABRT). The serving daemon must have core dumps off (limit
/// 0, not dumpable) and its long-lived secrets in locked pages marked do-not-dump.
#[test]
fn serve_runs_without_core_dumps_and_with_secrets_locked_out_of_dumps() {
    let dir = reachable_dir();
    let mut child = spawn_dev_daemon(dir.path(), &[]);
    let pid = child.id();
    if wait_until_listening(&mut child).is_none() {
        panic!("keyhaven serve --dev did not start: {}", stop(child));
    }
    let limits = proc_file(pid, "limits");
    let core = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max core file size"))
        .map(|rest| rest.split_whitespace().take(2).collect::<Vec<_>>());
    let status = proc_file(pid, "status");
    let owner = std::fs::metadata(format!("/proc/{pid}/status"))
        .expect("stat /proc/<pid>/status")
        .uid();
    let uid: u32 = status_field(&status, "Uid:").parse().expect("a uid");
    let locked_kib: u64 = status_field(&status, "VmLck:")
        .parse()
        .expect("VmLck in kB");
    let smaps = proc_file(pid, "smaps");
    let do_not_dump = smaps
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .filter(|flags| flags.split_whitespace().any(|f| f == "dd"))
        .count();
    let stderr = stop(child);

    assert_eq!(
        core,
        Some(vec!["0", "0"]),
        "core file size limit (soft, hard):\n{limits}"
    );
    assert_ne!(uid, 0, "the daemon under test must not run as root");
    // A process that is not dumpable has its /proc files owned by root.
    assert_eq!(owner, 0, "the daemon (uid {uid}) is still dumpable");
    assert!(
        locked_kib > 0,
        "no memory locked (VmLck {locked_kib} kB)\n{stderr}"
    );
    assert!(do_not_dump > 0, "no mapping is marked do-not-dump (dd)");
    assert!(
        !stderr.contains("cannot lock secrets"),
        "warned about locking within the default limit:\n{stderr}"
    );
}

/// Below the memory a daemon needs to lock its secrets, it still serves (they stay out of
/// dumps) and says so once.
#[test]
fn a_low_memlock_limit_is_one_clear_warning() {
    assert!(
        Path::new("/usr/bin/prlimit").exists(),
        "this test needs prlimit (Debian package util-linux): apt-get install util-linux"
    );
    let dir = reachable_dir();
    let mut child = spawn_dev_daemon(dir.path(), &["/usr/bin/prlimit", "--memlock=0:0", "--"]);
    let listening = wait_until_listening(&mut child);
    let stderr = stop(child);
    assert!(listening.is_some(), "did not start:\n{stderr}");
    assert_eq!(
        stderr.matches("cannot lock secrets in memory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("LimitMEMLOCK="), "{stderr}");
}

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/task: {e}"));
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim_end().to_owned())
        })
        .collect()
}

/// The purger thread's name.
const PURGER: &str = "keyhaven-purge";
/// How long a `--dev` daemon is given to finish its start-up checks (a handful of keys: well
/// under a second when the machine is not loaded).
const CHECKS_WAIT: Duration = Duration::from_secs(30);
/// How long after its start-up checks have logged the daemon is given to start the purger (it
/// looks every 250 ms).
const PURGER_WAIT: Duration = Duration::from_millis(1500);

/// Whether a daemon's start-up checks have logged their end: every key's material, and every
/// record when they are checked beside serving.
fn start_up_checks_done(stderr: &str) -> bool {
    stderr.contains("every key's material checked")
        && (!stderr.contains("checked beside serving")
            || stderr.contains("every record checked against the store's tree"))
}

/// Starts `keyhaven serve --dev` (under `wrapper`, as [`spawn_dev_daemon`]), watches its
/// threads until the purger appears or [`PURGER_WAIT`] has passed since its start-up checks
/// logged their end, and stops it: whether the purger started, the threads it had then, and
/// what the daemon wrote to standard error.
fn purger_of(dir: &Path, wrapper: &[&str]) -> (bool, Vec<String>, String) {
    let mut child = spawn_dev_daemon(dir, wrapper);
    let pid = child.id();
    if wait_until_listening(&mut child).is_none() {
        panic!("keyhaven serve --dev did not start: {}", stop(child));
    }
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    let pipe = child.stderr.take().expect("piped stderr");
    let written = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Ok(mut text) = written.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    let read = || stderr.lock().map(|text| text.clone()).unwrap_or_default();
    let started = Instant::now();
    let mut checks_done: Option<Instant> = None;
    let purger = loop {
        if thread_names(pid).iter().any(|name| name == PURGER) {
            break true;
        }
        if checks_done.is_none() && start_up_checks_done(&read()) {
            checks_done = Some(Instant::now());
        }
        match checks_done {
            Some(done) if done.elapsed() > PURGER_WAIT => break false,
            None if started.elapsed() > CHECKS_WAIT => break false,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let threads = thread_names(pid);
    stop(child);
    (purger, threads, read())
}

/// Once its start-up checks are done, the daemon lets freed memory wait before handing it
/// back and starts the thread that hands back what has waited long enough; with no purge
/// delay set in its environment (`MIMALLOC_PURGE_DELAY=0`) it leaves the allocator as told and
/// starts no such thread.
#[test]
fn once_serving_the_daemon_starts_its_purger_unless_the_environment_sets_no_delay() {
    let dir = reachable_dir();
    let (started, threads, stderr) = purger_of(dir.path(), &[]);
    assert!(
        started,
        "no {PURGER} thread once the start-up checks were done; threads {threads:?}\n{stderr}"
    );

    let (started, threads, stderr) =
        purger_of(dir.path(), &["/usr/bin/env", "MIMALLOC_PURGE_DELAY=0"]);
    assert!(
        start_up_checks_done(&stderr),
        "the start-up checks did not finish within {CHECKS_WAIT:?}:\n{stderr}"
    );
    assert!(
        !started,
        "a {PURGER} thread with MIMALLOC_PURGE_DELAY=0; threads {threads:?}\n{stderr}"
    );
}

/// A data directory and its passphrase file, for `serve` without `--dev`.
fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    keyhaven::server::init_data_dir(
        &dir.path().join("data"),
        &SecretString::new(PASSPHRASE.into()),
        keyhaven::seal::KdfParams::MINIMUM,
        "keyhaven",
        &keyhaven::clock::SystemClock,
    )
    .expect("init");
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, PASSPHRASE).expect("passphrase file");
    (dir, passphrase)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `keyhaven serve` with a self-test made to fail; returns (exit code, stdout, stderr).
/// A daemon still running after [`START_TIMEOUT`] is stopped and reported as listening.
fn serve_with_failing_self_test(arguments: &[&str], failing: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .arg("serve")
        .args(arguments)
        .env_clear()
        .env(keyhaven::server::self_test::FAIL_ENV, failing)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyhaven serve");
    if let Some(address) = wait_until_listening(&mut child) {
        let stderr = stop(child);
        panic!("serve listened on {address} although {failing} was made to fail:\n{stderr}");
    }
    let code = child.wait().expect("wait").code();
    let mut output = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut output);
    }
    (code, output + &stop(child))
}

/// FIPS 140-style start-up self-tests: a wrong known answer stops `serve` with the name of
/// the algorithm, before it unseals or listens. Each self-test is made to fail in turn.
#[test]
fn a_failed_self_test_stops_serve_before_it_listens() {
    let (dev_code, dev_output) =
        serve_with_failing_self_test(&["--dev", "--listen", "127.0.0.1:0"], "AES-256-GCM");
    assert_eq!(dev_code, Some(1), "{dev_output}");
    assert!(
        dev_output.contains("keyhaven: self-test failed: AES-256-GCM known answer"),
        "{dev_output}"
    );
    assert!(
        !dev_output.contains("KEYHAVEN_SECRET_ACCESS_KEY"),
        "{dev_output}"
    );

    let (dir, passphrase) = data_dir();
    let data = dir.path().join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let arguments = [
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
        "--passphrase-file",
        passphrase.to_str().expect("a UTF-8 path"),
        "--listen",
        &listen,
    ];
    for name in keyhaven::server::self_test::NAMES {
        let (code, output) = serve_with_failing_self_test(&arguments, name);
        assert_eq!(code, Some(1), "{name}: {output}");
        assert!(
            output.contains(&format!("self-test failed: {name} known answer")),
            "{name}: {output}"
        );
        assert!(!output.contains("listening"), "{name}: {output}");
        assert!(
            std::net::TcpStream::connect(&listen).is_err(),
            "{name}: something listens on {listen}"
        );
    }
    // The audit log was never opened: the daemon stopped before the data directory.
    assert!(!data.join("audit").join("audit.log").exists());
}

// ------------------------------------------------------------------ the systemd unit (item 22)

fn unit_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/keyhaven.service")
}

/// `systemd-analyze verify` accepts the unit (pointed at the built binary) without an error or
/// a warning. packaging/verify-unit.sh installs systemd's tools when they are missing; a
/// machine where that fails fails this test, naming the step.
#[test]
fn the_systemd_unit_verifies() {
    let output = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/verify-unit.sh"))
        .arg(env!("CARGO_BIN_EXE_keyhaven"))
        .output()
        .expect("run packaging/verify-unit.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "packaging/verify-unit.sh (systemd-analyze verify, after installing Debian's systemd \
         package if needed) failed:\n{text}"
    );
    assert!(text.contains("keyhaven.service verifies"), "{text}");
}

/// The confinement the review asked for stays in the unit: each option with its value.
#[test]
fn the_systemd_unit_keeps_its_hardening() {
    let unit = std::fs::read_to_string(unit_path()).expect("packaging/keyhaven.service");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    for (key, value) in [
        ("User", "keyhaven"),
        ("Group", "keyhaven"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/keyhaven"),
        ("StateDirectory", "keyhaven"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LimitCORE", "0"),
        ("LimitMEMLOCK", "64M"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged"),
        ("SystemCallArchitectures", "native"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("UMask", "0077"),
    ] {
        assert!(
            settings.contains(&(key, value)),
            "packaging/keyhaven.service lacks {key}={value}"
        );
    }
    // The passphrase comes as a credential file, never in the environment.
    assert!(!unit.contains(keyhaven::server::PASSPHRASE_ENV));
    assert!(settings.contains(&("LoadCredential", "passphrase:/etc/keyhaven/passphrase")));
}
