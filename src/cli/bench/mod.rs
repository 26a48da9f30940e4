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

/// Latencies in nanoseconds, in buckets 1/128 of a power of two wide: percentiles are
/// within 0.8% of the exact value, in constant memory.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

const SUB_BUCKET_BITS: u32 = 7;
/// Latencies are capped at 2^40 ns (about 18 minutes).
const MAX_EXPONENT: u32 = 40;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let buckets = ((MAX_EXPONENT - SUB_BUCKET_BITS + 1) << SUB_BUCKET_BITS) as usize;
        Self {
            counts: vec![0; buckets],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        let ns = ns.min((1 << MAX_EXPONENT) - 1);
        if ns < (1 << SUB_BUCKET_BITS) {
            return ns as usize;
        }
        let exponent = 63 - ns.leading_zeros();
        let shift = exponent - SUB_BUCKET_BITS;
        let mantissa = (ns >> shift) as usize - (1 << SUB_BUCKET_BITS);
        (((shift + 1) as usize) << SUB_BUCKET_BITS) + mantissa
    }

    /// The largest value that falls in bucket `index`.
    fn highest(index: usize) -> u64 {
        let octave = (index >> SUB_BUCKET_BITS) as u32;
        if octave == 0 {
            return index as u64;
        }
        let shift = octave - 1;
        let mantissa = (index as u64 & ((1 << SUB_BUCKET_BITS) - 1)) + (1 << SUB_BUCKET_BITS);
        ((mantissa + 1) << shift) - 1
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency `quantile` (0.0-1.0) of the recorded ones were at or under.
    pub fn percentile(&self, quantile: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(Self::highest(index).min(self.max_ns));
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn mean(&self) -> Duration {
        match self.total {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.sum_ns / u128::from(n)) as u64),
        }
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

impl KmsWorkload {
    /// `message` as a request of `method`, signed unless the load is a certificate
    /// principal's.
    fn request<T: prost::Message>(
        &self,
        client: &Client,
        method: &str,
        message: T,
    ) -> tonic::Request<T> {
        if self.signed {
            client.signed(method, message)
        } else {
            tonic::Request::new(message)
        }
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
    let signed = match spec.door {
        Door::Grpc => true,
        Door::Certificate => false,
        Door::Aws => return Err("the AWS door's load runs through bench::aws::run_load".into()),
    };
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
            .encrypt(if signed {
                first.signed("Encrypt", request)
            } else {
                tonic::Request::new(request)
            })
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
    let request = match door {
        Door::Certificate => tonic::Request::new(request),
        Door::Grpc | Door::Aws => client.signed("CreateKey", request),
    };
    Ok(client
        .kms()
        .create_key(request)
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
                    ClientCredentials {
                        access_key_id: String::new(),
                        secret_access_key: crate::secret::SecretString::new(String::new()),
                        session_token: None,
                        region: String::new(),
                    }
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

/// What was run, for the report.
struct Description {
    endpoint: String,
    door: Door,
    operation: Operation,
    key_id: String,
    key_created: bool,
    payload_size: usize,
    connections: usize,
}

fn report_json(description: &Description, report: &LoadReport) -> Value {
    let failures: Vec<Value> = report
        .failures
        .iter()
        .map(|(kind, failure)| {
            json!({"Kind": kind, "Count": failure.count, "Example": failure.example})
        })
        .collect();
    let mut value = json!({
        "Endpoint": description.endpoint,
        "Door": description.door.name(),
        "Operation": description.operation.name(),
        "PayloadSize": description.payload_size,
        "Concurrency": report.concurrency,
        "Connections": description.connections,
        "Seconds": (report.elapsed.as_secs_f64() * 1e3).round() / 1e3,
        "Requests": report.succeeded + report.failed,
        "Succeeded": report.succeeded,
        "Failed": report.failed,
        "Failures": failures,
        "OpsPerSecond": (report.ops_per_second() * 10.0).round() / 10.0,
        "LatencyMs": report.latency_json(),
    });
    if description.operation != Operation::CreateKey {
        value["KeyId"] = json!(description.key_id);
        value["KeyCreated"] = json!(description.key_created);
    }
    value
}

/// "1.23 ms", "456 µs".
pub fn format_latency(latency: Duration) -> String {
    let micros = latency.as_secs_f64() * 1e6;
    if micros >= 1000.0 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{micros:.0} µs")
    }
}

fn report_human(description: &Description, report: &LoadReport) -> String {
    let on = if description.operation == Operation::CreateKey {
        String::new()
    } else {
        format!(" on key {}", description.key_id)
    };
    let payload = if description.operation.needs_plaintext() {
        format!(", {}-byte plaintext", description.payload_size)
    } else {
        String::new()
    };
    let mut lines = vec![
        format!(
            "{}{on} at {} ({} door): {} in flight over {} connection{}{payload}",
            description.operation.name(),
            description.endpoint,
            description.door.name(),
            report.concurrency,
            description.connections,
            if description.connections == 1 {
                ""
            } else {
                "s"
            },
        ),
        format!(
            "  requests    {} in {:.2} s: {} succeeded, {} failed",
            report.succeeded + report.failed,
            report.elapsed.as_secs_f64(),
            report.succeeded,
            report.failed
        ),
        format!("  throughput  {:.1} ops/s", report.ops_per_second()),
        format!(
            "  latency     p50 {}  p90 {}  p99 {}  max {}  (mean {})",
            format_latency(report.latency.percentile(0.50)),
            format_latency(report.latency.percentile(0.90)),
            format_latency(report.latency.percentile(0.99)),
            format_latency(report.latency.max()),
            format_latency(report.latency.mean()),
        ),
    ];
    if report.failed > 0 {
        lines.push(format!("  FAILURES    {}", report.failure_summary()));
        for (kind, failure) in &report.failures {
            lines.push(format!("    {kind}: {}", failure.example));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_continuous_and_tight() {
        let check = |ns: u64| {
            let index = LatencyHistogram::index(ns);
            let highest = LatencyHistogram::highest(index);
            assert!(highest >= ns, "{ns} -> {index} -> {highest}");
            assert!(
                highest as f64 <= ns as f64 * 1.008 + 1.0,
                "{ns} -> {highest}"
            );
            index
        };
        let mut previous = 0;
        for ns in 0..100_000u64 {
            let index = check(ns);
            assert!(
                index == previous || index == previous + 1,
                "{ns} -> {index}"
            );
            previous = index;
        }
        for exponent in 17..MAX_EXPONENT {
            for ns in [
                (1u64 << exponent) - 1,
                1 << exponent,
                (1 << exponent) + 12_345,
            ] {
                check(ns);
            }
        }
        let top = LatencyHistogram::index(u64::MAX);
        assert_eq!(top, LatencyHistogram::new().counts.len() - 1);
    }

    #[test]
    fn percentiles() {
        let mut histogram = LatencyHistogram::new();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let near = |d: Duration, micros: f64| {
            let got = d.as_secs_f64() * 1e6;
            (got - micros).abs() <= micros * 0.008 + 0.001
        };
        assert!(near(histogram.percentile(0.5), 500.0));
        assert!(near(histogram.percentile(0.99), 990.0));
        assert_eq!(histogram.max(), Duration::from_micros(1000));
        assert_eq!(histogram.count(), 1000);
        let mut other = LatencyHistogram::new();
        other.record(Duration::from_secs(2));
        histogram.merge(&other);
        assert_eq!(histogram.percentile(1.0), Duration::from_secs(2));
    }

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
