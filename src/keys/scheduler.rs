//! The background task that carries out due deletions and automatic rotations.
//!
//! It runs once at start-up, before the daemon serves (so deadlines that passed while the
//! daemon was down are met first), then every `interval`. What each pass did goes to the
//! caller's `on_report`, which the daemon turns into audit records. Among daemons sharing a
//! store one runs the deadlines; every daemon writes the last uses of keys it served, at each
//! `interval` and, once calls over many keys have parked many, without waiting for it.

use super::KeyService;
use crate::background::Background;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DueReport {
    pub destroyed: usize,
    pub rotated: usize,
    pub failed: usize,
    /// The keys destroyed and rotated, for the audit log.
    pub destroyed_keys: Vec<Uuid>,
    pub rotated_keys: Vec<Uuid>,
    /// Imported material deleted past its `ValidTo`, and the keys it belonged to.
    pub expired: usize,
    pub expired_keys: Vec<Uuid>,
}

impl DueReport {
    /// Whether the pass did or tried anything.
    pub fn is_empty(&self) -> bool {
        self.destroyed + self.rotated + self.expired + self.failed == 0
    }
}

impl KeyService {
    /// Destroys every key whose deletion date has passed and rotates every key whose automatic
    /// rotation is due. A key that fails (keystore down) is retried on the next pass.
    pub async fn run_due_tasks(&self) -> DueReport {
        for (key, problem) in self.recheck_unavailable() {
            tracing::error!(%key, %problem, "key material still missing");
        }
        self.record_uses().await;
        let (deletions, rotations) = self.due_keys(self.now());
        let mut report = DueReport::default();
        for id in deletions {
            match self.destroy_if_due(id).await {
                Ok(true) => {
                    report.destroyed += 1;
                    report.destroyed_keys.push(id);
                }
                Ok(false) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::error!(key = %id, %error, "scheduled deletion failed; will retry");
                }
            }
        }
        for id in rotations {
            match self.rotate_if_due(id).await {
                Ok(true) => {
                    report.rotated += 1;
                    report.rotated_keys.push(id);
                }
                Ok(false) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::error!(key = %id, %error, "automatic rotation failed; will retry");
                }
            }
        }
        for id in self.expired_material(self.now()) {
            match self.expire_material_if_due(id).await {
                Ok(true) => {
                    report.expired += 1;
                    report.expired_keys.push(id);
                }
                Ok(false) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::error!(key = %id, %error, "expiry of imported material failed; will retry");
                }
            }
        }
        self.clear_expired_import_tokens().await;
        self.finish_destructions().await;
        report
    }
}

/// Runs [`KeyService::run_due_tasks`] every `interval` until the returned loop is stopped
/// (between passes), handing each pass's report to `on_report`.
pub fn spawn_scheduler(
    service: Arc<KeyService>,
    interval: Duration,
    on_report: Arc<dyn Fn(&DueReport) + Send + Sync>,
    leads: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Background {
    Background::spawn(move |mut stop| async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let pass = tokio::select! {
                _ = ticker.tick() => true,
                // Many uses parked, or first uses, since the pass: written now, the deadlines
                // wait.
                _ = service.uses_piling_up() => false,
                _ = stop.asked() => return,
            };
            if !pass {
                service.record_uses_soon().await;
                continue;
            }
            // Among daemons sharing a store, one runs the deadlines; each writes the uses it
            // saw.
            let leading = leads.clone();
            if !tokio::task::spawn_blocking(move || leading())
                .await
                .unwrap_or(false)
            {
                service.record_uses().await;
                continue;
            }
            let report = service.run_due_tasks().await;
            if !report.is_empty() {
                tracing::info!(?report, "scheduled key tasks ran");
            }
            on_report(&report);
        }
    })
}
