//! A real etcd for the tests: Debian's `etcd` binary started on free loopback ports with a
//! temporary data directory, killed when the test drops it. A missing binary fails naming the
//! setup step, never skips.

use keyhaven::server::StoreSettings;
use keyhaven::store::{EtcdSettings, EtcdTls};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// One member of a test cluster: its ports and data stay the same across a kill and restart.
pub struct EtcdMember {
    name: String,
    child: Option<Child>,
    pub endpoint: String,
    peer_url: String,
    initial_cluster: String,
    data: PathBuf,
    /// Arguments that turn on TLS for clients.
    tls_args: Vec<String>,
}

impl EtcdMember {
    fn spawn(&mut self, state: &str) {
        let binary = etcd_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("etcd log");
        let child = Command::new(&binary)
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.data.join(&self.name).display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint))
            .arg(format!("--advertise-client-urls={}", self.endpoint))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=250")
            .args(&self.tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.child = Some(child);
    }

    pub fn log(&self) -> PathBuf {
        self.data.join(format!("{}.log", self.name))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed member again on its data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.spawn("existing");
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of the test's own; a single member for most tests.
pub struct EtcdProcess {
    pub members: Vec<EtcdMember>,
    /// The first member's client URL.
    pub endpoint: String,
    /// How clients reach the members, when they serve TLS.
    pub tls: Option<EtcdTls>,
    _data: tempfile::TempDir,
}

/// TLS for a test member's clients: its certificate and key, and the CA client certificates
/// must chain to (`--client-cert-auth`); clients connect with `client`.
pub struct MemberTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
    pub client: EtcdTls,
}

impl EtcdProcess {
    /// Starts a single-member cluster and waits until it answers.
    pub async fn start() -> Self {
        Self::cluster(1).await
    }

    /// Starts a cluster of `size` members and waits until it answers.
    pub async fn cluster(size: usize) -> Self {
        Self::start_members(size, None).await
    }

    /// Starts a single member serving its clients TLS only, with client certificates required.
    pub async fn start_with_tls(tls: MemberTls) -> Self {
        Self::start_members(1, Some(tls)).await
    }

    async fn start_members(size: usize, tls: Option<MemberTls>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls_args = match &tls {
            None => Vec::new(),
            Some(tls) => vec![
                format!("--cert-file={}", tls.cert_file.display()),
                format!("--key-file={}", tls.key_file.display()),
                format!("--trusted-ca-file={}", tls.client_ca_file.display()),
                "--client-cert-auth".to_owned(),
            ],
        };
        let mut client_tls = tls.map(|t| t.client);
        for attempt in 1.. {
            let mut etcd = Self::spawn_members(size, scheme, &tls_args, client_tls.take());
            match etcd.serving().await {
                Ok(()) => return etcd,
                // A port chosen free was taken (by another test) before etcd bound it: the
                // cluster is made again on other ports.
                Err(log) if log.contains("address already in use") && attempt < 5 => {
                    client_tls = etcd.tls.take();
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn_members(
        size: usize,
        scheme: &str,
        tls_args: &[String],
        client_tls: Option<EtcdTls>,
    ) -> Self {
        let data = tempfile::tempdir().expect("etcd data directory");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| EtcdMember {
                name: format!("m{i}"),
                child: None,
                endpoint: format!("{scheme}://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                initial_cluster: initial_cluster.clone(),
                data: data.path().to_path_buf(),
                tls_args: tls_args.to_vec(),
            })
            .collect();
        for member in &mut members {
            member.spawn("new");
        }
        Self {
            endpoint: members[0].endpoint.clone(),
            members,
            tls: client_tls,
            _data: data,
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Waits (up to 30 s) until a write through the running members succeeds.
    pub async fn wait_until_serving(&mut self) {
        if let Err(log) = self.serving().await {
            panic!("{log}");
        }
    }

    /// [`Self::wait_until_serving`], saying why a member exited instead of panicking.
    async fn serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for member in &mut self.members {
                if let Some(status) = member.exited() {
                    let log = std::fs::read_to_string(member.log()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(format!(
                        "etcd exited ({status}); its log ends:\n{}",
                        tail.join("\n")
                    ));
                }
            }
            let running: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .map(|m| m.endpoint.clone())
                .collect();
            if let Ok(mut client) =
                etcd_client::Client::connect(&running, Some(self.options())).await
                && client.put("keyhaven-test-ready", "", None).await.is_ok()
            {
                let _ = client.delete("keyhaven-test-ready", None).await;
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not serve within 30 s: see {}",
                self.members[0].log().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the member that is the Raft leader now.
    pub async fn leader(&self) -> usize {
        for (i, member) in self.members.iter().enumerate() {
            let Ok(mut client) =
                etcd_client::Client::connect([&member.endpoint], Some(self.options())).await
            else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status
                    .header()
                    .is_some_and(|h| h.member_id() == status.leader())
            {
                return i;
            }
        }
        panic!("no etcd member is the leader");
    }

    fn options(&self) -> etcd_client::ConnectOptions {
        let options = etcd_client::ConnectOptions::new();
        let Some(tls) = &self.tls else {
            return options;
        };
        let read = |path: &PathBuf| std::fs::read(path).expect("read a test PEM file");
        let mut config = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca_file)));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(etcd_client::Identity::from_pem(read(cert), read(key)));
        }
        options.with_tls(config)
    }

    /// The daemon's store settings for `prefix`, naming every member.
    pub fn store_settings(&self, prefix: &str) -> StoreSettings {
        StoreSettings::Etcd(EtcdSettings {
            endpoints: self.endpoints(),
            prefix: prefix.into(),
            user: None,
            tls: self.tls.clone(),
        })
    }

    /// A client of this etcd's running members, for tests that look at (or edit) what the
    /// daemon wrote.
    /// A client of the members that answer now: one restarted may not be listening yet, or
    /// may have lost its port to another test while it was down.
    pub async fn client(&self) -> etcd_client::Client {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.endpoint.clone())
            .collect();
        let listening: Vec<String> = running
            .iter()
            .filter(|endpoint| {
                endpoint
                    .rsplit("//")
                    .next()
                    .and_then(|address| address.parse().ok())
                    .is_some_and(|address| {
                        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
                            .is_ok()
                    })
            })
            .cloned()
            .collect();
        let endpoints = if listening.is_empty() {
            running
        } else {
            listening
        };
        etcd_client::Client::connect(endpoints, Some(self.options()))
            .await
            .expect("connect to the test etcd")
    }
}
