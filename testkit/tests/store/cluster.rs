//! API keys, the cluster identity, the first admin key, and the audit chain.

use super::*;

pub async fn the_store_answers_and_names_its_backend(db: Db) {
    let store = db.open().await;
    store.ping().await.unwrap();
    assert_eq!(store.backend(), db.backend);
    store.close().await;
    assert!(
        store.ping().await.is_err(),
        "a closed store answers nothing"
    );
}

pub async fn api_keys_are_found_by_id_and_counted(db: Db) {
    let store = db.open().await;
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    store.insert_api_key(&api_key("k1")).await.unwrap();
    store.insert_api_key(&api_key("k2")).await.unwrap();
    let found = store.find_api_key("k1").await.unwrap().expect("k1");
    assert_eq!(found.name, "key k1");
    assert_eq!(found.secret_hash, "hash-k1");
    assert_eq!(found.scopes, "read,exec");
    assert_eq!(found.created_at, 42);
    assert_eq!(found.revoked_at, None);
    assert!(store.find_api_key("nope").await.unwrap().is_none());
    assert!(matches!(
        store.insert_api_key(&api_key("k1")).await,
        Err(StoreError::Database(_))
    ));
    assert_eq!(store.count_api_keys().await.unwrap(), 2);
}

pub async fn the_first_writer_sets_the_cluster_identity(db: Db) {
    let store = db.open().await;
    assert_eq!(store.cluster_identity().await.unwrap(), None);
    let first = store
        .claim_cluster_identity(&identity("a"), 1)
        .await
        .unwrap();
    assert_eq!(first, identity("a"));
    let second = store
        .claim_cluster_identity(&identity("b"), 2)
        .await
        .unwrap();
    assert_eq!(second, identity("a"), "the recorded identity stays");
    assert_eq!(store.cluster_identity().await.unwrap(), Some(identity("a")));
}

pub async fn the_first_admin_key_is_made_once(db: Db) {
    let store = db.open().await;
    assert!(
        !store
            .insert_first_admin_key(&api_key("early"))
            .await
            .unwrap(),
        "nothing before the cluster identity is recorded"
    );
    store
        .claim_cluster_identity(&identity("a"), 1)
        .await
        .unwrap();
    assert!(store.insert_first_admin_key(&api_key("k1")).await.unwrap());
    assert!(!store.insert_first_admin_key(&api_key("k2")).await.unwrap());
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    assert!(store.find_api_key("k1").await.unwrap().is_some());
    assert!(store.find_api_key("k2").await.unwrap().is_none());
}

pub async fn an_existing_key_means_no_first_admin_key(db: Db) {
    // a database from before the cluster row: keys exist, the identity is new
    let store = db.open().await;
    store.insert_api_key(&api_key("old")).await.unwrap();
    store
        .claim_cluster_identity(&identity("a"), 1)
        .await
        .unwrap();
    assert!(!store.insert_first_admin_key(&api_key("new")).await.unwrap());
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
}

pub async fn replicas_starting_together_agree_on_one_identity_and_one_admin_key(db: Db) {
    let [a, b] = db.replicas().await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>> = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            let recorded = store
                .claim_cluster_identity(&identity(&format!("r{i}")), i)
                .await
                .unwrap();
            let made = store
                .insert_first_admin_key(&api_key(&format!("k{i}")))
                .await
                .unwrap();
            (recorded, made)
        }));
    }
    let results = race(tasks).await;
    let identities: HashSet<_> = results.iter().map(|(id, _)| id.ca_sha256.clone()).collect();
    assert_eq!(identities.len(), 1, "one identity for all: {identities:?}");
    assert_eq!(results.iter().filter(|(_, made)| *made).count(), 1);
    assert_eq!(a.count_api_keys().await.unwrap(), 1);
}

fn audit_row(seq: i64, prev_hash: &str, hash: &str) -> AuditRow {
    AuditRow {
        seq,
        at_ms: 1_000 + seq,
        actor: "key:k1".into(),
        operation: "POST /api/v1/sandboxes".into(),
        worker_id: "w1".into(),
        sandbox_id: "sbx".into(),
        detail: format!("call {seq}"),
        outcome: "ok".into(),
        request_id: format!("req-{seq}"),
        team_id: "a".into(),
        user_id: "alice".into(),
        prev_hash: prev_hash.into(),
        hash: hash.into(),
    }
}

pub async fn the_audit_chain_moves_only_from_its_head(db: Db) {
    let store = db.open().await;
    assert_eq!(store.audit_head().await.unwrap(), head(0, ""));
    assert!(store.append_audit(&[audit_row(1, "", "h1")]).await.unwrap());
    assert_eq!(store.audit_head().await.unwrap(), head(1, "h1"));
    assert!(
        !store
            .append_audit(&[audit_row(1, "", "h1b")])
            .await
            .unwrap(),
        "a second record at the same place"
    );
    assert!(
        !store
            .append_audit(&[audit_row(2, "wrong", "h2")])
            .await
            .unwrap(),
        "a record naming another predecessor"
    );
    assert!(
        !store
            .append_audit(&[audit_row(3, "h1", "h3")])
            .await
            .unwrap(),
        "a gap"
    );
    assert!(
        store
            .append_audit(&[audit_row(2, "h1", "h2")])
            .await
            .unwrap()
    );
    assert!(
        store
            .append_audit(&[audit_row(3, "h2", "h3")])
            .await
            .unwrap()
    );

    let all = store.list_audit(0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], audit_row(1, "", "h1"));
    let since = store.list_audit(1_002, 100).await.unwrap();
    assert_eq!(since.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    let limited = store.list_audit(0, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    let page = store.audit_page(1, 1).await.unwrap();
    assert_eq!(page, vec![audit_row(2, "h1", "h2")]);
    assert!(store.audit_page(3, 10).await.unwrap().is_empty());

    // a run of records lands whole or not at all
    let run = [
        audit_row(4, "h3", "h4"),
        audit_row(5, "h4", "h5"),
        audit_row(6, "h5", "h6"),
    ];
    assert!(
        !store.append_audit(&run[1..]).await.unwrap(),
        "a run that skips a record"
    );
    assert_eq!(store.audit_head().await.unwrap(), head(3, "h3"));
    assert!(store.audit_page(3, 10).await.unwrap().is_empty());
    assert!(store.append_audit(&run).await.unwrap());
    assert_eq!(store.audit_head().await.unwrap(), head(6, "h6"));
    assert_eq!(store.audit_page(3, 10).await.unwrap(), run.to_vec());
    assert!(store.append_audit(&[]).await.unwrap(), "nothing to append");
}

pub async fn appends_through_two_replicas_form_one_chain(db: Db) {
    let [a, b] = db.replicas().await;
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(Box::pin(async move {
            for j in 0..3 {
                loop {
                    let AuditHead { seq, hash: prev } = store.audit_head().await.unwrap();
                    let row = audit_row(seq + 1, &prev, &format!("h-{i}-{j}"));
                    if store
                        .append_audit(std::slice::from_ref(&row))
                        .await
                        .unwrap()
                    {
                        break;
                    }
                }
            }
        }));
    }
    race(tasks).await;
    let chain = a.audit_page(0, 100).await.unwrap();
    assert_eq!(chain.len(), 24);
    let mut prev = String::new();
    for (index, row) in chain.iter().enumerate() {
        assert_eq!(row.seq, index as i64 + 1);
        assert_eq!(
            row.prev_hash, prev,
            "record {} links to its predecessor",
            row.seq
        );
        prev = row.hash.clone();
    }
    assert_eq!(b.audit_head().await.unwrap(), head(24, &prev));
}

/// The audit head `(seq, hash)`.
fn head(seq: i64, hash: &str) -> AuditHead {
    AuditHead {
        seq,
        hash: hash.to_owned(),
    }
}

pub async fn templates_move_their_version_only_on_new_content(db: Db) {
    use berth_controlplane::store::TemplateSave;
    let [one, two] = db.replicas().await;
    let made = one
        .save_template("red", "web", "h1", "{}", 10)
        .await
        .unwrap();
    assert!(
        matches!(&made, TemplateSave::Created(row) if row.version == 1 && row.created_at == 10)
    );
    // another team's template of the same name is its own
    let theirs = one
        .save_template("blue", "web", "h9", "{}", 11)
        .await
        .unwrap();
    assert!(matches!(theirs, TemplateSave::Created(_)));
    // the same content through another replica: nothing changes
    let same = two
        .save_template("red", "web", "h1", "{}", 20)
        .await
        .unwrap();
    assert!(
        matches!(&same, TemplateSave::Unchanged(row) if row.version == 1 && row.updated_at == 10)
    );
    let changed = two
        .save_template("red", "web", "h2", "{\"a\":1}", 30)
        .await
        .unwrap();
    let TemplateSave::Updated(row) = changed else {
        panic!("a change is a new version: {changed:?}")
    };
    assert_eq!((row.version, row.created_at, row.updated_at), (2, 10, 30));
    assert_eq!(
        (row.content_hash.as_str(), row.spec.as_str()),
        ("h2", "{\"a\":1}")
    );

    let listed = one.list_templates("red").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 2);
    assert!(one.get_template("red", "nope").await.unwrap().is_none());
    assert!(one.delete_template("red", "web").await.unwrap());
    assert!(!one.delete_template("red", "web").await.unwrap());
    assert!(one.get_template("red", "web").await.unwrap().is_none());
    assert_eq!(one.list_templates("blue").await.unwrap().len(), 1);
}

pub async fn secrets_are_kept_sealed_per_team(db: Db) {
    use berth_controlplane::store::SecretRow;
    let [one, two] = db.replicas().await;
    let row = |team: &str, sealed: &[u8], at: i64| SecretRow {
        team_id: team.into(),
        name: "DB_PASSWORD".into(),
        key_id: "sk-1".into(),
        sealed: sealed.to_vec(),
        created_at: at,
        updated_at: at,
    };
    assert!(
        one.put_secret(&row("red", &[0, 1, 255], 10))
            .await
            .unwrap()
            .0
    );
    assert!(one.put_secret(&row("blue", &[9], 11)).await.unwrap().0);
    // replaced through another replica: same row, new value and time, its first
    // time kept
    let (created, stored) = two.put_secret(&row("red", &[7, 7], 20)).await.unwrap();
    assert!(!created);
    assert_eq!((stored.created_at, stored.updated_at), (10, 20));
    assert_eq!(stored.sealed, vec![7, 7]);
    let red = one.list_secrets("red").await.unwrap();
    assert_eq!(red.len(), 1);
    assert_eq!(
        (
            red[0].sealed.as_slice(),
            red[0].created_at,
            red[0].updated_at
        ),
        (&[7u8, 7][..], 10, 20)
    );
    assert!(one.delete_secret("red", "DB_PASSWORD").await.unwrap());
    assert!(!one.delete_secret("red", "DB_PASSWORD").await.unwrap());
    assert!(one.list_secrets("red").await.unwrap().is_empty());
    assert_eq!(one.list_secrets("blue").await.unwrap()[0].sealed, vec![9]);
}
