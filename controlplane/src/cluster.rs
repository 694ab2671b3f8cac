//! Several control planes, one cluster. Replicas sharing a Postgres database must hold
//! the same CA (`ca.pem`, `ca.key`), token key (`token.key`, `token.pub`) and secrets
//! key (`secrets.key`, which seals team secrets) in their keys dir: workers trust that CA and any replica must verify the join and worker
//! tokens another one signed. The database records the cluster's identity (trust
//! domain and both fingerprints) when the first control plane starts on it; a replica
//! whose keys differ refuses to start, naming both fingerprints, and a replica that
//! has no keys yet on a database that has an identity refuses before it makes any.

use std::path::{Path, PathBuf};

use berth_pki::ca::{CA_CERT_FILE, CA_KEY_FILE};
use berth_pki::sealing::SECRETS_KEY_FILE;
use berth_pki::token::{TOKEN_KEY_FILE, TOKEN_PUB_FILE};
use sha2::{Digest, Sha256};

use crate::authority::Authority;
use crate::clock::now_ms;
use crate::store::{ClusterIdentity, Store, StoreError};

/// The files every replica must share, relative to its keys dir.
pub const SHARED_KEY_FILES: [&str; 5] = [
    CA_CERT_FILE,
    CA_KEY_FILE,
    TOKEN_KEY_FILE,
    TOKEN_PUB_FILE,
    SECRETS_KEY_FILE,
];

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the database belongs to a cluster ({cluster}) but {dir} holds no keys; copy {files} \
         from a running control plane into {dir} (or point keys_dir at a shared copy)",
        cluster = describe(.recorded),
        dir = .keys_dir.display(),
        files = SHARED_KEY_FILES.join(", ")
    )]
    MissingKeys {
        keys_dir: PathBuf,
        recorded: ClusterIdentity,
    },
    #[error(
        "this control plane's keys in {dir} do not match the cluster recorded in the \
         database: {found}; every replica must use the same {files} (copy them from a \
         running control plane, or point keys_dir at a shared copy)",
        dir = .keys_dir.display(),
        found = differences(.ours, .recorded),
        files = SHARED_KEY_FILES.join(", ")
    )]
    KeysMismatch {
        keys_dir: PathBuf,
        ours: ClusterIdentity,
        recorded: ClusterIdentity,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Before the authority is loaded: refuses a replica that would create fresh keys for a
/// database whose cluster already has some.
pub async fn check_keys_present(store: &Store, keys_dir: &Path) -> Result<(), ClusterError> {
    let Some(recorded) = store.cluster_identity().await? else {
        return Ok(());
    };
    let any_present = SHARED_KEY_FILES
        .iter()
        .any(|file| keys_dir.join(file).exists());
    if any_present {
        return Ok(());
    }
    Err(ClusterError::MissingKeys {
        keys_dir: keys_dir.to_owned(),
        recorded,
    })
}

/// Records this control plane's identity as the cluster's if it is the first, or
/// checks it against the recorded one. Of replicas starting together on an empty
/// database the first writer wins; the others start only if their keys are the same.
pub async fn join(
    store: &Store,
    authority: &Authority,
    keys_dir: &Path,
) -> Result<ClusterIdentity, ClusterError> {
    let ours = identity_of(authority);
    let recorded = store.claim_cluster_identity(&ours, now_ms()).await?;
    if recorded != ours {
        return Err(ClusterError::KeysMismatch {
            keys_dir: keys_dir.to_owned(),
            ours,
            recorded,
        });
    }
    Ok(recorded)
}

/// The identity this control plane's keys give it.
pub fn identity_of(authority: &Authority) -> ClusterIdentity {
    ClusterIdentity {
        trust_domain: authority.trust_domain().to_owned(),
        ca_sha256: authority.ca().fingerprint(),
        token_key_sha256: token_key_fingerprint(authority.tokens().public_key_pem()),
    }
}

/// Hex SHA-256 of the token verification key's PEM text.
pub fn token_key_fingerprint(public_key_pem: &str) -> String {
    hex::encode(Sha256::digest(public_key_pem.trim().as_bytes()))
}

fn describe(identity: &ClusterIdentity) -> String {
    format!(
        "trust domain {}, CA sha256 {}, token key sha256 {}",
        identity.trust_domain, identity.ca_sha256, identity.token_key_sha256
    )
}

/// Each difference with both values, ours first.
fn differences(ours: &ClusterIdentity, recorded: &ClusterIdentity) -> String {
    let mut found = Vec::new();
    if ours.ca_sha256 != recorded.ca_sha256 {
        found.push(format!(
            "CA sha256 here {} but {} in the cluster",
            ours.ca_sha256, recorded.ca_sha256
        ));
    }
    if ours.token_key_sha256 != recorded.token_key_sha256 {
        found.push(format!(
            "token key sha256 here {} but {} in the cluster",
            ours.token_key_sha256, recorded.token_key_sha256
        ));
    }
    if ours.trust_domain != recorded.trust_domain {
        found.push(format!(
            "trust domain here {:?} but {:?} in the cluster",
            ours.trust_domain, recorded.trust_domain
        ));
    }
    found.join("; ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::testing::temp_store;

    fn authority(dir: &Path) -> Authority {
        Authority::load_or_create(
            dir,
            "berth.local",
            vec!["localhost".into()],
            vec![],
            Duration::from_secs(3600),
        )
        .expect("authority")
    }

    #[tokio::test]
    async fn the_first_control_plane_records_the_identity_and_the_same_keys_rejoin() {
        let (dir, store) = temp_store().await;
        let keys = dir.path().join("keys");
        check_keys_present(&store, &keys).await.unwrap();
        let first = authority(&keys);
        let recorded = join(&store, &first, &keys).await.unwrap();
        assert_eq!(recorded, identity_of(&first));
        let again = authority(&keys);
        assert_eq!(join(&store, &again, &keys).await.unwrap(), recorded);
    }

    #[tokio::test]
    async fn other_keys_are_refused_naming_both_fingerprints() {
        let (dir, store) = temp_store().await;
        let first = authority(&dir.path().join("a"));
        join(&store, &first, &dir.path().join("a")).await.unwrap();
        let other_dir = dir.path().join("b");
        let other = authority(&other_dir);
        let err = join(&store, &other, &other_dir).await.unwrap_err();
        let message = err.to_string();
        let (ours, theirs) = (identity_of(&other), identity_of(&first));
        for expected in [
            ours.ca_sha256,
            theirs.ca_sha256,
            ours.token_key_sha256,
            theirs.token_key_sha256,
        ] {
            assert!(message.contains(&expected), "{message}");
        }
        assert!(message.contains("ca.key"), "{message}");
        assert!(!message.contains("trust domain"), "{message}");
        // the recorded identity is unchanged
        assert_eq!(
            store.cluster_identity().await.unwrap(),
            Some(identity_of(&first))
        );
    }

    #[tokio::test]
    async fn a_replica_without_keys_is_refused_before_it_makes_any() {
        let (dir, store) = temp_store().await;
        let first = authority(&dir.path().join("a"));
        join(&store, &first, &dir.path().join("a")).await.unwrap();
        let empty = dir.path().join("empty");
        let err = check_keys_present(&store, &empty).await.unwrap_err();
        assert!(matches!(err, ClusterError::MissingKeys { .. }), "{err}");
        assert!(err.to_string().contains(&first.ca().fingerprint()));
        assert!(!empty.exists());
    }
}
