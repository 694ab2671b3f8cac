//! Join tokens and worker tokens: EdDSA (Ed25519) JWTs signed by the control plane's
//! token key. A join token lets a new worker enroll once (or `uses` times) and pins the
//! CA certificate's SHA-256; a worker token lets an enrolled worker re-enroll after its
//! certificate lapsed. Verification lives in `token/verify.rs`.
//!
//! The two kinds differ in audience (`berth-enroll` / `berth-reenroll`) and in the JWT
//! header `typ` (`berth-join+jwt` / `berth-worker+jwt`), so neither can stand in for the
//! other.

mod preview;
mod verify;

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ED25519};
use serde::{Deserialize, Serialize};

use crate::error::{PkiError, lowercase};
use crate::files;
use crate::identity::validate_worker_id;

pub use preview::{PREVIEW_AUDIENCE, PreviewClaims};
pub use verify::peek_join_claims;

/// Audience of join tokens.
pub const JOIN_AUDIENCE: &str = "berth-enroll";
/// Audience of worker (re-enrollment) tokens.
pub const WORKER_TOKEN_AUDIENCE: &str = "berth-reenroll";
/// File name of the token signing key (PKCS#8 PEM) inside the key directory.
pub const TOKEN_KEY_FILE: &str = "token.key";
/// File name of the token verification key (SPKI PEM) inside the key directory.
pub const TOKEN_PUB_FILE: &str = "token.pub";

pub(crate) const JOIN_TYP: &str = "berth-join+jwt";
pub(crate) const WORKER_TYP: &str = "berth-worker+jwt";

/// Claims of a join token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JoinClaims {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// when set, only a worker with this id may enroll with the token
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// lowercase hex SHA-256 of the CA certificate
    pub ca_sha256: String,
    pub uses: u32,
}

/// Claims of a worker token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerTokenClaims {
    pub iss: String,
    pub aud: String,
    /// the worker id
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// What to put in a new join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenSpec {
    /// lifetime, counted from `not_before`
    pub ttl: Duration,
    /// how many enrollments the token allows; at least 1
    pub uses: u32,
    /// pin the token to this worker id
    pub worker_id: Option<String>,
    /// unix seconds; defaults to now
    pub not_before: Option<i64>,
}

/// The Ed25519 key that signs and verifies tokens, and the issuer name put in them.
#[derive(Clone)]
pub struct TokenSigner {
    issuer: String,
    public_key_pem: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("public_key_pem", &self.public_key_pem)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A fresh in-memory signing key.
    pub fn generate(issuer: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| PkiError::Key(lowercase(e)))?;
        Self::from_pem(&key.serialize_pem(), issuer)
    }

    /// Loads `dir/token.key` (checking it against `dir/token.pub`), or creates both
    /// (dir 0700, key 0600) when neither exists.
    pub fn load_or_create(dir: &Path, issuer: &str) -> Result<Self, PkiError> {
        let key_path = dir.join(TOKEN_KEY_FILE);
        let pub_path = dir.join(TOKEN_PUB_FILE);
        if files::pair_state(&key_path, &pub_path)? {
            let signer = Self::from_pem(&files::read_string(&key_path)?, issuer)?;
            if files::read_string(&pub_path)?.trim() != signer.public_key_pem.trim() {
                return Err(PkiError::Key(format!(
                    "{} does not match {}",
                    pub_path.display(),
                    key_path.display()
                )));
            }
            return Ok(signer);
        }
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| PkiError::Key(lowercase(e)))?;
        let key_pem = key.serialize_pem();
        let signer = Self::from_pem(&key_pem, issuer)?;
        files::ensure_private_dir(dir)?;
        files::write_new_file(&key_path, key_pem.as_bytes(), files::PRIVATE_FILE_MODE)?;
        files::write_new_file(
            &pub_path,
            signer.public_key_pem.as_bytes(),
            files::PUBLIC_FILE_MODE,
        )?;
        tracing::info!(issuer, dir = %dir.display(), "created token signing key");
        Ok(signer)
    }

    /// From an Ed25519 private key in PKCS#8 PEM.
    pub fn from_pem(private_pkcs8_pem: &str, issuer: &str) -> Result<Self, PkiError> {
        if issuer.trim().is_empty() {
            return Err(PkiError::InvalidArgument(
                "token issuer must not be empty".into(),
            ));
        }
        let key = KeyPair::from_pem(private_pkcs8_pem)
            .map_err(|e| PkiError::Key(format!("token key: {}", lowercase(e))))?;
        if key.algorithm() != &PKCS_ED25519 {
            return Err(PkiError::Key("token key must be an ed25519 key".into()));
        }
        let public_key_pem = key.public_key_pem();
        let encoding = EncodingKey::from_ed_pem(private_pkcs8_pem.as_bytes())
            .map_err(|e| PkiError::Key(format!("token key: {}", lowercase(e))))?;
        let decoding = DecodingKey::from_ed_pem(public_key_pem.as_bytes())
            .map_err(|e| PkiError::Key(format!("token public key: {}", lowercase(e))))?;
        Ok(Self {
            issuer: issuer.to_owned(),
            public_key_pem,
            encoding,
            decoding,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The verification key, SPKI PEM.
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// A signed join token. `exp = nbf + ttl`, `nbf` defaulting to now; `jti` is a
    /// random UUID v4 the control plane records to enforce `uses`.
    pub fn create_join_token(
        &self,
        spec: &JoinTokenSpec,
        ca_sha256: &str,
    ) -> Result<(String, JoinClaims), PkiError> {
        if spec.uses == 0 {
            return Err(PkiError::InvalidArgument(
                "a join token needs at least one use".into(),
            ));
        }
        if let Some(worker_id) = &spec.worker_id {
            validate_worker_id(worker_id)?;
        }
        if ca_sha256.len() != 64 || !ca_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PkiError::InvalidArgument(
                "ca fingerprint must be 64 hex characters".into(),
            ));
        }
        let now = unix_now();
        let nbf = spec.not_before.unwrap_or(now);
        let claims = JoinClaims {
            iss: self.issuer.clone(),
            aud: JOIN_AUDIENCE.to_owned(),
            iat: now,
            nbf,
            exp: add_ttl(nbf, spec.ttl)?,
            jti: uuid::Uuid::new_v4().to_string(),
            worker_id: spec.worker_id.clone(),
            ca_sha256: ca_sha256.to_ascii_lowercase(),
            uses: spec.uses,
        };
        let token = self.sign(JOIN_TYP, &claims)?;
        Ok((token, claims))
    }

    /// A signed worker token for `worker_id`, valid from now for `ttl`.
    pub fn create_worker_token(
        &self,
        worker_id: &str,
        ttl: Duration,
    ) -> Result<(String, WorkerTokenClaims), PkiError> {
        validate_worker_id(worker_id)?;
        let now = unix_now();
        let claims = WorkerTokenClaims {
            iss: self.issuer.clone(),
            aud: WORKER_TOKEN_AUDIENCE.to_owned(),
            sub: worker_id.to_owned(),
            iat: now,
            exp: add_ttl(now, ttl)?,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = self.sign(WORKER_TYP, &claims)?;
        Ok((token, claims))
    }

    fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, PkiError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| PkiError::Key(format!("cannot sign token: {}", lowercase(e))))
    }
}

fn add_ttl(start: i64, ttl: Duration) -> Result<i64, PkiError> {
    if ttl.is_zero() {
        return Err(PkiError::InvalidArgument(
            "token lifetime must be positive".into(),
        ));
    }
    i64::try_from(ttl.as_secs())
        .ok()
        .and_then(|secs| start.checked_add(secs))
        .ok_or_else(|| PkiError::InvalidArgument(format!("token lifetime {ttl:?} is too long")))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn spec() -> JoinTokenSpec {
        JoinTokenSpec {
            ttl: HOUR,
            uses: 1,
            worker_id: None,
            not_before: None,
        }
    }

    #[test]
    fn join_claims_are_filled_in() {
        let signer = TokenSigner::generate("berth-cp").unwrap();
        let (token, claims) = signer
            .create_join_token(
                &JoinTokenSpec {
                    uses: 3,
                    worker_id: Some("w1".into()),
                    ..spec()
                },
                &FP.to_uppercase(),
            )
            .unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(claims.iss, "berth-cp");
        assert_eq!(claims.aud, JOIN_AUDIENCE);
        assert_eq!(claims.exp - claims.nbf, 3600);
        assert_eq!(claims.ca_sha256, FP);
        assert_eq!(claims.uses, 3);
        assert_eq!(claims.worker_id.as_deref(), Some("w1"));
        assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
        let (_, other) = signer.create_join_token(&spec(), FP).unwrap();
        assert_ne!(claims.jti, other.jti);
    }

    #[test]
    fn create_refuses_bad_specs() {
        let signer = TokenSigner::generate("berth-cp").unwrap();
        let bad = [
            (JoinTokenSpec { uses: 0, ..spec() }, FP),
            (
                JoinTokenSpec {
                    ttl: Duration::ZERO,
                    ..spec()
                },
                FP,
            ),
            (
                JoinTokenSpec {
                    ttl: Duration::MAX,
                    ..spec()
                },
                FP,
            ),
            (
                JoinTokenSpec {
                    worker_id: Some("Bad Id".into()),
                    ..spec()
                },
                FP,
            ),
            (spec(), "abc"),
            (spec(), &FP.replace('0', "g")),
        ];
        for (spec, fp) in bad {
            assert!(
                signer.create_join_token(&spec, fp).is_err(),
                "{spec:?} {fp}"
            );
        }
        assert!(signer.create_worker_token("Bad Id", HOUR).is_err());
        assert!(signer.create_worker_token("w1", Duration::ZERO).is_err());
    }

    #[test]
    fn from_pem_refuses_bad_keys_and_issuers() {
        let ed = KeyPair::generate_for(&PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        assert!(matches!(
            TokenSigner::from_pem(&ed, " "),
            Err(PkiError::InvalidArgument(_))
        ));
        let ec = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        assert!(matches!(
            TokenSigner::from_pem(&ec, "i"),
            Err(PkiError::Key(_))
        ));
        assert!(matches!(
            TokenSigner::from_pem("junk", "i"),
            Err(PkiError::Key(_))
        ));
        let signer = TokenSigner::from_pem(&ed, "i").unwrap();
        assert!(signer.public_key_pem().contains("PUBLIC KEY"));
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn load_or_create_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("keys");
        let a = TokenSigner::load_or_create(&key_dir, "berth-cp").unwrap();
        let b = TokenSigner::load_or_create(&key_dir, "berth-cp").unwrap();
        assert_eq!(a.public_key_pem(), b.public_key_pem());
        let (token, _) = a.create_worker_token("w1", HOUR).unwrap();
        b.verify_worker_token(&token, unix_now(), 0).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(key_dir.join(TOKEN_KEY_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        // a public key that does not belong to the private key is refused
        let other = TokenSigner::generate("x").unwrap();
        std::fs::write(key_dir.join(TOKEN_PUB_FILE), other.public_key_pem()).unwrap();
        assert!(matches!(
            TokenSigner::load_or_create(&key_dir, "berth-cp"),
            Err(PkiError::Key(_))
        ));
    }
}
