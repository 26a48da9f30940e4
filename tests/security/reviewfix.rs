//! `keyhaven audit verify --data-dir` and the chain anchors it reads from the store: with a
//! passphrase they are checked against their integrity tags, and an edited one is refused
//! by name; without one the output says they were read unchecked.

use super::common::{Backend, PASSPHRASE, TestDaemon};
use keyhaven::store::{StoreBackend, WriteBatch};
use std::path::Path;

/// Runs `keyhaven --output json audit verify --data-dir DIR [--passphrase-file FILE]` with no
/// passphrase in the environment; returns (exit code, stdout, stderr).
fn verify(data_dir: &Path, passphrase_file: Option<&Path>) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    command
        .env_remove("KEYHAVEN_PASSPHRASE")
        .args(["--output", "json", "audit", "verify", "--data-dir"])
        .arg(data_dir);
    if let Some(file) = passphrase_file {
        command.arg("--passphrase-file").arg(file);
    }
    let out = command.output().expect("run keyhaven audit verify");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Writes the stored bytes of `name` in the stopped daemon's store, as an offline edit
/// would; returns what was there.
fn write_raw(data_dir: &Path, name: &[u8], stored: Vec<u8>) -> Option<Vec<u8>> {
    let store = super::common::open_sled(&keyhaven::server::store_dir(data_dir));
    let before = store.get(name).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(name.to_vec(), stored);
    store.apply(batch).unwrap();
    store.sync().unwrap();
    before
}

/// Removes `name` from the stopped daemon's store.
fn remove_raw(data_dir: &Path, name: &[u8]) {
    let store = super::common::open_sled(&keyhaven::server::store_dir(data_dir));
    let mut batch = WriteBatch::new();
    batch.delete(name.to_vec());
    store.apply(batch).unwrap();
    store.sync().unwrap();
}

/// The stored record's value re-spelt with the same meaning (a space after each `:`): the
/// anchors read the same, but the bytes are no longer those the daemon tagged.
fn respelt(stored: &[u8]) -> Vec<u8> {
    const HEADER: usize = 1 + 32;
    let value = std::str::from_utf8(&stored[HEADER..]).expect("a JSON value");
    assert!(value.contains(':'), "{value}");
    let mut edited = stored[..HEADER].to_vec();
    edited.extend_from_slice(value.replace(':', ": ").as_bytes());
    edited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_the_stored_chain_anchors_with_a_passphrase() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    d.create_key("anchors").await;
    d.stop().await;
    let dir = d.dir.path().to_path_buf();
    let passphrase_file = dir.join("passphrase.txt");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();

    let (code, stdout, stderr) = verify(&dir, Some(&passphrase_file));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report = json(&stdout);
    assert_eq!(report["Valid"], true);
    assert_eq!(
        report["Head"],
        "chain head compared, chain start compared (integrity checked)"
    );
    let records = report["Records"].clone();

    let (code, stdout, stderr) = verify(&dir, None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report = json(&stdout);
    assert!(
        report["Head"]
            .as_str()
            .unwrap()
            .contains("read unchecked: give --passphrase-file or KEYHAVEN_PASSPHRASE"),
        "{report}"
    );

    // The head, re-spelt; and a start record the daemon never wrote (one from before
    // retention removed anything, sequence 1 and the genesis hash), tagged as another record.
    let head = write_raw_peek(&dir, "audit/head");
    let mut forged_start = head[..1 + 32].to_vec();
    forged_start.extend_from_slice(
        serde_json::json!({ "seq": 1, "prev": vec![0u8; 32] })
            .to_string()
            .as_bytes(),
    );
    for (anchor, edited) in [
        ("audit/head", respelt(&head)),
        ("audit/start", forged_start),
    ] {
        let original = write_raw(&dir, anchor.as_bytes(), edited.clone());

        // Checked: refused, naming the record; nothing is reported valid.
        let (code, stdout, stderr) = verify(&dir, Some(&passphrase_file));
        assert_eq!(code, Some(1), "{anchor}: {stdout}{stderr}");
        let report = json(&stdout);
        assert_eq!(report["Valid"], false, "{anchor}");
        let problem = report["Problem"].as_str().unwrap();
        assert!(
            problem.contains(&format!("record {anchor} failed its integrity check")),
            "{anchor}: {problem}"
        );
        assert!(stderr.contains(problem), "{stderr}");

        // Unchecked: the edit goes unnoticed, and the output says the anchors were not checked.
        let (code, stdout, stderr) = verify(&dir, None);
        assert_eq!(code, Some(0), "{anchor}: {stdout}{stderr}");
        let report = json(&stdout);
        assert_eq!(report["Records"], records);
        assert!(
            report["Head"].as_str().unwrap().contains("read unchecked"),
            "{report}"
        );

        // Verify changed nothing; put back, the anchors check again.
        assert_eq!(write_raw_peek(&dir, anchor), edited);
        match original {
            Some(original) => {
                write_raw(&dir, anchor.as_bytes(), original);
            }
            None => remove_raw(&dir, anchor.as_bytes()),
        }
        let (code, stdout, stderr) = verify(&dir, Some(&passphrase_file));
        assert_eq!(code, Some(0), "{anchor}: {stdout}{stderr}");
    }

    // A wrong passphrase is refused, never taken for "unchecked".
    std::fs::write(&passphrase_file, "not the passphrase\n").unwrap();
    let (code, stdout, _) = verify(&dir, Some(&passphrase_file));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        json(&stdout)["Problem"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase"),
        "{stdout}"
    );
}

/// The stored bytes of `name`.
fn write_raw_peek(data_dir: &Path, name: &str) -> Vec<u8> {
    let store = super::common::open_sled(&keyhaven::server::store_dir(data_dir));
    store.get(name.as_bytes()).unwrap().expect(name)
}
