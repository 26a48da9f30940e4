//! `keyhaven.v1.AuditService`: the audit log read through the daemon.
//!
//! The log holds every account's calls. The management account's principals read it whole;
//! a member account's principals, allowed `audit:ReadAudit` by their own account's policies
//! (and guardrails), read the records of their account: those whose principal, or one of
//! whose keys, is of the account.

use super::accounts::Accounts;
use super::authorize::{Authorizer, CallContext};
use super::call_context as caller;
use super::status::ApiError;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::keys::KeyError;
use crate::proto::v1::{self, audit_service_server::AuditService};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const MAX_TAIL: u32 = 10_000;
/// The permission to read the log.
const READ_AUDIT: &str = "audit:ReadAudit";
/// How often a followed tail checks, while nothing is written, that its caller may still read
/// the log. It also checks before each batch of lines it sends.
const REAUTHORISE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Lines sent after one check.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct AuditApi {
    audit: Arc<AuditLog>,
    authorizer: Arc<Authorizer>,
    clock: Arc<dyn Clock>,
    /// The organisation's accounts: a member's principals read their account's records.
    accounts: Option<Arc<Accounts>>,
}

impl AuditApi {
    pub fn new(audit: Arc<AuditLog>, authorizer: Arc<Authorizer>, clock: Arc<dyn Clock>) -> Self {
        Self {
            audit,
            authorizer,
            clock,
            accounts: None,
        }
    }

    /// The log read by every account of the organisation, each its own records.
    pub fn for_accounts(mut self, accounts: Arc<Accounts>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// The authoriser of the caller's account, and the account whose records alone it may
    /// read (none: the whole log, for the management account's principals).
    fn reader(&self, call: &CallContext) -> Result<(Arc<Authorizer>, Option<String>), ApiError> {
        let account = &call.caller.principal.account_id;
        if account == self.authorizer.iam().account_id() {
            return Ok((self.authorizer.clone(), None));
        }
        match self.accounts.as_ref().and_then(|a| a.account(account)) {
            Some(member) => Ok((member.authorizer.clone(), Some(account.clone()))),
            None => Err(ApiError::new(
                tonic::Code::PermissionDenied,
                "AccessDeniedException",
                format!(
                    "{} is not authorized to perform {READ_AUDIT}",
                    call.caller.principal.arn
                ),
            )),
        }
    }
}

impl AuditApi {
    /// The last `lines` records of the log, read off the async workers.
    async fn backlog(&self, lines: u32) -> Result<Vec<String>, ApiError> {
        if lines > MAX_TAIL {
            return Err(KeyError::Validation(format!("Lines must be at most {MAX_TAIL}")).into());
        }
        let audit = self.audit.clone();
        Ok(
            tokio::task::spawn_blocking(move || audit.tail(lines as usize))
                .await
                .map_err(|e| KeyError::Internal(format!("audit tail task: {e}")))?
                .map_err(|e| KeyError::Internal(e.to_string()))?,
        )
    }

    /// The last `lines` records of the log that the caller may read (all of them for the
    /// management account's principals, their account's for a member's), as a tail without
    /// `follow` sends them: the console's audit page.
    pub async fn recent(&self, call: &CallContext, lines: u32) -> Result<Vec<String>, ApiError> {
        let (authorizer, only) = self.reader(call)?;
        may_read(&authorizer, self.clock.as_ref(), call)?;
        let mut backlog = self.backlog(lines).await?;
        if let Some(account) = only {
            backlog.retain(|line| concerns(line, &account));
        }
        Ok(backlog)
    }
}

/// Whether an audit line concerns `account`: its principal, or one of its keys, is of it.
fn concerns(line: &str, account: &str) -> bool {
    let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let of_account = |arn: &serde_json::Value| {
        arn.as_str()
            .and_then(|arn| arn.strip_prefix("arn:"))
            .and_then(|rest| rest.split(':').nth(3))
            == Some(account)
    };
    record.get("principal").is_some_and(of_account)
        || record
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|keys| keys.iter().any(of_account))
}

/// Whether the caller may read the log now: the credentials it signed with would still be
/// accepted (the key still there and active, its user or role still there, a session not
/// expired) and its policies still allow [`READ_AUDIT`]. A tail outlives the request that
/// opened it, so it asks again as it goes; the refusal is what a new request would get.
fn may_read(
    authorizer: &Authorizer,
    clock: &dyn Clock,
    call: &CallContext,
) -> Result<(), ApiError> {
    authorizer
        .iam()
        .credentials()
        .still_accepted(&call.caller)?;
    let context = authorizer.base_context(call, clock.now());
    authorizer.require(call, READ_AUDIT, "*", None, &context)?;
    Ok(())
}

/// A tail's end when its caller may no longer read the log: the refusal, as the stream's
/// last message.
async fn refuse(
    sender: &mpsc::Sender<Result<v1::AuditLine, Status>>,
    call: &CallContext,
    status: Status,
) {
    tracing::info!(
        principal = %call.caller.principal.arn,
        access_key_id = %call.caller.access_key_id,
        code = ?status.code(),
        "audit tail ended: the caller may no longer read the log"
    );
    let _ = sender.send(Err(status)).await;
}

fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type TailAuditLogStream = ReceiverStream<Result<v1::AuditLine, Status>>;

    async fn tail_audit_log(
        &self,
        request: Request<v1::TailAuditLogRequest>,
    ) -> Result<Response<Self::TailAuditLogStream>, Status> {
        let call = caller(&request)?;
        let (authorizer, only) = self.reader(&call)?;
        may_read(&authorizer, self.clock.as_ref(), &call)?;
        let r = request.get_ref();
        // Subscribe before reading, so nothing written in between is lost.
        let live = r.follow.then(|| self.audit.subscribe());
        let backlog = self.backlog(r.lines).await?;
        let (sender, receiver) = mpsc::channel(BATCH);
        let clock = self.clock.clone();
        let shown = move |line: &str| only.as_deref().is_none_or(|a| concerns(line, a));
        tokio::spawn(async move {
            let mut last = 0;
            for (i, line) in backlog.into_iter().enumerate() {
                if i > 0
                    && i % BATCH == 0
                    && let Err(refused) = may_read(&authorizer, clock.as_ref(), &call)
                {
                    return refuse(&sender, &call, refused.into()).await;
                }
                last = seq_of(&line).unwrap_or(last);
                if !shown(&line) {
                    continue;
                }
                if sender.send(Ok(v1::AuditLine { line })).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else {
                return;
            };
            let mut recheck = tokio::time::interval(REAUTHORISE_EVERY);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is now: the caller was just authorised.
            recheck.tick().await;
            loop {
                let first = tokio::select! {
                    item = live.recv() => item,
                    _ = recheck.tick() => {
                        if let Err(refused) = may_read(&authorizer, clock.as_ref(), &call) {
                            return refuse(&sender, &call, refused.into()).await;
                        }
                        continue;
                    }
                    _ = sender.closed() => return,
                };
                // What has arrived since, up to a batch, goes out after one check.
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match live.try_recv() {
                        Ok(line) => batch.push(Ok(line)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            batch.push(Err(broadcast::error::RecvError::Lagged(n)))
                        }
                        Err(_) => break,
                    }
                }
                if let Err(refused) = may_read(&authorizer, clock.as_ref(), &call) {
                    return refuse(&sender, &call, refused.into()).await;
                }
                for item in batch {
                    let message = match item {
                        Ok(line) if seq_of(&line).is_some_and(|s| s > last) && shown(&line) => {
                            Ok(v1::AuditLine { line })
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => Err(Status::data_loss(
                            "audit lines were skipped: this reader fell behind",
                        )),
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
