//! Managed API keys: listing without the hash, expiry, revocation (idempotent, never
//! the last usable admin key, even through two replicas at once) and last use.

use super::*;
use berth_controlplane::store::KeyRevocation;

pub async fn keys_are_listed_without_their_hash_with_expiry_and_last_use(db: Db) {
    let store = db.open().await;
    let mut expiring = api_key("k2");
    expiring.expires_at = Some(500);
    expiring.created_at = 43;
    store.insert_api_key(&api_key("k1")).await.unwrap();
    store.insert_api_key(&expiring).await.unwrap();
    let listed = store.list_api_keys().await.unwrap();
    assert_eq!(
        listed,
        vec![
            ApiKeyInfo {
                id: "k1".into(),
                name: "key k1".into(),
                scopes: "read,exec".into(),
                created_at: 42,
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
                team_id: None,
                user_id: None,
            },
            ApiKeyInfo {
                id: "k2".into(),
                name: "key k2".into(),
                scopes: "read,exec".into(),
                created_at: 43,
                expires_at: Some(500),
                last_used_at: None,
                revoked_at: None,
                team_id: None,
                user_id: None,
            },
        ]
    );
    assert_eq!(
        store.api_key_info("k2").await.unwrap(),
        Some(listed[1].clone())
    );
    assert_eq!(store.api_key_info("nope").await.unwrap(), None);
    let row = store.find_api_key("k2").await.unwrap().unwrap();
    assert_eq!(row.expires_at, Some(500));
    assert_eq!(row.secret_hash, "hash-k2");
}

pub async fn revoking_is_idempotent_and_unknown_keys_are_named(db: Db) {
    let store = db.open().await;
    store.insert_api_key(&api_key("k1")).await.unwrap();
    let KeyRevocation::Revoked(first) = store.revoke_api_key("k1", 100).await.unwrap() else {
        panic!("the first revocation revokes");
    };
    assert_eq!(first.revoked_at, Some(100));
    assert_eq!(
        store.revoke_api_key("k1", 200).await.unwrap(),
        KeyRevocation::AlreadyRevoked(first),
        "the first revocation time stays"
    );
    assert_eq!(
        store.find_api_key("k1").await.unwrap().unwrap().revoked_at,
        Some(100)
    );
    assert!(matches!(
        store.revoke_api_key("ghost", 100).await,
        Err(StoreError::UnknownApiKey(id)) if id == "ghost"
    ));
}

pub async fn the_last_usable_admin_key_cannot_be_revoked(db: Db) {
    let store = db.open().await;
    store.insert_api_key(&admin_key("a1")).await.unwrap();
    let mut expired = admin_key("a2");
    expired.expires_at = Some(50);
    store.insert_api_key(&expired).await.unwrap();
    store.insert_api_key(&api_key("reader")).await.unwrap();
    // the other admin key expired at 50: at 100 a1 is the last usable one
    assert!(matches!(
        store.revoke_api_key("a1", 100).await,
        Err(StoreError::LastAdminKey(id)) if id == "a1"
    ));
    assert_eq!(
        store.find_api_key("a1").await.unwrap().unwrap().revoked_at,
        None
    );
    // before a2 expired, a1 could go
    let mut other = admin_key("a3");
    other.scopes = "read,admin".into();
    store.insert_api_key(&other).await.unwrap();
    assert!(matches!(
        store.revoke_api_key("a1", 100).await.unwrap(),
        KeyRevocation::Revoked(_)
    ));
    assert!(matches!(
        store.revoke_api_key("a3", 100).await,
        Err(StoreError::LastAdminKey(_))
    ));
    // keys without admin go whatever is left
    assert!(matches!(
        store.revoke_api_key("reader", 100).await.unwrap(),
        KeyRevocation::Revoked(_)
    ));
}

pub async fn replicas_revoking_the_last_two_admin_keys_leave_one(db: Db) {
    let [a, b] = db.replicas().await;
    // each round's keys expire before the next round's time, so every round starts
    // with exactly its own two usable admin keys
    for round in 0..4_i64 {
        let now = 1_000 * (round + 1);
        let (one, two) = (format!("a{round}-1"), format!("a{round}-2"));
        for id in [&one, &two] {
            let mut key = admin_key(id);
            key.expires_at = Some(now + 500);
            a.insert_api_key(&key).await.unwrap();
        }
        let (a, b) = (a.clone(), b.clone());
        let tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = vec![
            Box::pin(async move { a.revoke_api_key(&one, now).await }),
            Box::pin(async move { b.revoke_api_key(&two, now).await }),
        ];
        let results = race(tasks).await;
        let revoked = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::LastAdminKey(_))))
            .count();
        assert_eq!((revoked, refused), (1, 1), "round {round}: {results:?}");
    }
}

pub async fn a_use_is_written_at_most_once_per_interval(db: Db) {
    let store = db.open().await;
    store.insert_api_key(&api_key("k1")).await.unwrap();
    assert!(store.touch_api_key("k1", 1_000, 60).await.unwrap());
    assert!(!store.touch_api_key("k1", 1_030, 60).await.unwrap());
    assert!(!store.touch_api_key("k1", 1_060, 60).await.unwrap());
    assert!(store.touch_api_key("k1", 1_061, 60).await.unwrap());
    assert_eq!(
        store
            .find_api_key("k1")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(1_061)
    );
    assert!(!store.touch_api_key("ghost", 1_000, 60).await.unwrap());
}
