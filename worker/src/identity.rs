//! The worker's identity on disk: its private key (never leaves the machine), its
//! current certificate, the CA it trusts and its signed worker token. Secrets are
//! written 0600; every file is replaced atomically (temp file + rename) so a crash
//! mid-renewal leaves the old identity whole.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::WorkerError;

const KEY_FILE: &str = "worker.key";
const CERT_FILE: &str = "worker.pem";
const CA_FILE: &str = "ca.pem";
const TOKEN_FILE: &str = "worker.token";
const META_FILE: &str = "identity.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    worker_id: String,
    trust_domain: String,
}

#[derive(Debug, Clone)]
pub struct StoredIdentity {
    pub worker_id: String,
    pub trust_domain: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub worker_token: String,
}

impl StoredIdentity {
    /// The identity kept in `dir`, or `None` when the worker never enrolled there.
    pub fn load(dir: &Path) -> Result<Option<Self>, WorkerError> {
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            return Ok(None);
        }
        let meta: Meta = serde_json::from_str(&read(&meta_path)?).map_err(|err| {
            WorkerError::Config(format!("{} is corrupt: {err}", meta_path.display()))
        })?;
        Ok(Some(Self {
            worker_id: meta.worker_id,
            trust_domain: meta.trust_domain,
            key_pem: read(&dir.join(KEY_FILE))?,
            cert_pem: read(&dir.join(CERT_FILE))?,
            ca_pem: read(&dir.join(CA_FILE))?,
            worker_token: read(&dir.join(TOKEN_FILE))?.trim().to_owned(),
        }))
    }

    /// Writes every file; the metadata last, so a half-written identity is never loaded.
    pub fn save(&self, dir: &Path) -> Result<(), WorkerError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| WorkerError::io(dir, err))?;
        write_atomic(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(TOKEN_FILE), self.worker_token.as_bytes(), 0o600)?;
        let meta = Meta {
            worker_id: self.worker_id.clone(),
            trust_domain: self.trust_domain.clone(),
        };
        let meta = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        write_atomic(&dir.join(META_FILE), &meta, 0o644)
    }

    /// Replaces key and certificate after a renewal.
    pub fn save_renewed(dir: &Path, key_pem: &str, cert_pem: &str) -> Result<(), WorkerError> {
        write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), cert_pem.as_bytes(), 0o644)
    }

    pub fn ca_der(&self) -> Result<Vec<u8>, WorkerError> {
        pem_to_der(&self.ca_pem)
    }

    /// Unix seconds at which the stored certificate lapses.
    pub fn cert_not_after(&self) -> Result<i64, WorkerError> {
        Ok(berth_pki::cert_info(&pem_to_der(&self.cert_pem)?)?.not_after)
    }
}

pub(crate) fn pem_to_der(pem: &str) -> Result<Vec<u8>, WorkerError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|err| WorkerError::BadEnrollment(format!("certificate PEM: {err}")))
}

fn read(path: &Path) -> Result<String, WorkerError> {
    std::fs::read_to_string(path).map_err(|err| WorkerError::io(path, err))
}

pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), WorkerError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|err| WorkerError::io(&tmp, err))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|err| WorkerError::io(&tmp, err))?;
    std::fs::rename(&tmp, path).map_err(|err| WorkerError::io(path, err))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn identity() -> StoredIdentity {
        StoredIdentity {
            worker_id: "w1".into(),
            trust_domain: "berth.local".into(),
            key_pem: "KEY".into(),
            cert_pem: "CERT".into(),
            ca_pem: "CA".into(),
            worker_token: "TOKEN".into(),
        }
    }

    #[test]
    fn an_empty_dir_holds_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StoredIdentity::load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn save_and_load_round_trip_with_private_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        identity().save(&path).unwrap();
        let loaded = StoredIdentity::load(&path).unwrap().unwrap();
        assert_eq!(loaded.worker_id, "w1");
        assert_eq!(loaded.worker_token, "TOKEN");
        for secret in [KEY_FILE, TOKEN_FILE] {
            let mode = std::fs::metadata(path.join(secret))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
        StoredIdentity::save_renewed(&path, "KEY2", "CERT2").unwrap();
        let renewed = StoredIdentity::load(&path).unwrap().unwrap();
        assert_eq!(renewed.key_pem, "KEY2");
        assert_eq!(renewed.cert_pem, "CERT2");
        let mode = std::fs::metadata(path.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
