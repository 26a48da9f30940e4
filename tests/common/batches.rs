//! Batch calls for the batch tests: items in the shapes of the single calls, the calls
//! themselves, and the audit records they leave.

use super::{TestDaemon, pairs};
use keyhaven::client::Client;
use keyhaven::proto::v1;

pub fn encrypt_item(key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        encryption_context: pairs(context),
        ..Default::default()
    }
}

pub fn decrypt_item(blob: &[u8], context: &[(&str, &str)]) -> v1::DecryptRequest {
    v1::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        encryption_context: pairs(context),
        key_id: String::new(),
        ..Default::default()
    }
}

pub async fn single_encrypt(
    client: &Client,
    item: v1::EncryptRequest,
) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .encrypt(client.signed("Encrypt", item))
        .await?
        .into_inner()
        .ciphertext_blob)
}

pub async fn single_decrypt(
    client: &Client,
    item: v1::DecryptRequest,
) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .kms()
        .decrypt(client.signed("Decrypt", item))
        .await?
        .into_inner()
        .plaintext
        .to_vec())
}

pub async fn encrypt_batch(
    client: &Client,
    items: Vec<v1::EncryptRequest>,
) -> Result<Vec<v1::EncryptBatchResult>, tonic::Status> {
    let request = v1::EncryptBatchRequest { items };
    Ok(client
        .kms()
        .encrypt_batch(client.signed("EncryptBatch", request))
        .await?
        .into_inner()
        .results)
}

pub async fn decrypt_batch(
    client: &Client,
    items: Vec<v1::DecryptRequest>,
) -> Result<Vec<v1::DecryptBatchResult>, tonic::Status> {
    let request = v1::DecryptBatchRequest { items };
    Ok(client
        .kms()
        .decrypt_batch(client.signed("DecryptBatch", request))
        .await?
        .into_inner()
        .results)
}

pub fn audit_records(daemon: &TestDaemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&daemon.config.audit_log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit record"))
        .collect()
}

pub fn records_of<'a>(
    records: &'a [serde_json::Value],
    operation: &str,
) -> Vec<&'a serde_json::Value> {
    records
        .iter()
        .filter(|r| r["operation"] == operation)
        .collect()
}
