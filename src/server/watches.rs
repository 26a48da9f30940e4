//! Loops that watch the daemon's state beside serving and act once it changes: the health
//! check's answer when the store refuses, and the allocator's purge delay once start-up's
//! checks are done.

use super::{KeyManagementServiceServer, KmsApi};
use crate::background::Background;
use crate::keys::KeyService;
use crate::store::Store;

/// Every second until `refused` says so (the store refused: a record failed its integrity
/// check while the daemon serves, and every call fails from then on): then the health check
/// answers `NOT_SERVING`, for the daemon's service and the server as a whole, so that a load
/// balancer sends calls elsewhere.
pub(super) fn watch_health(
    refused: impl Fn() -> bool + Send + 'static,
    health: tonic_health::server::HealthReporter,
) -> Background {
    Background::spawn(move |mut stop| async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.asked() => return,
            }
            if refused() {
                health
                    .set_not_serving::<KeyManagementServiceServer<KmsApi>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                return;
            }
        }
    })
}

/// Waits until start-up's transient loads are over (the management account's key material
/// and, when they are checked beside serving, every record checked), then lets the allocator
/// keep freed memory a little before purging it ([`crate::allocator::serving`]). Ends early
/// when asked to stop, when the daemon goes (it holds neither the keys nor the store between
/// its looks) or when the store refuses.
pub(super) fn settle_allocator(
    keys: std::sync::Weak<KeyService>,
    store: std::sync::Weak<Store>,
) -> Background {
    Background::spawn(move |mut stop| async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.asked() => return,
            }
            let (Some(keys), Some(store)) = (keys.upgrade(), store.upgrade()) else {
                return;
            };
            if store.refused() {
                return;
            }
            if keys.material_check_done() && store.every_record_checked() {
                break;
            }
        }
        crate::allocator::serving();
    })
}
