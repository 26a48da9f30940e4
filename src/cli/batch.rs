//! The batch commands: JSON lines in, JSON lines out. Each input line is one item in the AWS
//! shape of its single call (`{"KeyId": "alias/a", "Plaintext": "<base64>",
//! "EncryptionContext": {"k": "v"}}` for Encrypt); the lines are sent in batches of at most
//! 1,000, and each answer is printed on its own line in the same order: the single call's
//! AWS-shaped answer, or `{"Error": {"Code", "Reason", "Message"}}`. The command fails (after
//! printing every line) when any item failed.

use super::commands::{CliError, Context};
use crate::api::operations::MAX_BATCH_ITEMS;
use crate::proto::v1;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{BufRead, Write};

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Encrypt: lines of {"KeyId", "Plaintext" (base64), "EncryptionContext"}.
    #[command(name = "encrypt-batch")]
    Encrypt(BatchArgs),
    /// Decrypt: lines of {"CiphertextBlob" (base64), "EncryptionContext", "KeyId"}.
    #[command(name = "decrypt-batch")]
    Decrypt(BatchArgs),
    /// GenerateDataKey: lines of {"KeyId", "KeySpec" or "NumberOfBytes", "EncryptionContext"}.
    #[command(name = "generate-data-key-batch")]
    GenerateDataKey(BatchArgs),
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Items per call (1 to 1000).
    #[arg(long, default_value_t = MAX_BATCH_ITEMS)]
    batch_size: usize,
}

/// One item's answer as printed.
#[derive(Serialize)]
#[serde(untagged)]
enum Printed<T> {
    Result(T),
    Error {
        #[serde(rename = "Error")]
        error: PrintedError,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PrintedError {
    code: String,
    reason: String,
    message: String,
}

/// Splits a batch answer into its items' results and errors.
trait BatchAnswer {
    type Result: Serialize;
    fn items(self) -> Vec<(Option<Self::Result>, Option<v1::BatchItemError>)>;
}

macro_rules! batch_answer {
    ($($response:ident => $result:ident,)*) => {$(
        impl BatchAnswer for v1::$response {
            type Result = v1::$result;
            fn items(self) -> Vec<(Option<v1::$result>, Option<v1::BatchItemError>)> {
                self.results.into_iter().map(|r| (r.result, r.error)).collect()
            }
        }
    )*};
}

batch_answer! {
    EncryptBatchResponse => EncryptResponse,
    DecryptBatchResponse => DecryptResponse,
    GenerateDataKeyBatchResponse => GenerateDataKeyResponse,
}

pub async fn batch(ctx: Context, command: BatchCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        BatchCommand::Encrypt(args) => {
            run(args, |items| async move {
                let request = v1::EncryptBatchRequest { items };
                let signed = client.signed("EncryptBatch", request);
                Ok(client.kms().encrypt_batch(signed).await?.into_inner())
            })
            .await
        }
        BatchCommand::Decrypt(args) => {
            run(args, |items| async move {
                let request = v1::DecryptBatchRequest { items };
                let signed = client.signed("DecryptBatch", request);
                Ok(client.kms().decrypt_batch(signed).await?.into_inner())
            })
            .await
        }
        BatchCommand::GenerateDataKey(args) => {
            run(args, |items| async move {
                let request = v1::GenerateDataKeyBatchRequest { items };
                let signed = client.signed("GenerateDataKeyBatch", request);
                Ok(client
                    .kms()
                    .generate_data_key_batch(signed)
                    .await?
                    .into_inner())
            })
            .await
        }
    }
}

/// Reads stdin's lines as `Item`s, sends them `batch_size` at a time with `call`, prints
/// every answer; fails when a line does not parse (before anything is sent) or an item failed.
async fn run<Item, Answer, Call, Calling>(args: BatchArgs, call: Call) -> Result<(), CliError>
where
    Item: DeserializeOwned,
    Answer: BatchAnswer,
    Call: Fn(Vec<Item>) -> Calling,
    Calling: std::future::Future<Output = Result<Answer, CliError>>,
{
    if args.batch_size == 0 || args.batch_size > MAX_BATCH_ITEMS {
        return Err(CliError::Local(format!(
            "--batch-size must be 1 to {MAX_BATCH_ITEMS}"
        )));
    }
    let mut items = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| CliError::Local(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(&line)
            .map_err(|e| CliError::Local(format!("line {}: {e}", number + 1)))?;
        items.push(item);
    }
    let total = items.len();
    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let chunk: Vec<Item> = items.by_ref().take(args.batch_size).collect();
        for (result, error) in call(chunk).await?.items() {
            let printed = match (result, error) {
                (Some(result), _) => Printed::Result(result),
                (None, error) => {
                    failed += 1;
                    let error = error.unwrap_or_default();
                    Printed::Error {
                        error: PrintedError {
                            code: error.code,
                            reason: error.reason,
                            message: error.message,
                        },
                    }
                }
            };
            let line = serde_json::to_string(&printed)
                .map_err(|e| CliError::Local(format!("cannot print an answer: {e}")))?;
            writeln!(stdout, "{line}")
                .map_err(|e| CliError::Local(format!("cannot write stdout: {e}")))?;
        }
    }
    if failed > 0 {
        return Err(CliError::Local(format!("{failed} of {total} items failed")));
    }
    Ok(())
}
