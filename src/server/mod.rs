//! The daemon: unsealing, start-up checks, service wiring, the scheduler, and graceful
//! shutdown (making and changing a data directory is in `data_dir`).

mod accounts;
pub mod config;
mod data_dir;
mod passphrase;
pub mod self_test;
mod watches;

pub use config::{ConfigError, ConfigFile, DaemonConfig, StoreChoice, StoreSettings};
pub use data_dir::{
    DAEMON_ID_FILE, Initialised, MIGRATED_STORE_DIR, Migrated, authenticate_store, cluster_status,
    daemon_id, init_data_dir, init_with_store, join_data_dir, migrate_store, open_backend,
    store_dir,
};
pub use passphrase::{PASSPHRASE_ENV, read_passphrase};

use crate::api::accounts::Accounts;
use crate::api::{
    AuditApi, AuthLayer, Gateway, IamApi, KmsApi, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    aws::AwsDoor, console::ConsoleDoor,
};
use crate::audit::AuditLog;
use crate::auth::throttle::FailureThrottle;
use crate::auth::{CredentialDirectory, CredentialStore, NewAccessKey};
use crate::background::Background;
use crate::clock::Clock;
use crate::keys::{DueReport, KeyService, spawn_scheduler};
use crate::org::Organisation;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::v1::audit_service_server::AuditServiceServer;
use crate::proto::v1::identity_service_server::IdentityServiceServer;
use crate::proto::v1::key_management_service_server::KeyManagementServiceServer;
use crate::seal::{self, KdfParams, SealError};
use crate::secret::SecretString;
#[cfg(feature = "etcd")]
use crate::store::EtcdBackend;
use crate::store::{Barrier, SledBackend, Store, StoreBackend, StoreError};
use rand::Rng;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use watches::{settle_allocator, watch_health};

const STORE_DIR: &str = "store";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    SelfTest(#[from] self_test::SelfTestFailure),
    #[error("{0}")]
    Start(String),
}

fn start_error(context: &str) -> impl Fn(String) -> ServerError + '_ {
    move |message| ServerError::Start(format!("{context}: {message}"))
}

/// Creates a data directory with its metadata in sled: the seal, an account id, and the root
/// access key.
/// Audit records for what the scheduler does on nobody's request: a key destroyed when its
/// deletion date passed, an automatic rotation. The principal is the daemon itself.
fn scheduled_task_auditor(
    audit: Arc<AuditLog>,
    keys: Arc<KeyService>,
    clock: Arc<dyn Clock>,
) -> Arc<dyn Fn(&DueReport) + Send + Sync> {
    Arc::new(move |report: &DueReport| {
        let done = report
            .destroyed_keys
            .iter()
            .map(|id| ("DeleteKey", id))
            .chain(report.rotated_keys.iter().map(|id| ("RotateKey", id)))
            .chain(
                report
                    .expired_keys
                    .iter()
                    .map(|id| ("DeleteImportedKeyMaterial", id)),
            );
        for (operation, id) in done {
            let note = crate::audit::AuditNote::key(keys.key_arn(*id));
            audit_scheduled_task(&audit, &*clock, operation, None, note);
        }
    })
}

/// One audit record of something the daemon did on its own, as `keyhaven:scheduler`.
fn audit_scheduled_task(
    audit: &AuditLog,
    clock: &dyn Clock,
    operation: &str,
    access_key_id: Option<String>,
    note: crate::audit::AuditNote,
) {
    let entry = crate::audit::Entry {
        phase: crate::audit::Phase::Call,
        request_id: uuid::Uuid::new_v4().to_string(),
        operation: operation.into(),
        principal: Some(SCHEDULER_PRINCIPAL.into()),
        access_key_id,
        door: None,
        certificate: None,
        source: None,
        note,
        outcome: Some(crate::audit::Outcome {
            code: "OK".into(),
            reason: None,
        }),
        duration_us: None,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    if let Err(error) = audit.append(entry, clock.now(), nanos) {
        tracing::error!(%error, operation, "could not audit a scheduled task");
    }
}

/// The principal audit records name for the scheduler's own actions.
pub const SCHEDULER_PRINCIPAL: &str = "keyhaven:scheduler";

/// Logs what start-up did with the generation journal, and every orphan it found (orphans
/// are left in place: see `keystore/mod.rs`).
fn report_reconciliation(report: crate::keys::Reconciliation) {
    for pending in &report.cleared {
        tracing::warn!(keystore = %pending.keystore, key = %pending.key_id, version = pending.version,
            "a key generation was cut short; its material (if any) was destroyed");
    }
    for (pending, why) in &report.kept {
        tracing::error!(keystore = %pending.keystore, key = %pending.key_id, version = pending.version,
            %why, "could not undo a key generation that was cut short; retried at the next start");
    }
    for (keystore, why) in &report.unlisted {
        tracing::error!(%keystore, %why, "cannot list key material to look for orphans");
    }
    for orphan in &report.orphans {
        tracing::warn!(keystore = %orphan.keystore, key = %orphan.material.key_id,
            version = orphan.material.version,
            "orphaned key material: no key record names it (a metadata backup restored, or \
             another daemon's data directory?); left in place, see `keyhaven keystore orphans`");
    }
}

/// A running daemon.
pub struct Daemon {
    local_addr: SocketAddr,
    /// Writes the audit records of a scheduler pass.
    audit_scheduled: Arc<dyn Fn(&DueReport) + Send + Sync>,
    keys: Arc<KeyService>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    scheduler: Background,
    sweeper: Background,
    health_watch: Background,
    /// Waits for start-up's checks, then lets the allocator keep freed memory a little.
    allocator_settling: Background,
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    metrics: Option<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    aws: Option<JoinHandle<()>>,
    aws_addr: Option<SocketAddr>,
    console: Option<JoinHandle<()>>,
    console_addr: Option<SocketAddr>,
    /// Tells the HTTP doors (the AWS door, the console) to drain.
    aws_closing: tokio::sync::watch::Sender<bool>,
    /// The member accounts' services and tasks.
    members: Arc<accounts::Members>,
}

impl Daemon {
    /// Unseals `config.data_dir` and starts serving on `config.listen`. The self-tests run
    /// first; a wrong passphrase fails before anything on disk is opened.
    pub async fn start(
        mut config: DaemonConfig,
        passphrase: SecretString,
        clock: Arc<dyn Clock>,
    ) -> Result<Daemon, ServerError> {
        config.validate()?;
        tokio::task::spawn_blocking(self_test::run)
            .await
            .map_err(|e| ServerError::Start(e.to_string()))??;
        tracing::debug!("self-tests passed");
        let started = std::time::Instant::now();
        let dir = config.data_dir.clone();
        let (info, master) = tokio::task::spawn_blocking(move || seal::unseal(&dir, &passphrase))
            .await
            .map_err(|e| ServerError::Start(e.to_string()))??;
        let unsealed = started.elapsed();
        let master = Arc::new(master);
        let barrier = Barrier::new(master.record_integrity_key());
        let store_settings = config.store.clone();
        let refused = match &config.store {
            StoreSettings::Sled => "data directory refused".to_owned(),
            #[cfg(feature = "etcd")]
            StoreSettings::Etcd(etcd) => format!("etcd store '{}' refused", etcd.prefix),
        };
        let data_dir = config.data_dir.clone();
        // Every record and the digest of them all are checked before anything is served, or
        // (`store_check = "beside-serving"`) against the tree kept at the last close.
        let store_check = config.store_check;
        let store = tokio::task::spawn_blocking(move || {
            Store::open_with(
                open_backend(&store_settings, &data_dir)?,
                barrier,
                store_check,
            )
        })
        .await
        .map_err(|e| ServerError::Start(e.to_string()))?
        .map_err(|e| ServerError::Start(format!("{refused}: {e}")))?;
        let store = Arc::new(store);
        // Among daemons sharing a store, each has an id: its listing, its audit chain.
        let daemon_id = if store.is_shared() {
            daemon_id(&config.data_dir, true)?
        } else {
            None
        };
        if config.accepted_hosts.is_empty() && !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen,
                "accepted_hosts is not set: any signed :authority is accepted, so a request \
                 captured on its way to another daemon sharing these credentials can be sent \
                 here with that daemon's name; list this daemon's names in accepted_hosts");
        }
        let clock_for_iam = clock.clone();
        let master_for_audit = master.clone();
        let opened = started.elapsed();
        let org = Arc::new(
            Organisation::open(store.clone(), &info.account_id, clock.clone())
                .map_err(|e| ServerError::Start(format!("loading the organisation: {e}")))?,
        );
        let accounts = Accounts::new(&info.account_id, Some(org.clone()));
        let extra_ca = match &config.oidc_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ServerError::Start(format!("oidc_ca_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let jwks_fetcher = crate::iam::jwks_fetch::JwksFetcher::new(extra_ca.as_deref())
            .map_err(ServerError::Start)?;
        let setup = Arc::new(accounts::AccountSetup {
            master,
            clock,
            config: config.clone(),
            jwks_fetcher,
        });
        let management = Arc::new(
            accounts::open_account(
                &setup,
                &info.account_id,
                store.clone(),
                &config.data_dir,
                &accounts,
                None,
            )
            .await?,
        );
        accounts.add(management.operations.clone());
        let (credentials, keys, authorizer) = (
            management.credentials.clone(),
            management.keys.clone(),
            management.operations.authorizer.clone(),
        );
        // The material check runs from here on: a start that fails stops it (it holds the
        // store until it does).
        let checking = keys.stop_material_check_on_drop();
        tracing::info!(
            keys = keys.count(),
            unseal_ms = unsealed.as_millis() as u64,
            open_ms = (opened - unsealed).as_millis() as u64,
            load_keys_ms = (started.elapsed() - opened).as_millis() as u64,
            "data directory open"
        );

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Start(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Start(e.to_string()))?;

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<KeyManagementServiceServer<KmsApi>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| start_error("reflection")(e.to_string()))?;
        let audit_path = config.audit_log.clone();
        let audit_store = store.clone();
        let audit_master = master_for_audit.clone();
        let mut audit_settings = config.audit_settings();
        audit_settings.chain = daemon_id.clone();
        let audit = Arc::new(
            tokio::task::spawn_blocking(move || {
                AuditLog::open(&audit_path, audit_settings, audit_store, &audit_master)
            })
            .await
            .map_err(|e| ServerError::Start(e.to_string()))?
            .map_err(|e| ServerError::Start(e.to_string()))?,
        );
        let audit_scheduled =
            scheduled_task_auditor(audit.clone(), keys.clone(), clock_for_iam.clone());
        let credential_directory = CredentialDirectory::new(credentials.clone());
        let members = Arc::new(accounts::Members {
            setup: setup.clone(),
            management: management.clone(),
            store: store.clone(),
            accounts: accounts.clone(),
            org: org.clone(),
            credentials: credential_directory.clone(),
            audit: audit.clone(),
            daemon_id: daemon_id.clone(),
            opened: Default::default(),
            starting: Default::default(),
            tasks: Default::default(),
            opening: Default::default(),
            stopping: Default::default(),
            retrying: Default::default(),
        });
        for member in org.accounts() {
            members.start(&member.id).await?;
        }
        accounts.set_opener(Arc::new(accounts::NewAccounts(Arc::downgrade(&members))));
        // From here on, other daemons' changes reach the caches (and what changed while they
        // were loading, at once), before anything here changes a key.
        if store.is_shared() {
            store.listen(accounts::listener(
                &members,
                tokio::runtime::Handle::current(),
            ));
        }
        let leads = scheduler_lead(store.clone(), daemon_id.clone());
        let report = if leads() {
            keys.run_due_tasks().await
        } else {
            Default::default()
        };
        if report.destroyed + report.rotated > 0 {
            tracing::info!(
                ?report,
                "carried out deadlines that passed while the daemon was down"
            );
        }
        audit_scheduled(&report);
        let audit_reader = AuditApi::new(audit.clone(), authorizer.clone(), clock_for_iam.clone())
            .for_accounts(accounts.clone());
        let audit_api = AuditServiceServer::new(audit_reader.clone());
        // The auth layer holds every other call to MAX_REQUEST_BYTES.
        let kms = KeyManagementServiceServer::new(KmsApi::new(accounts.clone()))
            .max_decoding_message_size(crate::api::MAX_BATCH_REQUEST_BYTES)
            .max_encoding_message_size(crate::api::MAX_BATCH_RESPONSE_BYTES);
        let identity = IdentityServiceServer::new(IamApi::new(accounts.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(server_tls(tls)?)
                .map_err(|e| ServerError::Start(format!("TLS: {e}")))?;
        }
        // One gateway behind both doors: one failure throttle per source for both.
        let gateway = Gateway::for_accounts(
            credential_directory.clone(),
            audit.clone(),
            clock_for_iam.clone(),
        )
        .with_failure_throttle(FailureThrottle::new(
            config.unauthenticated_rate_per_second,
            config.unauthenticated_burst,
        ));
        let (aws_closing, closing) = tokio::sync::watch::channel(false);
        let (aws, aws_addr) = match config.aws_listen {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    ServerError::Start(format!("cannot listen for the AWS API on {address}: {e}"))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| ServerError::Start(e.to_string()))?;
                let tls = config.tls.as_ref().map(aws_tls).transpose()?;
                let door = Arc::new(AwsDoor::new(
                    gateway.clone(),
                    accounts.clone(),
                    MAX_REQUEST_BYTES,
                ));
                (
                    Some(door.serve(listener, tls, closing.clone())),
                    Some(bound),
                )
            }
            None => (None, None),
        };
        let (console, console_addr) = match config.console_listen {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    ServerError::Start(format!("cannot listen for the console on {address}: {e}"))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| ServerError::Start(e.to_string()))?;
                let tls = config.tls.as_ref().map(aws_tls).transpose()?;
                let door = Arc::new(
                    ConsoleDoor::new(
                        gateway.clone(),
                        accounts.clone(),
                        audit_reader,
                        clock_for_iam.clone(),
                        MAX_REQUEST_BYTES,
                    )
                    .with_hosts(config.accepted_hosts.clone(), address.ip().is_loopback()),
                );
                (
                    Some(door.serve(listener, tls, closing.clone())),
                    Some(bound),
                )
            }
            None => (None, None),
        };
        let router = builder
            .layer(AuthLayer::over(gateway, MAX_REQUEST_BYTES))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(kms)
            .add_service(identity)
            .add_service(audit_api);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = shutdown_signal.await;
        }));
        let (metrics, metrics_addr) = match config.metrics_listen {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    ServerError::Start(format!("cannot listen for metrics on {address}: {e}"))
                })?;
                let bound = crate::metrics::local_addr(&listener);
                let counted = keys.clone();
                let refresh: Arc<dyn Fn(&crate::metrics::Metrics) + Send + Sync> =
                    Arc::new(move |m: &crate::metrics::Metrics| {
                        for (state, count) in counted.count_by_state() {
                            m.keys.with_label_values(&[state]).set(count);
                        }
                        for (keystore, count) in counted.orphan_counts() {
                            m.keystore_orphans
                                .with_label_values(&[&keystore])
                                .set(count);
                        }
                    });
                (Some(crate::metrics::serve(listener, refresh)), bound)
            }
            None => (None, None),
        };
        let scheduler = spawn_scheduler(
            keys.clone(),
            config.scheduler_interval,
            audit_scheduled.clone(),
            leads,
        );
        if let (Some(id), Some(shared)) = (&daemon_id, store.shared_engine()) {
            let details = serde_json::json!({
                "id": id,
                "address": local_addr.to_string(),
                "aws_address": aws_addr.map(|a| a.to_string()),
                "version": env!("CARGO_PKG_VERSION"),
                "process": process_name(),
                "started": clock_for_iam.now(),
            });
            shared
                .announce(id, &details.to_string())
                .map_err(|e| ServerError::Start(format!("cannot list this daemon: {e}")))?;
        }
        let sweeper = spawn_sweeper(
            credentials,
            audit.clone(),
            clock_for_iam.clone(),
            config.scheduler_interval,
            true,
        );
        let watched = store.clone();
        let health_watch = watch_health(move || watched.refused(), health);
        tracing::info!(%local_addr, aws = ?aws_addr, console = ?console_addr, account = %info.account_id, tls = config.tls.is_some(), "keyhaven serving");
        checking.disarm();
        let allocator_settling = settle_allocator(Arc::downgrade(&keys), Arc::downgrade(&store));
        Ok(Daemon {
            local_addr,
            audit_scheduled,
            keys,
            shutdown: Some(shutdown),
            server,
            scheduler,
            sweeper,
            health_watch,
            allocator_settling,
            store,
            audit,
            clock: clock_for_iam,
            metrics,
            metrics_addr,
            aws,
            aws_addr,
            console,
            console_addr,
            aws_closing,
            members,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn keys(&self) -> &Arc<KeyService> {
        &self.keys
    }

    /// How many quorum reads this daemon's catch-ups with a shared store have made.
    pub fn catch_up_reads(&self) -> u64 {
        self.store.catch_up_reads()
    }

    /// Runs the scheduler's pass now (as its timer would), audit records included.
    pub async fn run_due_tasks(&self) -> DueReport {
        let report = self.keys.run_due_tasks().await;
        (self.audit_scheduled)(&report);
        report
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Where the AWS door listens, if anywhere.
    pub fn aws_addr(&self) -> Option<SocketAddr> {
        self.aws_addr
    }

    /// Where the web console listens, if anywhere.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_addr
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting calls on every door, lets running ones finish (on the AWS door for at
    /// most its drain deadline), and closes the store.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = self.aws_closing.send(true);
        // Each stops once its pass in progress, if any, ends.
        self.scheduler.ask_to_stop();
        self.sweeper.ask_to_stop();
        self.health_watch.ask_to_stop();
        self.allocator_settling.ask_to_stop();
        self.members.stop().await;
        if let Some(metrics) = self.metrics.take() {
            metrics.abort();
        }
        if let Some(aws) = self.aws.take() {
            let _ = aws.await;
        }
        if let Some(console) = self.console.take() {
            let _ = console.await;
        }
        self.scheduler.stop().await;
        self.sweeper.stop().await;
        self.health_watch.stop().await;
        self.allocator_settling.stop().await;
        let served = (&mut self.server)
            .await
            .map_err(|e| ServerError::Start(e.to_string()))?;
        self.keys.stop_material_check().await;
        self.keys.record_uses().await;
        if let Err(error) = self.audit.close_refusal_windows(self.clock.now(), 0, true) {
            tracing::error!(%error, "summaries of refused requests not written at shutdown");
        }
        if let Err(error) = self.audit.sync() {
            tracing::error!(%error, "audit log fsync at shutdown failed");
        }
        // Nothing more is written: each account's key index is kept beside the store (the
        // store's own tree is kept as it closes), for the next start to read instead of every
        // record.
        match self.store.settle() {
            Ok(()) => {
                self.members.keep_indexes();
                self.keys.keep_index();
            }
            Err(error) => {
                tracing::error!(%error, "the changes staged at shutdown could not be written")
            }
        }
        self.store.close();
        served.map_err(|e| ServerError::Start(e.to_string()))
    }

    /// Serves until SIGINT or SIGTERM (listened for since `signals` was made), then shuts down.
    pub async fn run_until_signal(self, mut signals: StopSignals) -> Result<(), ServerError> {
        signals.wait().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

fn server_tls(
    settings: &config::TlsSettings,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| ServerError::Start(format!("cannot read {}: {e}", path.display())))
    };
    let cert = read(&settings.cert)?;
    let key = crate::secret::SecretBytes::new(read(&settings.key)?);
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key.expose()));
    if let Some(ca) = &settings.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

/// The AWS door's TLS: the gRPC listener's certificate, key and client CA, with rustls (ring)
/// directly, since the door is served by hyper rather than tonic.
fn aws_tls(settings: &config::TlsSettings) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let failed = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServerError::Start(format!("AWS door TLS: {what} {}: {e}", path.display()))
    };
    let certificates = |path: &Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| failed("cannot read the certificates in", path, &e))
    };
    let chain = certificates(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| failed("cannot read the private key in", &settings.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Start(format!("AWS door TLS: {e}")))?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates(ca)? {
                roots
                    .add(certificate)
                    .map_err(|e| failed("a CA certificate is unusable in", ca, &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| ServerError::Start(format!("AWS door TLS: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| ServerError::Start(format!("AWS door TLS: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Every `interval`: removes expired temporary credentials; every second: forgets stale
/// signatures and (with `audit_sync`, for the daemon's one log) summarises the refusal windows
/// that closed and makes the audit log durable (retention and the free-space watch with it).
fn spawn_sweeper(
    credentials: Arc<CredentialStore>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    interval: std::time::Duration,
    audit_sync: bool,
) -> Background {
    Background::spawn(move |mut stop| async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut since_sweep = std::time::Duration::ZERO;
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.asked() => return,
            }
            if audit_sync {
                let for_sync = audit.clone();
                let now = clock.now();
                let synced = tokio::task::spawn_blocking(move || {
                    if let Err(error) = for_sync.close_refusal_windows(now, 0, false) {
                        tracing::error!(%error, "summaries of refused requests not written");
                    }
                    for_sync.sync()
                });
                if let Ok(Err(error)) = synced.await {
                    tracing::error!(%error, "audit log sync (fsync, head, retention) failed");
                }
            }
            let for_sweep = credentials.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || for_sweep.forget_stale_signatures()).await
            {
                tracing::warn!(%error, "could not remove stale request signatures");
            }
            since_sweep += std::time::Duration::from_secs(1);
            if since_sweep < interval {
                continue;
            }
            since_sweep = std::time::Duration::ZERO;
            match credentials.remove_expired().await {
                Ok(removed) if removed.is_empty() => {}
                Ok(removed) => {
                    tracing::info!(
                        removed = removed.len(),
                        "expired temporary credentials removed"
                    );
                    for (access_key_id, principal) in removed {
                        audit_scheduled_task(
                            &audit,
                            &*clock,
                            "DeleteExpiredCredentials",
                            Some(access_key_id),
                            crate::audit::AuditNote {
                                keys: vec![principal],
                                ..Default::default()
                            },
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "could not remove expired credentials"),
            }
        }
    })
}

/// SIGINT and SIGTERM, listened for from when this is made: made before the daemon starts, a
/// signal that comes while it starts, or before its caller waits, still stops it cleanly
/// instead of ending the process (the default action, until a handler is installed).
pub struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    /// Installs the handlers (within a Tokio runtime).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for SIGINT and SIGTERM: only Ctrl-C stops the daemon cleanly");
                    None
                }
            };
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Until one of the signals comes (one that came since [`StopSignals::listen`] counts).
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.signals {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Transport libraries whose debug and trace output shows request headers and frames (a
/// session token among them): never more verbose than `info`, whatever level is asked for.
const CAPPED_TARGETS: [&str; 5] = ["h2", "hyper", "hyper_util", "tonic", "tower"];

/// The daemon's log filter: `RUST_LOG` if set, else `level` (default `info`), as
/// `target=level` pairs and a bare default level; anything else falls back to `info`. The
/// transport libraries, and any module of theirs, are capped at `info`.
///
/// A filter by target only: unlike `EnvFilter`, it keeps no per-span state, so the span every
/// call opens costs no shared lock on entering and leaving.
pub fn log_filter(level: Option<&str>) -> tracing_subscriber::filter::Targets {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| level.map(str::to_owned))
        .unwrap_or_else(|| "info".into());
    capped_filter(&spec)
}

fn capped_filter(spec: &str) -> tracing_subscriber::filter::Targets {
    use tracing::Level;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let parsed = spec
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let is_capped = |target: &str| {
        CAPPED_TARGETS.iter().any(|capped| {
            target
                .strip_prefix(capped)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
    };
    // The most verbose level `parsed` enables for `target`.
    let level_of = |target: &str| {
        [
            Level::TRACE,
            Level::DEBUG,
            Level::INFO,
            Level::WARN,
            Level::ERROR,
        ]
        .into_iter()
        .find(|level| parsed.would_enable(target, level))
        .map_or(LevelFilter::OFF, LevelFilter::from_level)
    };
    let mut filter = Targets::new();
    if let Some(default) = parsed.default_level() {
        filter = filter.with_default(default);
    }
    for (target, level) in parsed.iter() {
        let level = if is_capped(target) {
            level.min(LevelFilter::INFO)
        } else {
            level
        };
        filter = filter.with_target(target, level);
    }
    for target in CAPPED_TARGETS {
        filter = filter.with_target(target, level_of(target).min(LevelFilter::INFO));
    }
    filter
}

/// A fresh passphrase for `serve --dev`.
pub fn generate_passphrase() -> SecretString {
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill(&mut raw);
    let text = hex::encode(raw);
    zeroize::Zeroize::zeroize(&mut raw);
    SecretString::new(text)
}

/// Whether this daemon runs the scheduled key tasks now: always on a store of its own; on a
/// shared one, when it leads the scheduler (taking the lead when nobody has it).
fn scheduler_lead(store: Arc<Store>, id: Option<String>) -> Arc<dyn Fn() -> bool + Send + Sync> {
    let store = Arc::downgrade(&store);
    Arc::new(move || match (&id, store.upgrade()) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(id), Some(store)) => match store.lead(SCHEDULER_ROLE, id) {
            Ok(leads) => leads,
            Err(error) => {
                tracing::warn!(%error, "cannot tell who leads the scheduler: not running it now");
                false
            }
        },
    })
}

/// The role of the daemon that runs deletions, rotations and expiries on a shared store.
pub const SCHEDULER_ROLE: &str = "scheduler";

/// This process as a daemon listing names it: host and process id.
fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{} pid {}", host.trim(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::capped_filter;
    use tracing::Level;

    /// Once the store is refused, the health check answers `NOT_SERVING` for the daemon's
    /// service and the server as a whole; before, `SERVING`.
    #[tokio::test]
    async fn the_health_check_says_not_serving_once_the_store_is_refused() {
        use super::{Arc, KeyManagementServiceServer, KmsApi, watch_health};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_server::Health};
        use tonic_health::server::{HealthReporter, HealthService};
        const KMS: &str = "keyhaven.v1.KeyManagementService";
        let health = HealthReporter::new();
        let service = HealthService::from_health_reporter(health.clone());
        health
            .set_serving::<KeyManagementServiceServer<KmsApi>>()
            .await;
        let refused = Arc::new(AtomicBool::new(false));
        let watched = refused.clone();
        let watch = watch_health(move || watched.load(Ordering::SeqCst), health);
        let status = |name: &'static str| {
            let service = &service;
            async move {
                service
                    .check(tonic::Request::new(HealthCheckRequest {
                        service: name.into(),
                    }))
                    .await
                    .unwrap()
                    .into_inner()
                    .status()
            }
        };
        // The watch looks every second.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(status("").await, ServingStatus::Serving);
        assert_eq!(status(KMS).await, ServingStatus::Serving);
        refused.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(status("").await, ServingStatus::NotServing);
        assert_eq!(status(KMS).await, ServingStatus::NotServing);
        watch.stop().await;
    }

    #[test]
    fn the_log_filter_follows_its_spec_and_caps_the_transport_at_info() {
        let filter = capped_filter("debug");
        assert!(filter.would_enable("keyhaven::api", &Level::DEBUG));
        assert!(!filter.would_enable("keyhaven::api", &Level::TRACE));
        assert!(filter.would_enable("h2::codec", &Level::INFO));
        assert!(!filter.would_enable("h2::codec", &Level::DEBUG));

        // Asking for a transport library, or a module of one, by name gets `info` at most.
        let filter = capped_filter("warn,h2=trace,hyper_util::client=trace,keyhaven=trace");
        assert!(filter.would_enable("keyhaven::keys", &Level::TRACE));
        assert!(!filter.would_enable("other", &Level::INFO));
        for target in ["h2", "h2::proto", "hyper_util::client::legacy", "tonic"] {
            assert!(!filter.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(filter.would_enable("h2", &Level::INFO));
        // A name that only starts like a capped one is not capped.
        assert!(capped_filter("h2o=trace").would_enable("h2o", &Level::TRACE));

        // Quieter than `info` stays quieter, transport included.
        let filter = capped_filter("warn");
        assert!(!filter.would_enable("tonic", &Level::INFO));
        assert!(filter.would_enable("tonic", &Level::WARN));

        // What cannot be parsed falls back to `info`.
        let filter = capped_filter("keyhaven[span{x=1}]=trace");
        assert!(filter.would_enable("keyhaven", &Level::INFO));
        assert!(!filter.would_enable("keyhaven", &Level::DEBUG));
    }
}
