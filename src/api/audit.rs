//! `keyhaven.v1.AuditService`: the audit log read through the daemon.

use super::authorize::Authorizer;
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
        let context = self.authorizer.base_context(&call, self.clock.now());
        self.authorizer
            .require(&call, "audit:ReadAudit", "*", None, &context)?;
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
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut last = 0;
            for line in backlog {
                last = seq_of(&line).unwrap_or(last);
                if sender.send(Ok(v1::AuditLine { line })).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else {
                return;
            };
            loop {
                let item = tokio::select! {
                    item = live.recv() => item,
                    _ = sender.closed() => return,
                };
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
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
