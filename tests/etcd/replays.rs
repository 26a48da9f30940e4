//! Replays across the daemons of a cluster: a change captured on its way to one daemon is
//! refused by another, also when the other was opening the account the change was made in.

use super::*;

/// A state change captured on its way to one daemon is refused as a replay by another:
/// after the first answered, and when both are sent at once (exactly one is carried out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_sent_to_two_daemons_is_carried_out_once() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let key = a.create_key("replayed across daemons").await.key_id;
    within("B knows the key", || async {
        b.describe(&key).await.is_ok()
    })
    .await;
    // Behind a load balancer every daemon is reached by one name, and a signature made for
    // it verifies on each of them.
    let (on_a, on_b) = (balanced(&a).await, balanced(&b).await);
    let captured = |request: &tonic::Request<v1::DisableKeyRequest>| {
        let mut copy = tonic::Request::new(request.get_ref().clone());
        *copy.metadata_mut() = request.metadata().clone();
        copy
    };
    let first = on_a.signed(
        "DisableKey",
        v1::DisableKeyRequest {
            key_id: key.clone(),
        },
    );
    let replayed = captured(&first);
    on_a.kms()
        .disable_key(first)
        .await
        .expect("DisableKey on A");
    let refused = on_b.kms().disable_key(replayed).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|s| s.message().contains("replayed")),
        "{refused:?}"
    );
    common::assert_refused(
        refused,
        tonic::Code::Unauthenticated,
        "InvalidSignatureException",
    );

    // Both at once, ten times over: one is carried out, the other refused as a replay.
    for _ in 0..10 {
        let request = on_a.signed(
            "EnableKey",
            v1::EnableKeyRequest {
                key_id: key.clone(),
            },
        );
        let mut copy = tonic::Request::new(request.get_ref().clone());
        *copy.metadata_mut() = request.metadata().clone();
        let (to_a, to_b) = (on_a.kms(), on_b.kms());
        let (x, y) = tokio::join!(
            async move { to_a.clone().enable_key(request).await },
            async move { to_b.clone().enable_key(copy).await }
        );
        let carried_out = [x.is_ok(), y.is_ok()];
        assert_eq!(
            carried_out.iter().filter(|ok| **ok).count(),
            1,
            "{x:?} {y:?}"
        );
        for answer in [x, y] {
            if let Err(status) = answer {
                assert!(status.message().contains("replayed"), "{status:?}");
            }
        }
    }
}

/// A root client of `d` that addresses it as `kms.cluster.test`, the name a load balancer in
/// front of the cluster would have.
async fn balanced(d: &TestDaemon) -> keyhaven::client::Client {
    balanced_as(d, d.credentials.clone()).await
}

/// [`balanced`], signed with `credentials`.
async fn balanced_as(
    d: &TestDaemon,
    credentials: keyhaven::client::ClientCredentials,
) -> keyhaven::client::Client {
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .origin("http://kms.cluster.test".parse().unwrap())
        .connect()
        .await
        .expect("connect");
    keyhaven::client::Client::from_channel(channel, "kms.cluster.test", credentials)
        .with_clock(std::sync::Arc::new(d.clock.clone()))
}

/// Changes a new member account's root made through daemon a while daemon b was opening the
/// account (b reaches etcd over a slow network, so its opening takes a while) are refused by
/// b as replays afterwards: the signatures other daemons stored while an account was being
/// opened are read again once it is open. Each was carried out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_another_daemon_opens_an_account_are_refused_there_as_replays() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    // Opening an account reads the store some fifteen times in turn: about a third of a second
    // here.
    let b = a.join_lagging(std::time::Duration::from_millis(20)).await;
    let (_, credentials) = a.create_account("partner").await;
    let (on_a, on_b) = (
        balanced_as(&a, credentials.clone()).await,
        balanced_as(&b, credentials).await,
    );
    let mut captured = Vec::new();
    for n in 0..20 {
        let request = on_a.signed(
            "CreateKey",
            v1::CreateKeyRequest {
                description: format!("made while b opens the account, {n}"),
                ..Default::default()
            },
        );
        let mut copy = tonic::Request::new(request.get_ref().clone());
        *copy.metadata_mut() = request.metadata().clone();
        captured.push(copy);
        on_a.kms()
            .create_key(request)
            .await
            .expect("CreateKey on a");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    within("b serves the account", || async {
        on_b.kms()
            .list_keys(on_b.signed("ListKeys", v1::ListKeysRequest::default()))
            .await
            .is_ok()
    })
    .await;
    for (n, replayed) in captured.into_iter().enumerate() {
        let refused = on_b.kms().create_key(replayed).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|s| s.message().contains("replayed")),
            "change {n} replayed to b: {refused:?}"
        );
    }
    let listed = on_b
        .kms()
        .list_keys(on_b.signed("ListKeys", v1::ListKeysRequest::default()))
        .await
        .expect("ListKeys on b")
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 20, "each change carried out once");
}
