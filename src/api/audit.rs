//! `keyhaven.v1.AuditService`: the audit log read through the daemon.

use super::authorize::{Authorizer, CallContext};
use super::call_context as caller;
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
}

impl AuditApi {
    pub fn new(audit: Arc<AuditLog>, authorizer: Arc<Authorizer>, clock: Arc<dyn Clock>) -> Self {
        Self {
            audit,
            authorizer,
            clock,
        }
    }
}

/// Whether the caller may read the log now: the credentials it signed with would still be
/// accepted (the key still there and active, its user or role still there, a session not
/// expired) and its policies still allow [`READ_AUDIT`]. A tail outlives the request that
/// opened it, so it asks again as it goes; the refusal is what a new request would get.
///
/// The log holds every account's calls: only the management account's principals read it.
fn may_read(authorizer: &Authorizer, clock: &dyn Clock, call: &CallContext) -> Result<(), Status> {
    let principal = &call.caller.principal;
    if principal.account_id != authorizer.iam().account_id() {
        return Err(crate::api::ApiError::new(
            tonic::Code::PermissionDenied,
            "AccessDeniedException",
            format!(
                "{} is not authorized to perform {READ_AUDIT}: the audit log holds every \
                 account's calls and is read by the management account's principals",
                principal.arn
            ),
        )
        .into());
    }
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
        may_read(&self.authorizer, self.clock.as_ref(), &call)?;
        let r = request.get_ref();
        if r.lines > MAX_TAIL {
            return Err(KeyError::Validation(format!("Lines must be at most {MAX_TAIL}")).into());
        }
        // Subscribe before reading, so nothing written in between is lost.
        let live = r.follow.then(|| self.audit.subscribe());
        // File reads: off the async workers.
        let (audit, lines) = (self.audit.clone(), r.lines as usize);
        let backlog = tokio::task::spawn_blocking(move || audit.tail(lines))
            .await
            .map_err(|e| KeyError::Internal(format!("audit tail task: {e}")))?
            .map_err(|e| KeyError::Internal(e.to_string()))?;
        let (sender, receiver) = mpsc::channel(BATCH);
        let (authorizer, clock) = (self.authorizer.clone(), self.clock.clone());
        tokio::spawn(async move {
            let mut last = 0;
            for (i, line) in backlog.into_iter().enumerate() {
                if i > 0
                    && i % BATCH == 0
                    && let Err(status) = may_read(&authorizer, clock.as_ref(), &call)
                {
                    return refuse(&sender, &call, status).await;
                }
                last = seq_of(&line).unwrap_or(last);
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
                        if let Err(status) = may_read(&authorizer, clock.as_ref(), &call) {
                            return refuse(&sender, &call, status).await;
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
                if let Err(status) = may_read(&authorizer, clock.as_ref(), &call) {
                    return refuse(&sender, &call, status).await;
                }
                for item in batch {
                    let message = match item {
                        Ok(line) if seq_of(&line).is_some_and(|s| s > last) => {
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
