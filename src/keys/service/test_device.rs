//! A device-like keystore for the key service's tests: it holds material outside the store,
//! counts generations, discards and one-by-one lookups, and lists what it holds except what a
//! test hides from the list.

use crate::keystore::{GeneratedMaterial, KeyStore, KeyStoreError, MaterialRef};
use crate::secret::SecretBytes;
use crate::store::WriteBatch;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Default)]
pub struct Device {
    /// Whether the service should call it on blocking threads (and list it at start-up).
    pub blocking: bool,
    pub held: Mutex<HashSet<MaterialRef>>,
    /// Held, but left out of `list`.
    pub unlisted: Mutex<HashSet<MaterialRef>>,
    pub generated: AtomicU32,
    pub discarded: AtomicU32,
    pub checks: AtomicU32,
    /// While a test holds it set, every lookup waits.
    pub holding_checks: (Mutex<bool>, std::sync::Condvar),
}

impl KeyStore for Device {
    fn name(&self) -> &str {
        crate::keystore::SEALED
    }
    fn origin(&self) -> &'static str {
        "AWS_CLOUDHSM"
    }
    fn blocks(&self) -> bool {
        self.blocking
    }
    fn material_outside_store(&self) -> bool {
        true
    }
    fn generate(&self, material: MaterialRef) -> Result<GeneratedMaterial, KeyStoreError> {
        self.generated.fetch_add(1, Ordering::SeqCst);
        self.held.lock().unwrap().insert(material);
        Ok(GeneratedMaterial::default())
    }
    fn discard(&self, material: MaterialRef) {
        self.discarded.fetch_add(1, Ordering::SeqCst);
        self.held.lock().unwrap().remove(&material);
    }
    fn encrypt(
        &self,
        _: MaterialRef,
        _: &[u8; 12],
        _: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
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
    fn destroy(&self, material: MaterialRef) -> Result<WriteBatch, KeyStoreError> {
        self.held.lock().unwrap().remove(&material);
        Ok(WriteBatch::new())
    }
    fn check(&self, material: MaterialRef) -> Result<(), KeyStoreError> {
        let (holding, let_go) = &self.holding_checks;
        drop(
            let_go
                .wait_while(holding.lock().unwrap(), |held| *held)
                .unwrap(),
        );
        self.checks.fetch_add(1, Ordering::SeqCst);
        match self.held.lock().unwrap().contains(&material) {
            true => Ok(()),
            false => Err(KeyStoreError::MaterialNotFound(material)),
        }
    }
    fn list(&self) -> Result<Vec<MaterialRef>, KeyStoreError> {
        let unlisted = self.unlisted.lock().unwrap();
        Ok(self
            .held
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !unlisted.contains(m))
            .copied()
            .collect())
    }
}
