//! The etcd engine: the store's records under one key prefix of an etcd cluster.
//!
//! The mapping is direct: a record `name` is the etcd key `<prefix>store/<name>`; `get` is a
//! range request for one key, `scan` range requests from the first key after `after` to the
//! end of the prefix (pages of [`SCAN_PAGE`], all at the first page's revision); `apply` is one
//! etcd transaction holding every put and delete of the batch, so a batch is applied entirely
//! or not at all (and a batch is at most etcd's `--max-txn-ops`, see `max_batch_ops`).
//! `<prefix>init` marks a prefix as initialised (see [`EtcdBackend::claim`]); the rest of
//! `<prefix>` is kept for what the cluster will share besides the records (the seal, the
//! keyring).
//!
//! `sync` does nothing: etcd acknowledges a transaction only once a quorum of members has it in
//! its Raft log, fsynced (etcd fsyncs its WAL before it acknowledges), so every `apply` that
//! returned is already as durable as etcd can make it.
//!
//! **Bridging the synchronous trait.** [`StoreBackend`] is synchronous and `Store` calls it from
//! async tasks of the daemon's runtime and from blocking threads alike. The etcd client is async
//! and lives on a small runtime this backend owns (one worker thread, `keyhaven-etcd`); each call
//! is spawned there and the caller waits for its answer on a channel. A caller on a worker of a
//! multi-threaded runtime waits inside `block_in_place`, which hands that worker's other tasks to
//! another thread first, so the daemon's executor is never stalled by a network round trip; on
//! a blocking thread (or a single-threaded runtime, as in unit tests) it simply waits. Owning
//! the client's runtime also means the backend works the same whoever calls it, and never
//! depends on the caller's runtime being alive.
//!
//! **Several daemons per prefix.** Every daemon on a prefix writes it; `shared` says how
//! their views stay one (every transaction is fenced on the digest record's revision, and a
//! watch on `<prefix>store/` brings every daemon the others' changes). Each backend holds an
//! etcd lease, kept alive while it lives and revoked when it is dropped: the daemon's entry
//! under `<prefix>daemons/` (what `keyhaven cluster status` lists) and its leadership of the
//! scheduler (`<prefix>leader/scheduler`) are bound to it, so a daemon that died leaves both
//! within [`HOLD_TTL_SECONDS`].

use super::shared::{FeedEvent, Fenced, SharedEngine, Snapshot};
use super::{Entry, Op, StoreBackend, StoreError, WriteBatch};
use crate::secret::SecretString;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    LeaseClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The key prefix when the config gives none.
pub const DEFAULT_PREFIX: &str = "keyhaven/";
/// Operations etcd accepts in one transaction by default (`--max-txn-ops`); a cluster must not
/// be run with less. A bigger transaction is refused whole.
const MAX_TXN_OPS: usize = 128;
/// Records read per range request: a scan of the whole store (at start) is paged, so that no
/// answer comes near the gRPC message bound (`MAX_ANSWER_BYTES`).
const SCAN_PAGE: usize = 256;
/// Largest answer the client accepts: a page of records of the largest size the daemon writes
/// (key policies of 32 KiB and their wraps) with room to spare.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Life of a daemon's lease: how long a daemon that died stays listed, and leads.
pub const HOLD_TTL_SECONDS: i64 = 10;
/// Longest wait for one etcd request; past it the call fails (and the daemon's caller gets an
/// internal error) rather than hanging on a cluster without quorum.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the store lives in etcd and how to log in.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `http://host:port` (or `https://` with `tls`) of one or more members.
    pub endpoints: Vec<String>,
    /// Every key Keyhaven writes starts with this (ends with `/`).
    pub prefix: String,
    /// etcd user name and password, when the cluster has authentication on.
    pub user: Option<(String, SecretString)>,
    /// TLS to the members (`https://` endpoints).
    pub tls: Option<EtcdTls>,
}

/// The PEM files of TLS to etcd, read when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA the members' certificates must chain to.
    pub ca_file: PathBuf,
    /// A client certificate and its key, for members that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdTls {
    fn options(&self) -> Result<TlsOptions, StoreError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map(Zeroizing::new)
                .map_err(|e| StoreError(format!("cannot read {}: {e}", path.display())))
        };
        let mut options = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca_file)?.as_slice()));
        if let Some((cert, key)) = &self.identity {
            options = options.identity(Identity::from_pem(
                read(cert)?.as_slice(),
                read(key)?.as_slice(),
            ));
        }
        Ok(options)
    }
}

/// The store's engine on etcd: a connected client, the runtime it runs on, and this process's
/// hold on the prefix.
pub struct EtcdBackend {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    kv: KvClient,
    watch: WatchClient,
    lease_client: LeaseClient,
    /// This backend's lease (its listing and leadership are bound to it).
    lease: Arc<Lease>,
    /// `<prefix>store/`.
    records: Vec<u8>,
    /// `<prefix>`.
    prefix: Vec<u8>,
}

fn store_error(error: impl std::fmt::Display) -> StoreError {
    StoreError(format!("etcd: {error}"))
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

impl EtcdBackend {
    /// Connects to the cluster (the connection is checked with one request).
    pub fn connect(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyhaven-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("cannot start the etcd client's runtime: {e}")))?;
        match Self::connect_on(&runtime, settings) {
            Ok((client, lease)) => {
                let prefix = settings.prefix.as_bytes().to_vec();
                let mut records = prefix.clone();
                records.extend_from_slice(b"store/");
                Ok(Self {
                    runtime: Some(runtime),
                    kv: client
                        .kv_client()
                        .max_decoding_message_size(MAX_ANSWER_BYTES),
                    watch: client.watch_client(),
                    lease_client: client.lease_client(),
                    lease,
                    records,
                    prefix,
                })
            }
            Err(error) => {
                // Dropping a runtime waits for it, which panics inside another runtime.
                runtime.shutdown_background();
                Err(error)
            }
        }
    }

    fn connect_on(
        runtime: &tokio::runtime::Runtime,
        settings: &EtcdSettings,
    ) -> Result<(Client, Arc<Lease>), StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some((name, password)) = &settings.user {
            options = options.with_user(name.clone(), password.expose().clone());
        }
        if let Some(tls) = &settings.tls {
            options = options.with_tls(tls.options()?);
        }
        let endpoints = settings.endpoints.clone();
        let mut mark = settings.prefix.as_bytes().to_vec();
        mark.extend_from_slice(b"init");
        let client = wait_for(runtime, async move {
            let mut client = Client::connect(endpoints, Some(options)).await?;
            // Connecting is lazy: one request proves the cluster answers (inside the prefix: a
            // user may be allowed nothing else).
            client.get(mark, None).await?;
            Ok::<_, etcd_client::Error>(client)
        })?
        .map_err(|e| {
            StoreError(format!(
                "cannot reach etcd at {}: {e}",
                settings.endpoints.join(", ")
            ))
        })?;
        let (mut lease_client, kv) = (client.lease_client(), client.kv_client());
        let lease = wait_for(runtime, async move {
            let id = lease_client.grant(HOLD_TTL_SECONDS, None).await?.id();
            let lease = Arc::new(Lease {
                id: std::sync::atomic::AtomicI64::new(id),
                announced: std::sync::Mutex::new(None),
            });
            tokio::spawn(keep_alive(lease_client, kv, lease.clone()));
            Ok::<_, etcd_client::Error>(lease)
        })?
        .map_err(store_error)?;
        Ok((client, lease))
    }

    /// Runs the request `make` makes on the client's runtime and waits for its answer; a
    /// request that found no member able to answer is made again (see [`ATTEMPTS`]).
    fn run<T: Send + 'static, F>(
        &self,
        make: impl Fn() -> F + Send + 'static,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError("etcd: the client has stopped".into()))?;
        wait_for(runtime, async move {
            let mut pause = RETRY_PAUSE;
            for _ in 1..ATTEMPTS {
                match make().await {
                    Err(error) if unreachable(&error) => {
                        tracing::debug!(%error, "etcd request retried");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    answer => return answer,
                }
            }
            make().await
        })?
        .map_err(store_error)
    }

    fn record_key(&self, name: &[u8]) -> Vec<u8> {
        let mut key = self.records.clone();
        key.extend_from_slice(name);
        key
    }

    /// Marks the prefix as initialised (holding `account_id`), in one transaction that fails
    /// when the mark is already there; refused too when the prefix holds records: two `init`s
    /// on one prefix, even at the same moment, cannot both succeed.
    pub fn claim(&self, account_id: &str) -> Result<(), StoreError> {
        let mut mark = self.prefix.clone();
        mark.extend_from_slice(b"init");
        let kv = self.kv.clone();
        let records = self.records.clone();
        let value = account_id.as_bytes().to_vec();
        // Not retried: a claim whose answer was lost must not be taken for somebody else's.
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError("etcd: the client has stopped".into()))?;
        let (claimed, holds) = wait_for(runtime, async move {
            let mut kv = kv;
            let txn = Txn::new()
                .when([Compare::create_revision(mark.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(mark, value, None)]);
            let claimed = kv.txn(txn).await?.succeeded();
            let holds = kv
                .get(
                    records,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await?
                .count();
            Ok::<_, etcd_client::Error>((claimed, holds))
        })?
        .map_err(store_error)?;
        if !claimed {
            return Err(StoreError(format!(
                "etcd prefix '{}' is already initialised: give another etcd_prefix, or remove \
                 the prefix (etcdctl del --prefix) to start over",
                String::from_utf8_lossy(&self.prefix)
            )));
        }
        if holds > 0 {
            return Err(StoreError(format!(
                "etcd prefix '{}' already holds records, but was never initialised: give \
                 another etcd_prefix, or remove the prefix to start over",
                String::from_utf8_lossy(&self.prefix)
            )));
        }
        Ok(())
    }
}

/// A backend's etcd lease, and what it listed under it.
pub struct Lease {
    id: std::sync::atomic::AtomicI64,
    /// The daemon's entry under `<prefix>daemons/`, listed again under a new lease.
    announced: std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl Lease {
    fn id(&self) -> i64 {
        self.id.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Keeps the backend's lease alive for as long as the runtime runs, starting a new stream (to
/// whichever member answers) whenever one breaks. A lease that expired (etcd out of reach for
/// longer than its life) is replaced by a new one and the daemon listed again under it; its
/// lead of the scheduler is gone, and taken again at a pass if nobody else took it.
async fn keep_alive(mut client: LeaseClient, mut kv: KvClient, lease: Arc<Lease>) {
    let period = Duration::from_secs((HOLD_TTL_SECONDS / 3).max(1) as u64);
    loop {
        let id = lease.id();
        let mut expired = false;
        if let Ok((mut keeper, mut answers)) = client.keep_alive(id).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match answers.message().await {
                    Ok(Some(answer)) if answer.ttl() > 0 => tokio::time::sleep(period).await,
                    Ok(Some(_)) => {
                        expired = true;
                        break;
                    }
                    _ => break,
                }
            }
        }
        if expired {
            match client.grant(HOLD_TTL_SECONDS, None).await {
                Ok(granted) => {
                    lease
                        .id
                        .store(granted.id(), std::sync::atomic::Ordering::Release);
                    let announced = lease.announced.lock().ok().and_then(|a| a.clone());
                    if let Some((key, value)) = announced {
                        let _ = kv
                            .put(key, value, Some(PutOptions::new().with_lease(granted.id())))
                            .await;
                    }
                    tracing::warn!(
                        "this daemon's etcd lease expired (etcd out of reach for longer than \
                         its life): listed again under a new one"
                    );
                    continue;
                }
                Err(error) => tracing::debug!(%error, "cannot grant a new etcd lease yet"),
            }
        }
        tokio::time::sleep(RETRY_PAUSE * 10).await;
    }
}

/// Tries of one request when no member answers. The client spreads requests over every
/// endpoint and keeps sending some to a member that is down, so a request that found a dead
/// member (or one without a leader, during an election) is made again, to whichever member
/// the client picks next. Making a batch's transaction again is harmless: it sets the same
/// values, and nothing of this daemon writes in between (`Store` holds its digest lock).
const ATTEMPTS: u32 = 9;
/// The first pause between tries, doubled each time: about 5 s in all, as a batch's tries
/// (`store::retry_pause`), so that a read waits out an election as long as a write does.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Whether `error` says no member could take the request (so another try may succeed).
fn unreachable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        // A connection cut under a request comes back as Unknown ("transport error", "h2
        // protocol error"): etcd itself answers with the codes it means.
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ),
        _ => false,
    }
}

/// Spawns `request` on `runtime` and waits for it without stalling the caller's executor.
fn wait_for<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    request: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = answer.send(request.await);
    });
    let wait = move || {
        answered
            .recv()
            .map_err(|_| StoreError("etcd: the request was dropped".into()))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

impl StoreBackend for EtcdBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let kv = self.kv.clone();
        let key = self.record_key(key);
        let mut response = self.run(move || {
            let (mut kv, key) = (kv.clone(), key.clone());
            async move { kv.get(key, None).await }
        })?;
        Ok(response
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.value().to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(self.scan_at(prefix, after, limit)?.0)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        // etcd refuses a transaction naming a key twice; within a batch the last change to a
        // record is the one that counts, as it would be applied in order.
        let mut last = BTreeMap::new();
        for (name, value) in batch.into_ops() {
            last.insert(name, value);
        }
        if last.is_empty() {
            return Ok(());
        }
        let operations: Vec<TxnOp> = last
            .into_iter()
            .map(|(name, value)| {
                let key = self.record_key(&name);
                match value {
                    Some(value) => TxnOp::put(key, value, None),
                    None => TxnOp::delete(key, None),
                }
            })
            .collect();
        let kv = self.kv.clone();
        self.run(move || {
            let mut kv = kv.clone();
            let txn = Txn::new().and_then(operations.clone());
            async move { kv.txn(txn).await }
        })?;
        Ok(())
    }

    /// Nothing to do: a transaction etcd acknowledged is already on a quorum's disks.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn max_batch_ops(&self) -> usize {
        MAX_TXN_OPS
    }

    fn shared(&self) -> Option<&dyn SharedEngine> {
        Some(self)
    }
}

impl EtcdBackend {
    /// `<prefix>` followed by `rest`.
    fn under_prefix(&self, rest: &str) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(rest.as_bytes());
        key
    }

    /// Lists this daemon under `<prefix>daemons/<id>` with `details`, for as long as its lease
    /// lives.
    pub fn announce(&self, id: &str, details: &str) -> Result<(), StoreError> {
        let (kv, key, value, lease) = (
            self.kv.clone(),
            self.under_prefix(&format!("daemons/{id}")),
            details.as_bytes().to_vec(),
            self.lease.id(),
        );
        if let Ok(mut announced) = self.lease.announced.lock() {
            *announced = Some((key.clone(), value.clone()));
        }
        self.run(move || {
            let (mut kv, key, value) = (kv.clone(), key.clone(), value.clone());
            async move {
                kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })?;
        Ok(())
    }

    /// Every daemon listed on the prefix: its id, what it said of itself, and the seconds
    /// left of its lease (what a heartbeat renews to [`HOLD_TTL_SECONDS`]).
    pub fn daemons(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let (kv, lease, key) = (
            self.kv.clone(),
            self.lease_client.clone(),
            self.under_prefix("daemons/"),
        );
        let skip = key.len();
        self.run(move || {
            let (mut kv, mut lease, key) = (kv.clone(), lease.clone(), key.clone());
            async move {
                let listed = kv.get(key, Some(GetOptions::new().with_prefix())).await?;
                let mut daemons = Vec::new();
                for kv in listed.kvs() {
                    let left = lease.time_to_live(kv.lease(), None).await?.ttl();
                    daemons.push((
                        String::from_utf8_lossy(kv.key().get(skip..).unwrap_or_default())
                            .into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                        left,
                    ));
                }
                Ok(daemons)
            }
        })
    }

    /// Who leads `role` now (taking the lead for `id` when given and nobody has it).
    pub fn leader(&self, role: &str, id: Option<&str>) -> Result<Option<String>, StoreError> {
        let (kv, key, lease) = (
            self.kv.clone(),
            self.under_prefix(&format!("leader/{role}")),
            self.lease.id(),
        );
        let id = id.map(str::to_owned);
        let response = self.run(move || {
            let (mut kv, key, id) = (kv.clone(), key.clone(), id.clone());
            async move {
                let mut take = Vec::new();
                if let Some(id) = id {
                    take.push(TxnOp::put(
                        key.clone(),
                        id,
                        Some(PutOptions::new().with_lease(lease)),
                    ));
                }
                take.push(TxnOp::get(key.clone(), None));
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then(take)
                    .or_else([TxnOp::get(key, None)]);
                kv.txn(txn).await
            }
        })?;
        Ok(response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        }))
    }

    /// Keeps the seal (`seal.json`'s content) at `<prefix>seal`, once: every daemon joining
    /// the prefix makes its data directory from it.
    pub fn keep_seal(&self, json: &[u8]) -> Result<(), StoreError> {
        let (kv, key, value) = (self.kv.clone(), self.under_prefix("seal"), json.to_vec());
        let response = self.run(move || {
            let (mut kv, key, value) = (kv.clone(), key.clone(), value.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                kv.txn(txn).await
            }
        })?;
        if !response.succeeded() {
            return Err(StoreError(format!(
                "etcd prefix '{}' holds a seal already",
                String::from_utf8_lossy(&self.prefix)
            )));
        }
        Ok(())
    }

    /// The seal kept at `<prefix>seal`, if any.
    pub fn kept_seal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let (kv, key) = (self.kv.clone(), self.under_prefix("seal"));
        let mut response = self.run(move || {
            let (mut kv, key) = (kv.clone(), key.clone());
            async move { kv.get(key, None).await }
        })?;
        Ok(response
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.value().to_vec()))
    }

    /// [`StoreBackend::scan`], every page read at one revision (so that the pages are one
    /// consistent view), and that revision (0 when nothing was read).
    fn scan_at(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Entry>, i64), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), 0));
        }
        let mut first = match after {
            Some(after) if after >= prefix => {
                let mut first = self.record_key(after);
                first.push(0);
                first
            }
            _ => self.record_key(prefix),
        };
        let end = prefix_end(&self.record_key(prefix));
        let skip = self.records.len();
        let mut entries = Vec::new();
        let mut revision = 0;
        while entries.len() < limit {
            let page = (limit - entries.len()).min(SCAN_PAGE);
            let kv = self.kv.clone();
            let (from, end_key) = (first.clone(), end.clone());
            let mut response = self.run(move || {
                let (mut kv, from) = (kv.clone(), from.clone());
                let options = GetOptions::new()
                    .with_range(end_key.clone())
                    .with_limit(page as i64)
                    .with_revision(revision);
                async move { kv.get(from, Some(options)).await }
            })?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            if let Some(last) = kvs.last() {
                first = last.key().to_vec();
                first.push(0);
            }
            entries.extend(
                kvs.into_iter()
                    .map(|kv| (kv.key()[skip..].to_vec(), kv.value().to_vec())),
            );
            if !more {
                break;
            }
        }
        Ok((entries, revision))
    }

    fn digest_key(&self) -> Vec<u8> {
        self.record_key(super::barrier::DIGEST_RECORD)
    }
}

/// The digest record's revision in a transaction's `or_else` answer (0: there is none).
fn fence_in(response: &etcd_client::TxnResponse) -> i64 {
    response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
            TxnOpResponse::Txn(inner) => Some(fence_in(&inner)),
            _ => None,
        })
        .unwrap_or(0)
}

impl SharedEngine for EtcdBackend {
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Every record at one revision, then the digest record's last change as of it.
        let (entries, revision) = self.scan_at(&[], None, usize::MAX)?;
        if revision == 0 {
            return Err(StoreError("etcd answered without a revision".into()));
        }
        let (kv, key) = (self.kv.clone(), self.digest_key());
        let digest = self.run(move || {
            let (mut kv, key) = (kv.clone(), key.clone());
            async move {
                kv.get(key, Some(GetOptions::new().with_revision(revision)))
                    .await
            }
        })?;
        Ok(Snapshot {
            revision,
            fence: digest.kvs().first().map_or(0, |kv| kv.mod_revision()),
            entries,
        })
    }

    fn fence(&self) -> Result<i64, StoreError> {
        let (kv, key) = (self.kv.clone(), self.digest_key());
        let response = self.run(move || {
            let (mut kv, key) = (kv.clone(), key.clone());
            async move { kv.get(key, None).await }
        })?;
        Ok(response.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }

    fn apply_fenced(
        &self,
        ops: Vec<Op>,
        view: i64,
        unchanged: &[(Vec<u8>, i64, bool)],
    ) -> Result<Fenced, StoreError> {
        let mut last = BTreeMap::new();
        for (name, value) in ops {
            last.insert(name, value);
        }
        let operations: Vec<TxnOp> = last
            .into_iter()
            .map(|(name, value)| {
                let key = self.record_key(&name);
                match value {
                    Some(value) => TxnOp::put(key, value, None),
                    None => TxnOp::delete(key, None),
                }
            })
            .collect();
        let digest = self.digest_key();
        let fenced = Txn::new()
            .when([Compare::mod_revision(
                digest.clone(),
                CompareOp::Equal,
                view,
            )])
            .and_then(operations)
            .or_else([TxnOp::get(digest, None)]);
        let txn = if unchanged.is_empty() {
            fenced
        } else {
            // The records first: if one changed, nothing is written whatever the digest says.
            let mut compares = Vec::with_capacity(unchanged.len() * 2);
            for (name, since, present) in unchanged {
                let key = self.record_key(name);
                // A removed key compares as revision 0: one read as present must still be.
                if *present {
                    compares.push(Compare::version(key.clone(), CompareOp::Greater, 0));
                }
                compares.push(Compare::mod_revision(
                    key,
                    CompareOp::Less,
                    since.saturating_add(1),
                ));
            }
            Txn::new().when(compares).and_then([TxnOp::txn(fenced)])
        };
        let kv = self.kv.clone();
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError("etcd: the client has stopped".into()))?;
        // Sent once: a transaction whose answer was lost must not be sent again blind (the
        // store reads the digest to know whether it was applied).
        let response = wait_for(runtime, async move {
            let mut kv = kv;
            tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await
        })?
        .map_err(|_| StoreError("etcd: the transaction was not answered in time".into()))?
        .map_err(store_error)?;
        let revision = response.header().map_or(0, |h| h.revision());
        if !response.succeeded() {
            return Ok(if unchanged.is_empty() {
                Fenced::Behind(fence_in(&response))
            } else {
                Fenced::Stale
            });
        }
        if unchanged.is_empty() {
            return Ok(Fenced::Applied(revision));
        }
        let inner = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Txn(inner) => Some(inner),
            _ => None,
        });
        match inner {
            Some(inner) if inner.succeeded() => Ok(Fenced::Applied(revision)),
            Some(inner) => Ok(Fenced::Behind(fence_in(&inner))),
            None => Err(StoreError(
                "etcd answered a transaction without its part".into(),
            )),
        }
    }

    fn announce(&self, id: &str, details: &str) -> Result<(), StoreError> {
        EtcdBackend::announce(self, id, details)
    }

    fn daemons(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        EtcdBackend::daemons(self)
    }

    fn leader(&self, role: &str, id: Option<&str>) -> Result<Option<String>, StoreError> {
        EtcdBackend::leader(self, role, id)
    }

    fn follow(
        &self,
        revision: i64,
        sink: std::sync::mpsc::Sender<FeedEvent>,
    ) -> Result<(), StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError("etcd: the client has stopped".into()))?;
        runtime.spawn(feed(
            self.watch.clone(),
            self.records.clone(),
            revision.saturating_add(1),
            sink,
        ));
        Ok(())
    }
}

/// Watches `records` from `next` on, sending every transaction's changes to `sink`; starts the
/// watch again (from the first revision not yet sent) whenever it breaks. Ends when `sink` is
/// gone or the history it needs was compacted away.
async fn feed(
    mut watch: WatchClient,
    records: Vec<u8>,
    mut next: i64,
    sink: std::sync::mpsc::Sender<FeedEvent>,
) {
    let skip = records.len();
    let mut failures = 0u32;
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next)
            .with_progress_notify();
        let why = match watch.watch(records.clone(), Some(options)).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(answer)) => {
                        if answer.canceled() {
                            if answer.compact_revision() > 0 {
                                let _ = sink.send(FeedEvent::Lost(format!(
                                    "etcd compacted its history past revision {next}"
                                )));
                                return;
                            }
                            break format!("etcd ended the watch: {}", answer.cancel_reason());
                        }
                        if answer.created() {
                            failures = 0;
                            if sink.send(FeedEvent::Resumed).is_err() {
                                return;
                            }
                        }
                        let mut group: Option<(i64, Vec<Op>)> = None;
                        for event in answer.events() {
                            let Some(kv) = event.kv() else { continue };
                            let revision = kv.mod_revision();
                            let name = kv.key().get(skip..).unwrap_or_default().to_vec();
                            let value = match event.event_type() {
                                etcd_client::EventType::Put => Some(kv.value().to_vec()),
                                etcd_client::EventType::Delete => None,
                            };
                            match &mut group {
                                Some((at, ops)) if *at == revision => ops.push((name, value)),
                                _ => {
                                    if let Some((revision, ops)) = group.take()
                                        && sink.send(FeedEvent::Changes { revision, ops }).is_err()
                                    {
                                        return;
                                    }
                                    group = Some((revision, vec![(name, value)]));
                                }
                            }
                        }
                        if let Some((revision, ops)) = group {
                            next = revision + 1;
                            if sink.send(FeedEvent::Changes { revision, ops }).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break "the watch stream ended".to_owned(),
                    Err(error) => break error.to_string(),
                }
            },
            Err(error) => error.to_string(),
        };
        if sink.send(FeedEvent::Interrupted(why)).is_err() {
            return;
        }
        // At once the first time (another member answers), then every 200 ms.
        if failures > 0 {
            tokio::time::sleep(RETRY_PAUSE * 10).await;
        }
        failures += 1;
    }
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which panics inside another runtime;
        // requests still in flight have nobody waiting for them anyway.
        if let Some(runtime) = self.runtime.take() {
            // Released at once rather than when the lease runs out, so the next start (or
            // another daemon) need not wait.
            let mut lease = self.lease_client.clone();
            let id = self.lease.id();
            let _ = wait_for(&runtime, async move {
                tokio::time::timeout(Duration::from_secs(2), lease.revoke(id)).await
            });
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_the_next_key_after_everything_it_starts() {
        assert_eq!(prefix_end(b"keyhaven/store/"), b"keyhaven/store0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
