//! Keystore calls with a deadline, for keystores that talk to a device.
//!
//! A device that stops answering must not hold its callers, and their gRPC calls, for ever.
//! [`DeadlineKeyStore`] runs every call of the keystore it wraps on a blocking worker thread
//! and waits at most the configured time for it; past that the caller gets
//! [`KeyStoreError::Unavailable`]. A PKCS#11 call cannot be interrupted, so the worker carries
//! on until the device answers, returns its session to the pool as usual, and then undoes what
//! nobody will record: a version generated after its caller gave up is destroyed again.
//!
//! The key service waits for the worker asynchronously ([`DeadlineKeyStore::run`]): one
//! hand-over per call, to the worker and back. The [`KeyStore`] methods wait on a condition
//! variable instead, for callers outside the runtime (start-up checks, tests).
//!
//! What this costs and bounds:
//! - one hand-over to a worker thread per call. The short calls of every request
//!   ([`LANE_OPERATIONS`]: encrypt, decrypt, MACs) go to the device's **lanes** (see
//!   `lanes`), where under load many calls share one thread wake-up; other calls (key
//!   generation, destruction, batches, start-up checks) run on a blocking thread each;
//! - at most [`OVERDUE_LIMIT`] calls running past their deadline at any time: beyond that,
//!   calls answer `Unavailable` at once without reaching the device, until it answers again,
//!   so a hung device holds a bounded number of threads and sessions;
//! - while the undo of an abandoned generation is pending, generating that same version again
//!   is refused (objects are found by label, so the undo would destroy the new one too).

#[cfg(test)]
use super::lanes::LANE_STUCK;
use super::lanes::{Job, Lanes, on_a_thread};
use super::{
    EncryptionAlgorithm, GeneratedMaterial, KeySpec, KeyStore, KeyStoreError, MacAlgorithm,
    MaterialRef, MaterialUse, SealItem, SigningAlgorithm,
};
use crate::secret::SecretBytes;
use crate::store::WriteBatch;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The deadline of calls that are slow on a healthy device (RSA key pairs), unless the
/// configured deadline is longer.
pub const SLOW_CALL_DEADLINE: Duration = Duration::from_secs(120);

/// Calls that may run past their deadline before new calls are refused outright.
pub const OVERDUE_LIMIT: usize = 32;
/// The calls that run on the device's lanes: short, and made by every request.
pub const LANE_OPERATIONS: [&str; 4] = ["encrypt", "decrypt", "mac", "verify_mac"];
/// Tries to destroy a version generated after its caller gave up, a second apart.
const UNDO_ATTEMPTS: u32 = 10;
const UNDO_BACKOFF: Duration = Duration::from_secs(1);

/// A keystore whose every call answers within a bound.
pub struct DeadlineKeyStore {
    inner: Arc<dyn KeyStore>,
    timeout: Duration,
    shared: Arc<Shared>,
    lanes: Lanes,
}

#[derive(Default)]
struct Shared {
    /// Calls whose caller gave up and that have not finished.
    overdue: AtomicUsize,
    /// Versions whose abandoned generation has not been undone yet.
    undoing: Mutex<HashSet<MaterialRef>>,
}

impl Shared {
    fn undoing(&self) -> MutexGuard<'_, HashSet<MaterialRef>> {
        self.undoing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a worker leaves its answer.
enum Slot<T> {
    Waiting,
    /// The caller stopped waiting.
    Abandoned,
    Done(Result<T, KeyStoreError>),
}

struct Handoff<T> {
    slot: Mutex<Slot<T>>,
    /// For a waiting thread.
    ready: Condvar,
    /// For a waiting task.
    answered: tokio::sync::Notify,
}

impl<T> Handoff<T> {
    fn slot(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker's end: delivers the answer, or cleans up after an abandoned call. Delivers an
/// error if dropped unanswered (a panic, or a runtime shutting down before the call ran).
struct Delivery<T> {
    handoff: Arc<Handoff<T>>,
    shared: Arc<Shared>,
    inner: Arc<dyn KeyStore>,
    operation: &'static str,
    /// The version this call generates, to destroy if its caller gave up.
    generates: Option<MaterialRef>,
    answered: bool,
}

impl<T> Delivery<T> {
    fn answer(&mut self, result: Result<T, KeyStoreError>) {
        self.answered = true;
        let mut slot = self.handoff.slot();
        if matches!(*slot, Slot::Waiting) {
            *slot = Slot::Done(result);
            self.handoff.ready.notify_one();
            self.handoff.answered.notify_one();
            return;
        }
        drop(slot);
        tracing::warn!(
            keystore = self.inner.name(),
            operation = self.operation,
            ok = result.is_ok(),
            "a keystore call finished after its caller gave up"
        );
        if let Some(material) = self.generates {
            if result.is_ok() {
                undo_generation(&*self.inner, material);
            }
            self.shared.undoing().remove(&material);
        }
        self.shared.overdue.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Destroys a version nobody will record, retrying while the device fails; what still fails
/// is left to the next start-up, which destroys what the generation journal names.
fn undo_generation(keystore: &dyn KeyStore, material: MaterialRef) {
    for attempt in 1..=UNDO_ATTEMPTS {
        match keystore.destroy(material) {
            Ok(_) => {
                tracing::warn!(
                    keystore = keystore.name(),
                    ?material,
                    "destroyed a version generated after its caller gave up"
                );
                return;
            }
            Err(error) if attempt < UNDO_ATTEMPTS => {
                tracing::debug!(keystore = keystore.name(), ?material, %error, "undo failed; retrying");
                std::thread::sleep(UNDO_BACKOFF);
            }
            Err(error) => tracing::error!(
                keystore = keystore.name(),
                ?material,
                %error,
                "could not destroy a version generated after its caller gave up; its journal \
                 entry stays, and the next start-up removes it"
            ),
        }
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(Err(KeyStoreError::Internal(format!(
                "keystore call {} ended without an answer",
                self.operation
            ))));
        }
    }
}

impl DeadlineKeyStore {
    /// Wraps `inner`: each call waits at most `timeout`.
    pub fn new(inner: Arc<dyn KeyStore>, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            shared: Arc::default(),
            lanes: Lanes::new(),
        }
    }

    fn unavailable(&self, why: String) -> KeyStoreError {
        KeyStoreError::Unavailable(format!("{}: {why}", self.inner.name()))
    }

    /// Refuses a call at once while too many are overdue, or while the version it would
    /// generate is still being undone.
    fn admit(
        &self,
        operation: &'static str,
        generates: Option<MaterialRef>,
    ) -> Result<(), KeyStoreError> {
        let overdue = self.shared.overdue.load(Ordering::Acquire);
        if overdue >= OVERDUE_LIMIT {
            return Err(self.unavailable(format!(
                "{overdue} calls are past their deadline; waiting for the device to answer them"
            )));
        }
        if let Some(material) = generates
            && self.shared.undoing().contains(&material)
        {
            return Err(self.unavailable(format!(
                "an abandoned generation of {material:?} is still being undone ({operation})"
            )));
        }
        Ok(())
    }

    /// Starts `work` on a worker thread; its answer arrives in the returned hand-off.
    fn dispatch<T, F>(
        &self,
        operation: &'static str,
        generates: Option<MaterialRef>,
        work: F,
    ) -> Result<Arc<Handoff<T>>, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        self.admit(operation, generates)?;
        let handoff = Arc::new(Handoff {
            slot: Mutex::new(Slot::Waiting),
            ready: Condvar::new(),
            answered: tokio::sync::Notify::new(),
        });
        let mut delivery = Delivery {
            handoff: handoff.clone(),
            shared: self.shared.clone(),
            inner: self.inner.clone(),
            operation,
            generates,
            answered: false,
        };
        let job: Job = Box::new(move || {
            let result = work(&*delivery.inner);
            delivery.answer(result);
        });
        let job = if LANE_OPERATIONS.contains(&operation) {
            match self.lanes.submit(job, &|stranded| {
                let _ = on_a_thread(stranded);
            }) {
                Ok(()) => return Ok(handoff),
                Err(job) => job,
            }
        } else {
            job
        };
        match on_a_thread(job) {
            Ok(()) => Ok(handoff),
            Err(error) => Err(self.unavailable(format!("cannot start a worker thread: {error}"))),
        }
    }

    /// Takes the answer from `slot` once the wait is over; a call still running is left to
    /// its worker, which undoes what it generated.
    fn collect<T>(
        &self,
        mut slot: MutexGuard<'_, Slot<T>>,
        operation: &'static str,
        generates: Option<MaterialRef>,
        timeout: Duration,
    ) -> Result<T, KeyStoreError> {
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            Slot::Done(result) => result,
            Slot::Waiting | Slot::Abandoned => {
                self.abandon(slot, generates);
                tracing::warn!(
                    keystore = self.inner.name(),
                    operation,
                    timeout_ms = timeout.as_millis() as u64,
                    "keystore call past its deadline; answering Unavailable"
                );
                Err(self.unavailable(format!(
                    "{operation} did not finish within {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Leaves a running call to its worker. Counted and recorded under the slot's lock (its
    /// guard, with the slot already `Abandoned`), before the worker can see it.
    fn abandon<T>(&self, slot: MutexGuard<'_, Slot<T>>, generates: Option<MaterialRef>) {
        self.shared.overdue.fetch_add(1, Ordering::AcqRel);
        if let Some(material) = generates {
            self.shared.undoing().insert(material);
        }
        drop(slot);
    }

    /// Runs `work` on a worker thread; blocks the calling thread until it answers or the
    /// deadline passes.
    fn call<T, F>(
        &self,
        operation: &'static str,
        generates: Option<MaterialRef>,
        work: F,
    ) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let handoff = self.dispatch(operation, generates, work)?;
        let slot = handoff.slot();
        let (slot, _) = handoff
            .ready
            .wait_timeout_while(slot, self.timeout, |s| matches!(s, Slot::Waiting))
            .unwrap_or_else(|p| p.into_inner());
        self.collect(slot, operation, generates, self.timeout)
    }

    /// Runs `work` (given the wrapped keystore) on a worker thread and waits for it, without
    /// holding a thread, until it answers or the deadline passes. `generates` names the version
    /// `work` generates, if any, so that a generation nobody waits for any more is undone. A
    /// caller that stops waiting early (its request cancelled) leaves the call to its worker
    /// like a caller past the deadline.
    pub async fn run<T, F>(
        &self,
        operation: &'static str,
        generates: Option<MaterialRef>,
        work: F,
    ) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        self.run_within(self.timeout, operation, generates, work)
            .await
    }

    /// As [`DeadlineKeyStore::run`], for a call that takes long on a healthy device (an RSA
    /// key pair: a prime search of seconds, more under load): it waits up to
    /// [`SLOW_CALL_DEADLINE`], or the configured deadline if that is longer.
    pub async fn run_slow<T, F>(
        &self,
        operation: &'static str,
        generates: Option<MaterialRef>,
        work: F,
    ) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        self.run_within(
            self.timeout.max(SLOW_CALL_DEADLINE),
            operation,
            generates,
            work,
        )
        .await
    }

    async fn run_within<T, F>(
        &self,
        timeout: Duration,
        operation: &'static str,
        generates: Option<MaterialRef>,
        work: F,
    ) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let handoff = self.dispatch(operation, generates, work)?;
        let mut waiting = Waiting {
            store: self,
            handoff: &handoff,
            operation,
            generates,
            done: false,
        };
        // The worker stores a permit if it answers before this waits.
        let _ = tokio::time::timeout(timeout, handoff.answered.notified()).await;
        waiting.done = true;
        self.collect(handoff.slot(), operation, generates, timeout)
    }
}

/// A task's wait in [`DeadlineKeyStore::run`]: dropped before its end, it gives the call up.
struct Waiting<'a, T> {
    store: &'a DeadlineKeyStore,
    handoff: &'a Handoff<T>,
    operation: &'static str,
    generates: Option<MaterialRef>,
    done: bool,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut slot = self.handoff.slot();
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            Slot::Waiting | Slot::Abandoned => self.store.abandon(slot, self.generates),
            Slot::Done(result) => {
                drop(slot);
                // Answered, but nobody will record what it generated.
                if let (Ok(_), Some(material)) = (result, self.generates) {
                    let (inner, shared) = (self.store.inner.clone(), self.store.shared.clone());
                    shared.undoing().insert(material);
                    let job = move || {
                        undo_generation(&*inner, material);
                        shared.undoing().remove(&material);
                    };
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        drop(runtime.spawn_blocking(job));
                    } else {
                        job();
                    }
                }
            }
        }
        tracing::info!(
            keystore = self.store.inner.name(),
            operation = self.operation,
            "keystore call given up by its caller; it finishes in the background"
        );
    }
}

impl KeyStore for DeadlineKeyStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn origin(&self) -> &'static str {
        self.inner.origin()
    }

    fn blocks(&self) -> bool {
        self.inner.blocks()
    }

    fn deadline(&self) -> Option<&DeadlineKeyStore> {
        Some(self)
    }

    fn material_outside_store(&self) -> bool {
        self.inner.material_outside_store()
    }

    fn generate(&self, material: MaterialRef) -> Result<GeneratedMaterial, KeyStoreError> {
        self.call("generate", Some(material), move |k| k.generate(material))
    }

    fn supports(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        self.inner.supports(spec)
    }

    fn generate_spec(
        &self,
        material: MaterialRef,
        spec: KeySpec,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        self.call("generate", Some(material), move |k| {
            k.generate_spec(material, spec)
        })
    }

    fn generate_for(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        purpose: MaterialUse,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        self.call("generate", Some(material), move |k| {
            k.generate_for(material, spec, purpose)
        })
    }

    fn mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let message = SecretBytes::new(message.to_vec());
        self.call("mac", None, move |k| {
            k.mac(material, algorithm, message.expose())
        })
    }

    fn verify_mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, KeyStoreError> {
        let (message, mac) = (SecretBytes::new(message.to_vec()), mac.to_vec());
        self.call("verify_mac", None, move |k| {
            k.verify_mac(material, algorithm, message.expose(), &mac)
        })
    }

    fn sign(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let digest = digest.to_vec();
        self.call("sign", None, move |k| {
            k.sign(material, spec, algorithm, &digest)
        })
    }

    fn public_key(&self, material: MaterialRef, spec: KeySpec) -> Result<Vec<u8>, KeyStoreError> {
        self.call("public_key", None, move |k| k.public_key(material, spec))
    }

    fn supports_import(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        self.inner.supports_import(spec)
    }

    fn supports_key_agreement(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        self.inner.supports_key_agreement(spec)
    }

    fn decrypt_asymmetric(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let ciphertext = ciphertext.to_vec();
        self.call("decrypt_asymmetric", None, move |k| {
            k.decrypt_asymmetric(material, spec, algorithm, &ciphertext)
        })
    }

    fn derive_shared_secret(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        peer: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let peer = peer.to_vec();
        self.call("derive_shared_secret", None, move |k| {
            k.derive_shared_secret(material, spec, &peer)
        })
    }

    fn make_wrapping_key(
        &self,
        wrapping: uuid::Uuid,
        bits: usize,
    ) -> Result<super::WrappingKey, KeyStoreError> {
        self.call("make_wrapping_key", None, move |k| {
            k.make_wrapping_key(wrapping, bits)
        })
    }

    fn import_material(
        &self,
        material: MaterialRef,
        wrapping: uuid::Uuid,
        algorithm: super::WrappingAlgorithm,
        spec: KeySpec,
        encrypted: &[u8],
    ) -> Result<super::ImportedMaterial, KeyStoreError> {
        let encrypted = encrypted.to_vec();
        self.call("import", Some(material), move |k| {
            k.import_material(material, wrapping, algorithm, spec, &encrypted)
        })
    }

    fn destroy_wrapping_key(&self, wrapping: uuid::Uuid) -> Result<WriteBatch, KeyStoreError> {
        self.call("destroy_wrapping_key", None, move |k| {
            k.destroy_wrapping_key(wrapping)
        })
    }

    fn heard(&self, name: &[u8], revision: i64) {
        self.inner.heard(name, revision);
    }

    fn discard(&self, material: MaterialRef) {
        let _ = self.call("discard", None, move |k| {
            k.discard(material);
            Ok(())
        });
    }

    fn encrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let (nonce, aad) = (*nonce, aad.to_vec());
        let plaintext = SecretBytes::new(plaintext.to_vec());
        self.call("encrypt", None, move |k| {
            k.encrypt(material, &nonce, &aad, plaintext.expose())
        })
    }

    /// The whole batch is one call to the device's worker, under one deadline.
    fn encrypt_many(
        &self,
        items: Vec<SealItem>,
    ) -> Result<Vec<Result<Vec<u8>, KeyStoreError>>, KeyStoreError> {
        self.call("encrypt_batch", None, move |k| k.encrypt_many(items))
    }

    fn decrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let (nonce, aad, sealed) = (*nonce, aad.to_vec(), sealed.to_vec());
        self.call("decrypt", None, move |k| {
            k.decrypt(material, &nonce, &aad, &sealed)
        })
    }

    fn destroy(&self, material: MaterialRef) -> Result<WriteBatch, KeyStoreError> {
        self.call("destroy", None, move |k| k.destroy(material))
    }

    fn check(&self, material: MaterialRef) -> Result<(), KeyStoreError> {
        self.call("check", None, move |k| k.check(material))
    }

    fn list(&self) -> Result<Vec<MaterialRef>, KeyStoreError> {
        self.call("list", None, |k| k.list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    /// A keystore whose calls take `delay`; counts generations and destructions.
    struct Slow {
        delay: Duration,
        started: AtomicU32,
        generated: AtomicU32,
        destroyed: AtomicU32,
    }

    impl KeyStore for Slow {
        fn name(&self) -> &str {
            "pkcs11:slow"
        }
        fn origin(&self) -> &'static str {
            "AWS_CLOUDHSM"
        }
        fn blocks(&self) -> bool {
            true
        }
        fn generate(&self, _: MaterialRef) -> Result<GeneratedMaterial, KeyStoreError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.generated.fetch_add(1, Ordering::SeqCst);
            Ok(GeneratedMaterial::default())
        }
        fn discard(&self, _: MaterialRef) {}
        fn encrypt(
            &self,
            _: MaterialRef,
            _: &[u8; 12],
            _: &[u8],
            plaintext: &[u8],
        ) -> Result<Vec<u8>, KeyStoreError> {
            if plaintext == b"hang" {
                std::thread::sleep(Duration::from_secs(2));
            } else {
                std::thread::sleep(self.delay);
            }
            Ok(plaintext.to_vec())
        }
        fn decrypt(
            &self,
            _: MaterialRef,
            _: &[u8; 12],
            _: &[u8],
            sealed: &[u8],
        ) -> Result<SecretBytes, KeyStoreError> {
            Ok(SecretBytes::new(sealed.to_vec()))
        }
        fn destroy(&self, _: MaterialRef) -> Result<WriteBatch, KeyStoreError> {
            self.destroyed.fetch_add(1, Ordering::SeqCst);
            Ok(WriteBatch::new())
        }
        fn check(&self, _: MaterialRef) -> Result<(), KeyStoreError> {
            Ok(())
        }
    }

    fn slow(delay_ms: u64) -> Arc<Slow> {
        Arc::new(Slow {
            delay: Duration::from_millis(delay_ms),
            started: AtomicU32::new(0),
            generated: AtomicU32::new(0),
            destroyed: AtomicU32::new(0),
        })
    }

    const MATERIAL: MaterialRef = MaterialRef {
        key_id: uuid::Uuid::nil(),
        version: 1,
    };

    #[test]
    fn calls_within_the_deadline_answer_as_usual() {
        let store = DeadlineKeyStore::new(slow(0), Duration::from_secs(5));
        let sealed = store.encrypt(MATERIAL, &[0; 12], b"", b"abc").unwrap();
        assert_eq!(sealed, b"abc");
        assert!(store.generate(MATERIAL).is_ok());
        assert_eq!(store.shared.overdue.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_late_call_answers_unavailable_and_its_generation_is_undone() {
        let inner = slow(300);
        let store = DeadlineKeyStore::new(inner.clone(), Duration::from_millis(50));
        let started = Instant::now();
        let error = store.generate(MATERIAL).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(250), "{error}");
        assert!(matches!(error, KeyStoreError::Unavailable(_)), "{error}");
        // Generating the same version again waits for the undo.
        assert!(matches!(
            store.generate(MATERIAL),
            Err(KeyStoreError::Unavailable(_))
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.shared.overdue.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(inner.generated.load(Ordering::SeqCst), 1);
        assert_eq!(inner.destroyed.load(Ordering::SeqCst), 1);
        assert!(store.shared.undoing().is_empty());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// Waits (up to 5 s) until no call is overdue.
    fn settled(store: &DeadlineKeyStore) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.shared.overdue.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(store.shared.overdue.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_task_waits_for_the_answer_within_the_deadline() {
        let inner = slow(20);
        let store = DeadlineKeyStore::new(inner.clone(), Duration::from_secs(5));
        let sealed = runtime()
            .block_on(store.run("encrypt", None, |k| {
                k.encrypt(MATERIAL, &[0; 12], b"", b"abc")
            }))
            .unwrap();
        assert_eq!(sealed, b"abc");
        assert_eq!(store.shared.overdue.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_task_past_the_deadline_answers_unavailable_and_the_generation_is_undone() {
        let inner = slow(300);
        let store = DeadlineKeyStore::new(inner.clone(), Duration::from_millis(50));
        let rt = runtime();
        let started = Instant::now();
        let error = rt
            .block_on(store.run("generate", Some(MATERIAL), move |k| k.generate(MATERIAL)))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(250), "{error}");
        assert!(matches!(error, KeyStoreError::Unavailable(_)), "{error}");
        assert!(matches!(
            rt.block_on(store.run("generate", Some(MATERIAL), move |k| k.generate(MATERIAL))),
            Err(KeyStoreError::Unavailable(_))
        ));
        settled(&store);
        assert_eq!(inner.generated.load(Ordering::SeqCst), 1);
        assert_eq!(inner.destroyed.load(Ordering::SeqCst), 1);
        assert!(store.shared.undoing().is_empty());
    }

    #[test]
    fn a_generation_whose_task_is_cancelled_is_undone() {
        let rt = runtime();
        // Given up while the device works, and after it answered but before the task saw it:
        // the test waits for the device call to have started, or to have answered (a loaded
        // machine may take its time to start the worker).
        for (delay_ms, answered) in [(200, false), (20, true)] {
            let inner = slow(delay_ms);
            let reached = inner.clone();
            let store = DeadlineKeyStore::new(inner.clone(), Duration::from_secs(5));
            rt.block_on(async {
                let mut run = std::pin::pin!(
                    store.run("generate", Some(MATERIAL), move |k| k.generate(MATERIAL))
                );
                // Polled once: the worker starts.
                let first =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(run.as_mut().poll(cx))).await;
                assert!(first.is_pending());
                let counter = if answered {
                    &reached.generated
                } else {
                    &reached.started
                };
                let deadline = Instant::now() + Duration::from_secs(5);
                while counter.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            while inner.destroyed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            settled(&store);
            assert_eq!(
                inner.generated.load(Ordering::SeqCst),
                1,
                "delay {delay_ms}"
            );
            assert_eq!(
                inner.destroyed.load(Ordering::SeqCst),
                1,
                "delay {delay_ms}"
            );
            assert!(store.shared.undoing().is_empty());
        }
    }

    #[test]
    fn overdue_calls_are_bounded() {
        let store = DeadlineKeyStore::new(slow(2_000), Duration::from_millis(1));
        for _ in 0..OVERDUE_LIMIT {
            let _ = store.encrypt(MATERIAL, &[0; 12], b"", b"x");
        }
        let started = Instant::now();
        let error = store.encrypt(MATERIAL, &[0; 12], b"", b"x").unwrap_err();
        assert!(error.to_string().contains("past their deadline"), "{error}");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    /// Calls on a device that hangs on some of them: once every lane is stuck, a short call
    /// still answers within its deadline, on a thread of its own.
    #[test]
    fn stuck_lanes_take_no_more_calls() {
        let store = DeadlineKeyStore::new(slow(0), Duration::from_millis(150));
        for _ in 0..store.lanes.len() {
            let error = store.encrypt(MATERIAL, &[0; 12], b"", b"hang").unwrap_err();
            assert!(error.to_string().contains("did not finish"), "{error}");
        }
        std::thread::sleep(LANE_STUCK);
        let started = Instant::now();
        assert_eq!(
            store.encrypt(MATERIAL, &[0; 12], b"", b"fine").unwrap(),
            b"fine"
        );
        assert!(started.elapsed() < Duration::from_millis(150));
    }
}
