//! The key that seals what the control plane keeps for clients and must never show
//! again (team secrets): 32 random bytes in `secrets.key` beside the CA key (0600,
//! hex), made on the first start. Values are sealed with AES-256-GCM, a fresh random
//! nonce each, bound to where they belong by the associated data the caller gives (a
//! sealed value moved to another row does not open). Replicas must share the file, as
//! they share the CA key.

use std::path::Path;

use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

use crate::error::PkiError;
use crate::files::{PRIVATE_FILE_MODE, ensure_private_dir, read_string, write_new_file};

/// The sealing key's file in the keys dir.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

const KEY_LEN: usize = 32;

/// A sealed value that would not open: another key sealed it, or it was altered or
/// moved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a sealed value does not open with this key")]
pub struct OpenError;

pub struct SealingKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish()
    }
}

impl SealingKey {
    /// Loads `dir/secrets.key`, making it first when it is missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let path = dir.join(SECRETS_KEY_FILE);
        if !path.exists() {
            ensure_private_dir(dir)?;
            let mut bytes = [0u8; KEY_LEN];
            rand::rng().fill_bytes(&mut bytes);
            let text = format!("{}\n", hex::encode(bytes));
            // create_new: of two processes starting at once, one writes and the
            // other reads what it wrote
            match write_new_file(&path, text.as_bytes(), PRIVATE_FILE_MODE) {
                Ok(()) => {}
                Err(PkiError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        let text = read_string(&path)?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| {
                PkiError::Key(format!(
                    "{} is not a secrets key (64 hex digits)",
                    path.display()
                ))
            })?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, PkiError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| PkiError::Key("a secrets key is 32 bytes".into()))?;
        let digest = Sha256::digest(bytes);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            id: format!("sk-{}", hex::encode(&digest[..8])),
        })
    }

    /// Names the key without revealing it (a hash prefix): stored beside each sealed
    /// value, so a replica with another key can say so.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated),
                &mut sealed,
            )
            // ring fails a seal only past ~64 GiB of plaintext
            .expect("a value within AES-GCM's length limit");
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        out
    }

    pub fn open(&self, associated: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(associated), &mut buffer)
            .map_err(|_| OpenError)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = SealingKey::load_or_create(dir.path()).unwrap();
        let again = SealingKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.id(), again.id());
        let sealed = first.seal(b"team\0NAME", b"hunter2");
        assert_eq!(again.open(b"team\0NAME", &sealed).unwrap(), b"hunter2");
        let meta = std::fs::metadata(dir.path().join(SECRETS_KEY_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let key = SealingKey::from_bytes(&[7; 32]).unwrap();
        let other = SealingKey::from_bytes(&[8; 32]).unwrap();
        assert_ne!(key.id(), other.id());
        let sealed = key.seal(b"red\0DB", b"value");
        assert!(!sealed.windows(5).any(|w| w == b"value"));
        // a fresh nonce each time
        assert_ne!(sealed, key.seal(b"red\0DB", b"value"));
        assert_eq!(other.open(b"red\0DB", &sealed), Err(OpenError));
        assert_eq!(key.open(b"blue\0DB", &sealed), Err(OpenError));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(b"red\0DB", &altered), Err(OpenError));
        assert_eq!(key.open(b"red\0DB", &sealed[..5]), Err(OpenError));
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRETS_KEY_FILE), "zz").unwrap();
        let err = SealingKey::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a secrets key"), "{err}");
    }
}
