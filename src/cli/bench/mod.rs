//! `keyhaven bench`: a load generator for any Keyhaven endpoint, and the load-running core
//! that `cargo bench --bench daemon` drives against in-process daemons.
//!
//! Requests go through one of the daemon's doors (`--door`): signed gRPC like every other
//! client's (the default), gRPC over mutual TLS as a certificate principal with no signature,
//! or the AWS door's JSON 1.1 with standard SigV4 ([`aws`]). `--concurrency` requests are kept
//! in flight over `--connections` HTTP/2 channels (on the AWS door, one HTTP/1.1 keep-alive
//! connection per request in flight) until `--duration` or `--requests` runs out, whichever
//! comes first. Latencies go into a log-linear histogram (under 1% error, constant memory,
//! however long the run). Every failed request is counted under its gRPC code and reason name:
//! a run with failures says so, and the command exits non-zero.

pub mod aws;
mod histogram;
mod report;

pub use histogram::LatencyHistogram;

pub use report::format_latency;
use report::{Description, report_human, report_json};

use super::commands::CliError;
use super::{ClientArgs, OutputFormat};
use crate::api::reason_of;
use crate::client::{CLIENT_CERT_ENV, CLIENT_KEY_ENV, Client, ClientCredentials, ClientTls};
use crate::proto::v1;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Larger plaintexts are refused by Encrypt.
const MAX_PLAINTEXT: usize = 4096;
/// Without `--duration` or `--requests`.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// A request still unanswered after this counts as failed (`ClientTimeout`).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DESCRIPTION: &str = "created by keyhaven bench";

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Operation {
    Encrypt,
    Decrypt,
    GenerateDataKey,
    CreateKey,
    DescribeKey,
    /// Per 100 requests: 40 Encrypt, 40 Decrypt, 10 GenerateDataKey, 9 DescribeKey, 1 CreateKey.
    Mixed,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::GenerateDataKey => "generate-data-key",
            Operation::CreateKey => "create-key",
            Operation::DescribeKey => "describe-key",
            Operation::Mixed => "mixed",
        }
    }

    /// The operation of the `sequence`-th request of a mixed workload.
    fn mixed(sequence: u64) -> Operation {
        match sequence % 100 {
            0..40 => Operation::Encrypt,
            40..80 => Operation::Decrypt,
            80..90 => Operation::GenerateDataKey,
            90..99 => Operation::DescribeKey,
            _ => Operation::CreateKey,
        }
    }

    fn needs_plaintext(self) -> bool {
        matches!(
            self,
            Operation::Encrypt | Operation::Decrypt | Operation::Mixed
        )
    }
}

/// Which of the daemon's doors the load goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Door {
    /// gRPC, every request signed (Keyhaven's request signature).
    Grpc,
    /// gRPC over mutual TLS, requests unsigned: the caller is the principal its client
    /// certificate (KEYHAVEN_CLIENT_CERT, KEYHAVEN_CLIENT_KEY) is bound to.
    Certificate,
    /// The AWS door (`--aws-endpoint`): JSON 1.1 over HTTP/1.1 keep-alive, standard SigV4.
    Aws,
}

impl Door {
    /// Whether requests through this door carry Keyhaven's signature (the certificate door's
    /// caller is its certificate).
    pub fn signs(self) -> bool {
        self != Door::Certificate
    }

    pub fn name(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Certificate => "certificate",
            Door::Aws => "aws",
        }
    }
}

/// `keyhaven bench`'s flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What each request does. `create-key` (and 1% of `mixed`) creates keys, described
    /// "created by keyhaven bench", that are left in place.
    #[arg(long, value_enum, default_value_t = Operation::Encrypt)]
    pub operation: Operation,
    /// Plaintext bytes per Encrypt and Decrypt (1-4096). GenerateDataKey asks for AES_256.
    #[arg(long, default_value_t = 32, value_name = "BYTES")]
    pub payload_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// gRPC channels (HTTP/2 connections) the requests are spread over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Run for this many seconds (default 10, unless --requests is given).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Stop after this many requests (after the warm-up).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Run this many seconds first without recording anything.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub warmup: f64,
    /// The key to use (any key form); without it, a key is created first.
    #[arg(long)]
    pub key: Option<String>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// The door the requests go through.
    #[arg(long, value_enum, default_value_t = Door::Grpc)]
    pub door: Door,
    /// The AWS door's address, for `--door aws` (`serve --dev` prints it).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "http://HOST:PORT")]
    pub aws_endpoint: Option<String>,
}

/// How long and how hard a load runs.
#[derive(Debug, Clone)]
pub struct LoadShape {
    /// Requests in flight at once (one task each).
    pub concurrency: usize,
    /// Stop issuing requests after this long (measured from the end of the warm-up).
    pub duration: Option<Duration>,
    /// Stop after this many requests (counted after the warm-up).
    pub requests: Option<u64>,
    /// Requests made before this has passed are not recorded.
    pub warmup: Duration,
    /// A request unanswered after this counts as failed.
    pub request_timeout: Duration,
    /// A line on stderr every second.
    pub progress: bool,
}

impl LoadShape {
    /// `concurrency` in flight for `duration`, no warm-up, no progress line.
    pub fn timed(concurrency: usize, duration: Duration) -> Self {
        Self {
            concurrency,
            duration: Some(duration),
            requests: None,
            warmup: Duration::ZERO,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            progress: false,
        }
    }
}

/// A Keyhaven workload: which operation, on which key, with how much plaintext.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub operation: Operation,
    /// Grpc signs every request; Certificate sends them unsigned. (Aws runs through
    /// [`aws::run_load`].)
    pub door: Door,
    /// Any key form; used by every operation but CreateKey.
    pub key_id: String,
    pub payload_size: usize,
    pub shape: LoadShape,
}

/// Why a request failed.
#[derive(Debug)]
pub struct Failure {
    /// What failures are counted under: the gRPC code and, when given, the reason name.
    pub kind: String,
    pub message: String,
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        let kind = match reason_of(&status) {
            Some(reason) => format!("{:?} {reason}", status.code()),
            None => format!("{:?}", status.code()),
        };
        Failure {
            kind,
            message: CliError::Status(status).to_string(),
        }
    }
}

impl Failure {
    fn unexpected(message: impl Into<String>) -> Self {
        Failure {
            kind: "UnexpectedResponse".into(),
            message: message.into(),
        }
    }
}

/// Something to put under load: each of the `concurrency` tasks makes its own worker state
/// (a client clone, say) and calls [`Workload::call`] with it until the load ends.
pub trait Workload: Send + Sync + 'static {
    type Worker: Send + 'static;

    fn worker(&self, index: usize) -> Self::Worker;

    /// One request; `sequence` numbers the requests of the whole run from 0.
    fn call(
        &self,
        worker: &mut Self::Worker,
        sequence: u64,
    ) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// How often one kind of failure happened, with the first message seen.
#[derive(Debug, Clone)]
pub struct FailureCount {
    pub count: u64,
    pub example: String,
}

/// What a load measured. Throughput and latencies count successful requests only.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub concurrency: usize,
    /// From the end of the warm-up until the last recorded request was answered.
    pub elapsed: Duration,
    pub succeeded: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, FailureCount>,
    pub latency: LatencyHistogram,
}

impl LoadReport {
    pub fn ops_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.succeeded as f64 / seconds
        } else {
            0.0
        }
    }

    /// "3 Unavailable KeyStoreUnavailableException, 1 ClientTimeout".
    pub fn failure_summary(&self) -> String {
        self.failures
            .iter()
            .map(|(kind, failure)| format!("{} {kind}", failure.count))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn latency_json(&self) -> Value {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        json!({
            "P50": ms(self.latency.percentile(0.50)),
            "P90": ms(self.latency.percentile(0.90)),
            "P99": ms(self.latency.percentile(0.99)),
            "Max": ms(self.latency.max()),
            "Mean": ms(self.latency.mean()),
        })
    }
}

/// Counters the progress line reads while the load runs.
#[derive(Default)]
struct Tally {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

struct WorkerResult {
    latency: LatencyHistogram,
    failures: BTreeMap<String, FailureCount>,
    succeeded: u64,
    failed: u64,
    last_answer: Option<Instant>,
}

/// Runs `workload` with `shape`'s concurrency until its duration or request count runs out.
/// Without either, it runs for 10 seconds.
pub async fn drive<W: Workload>(workload: Arc<W>, shape: &LoadShape) -> LoadReport {
    let concurrency = shape.concurrency.max(1);
    let duration = match (shape.duration, shape.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (duration, _) => duration,
    };
    let started = Instant::now();
    let measure_from = started + shape.warmup;
    let deadline = duration.map(|d| measure_from + d);
    let sequence = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));

    let progress = shape.progress.then(|| {
        let tally = tally.clone();
        let done = done.clone();
        tokio::spawn(report_progress(tally, done, measure_from, duration))
    });

    let mut tasks = Vec::with_capacity(concurrency);
    for index in 0..concurrency {
        let workload = workload.clone();
        let sequence = sequence.clone();
        let issued = issued.clone();
        let tally = tally.clone();
        let requests = shape.requests;
        let timeout = shape.request_timeout;
        tasks.push(tokio::spawn(async move {
            let mut worker = workload.worker(index);
            let mut result = WorkerResult {
                latency: LatencyHistogram::new(),
                failures: BTreeMap::new(),
                succeeded: 0,
                failed: 0,
                last_answer: None,
            };
            loop {
                let start = Instant::now();
                if deadline.is_some_and(|deadline| start >= deadline) {
                    break;
                }
                let recorded = start >= measure_from;
                if recorded
                    && let Some(limit) = requests
                    && issued.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    break;
                }
                let n = sequence.fetch_add(1, Ordering::Relaxed);
                let outcome = tokio::time::timeout(timeout, workload.call(&mut worker, n)).await;
                let answered = Instant::now();
                if !recorded {
                    continue;
                }
                result.last_answer = Some(answered);
                let failure = match outcome {
                    Ok(Ok(())) => {
                        result.latency.record(answered - start);
                        result.succeeded += 1;
                        tally.succeeded.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(Err(failure)) => failure,
                    Err(_) => Failure {
                        kind: "ClientTimeout".into(),
                        message: format!("no answer within {timeout:?}"),
                    },
                };
                result.failed += 1;
                tally.failed.fetch_add(1, Ordering::Relaxed);
                result
                    .failures
                    .entry(failure.kind)
                    .or_insert_with(|| FailureCount {
                        count: 0,
                        example: failure.message,
                    })
                    .count += 1;
            }
            result
        }));
    }

    let mut report = LoadReport {
        concurrency,
        elapsed: Duration::ZERO,
        succeeded: 0,
        failed: 0,
        failures: BTreeMap::new(),
        latency: LatencyHistogram::new(),
    };
    let mut last_answer = measure_from;
    for task in tasks {
        let result = match task.await {
            Ok(result) => result,
            Err(error) => {
                report.failed += 1;
                report
                    .failures
                    .entry("LoadTaskPanicked".into())
                    .or_insert_with(|| FailureCount {
                        count: 0,
                        example: error.to_string(),
                    })
                    .count += 1;
                continue;
            }
        };
        report.latency.merge(&result.latency);
        report.succeeded += result.succeeded;
        report.failed += result.failed;
        for (kind, failure) in result.failures {
            report
                .failures
                .entry(kind)
                .or_insert(FailureCount {
                    count: 0,
                    example: failure.example,
                })
                .count += failure.count;
        }
        if let Some(answered) = result.last_answer {
            last_answer = last_answer.max(answered);
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }
    report.elapsed = last_answer.saturating_duration_since(measure_from);
    report
}

async fn report_progress(
    tally: Arc<Tally>,
    done: Arc<AtomicBool>,
    measure_from: Instant,
    duration: Option<Duration>,
) {
    let warmup_ends = tokio::time::Instant::from_std(measure_from);
    tokio::time::sleep_until(warmup_ends).await;
    let mut ticker =
        tokio::time::interval_at(warmup_ends + Duration::from_secs(1), Duration::from_secs(1));
    let mut previous = 0;
    // Bounded by the caller, which aborts this task when the load ends.
    while !done.load(Ordering::Relaxed) {
        ticker.tick().await;
        let succeeded = tally.succeeded.load(Ordering::Relaxed);
        let failed = tally.failed.load(Ordering::Relaxed);
        let elapsed = measure_from.elapsed().as_secs_f64();
        let of = duration
            .map(|d| format!("/{:.0}", d.as_secs_f64()))
            .unwrap_or_default();
        eprintln!(
            "bench: {elapsed:>4.0}{of} s  {succeeded} ok  {failed} failed  {} ops/s in the last second",
            succeeded - previous
        );
        previous = succeeded;
    }
}

/// The Keyhaven API under load: `spec.operation` on `spec.key_id`, spread over `clients`
/// (one per connection).
struct KmsWorkload {
    clients: Vec<Client>,
    /// False on the certificate door: requests go unsigned.
    signed: bool,
    operation: Operation,
    key_id: String,
    plaintext: Vec<u8>,
    blob: Vec<u8>,
}

/// `message` as a request of `method` on `client`: signed, or (a certificate principal's)
/// not.
fn request<T: prost::Message>(
    client: &Client,
    signed: bool,
    method: &str,
    message: T,
) -> tonic::Request<T> {
    if signed {
        client.signed(method, message)
    } else {
        tonic::Request::new(message)
    }
}

impl KmsWorkload {
    fn request<T: prost::Message>(
        &self,
        client: &Client,
        method: &str,
        message: T,
    ) -> tonic::Request<T> {
        request(client, self.signed, method, message)
    }

    async fn encrypt(&self, client: &mut Client) -> Result<(), Failure> {
        let request = v1::EncryptRequest {
            key_id: self.key_id.clone(),
            plaintext: self.plaintext.clone(),
            encryption_context: Default::default(),
            ..Default::default()
        };
        let blob = client
            .kms()
            .encrypt(self.request(client, "Encrypt", request))
            .await?
            .into_inner()
            .ciphertext_blob;
        // Version, key id, key version and nonce (33 bytes), then ciphertext and tag.
        if blob.len() != 33 + self.plaintext.len() + 16 {
            return Err(Failure::unexpected(format!(
                "Encrypt returned a {}-byte blob for {} bytes of plaintext",
                blob.len(),
                self.plaintext.len()
            )));
        }
        Ok(())
    }

    async fn decrypt(&self, client: &mut Client) -> Result<(), Failure> {
        let request = v1::DecryptRequest {
            ciphertext_blob: self.blob.clone(),
            encryption_context: Default::default(),
            key_id: String::new(),
            ..Default::default()
        };
        let plaintext = client
            .kms()
            .decrypt(self.request(client, "Decrypt", request))
            .await?
            .into_inner()
            .plaintext;
        if plaintext != self.plaintext {
            return Err(Failure::unexpected(
                "Decrypt returned a different plaintext",
            ));
        }
        Ok(())
    }

    async fn generate_data_key(&self, client: &mut Client) -> Result<(), Failure> {
        let request = v1::GenerateDataKeyRequest {
            key_id: self.key_id.clone(),
            key_spec: "AES_256".into(),
            ..Default::default()
        };
        let answer = client
            .kms()
            .generate_data_key(self.request(client, "GenerateDataKey", request))
            .await?
            .into_inner();
        if answer.plaintext.len() != 32 {
            return Err(Failure::unexpected(format!(
                "GenerateDataKey returned a {}-byte data key for AES_256",
                answer.plaintext.len()
            )));
        }
        Ok(())
    }

    async fn create_key(&self, client: &mut Client) -> Result<(), Failure> {
        let request = v1::CreateKeyRequest {
            description: DESCRIPTION.into(),
            ..Default::default()
        };
        client
            .kms()
            .create_key(self.request(client, "CreateKey", request))
            .await?;
        Ok(())
    }

    async fn describe_key(&self, client: &mut Client) -> Result<(), Failure> {
        let request = v1::DescribeKeyRequest {
            key_id: self.key_id.clone(),
        };
        client
            .kms()
            .describe_key(self.request(client, "DescribeKey", request))
            .await?;
        Ok(())
    }
}

impl Workload for KmsWorkload {
    type Worker = Client;

    fn worker(&self, index: usize) -> Client {
        self.clients[index % self.clients.len()].clone()
    }

    async fn call(&self, client: &mut Client, sequence: u64) -> Result<(), Failure> {
        let operation = match self.operation {
            Operation::Mixed => Operation::mixed(sequence),
            other => other,
        };
        match operation {
            Operation::Encrypt => self.encrypt(client).await,
            Operation::Decrypt => self.decrypt(client).await,
            Operation::GenerateDataKey => self.generate_data_key(client).await,
            Operation::CreateKey => self.create_key(client).await,
            Operation::DescribeKey | Operation::Mixed => self.describe_key(client).await,
        }
    }
}

/// Checks what a run needs before it starts.
pub fn validate(spec: &LoadSpec, connections: usize) -> Result<(), String> {
    if spec.operation.needs_plaintext() && !(1..=MAX_PLAINTEXT).contains(&spec.payload_size) {
        return Err(format!(
            "--payload-size must be 1-{MAX_PLAINTEXT} bytes; got {}",
            spec.payload_size
        ));
    }
    if !(1..=10_000).contains(&spec.shape.concurrency) {
        return Err(format!(
            "--concurrency must be 1-10000; got {}",
            spec.shape.concurrency
        ));
    }
    if !(1..=1_000).contains(&connections) {
        return Err(format!("--connections must be 1-1000; got {connections}"));
    }
    if spec.shape.duration.is_some_and(|d| d.is_zero()) || spec.shape.requests == Some(0) {
        return Err("--duration and --requests must be more than 0".into());
    }
    Ok(())
}

/// Runs `spec` against the daemon `clients` are connected to (one per connection). Decrypt
/// and mixed loads first encrypt one plaintext of `payload_size` bytes to decrypt.
pub async fn run_load(clients: Vec<Client>, spec: LoadSpec) -> Result<LoadReport, String> {
    validate(&spec, clients.len().max(1))?;
    if spec.door == Door::Aws {
        return Err("the AWS door's load runs through bench::aws::run_load".into());
    }
    let signed = spec.door.signs();
    let first = clients
        .first()
        .cloned()
        .ok_or("run_load needs at least one client")?;
    let plaintext: Vec<u8> = (0..spec.payload_size).map(|i| (i % 251) as u8).collect();
    let blob = if matches!(spec.operation, Operation::Decrypt | Operation::Mixed) {
        let request = v1::EncryptRequest {
            key_id: spec.key_id.clone(),
            plaintext: plaintext.clone(),
            encryption_context: Default::default(),
            ..Default::default()
        };
        first
            .kms()
            .encrypt(self::request(&first, signed, "Encrypt", request))
            .await
            .map_err(|status| {
                format!(
                    "cannot make the ciphertext to decrypt: {}",
                    CliError::Status(status)
                )
            })?
            .into_inner()
            .ciphertext_blob
    } else {
        Vec::new()
    };
    let workload = Arc::new(KmsWorkload {
        clients,
        signed,
        operation: spec.operation,
        key_id: spec.key_id,
        plaintext,
        blob,
    });
    Ok(drive(workload, &spec.shape).await)
}

/// Creates a key for a load to use (signed, or on the certificate door not); returns its id.
pub async fn create_key(client: &Client, door: Door) -> Result<String, tonic::Status> {
    let request = v1::CreateKeyRequest {
        description: DESCRIPTION.into(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .create_key(self::request(client, door.signs(), "CreateKey", request))
        .await?
        .into_inner()
        .key_metadata
        .map(|metadata| metadata.key_id)
        .unwrap_or_default())
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a number of seconds; got {value}"))
}

/// `keyhaven bench`: returns the exit code (1 when anything failed, requests included).
pub fn run(client_args: ClientArgs, args: BenchArgs) -> i32 {
    match run_bench(client_args, args) {
        Ok(0) => 0,
        Ok(failed) => {
            eprintln!("keyhaven: bench: {failed} requests failed (see above)");
            1
        }
        Err(error) => {
            eprintln!("keyhaven: bench: {error}");
            1
        }
    }
}

/// Runs the load and prints the report; returns how many requests failed.
fn run_bench(client_args: ClientArgs, args: BenchArgs) -> Result<u64, String> {
    let shape = LoadShape {
        concurrency: args.concurrency,
        duration: args
            .duration
            .map(|d| seconds(d, "--duration"))
            .transpose()?,
        requests: args.requests,
        warmup: seconds(args.warmup, "--warmup")?,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        progress: !args.quiet,
    };
    let mut spec = LoadSpec {
        operation: args.operation,
        door: args.door,
        key_id: args.key.clone().unwrap_or_default(),
        payload_size: args.payload_size,
        shape,
    };
    validate(&spec, args.connections)?;
    // The load's tasks and the signing run on every core, not just one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let created = spec.key_id.is_empty() && spec.operation != Operation::CreateKey;
        let (endpoint, connections, report) = match args.door {
            Door::Aws => {
                let endpoint = args.aws_endpoint.clone().ok_or(
                    "--door aws needs the AWS door's address: --aws-endpoint http://HOST:PORT \
                     or AWS_ENDPOINT_URL (`keyhaven serve --dev` prints it)",
                )?;
                let door = aws::AwsDoor::new(&endpoint, ClientCredentials::from_env()?).await?;
                if created {
                    spec.key_id = door.create_key().await.map_err(|failure| {
                        format!("cannot create a key to use: {}", failure.message)
                    })?;
                }
                announce(created, &spec.key_id, args.quiet);
                let connections = spec.shape.concurrency;
                (
                    endpoint,
                    connections,
                    aws::run_load(door, spec.clone()).await?,
                )
            }
            Door::Grpc | Door::Certificate => {
                let tls = ClientTls::from_env(client_args.ca_cert.as_deref())?;
                let credentials = if args.door == Door::Certificate {
                    if tls.identity.is_none() {
                        return Err(format!(
                            "--door certificate needs a client certificate: set \
                             {CLIENT_CERT_ENV} and {CLIENT_KEY_ENV}"
                        ));
                    }
                    // Nothing is signed: the certificate is the caller.
                    ClientCredentials::long_term(
                        String::new(),
                        crate::secret::SecretString::new(String::new()),
                        "",
                    )
                } else {
                    ClientCredentials::from_env()?
                };
                let mut clients = Vec::with_capacity(args.connections);
                for _ in 0..args.connections {
                    clients.push(
                        Client::connect_with_tls(&client_args.endpoint, credentials.clone(), &tls)
                            .await?,
                    );
                }
                if created {
                    spec.key_id = create_key(&clients[0], args.door).await.map_err(|status| {
                        format!("cannot create a key to use: {}", CliError::Status(status))
                    })?;
                }
                announce(created, &spec.key_id, args.quiet);
                let endpoint = client_args.endpoint.clone();
                (
                    endpoint,
                    args.connections,
                    run_load(clients, spec.clone()).await?,
                )
            }
        };
        let description = Description {
            endpoint,
            door: args.door,
            operation: spec.operation,
            key_id: spec.key_id.clone(),
            key_created: created,
            payload_size: spec.payload_size,
            connections,
        };
        match client_args.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&report_json(&description, &report))
                    .unwrap_or_default()
            ),
            OutputFormat::Human => println!("{}", report_human(&description, &report)),
        }
        Ok(report.failed)
    })
}

fn announce(created: bool, key_id: &str, quiet: bool) {
    if created && !quiet {
        eprintln!("bench: created key {key_id} to use");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_workload_proportions() {
        let count = |op| (0..1000).filter(|&n| Operation::mixed(n) == op).count();
        assert_eq!(count(Operation::Encrypt), 400);
        assert_eq!(count(Operation::Decrypt), 400);
        assert_eq!(count(Operation::GenerateDataKey), 100);
        assert_eq!(count(Operation::DescribeKey), 90);
        assert_eq!(count(Operation::CreateKey), 10);
    }
}
