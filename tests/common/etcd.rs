//! A real etcd for the tests: Debian's `etcd` binary started on free loopback ports with a
//! temporary data directory, killed when the test drops it. A missing binary fails naming the
//! setup step, never skips.

use keyhaven::server::StoreSettings;
use keyhaven::store::EtcdSettings;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member of the test's own.
pub struct EtcdProcess {
    child: Child,
    pub endpoint: String,
    pub data: tempfile::TempDir,
}

fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "the etcd binary is not installed: the etcd store tests need it. Run \
             `tests/etcd/setup.sh` first (`make test` does; it installs Debian's etcd-server)."
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl EtcdProcess {
    /// Starts a single-member cluster and waits until it answers.
    pub async fn start() -> Self {
        let binary = etcd_binary();
        let data = tempfile::tempdir().expect("etcd data directory");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(data.path().join("etcd.log")).expect("etcd log");
        let child = Command::new(&binary)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                data.path().join("member").display()
            ))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=250")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut etcd = Self {
            child,
            endpoint,
            data,
        };
        etcd.wait_until_serving().await;
        etcd
    }

    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited ({status}): see {}", self.log().display());
            }
            if let Ok(mut client) = etcd_client::Client::connect([&self.endpoint], None).await
                && client.put("keyhaven-test-ready", "", None).await.is_ok()
            {
                let _ = client.delete("keyhaven-test-ready", None).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not serve within 30 s: see {}",
                self.log().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    /// The daemon's store settings for `prefix` of this etcd.
    pub fn store_settings(&self, prefix: &str) -> StoreSettings {
        StoreSettings::Etcd(EtcdSettings {
            endpoints: vec![self.endpoint.clone()],
            prefix: prefix.into(),
            user: None,
        })
    }

    /// A client of this etcd, for tests that look at (or edit) what the daemon wrote.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.endpoint], None)
            .await
            .expect("connect to the test etcd")
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
