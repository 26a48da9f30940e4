//! A real daemon for end-to-end tests: a sealed data directory in a temporary folder, the
//! daemon serving on 127.0.0.1:0, and a signed gRPC client. The clock is injectable so that
//! deletion dates and rotation periods can be passed without waiting.

#![allow(dead_code)]

pub mod batches;
pub mod console;
pub mod device;
pub mod lag;

use keyhaven::api::reason_of;
use keyhaven::client::{Client, ClientCredentials, ClientTls};
use keyhaven::clock::{Clock, OffsetClock};
use keyhaven::keys::DueReport;
use keyhaven::keystore::pkcs11::{Pkcs11Settings, TokenSelector};
use keyhaven::proto::v1;
use keyhaven::seal::KdfParams;
use keyhaven::secret::SecretString;
use keyhaven::server::{Daemon, DaemonConfig};
use std::sync::Arc;
use tonic::Code;

/// The keystores the conformance suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sealed,
    /// The SoftHSM2 token `eval "$(hsm-sim/setup.sh)"` prepares (`make test` does).
    Pkcs11,
    /// The second PKCS#11 implementation, NSS's softoken, whose token
    /// `eval "$(hsm-sim/nss-setup.sh)"` prepares (`make test` does).
    Pkcs11Second,
    /// The sealed keystore with the metadata store on etcd: a single-member etcd of the
    /// test's own (`tests/etcd/setup.sh` installs it; `make test` runs it).
    SealedOnEtcd,
}

impl Backend {
    pub fn keystore_name(self) -> &'static str {
        match self {
            Backend::Sealed | Backend::SealedOnEtcd => "sealed",
            Backend::Pkcs11 => "pkcs11:default",
            Backend::Pkcs11Second => "pkcs11:second",
        }
    }

    /// Adds what the backend needs to a daemon's configuration.
    pub fn configure(self, config: &mut DaemonConfig) {
        if self == Backend::Pkcs11 {
            config
                .add_pkcs11(pkcs11_settings())
                .expect("PKCS#11 keystore");
        }
        if self == Backend::Pkcs11Second {
            config
                .add_pkcs11(pkcs11_second_settings())
                .expect("second PKCS#11 keystore");
        }
        config.keystore = self.keystore_name().into();
        // Two key entries in memory: every suite reads keys back from the store as often as
        // it finds them held, so a key evicted behaves as one held.
        config.key_cache = 2;
    }
}

/// The test token, from the environment `hsm-sim/setup.sh` prints. Missing: a failure that
/// says how to fix it, never a skip.
pub fn pkcs11_settings() -> Pkcs11Settings {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the PKCS#11 tests need a SoftHSM2 token. \
                 Run `eval \"$(hsm-sim/setup.sh)\"` first (`make test` does this)."
            )
        })
    };
    let _ = var("SOFTHSM2_CONF");
    Pkcs11Settings {
        name: "default".into(),
        module: var("KEYHAVEN_PKCS11_MODULE").into(),
        token: TokenSelector::Label(var("KEYHAVEN_PKCS11_TOKEN_LABEL")),
        pin: SecretString::new(var("KEYHAVEN_PKCS11_PIN")),
        max_idle_sessions: 16,
        init_parameters: None,
    }
}

/// The test token reached through the fault-injecting module `hsm-sim/setup.sh` builds
/// (`KEYHAVEN_FAULT_PKCS11_MODULE`, forwarding to SoftHSM2), and the control file that module
/// reads its fault plan from (`KEYHAVEN_FAULT_FILE`). Missing: a failure that says how to fix
/// it, never a skip.
pub fn fault_injecting_pkcs11() -> (Pkcs11Settings, std::path::PathBuf) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the device-fault tests need the fault-injecting PKCS#11 \
                 module. Run `eval \"$(hsm-sim/setup.sh)\"` first (`make test` does this)."
            )
        })
    };
    let mut settings = pkcs11_settings();
    settings.module = var("KEYHAVEN_FAULT_PKCS11_MODULE").into();
    (settings, var("KEYHAVEN_FAULT_FILE").into())
}

pub const PASSPHRASE: &str = "test passphrase, not a secret";

/// A daemon under test, with a client signed as the account root.
pub struct TestDaemon {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub config: DaemonConfig,
    pub clock: OffsetClock,
    pub credentials: ClientCredentials,
    pub account_id: String,
    daemon: Option<Daemon>,
    pub client: Client,
    /// How clients reach a daemon serving TLS.
    pub client_tls: ClientTls,
    /// The etcd the store lives on (`Backend::SealedOnEtcd`), stopped with the daemon.
    pub etcd: Option<etcd::EtcdProcess>,
    /// Between a joined daemon and etcd ([`TestDaemon::join_lagging`]), stopped after it.
    lagging: Vec<lag::LaggingProxy>,
}

impl TestDaemon {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a daemon after `adjust` has changed its configuration.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut DaemonConfig)) -> Self {
        Self::start_with_tls(backend, adjust, ClientTls::default()).await
    }

    /// As [`TestDaemon::start_with`], for a daemon `adjust` set up with TLS: clients connect
    /// with `client_tls`.
    pub async fn start_with_tls(
        backend: Backend,
        adjust: impl FnOnce(&mut DaemonConfig),
        client_tls: ClientTls,
    ) -> Self {
        let etcd = match backend {
            #[cfg(feature = "etcd")]
            Backend::SealedOnEtcd => Some(etcd::EtcdProcess::start().await),
            #[cfg(not(feature = "etcd"))]
            Backend::SealedOnEtcd => {
                panic!("Backend::SealedOnEtcd needs the etcd store: cargo test --features etcd")
            }
            _ => None,
        };
        Self::start_in(backend, etcd, adjust, client_tls).await
    }

    /// A daemon of the sealed keystore with its store on `etcd` (a cluster the test made).
    #[cfg(feature = "etcd")]
    pub async fn start_on_etcd(
        etcd: etcd::EtcdProcess,
        adjust: impl FnOnce(&mut DaemonConfig),
    ) -> Self {
        Self::start_in(
            Backend::SealedOnEtcd,
            Some(etcd),
            adjust,
            ClientTls::default(),
        )
        .await
    }

    async fn start_in(
        backend: Backend,
        etcd: Option<etcd::EtcdProcess>,
        adjust: impl FnOnce(&mut DaemonConfig),
        client_tls: ClientTls,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = OffsetClock::new();
        #[cfg(feature = "etcd")]
        let store = etcd
            .as_ref()
            .map(|etcd| etcd.store_settings("keyhaven/"))
            .unwrap_or_default();
        #[cfg(not(feature = "etcd"))]
        let store = keyhaven::server::StoreSettings::default();
        let initialised = keyhaven::server::init_with_store(
            dir.path(),
            &store,
            &SecretString::new(PASSPHRASE.into()),
            KdfParams::MINIMUM,
            "keyhaven",
            &clock,
        )
        .expect("init");
        let mut config = DaemonConfig::new(dir.path().to_path_buf());
        config.store = store;
        config.set_listen("127.0.0.1:0").expect("listen");
        backend.configure(&mut config);
        adjust(&mut config);
        let root = initialised.root.credentials;
        let credentials = ClientCredentials::long_term(
            root.access_key_id,
            root.secret_access_key,
            &config.region,
        );
        let daemon = Daemon::start(
            config.clone(),
            SecretString::new(PASSPHRASE.into()),
            Arc::new(clock.clone()),
        )
        .await
        .expect("daemon starts");
        // The start-up check of every key's material runs while the daemon serves: tests read
        // what it found.
        daemon.keys().material_checked().await;
        let client = connect(&daemon, &config, credentials.clone(), &clock, &client_tls).await;
        Self {
            backend,
            dir,
            config,
            clock,
            credentials,
            account_id: initialised.account_id,
            daemon: Some(daemon),
            client,
            client_tls,
            etcd,
            lagging: Vec::new(),
        }
    }

    /// Another daemon on this one's etcd prefix (a cluster of two): its own data directory
    /// holding only what a joining daemon is given, the same credentials, the same clock.
    #[cfg(feature = "etcd")]
    pub async fn join(&self) -> TestDaemon {
        self.join_through(Vec::new()).await
    }

    /// [`Self::join`], the new daemon reaching etcd over a slow network: everything etcd
    /// sends it comes `lag` late ([`lag::LaggingProxy`]), its change feed among it.
    #[cfg(feature = "etcd")]
    pub async fn join_lagging(&self, lag: std::time::Duration) -> TestDaemon {
        let keyhaven::server::StoreSettings::Etcd(settings) = &self.config.store else {
            panic!("join_lagging: the daemon's store is not on etcd");
        };
        let mut proxies = Vec::new();
        for endpoint in &settings.endpoints {
            let address = endpoint
                .trim_start_matches("http://")
                .parse()
                .unwrap_or_else(|_| panic!("join_lagging: a plain http endpoint: {endpoint}"));
            proxies.push(lag::LaggingProxy::start(address, lag));
        }
        self.join_through(proxies).await
    }

    #[cfg(feature = "etcd")]
    async fn join_through(&self, lagging: Vec<lag::LaggingProxy>) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        keyhaven::server::join_data_dir(
            dir.path(),
            &self.config.store,
            &SecretString::new(PASSPHRASE.into()),
        )
        .expect("the joining daemon's data directory");
        let mut config = self.config.clone();
        config.data_dir = dir.path().to_path_buf();
        config.audit_log = dir.path().join("audit").join("audit.log");
        if let keyhaven::server::StoreSettings::Etcd(settings) = &mut config.store
            && !lagging.is_empty()
        {
            settings.endpoints = lagging
                .iter()
                .map(|proxy| format!("http://{}", proxy.address))
                .collect();
        }
        let daemon = Daemon::start(
            config.clone(),
            SecretString::new(PASSPHRASE.into()),
            Arc::new(self.clock.clone()),
        )
        .await
        .expect("the joining daemon starts");
        // The start-up check of every key's material runs while the daemon serves: tests read
        // what it found.
        daemon.keys().material_checked().await;
        let client = connect(
            &daemon,
            &config,
            self.credentials.clone(),
            &self.clock,
            &self.client_tls,
        )
        .await;
        TestDaemon {
            backend: self.backend,
            dir,
            config,
            clock: self.clock.clone(),
            credentials: self.credentials.clone(),
            account_id: self.account_id.clone(),
            daemon: Some(daemon),
            client,
            client_tls: self.client_tls.clone(),
            etcd: None,
            lagging,
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Stops the daemon (gracefully) and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    pub async fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().await.expect("clean shutdown");
        }
    }

    pub async fn start_again(&mut self) {
        self.try_start_again().await.expect("daemon restarts");
    }

    /// The stopped daemon's store, opened as the daemon opens it (unsealed, every record
    /// checked, writes authenticated): for tests that write what a crash would have left.
    pub fn open_store(&self) -> keyhaven::store::Store {
        let (_, master) =
            keyhaven::seal::unseal(&self.config.data_dir, &SecretString::new(PASSPHRASE.into()))
                .expect("unseal the stopped daemon's data directory");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // A daemon that just stopped or refused to start may hold sled's lock a moment longer.
        let backend = loop {
            match keyhaven::server::open_backend(&self.config.store, &self.config.data_dir) {
                Ok(backend) => break backend,
                Err(error)
                    if error.0.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => panic!("open the stopped daemon's store: {error}"),
            }
        };
        keyhaven::store::Store::open(
            backend,
            keyhaven::store::Barrier::new(master.record_integrity_key()),
        )
        .expect("the stopped daemon's store passes its checks")
    }

    /// Starts the stopped daemon again; the error when it refuses to start.
    pub async fn try_start_again(&mut self) -> Result<(), keyhaven::server::ServerError> {
        let daemon = Daemon::start(
            self.config.clone(),
            SecretString::new(PASSPHRASE.into()),
            Arc::new(self.clock.clone()),
        )
        .await?;
        daemon.keys().material_checked().await;
        self.client = connect(
            &daemon,
            &self.config,
            self.credentials.clone(),
            &self.clock,
            &self.client_tls,
        )
        .await;
        self.daemon = Some(daemon);
        Ok(())
    }

    pub fn endpoint(&self) -> String {
        endpoint(self.daemon(), &self.config)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Where the daemon serves `/metrics`, if configured.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.daemon().metrics_addr()
    }

    /// The root's AWS_* settings for the daemon's AWS door (which must listen).
    pub fn aws_root_environment(&self) -> Vec<(String, String)> {
        let aws = self.aws_addr().expect("the AWS door listens");
        vec![
            ("AWS_ENDPOINT_URL".into(), format!("http://{aws}")),
            (
                "AWS_ACCESS_KEY_ID".into(),
                self.credentials.access_key_id.clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.credentials.secret_access_key.expose().clone(),
            ),
            ("AWS_REGION".into(), self.config.region.clone()),
            ("AWS_DEFAULT_REGION".into(), self.config.region.clone()),
        ]
    }

    /// How many quorum reads the daemon's catch-ups with a shared store have made.
    pub fn catch_up_reads(&self) -> u64 {
        self.daemon().catch_up_reads()
    }

    /// Calls that tried to use a key pending deletion.
    pub fn pending_deletion_uses(&self) -> u64 {
        self.daemon().keys().pending_deletion_uses()
    }

    /// Runs the scheduler's pass now (deletions and automatic rotations that are due).
    pub async fn run_due_tasks(&self) -> DueReport {
        self.daemon().run_due_tasks().await
    }

    /// A client signed with other credentials.
    pub async fn client_with(&self, credentials: ClientCredentials) -> Client {
        Client::connect_with_tls(&self.endpoint(), credentials, &self.client_tls)
            .await
            .expect("connect")
            .with_clock(Arc::new(self.clock.clone()))
    }

    // ------------------------------------------------------------------ shortcuts

    /// Creates user `name` with an access key (and, if given, an inline policy named
    /// `inline`), and returns a client signed as that user.
    pub async fn create_user(&self, name: &str, policy: Option<&str>) -> Client {
        let credentials = self.create_user_credentials(name, policy).await;
        self.client_with(credentials).await
    }

    /// [`Self::create_user`], returning the access key's credentials (for a client of
    /// another daemon).
    pub async fn create_user_credentials(
        &self,
        name: &str,
        policy: Option<&str>,
    ) -> ClientCredentials {
        let iam = self.client.iam();
        iam.clone()
            .create_user(self.client.signed_iam(
                "CreateUser",
                v1::CreateUserRequest {
                    user_name: name.into(),
                },
            ))
            .await
            .expect("CreateUser");
        if let Some(document) = policy {
            let request = v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::User as i32,
                entity_name: name.into(),
                policy_name: "inline".into(),
                policy_document: document.into(),
            };
            iam.clone()
                .put_entity_policy(self.client.signed_iam("PutEntityPolicy", request))
                .await
                .expect("PutEntityPolicy");
        }
        let key = iam
            .clone()
            .create_access_key(self.client.signed_iam(
                "CreateAccessKey",
                v1::CreateAccessKeyRequest {
                    user_name: name.into(),
                },
            ))
            .await
            .expect("CreateAccessKey")
            .into_inner();
        ClientCredentials {
            access_key_id: key.access_key.expect("access key").access_key_id,
            secret_access_key: SecretString::new(key.secret_access_key),
            session_token: None,
            region: self.config.region.clone(),
        }
    }

    /// A member account of `name` made through this daemon, and its root's access key (for a
    /// client of this daemon or of another).
    pub async fn create_account(&self, name: &str) -> (v1::Account, ClientCredentials) {
        let made = self
            .client
            .iam()
            .create_account(self.client.signed_iam(
                "CreateAccount",
                v1::CreateAccountRequest {
                    account_name: name.into(),
                },
            ))
            .await
            .expect("CreateAccount")
            .into_inner();
        let credentials = ClientCredentials {
            access_key_id: made.root_access_key_id,
            secret_access_key: SecretString::new(made.root_secret_access_key),
            session_token: None,
            region: self.config.region.clone(),
        };
        (made.account.expect("account"), credentials)
    }

    pub async fn create_key(&self, description: &str) -> v1::KeyMetadata {
        let request = v1::CreateKeyRequest {
            description: description.into(),
            ..Default::default()
        };
        self.client
            .kms()
            .create_key(self.client.signed("CreateKey", request))
            .await
            .expect("CreateKey")
            .into_inner()
            .key_metadata
            .expect("metadata")
    }

    pub async fn describe(&self, key: &str) -> Result<v1::KeyMetadata, tonic::Status> {
        let request = v1::DescribeKeyRequest { key_id: key.into() };
        Ok(self
            .client
            .kms()
            .describe_key(self.client.signed("DescribeKey", request))
            .await?
            .into_inner()
            .key_metadata
            .expect("metadata"))
    }

    pub async fn state(&self, key: &str) -> v1::KeyState {
        self.describe(key).await.expect("DescribeKey").key_state()
    }

    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &[(&str, &str)],
    ) -> Result<Vec<u8>, tonic::Status> {
        let request = v1::EncryptRequest {
            key_id: key.into(),
            plaintext: plaintext.to_vec(),
            encryption_context: pairs(context),
            ..Default::default()
        };
        Ok(self
            .client
            .kms()
            .encrypt(self.client.signed("Encrypt", request))
            .await?
            .into_inner()
            .ciphertext_blob)
    }

    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &[(&str, &str)],
    ) -> Result<Vec<u8>, tonic::Status> {
        let request = v1::DecryptRequest {
            ciphertext_blob: blob.to_vec(),
            encryption_context: pairs(context),
            key_id: String::new(),
            ..Default::default()
        };
        Ok(self
            .client
            .kms()
            .decrypt(self.client.signed("Decrypt", request))
            .await?
            .into_inner()
            .plaintext
            .to_vec())
    }

    pub async fn enable(&self, key: &str) -> Result<(), tonic::Status> {
        let request = v1::EnableKeyRequest { key_id: key.into() };
        self.client
            .kms()
            .enable_key(self.client.signed("EnableKey", request))
            .await
            .map(|_| ())
    }

    pub async fn disable(&self, key: &str) -> Result<(), tonic::Status> {
        let request = v1::DisableKeyRequest { key_id: key.into() };
        self.client
            .kms()
            .disable_key(self.client.signed("DisableKey", request))
            .await
            .map(|_| ())
    }

    pub async fn schedule_deletion(
        &self,
        key: &str,
        days: Option<u32>,
    ) -> Result<v1::ScheduleKeyDeletionResponse, tonic::Status> {
        let request = v1::ScheduleKeyDeletionRequest {
            key_id: key.into(),
            pending_window_in_days: days,
        };
        self.client
            .kms()
            .schedule_key_deletion(self.client.signed("ScheduleKeyDeletion", request))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn cancel_deletion(&self, key: &str) -> Result<(), tonic::Status> {
        let request = v1::CancelKeyDeletionRequest { key_id: key.into() };
        self.client
            .kms()
            .cancel_key_deletion(self.client.signed("CancelKeyDeletion", request))
            .await
            .map(|_| ())
    }

    pub async fn rotate(&self, key: &str) -> Result<u32, tonic::Status> {
        let request = v1::RotateKeyOnDemandRequest { key_id: key.into() };
        self.client
            .kms()
            .rotate_key_on_demand(self.client.signed("RotateKeyOnDemand", request))
            .await
            .map(|r| r.into_inner().key_version)
    }

    pub async fn create_alias(&self, alias: &str, key: &str) -> Result<(), tonic::Status> {
        let request = v1::CreateAliasRequest {
            alias_name: alias.into(),
            target_key_id: key.into(),
        };
        self.client
            .kms()
            .create_alias(self.client.signed("CreateAlias", request))
            .await
            .map(|_| ())
    }

    pub async fn list_aliases(&self, key: &str) -> Vec<v1::AliasListEntry> {
        let request = v1::ListAliasesRequest {
            key_id: key.into(),
            ..Default::default()
        };
        self.client
            .kms()
            .list_aliases(self.client.signed("ListAliases", request))
            .await
            .expect("ListAliases")
            .into_inner()
            .aliases
    }

    pub async fn list_all_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut marker = String::new();
        loop {
            let request = v1::ListKeysRequest {
                limit: 0,
                marker: marker.clone(),
            };
            let page = self
                .client
                .kms()
                .list_keys(self.client.signed("ListKeys", request))
                .await
                .expect("ListKeys")
                .into_inner();
            keys.extend(page.keys.into_iter().map(|k| k.key_id));
            if !page.truncated {
                return keys;
            }
            marker = page.next_marker;
        }
    }
}

fn endpoint(daemon: &Daemon, config: &DaemonConfig) -> String {
    match config.tls {
        // The test certificates name localhost.
        Some(_) => format!("https://localhost:{}", daemon.local_addr().port()),
        None => format!("http://{}", daemon.local_addr()),
    }
}

/// A client that signs with the test's clock, as a client on the daemon's host would.
async fn connect(
    daemon: &Daemon,
    config: &DaemonConfig,
    credentials: ClientCredentials,
    clock: &OffsetClock,
    tls: &ClientTls,
) -> Client {
    Client::connect_with_tls(&endpoint(daemon, config), credentials, tls)
        .await
        .expect("connect")
        .with_clock(Arc::new(clock.clone()))
}

pub fn pairs(context: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts that `result` failed with `code` and the reason name `reason`.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} {reason}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(reason_of(&status).as_deref(), Some(reason), "{status:?}");
        }
    }
}

pub const DAY: i64 = 86_400;

impl TestDaemon {
    /// The daemon's key service, for contracts no single call can show (such as what a change
    /// does when the alias it was authorised on has moved in between).
    pub fn key_service(&self) -> Arc<keyhaven::keys::KeyService> {
        self.daemon().keys().clone()
    }
}

impl TestDaemon {
    /// Where the daemon's AWS door listens, if configured.
    pub fn aws_addr(&self) -> Option<std::net::SocketAddr> {
        self.daemon().aws_addr()
    }

    /// Where the daemon's web console listens, if configured.
    pub fn console_addr(&self) -> Option<std::net::SocketAddr> {
        self.daemon().console_addr()
    }

    /// Every record of the daemon's audit log, parsed.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.config.audit_log)
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit record is JSON"))
            .collect()
    }

    /// A client signed with temporary credentials a call gave (a session, a sign-in).
    pub async fn session_client(&self, credentials: v1::Credentials) -> Client {
        self.client_with(ClientCredentials {
            access_key_id: credentials.access_key_id,
            secret_access_key: SecretString::new(credentials.secret_access_key),
            session_token: Some(SecretString::new(credentials.session_token)),
            region: self.config.region.clone(),
        })
        .await
    }

    /// Gives user `user` a virtual MFA device named `name`, enabled with two codes made by the
    /// daemon's TOTP; its serial number and seed.
    pub async fn give_mfa_device(&self, user: &str, name: &str) -> (String, Vec<u8>) {
        let device = self
            .client
            .iam()
            .create_virtual_mfa_device(self.client.signed_iam(
                "CreateVirtualMFADevice",
                v1::CreateVirtualMfaDeviceRequest {
                    virtual_mfa_device_name: name.into(),
                },
            ))
            .await
            .expect("CreateVirtualMFADevice")
            .into_inner();
        let seed = data_encoding::BASE32_NOPAD
            .decode(device.base32_string_seed.as_bytes())
            .expect("a base32 seed");
        let step = self.now() / 30;
        self.client
            .iam()
            .enable_mfa_device(self.client.signed_iam(
                "EnableMFADevice",
                v1::EnableMfaDeviceRequest {
                    user_name: user.into(),
                    serial_number: device.serial_number.clone(),
                    authentication_code1: keyhaven::auth::totp::code(&seed, step - 1),
                    authentication_code2: keyhaven::auth::totp::code(&seed, step),
                },
            ))
            .await
            .expect("EnableMFADevice");
        (device.serial_number, seed)
    }

    /// Gives user `name` a password (no reset required).
    pub async fn create_login_profile(&self, name: &str, password: &str) {
        self.client
            .iam()
            .create_login_profile(self.client.signed_iam(
                "CreateLoginProfile",
                v1::CreateLoginProfileRequest {
                    user_name: name.into(),
                    password: password.into(),
                    password_reset_required: false,
                },
            ))
            .await
            .expect("CreateLoginProfile");
    }
}

/// Opens a stopped daemon's sled store, waiting (up to 5 s) for the lock a daemon that just
/// stopped or refused to start may still hold: sled's background threads let go of its files
/// a moment after the last handle is dropped.
pub fn open_sled(dir: &std::path::Path) -> keyhaven::store::SledBackend {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match keyhaven::store::SledBackend::open(dir) {
            Ok(store) => return store,
            Err(error)
                if error.0.contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("open the store {}: {error}", dir.display()),
        }
    }
}

#[cfg(feature = "etcd")]
pub mod etcd;
/// Without the `etcd` feature there is no etcd to start, so no daemon has one.
#[cfg(not(feature = "etcd"))]
pub mod etcd {
    pub enum EtcdProcess {}
}

/// The second PKCS#11 token (NSS's softoken), from the environment `hsm-sim/nss-setup.sh`
/// prints. Missing: a failure that says how to fix it, never a skip.
pub fn pkcs11_second_settings() -> Pkcs11Settings {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the second-token tests need NSS's softoken. \
                 Run `eval \"$(hsm-sim/nss-setup.sh target/nss-token)\"` first (`make test` \
                 does this)."
            )
        })
    };
    Pkcs11Settings {
        name: "second".into(),
        module: var("KEYHAVEN_PKCS11_SECOND_MODULE").into(),
        token: TokenSelector::Label(var("KEYHAVEN_PKCS11_SECOND_TOKEN_LABEL")),
        pin: SecretString::new(var("KEYHAVEN_PKCS11_SECOND_PIN")),
        max_idle_sessions: 16,
        init_parameters: Some(var("KEYHAVEN_PKCS11_SECOND_INIT_PARAMETERS")),
    }
}

/// The venv's python with boto3 (`tests/python/aws-setup.sh` makes it), or a failure naming
/// the setup step.
pub fn aws_python() -> std::path::PathBuf {
    let python =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/aws-venv/bin/python");
    let usable = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import boto3"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        usable,
        "boto3 is not installed in {}: run tests/python/aws-setup.sh (make test runs it)",
        python.display()
    );
    python
}

/// Runs the script `name` of tests/python with the venv's python and only `env`; its stdout,
/// or a failure with both streams unless it succeeded and printed `done`.
pub async fn run_aws_script(name: &str, env: Vec<(String, String)>, done: &str) -> String {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let mut command = std::process::Command::new(aws_python());
    command.arg(script).env_clear().envs(env);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains(done),
        "{name} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A CA and a certificate for localhost it signed, as PEM files in `dir`: (ca, cert, key).
pub fn localhost_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (Python's) takes a certificate whose issuer is its own subject for self-signed.
    ca.distinguished_name
        .push(DnType::CommonName, "Keyhaven test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server
        .signed_by(&server_key, &Issuer::new(ca, ca_key))
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_pem).expect("write CA");
    std::fs::write(&paths.1, server.pem()).expect("write certificate");
    std::fs::write(&paths.2, server_key.serialize_pem()).expect("write key");
    paths
}
