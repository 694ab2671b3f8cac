//! Preview tokens: what a signed preview link carries (and the cookie its first use
//! sets). One names a sandbox and one port inside it, so it opens nothing else, and
//! expires; it is signed by the same Ed25519 key as join tokens, so every replica of a
//! control plane accepts the links any of them issued. Audience `berth-preview` and
//! JWT `typ` `berth-preview+jwt` keep it from standing in for a token of another kind,
//! and the other kinds from standing in for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{TokenSigner, add_ttl, unix_now};
use crate::error::{PkiError, TokenError};

/// Audience of preview tokens.
pub const PREVIEW_AUDIENCE: &str = "berth-preview";
pub(crate) const PREVIEW_TYP: &str = "berth-preview+jwt";

/// Claims of a preview token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviewClaims {
    pub iss: String,
    pub aud: String,
    /// The sandbox.
    pub sub: String,
    /// The port inside it.
    pub port: u16,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl TokenSigner {
    /// A preview token for `port` of `sandbox_id`, valid from now for `ttl`.
    pub fn create_preview_token(
        &self,
        sandbox_id: &str,
        port: u16,
        ttl: Duration,
    ) -> Result<(String, PreviewClaims), PkiError> {
        if sandbox_id.is_empty() || port == 0 {
            return Err(PkiError::InvalidArgument(
                "a preview token names a sandbox and a port".into(),
            ));
        }
        let now = unix_now();
        let claims = PreviewClaims {
            iss: self.issuer().to_owned(),
            aud: PREVIEW_AUDIENCE.to_owned(),
            sub: sandbox_id.to_owned(),
            port,
            iat: now,
            exp: add_ttl(now, ttl)?,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = self.sign(PREVIEW_TYP, &claims)?;
        Ok((token, claims))
    }

    /// Verifies a preview token: signature, issuer, audience, kind, and
    /// `iat - leeway <= now < exp` (no leeway after expiry: a link's lifetime is the
    /// one it was given).
    pub fn verify_preview_token(
        &self,
        token: &str,
        now: i64,
        leeway_secs: u64,
    ) -> Result<PreviewClaims, TokenError> {
        let claims: PreviewClaims = self.decode(token, PREVIEW_AUDIENCE, PREVIEW_TYP)?;
        let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if now < claims.iat.saturating_sub(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::JoinTokenSpec;

    fn signer() -> TokenSigner {
        TokenSigner::generate("berth-test").unwrap()
    }

    #[test]
    fn a_preview_token_names_its_sandbox_and_port() {
        let signer = signer();
        let (token, claims) = signer
            .create_preview_token("sbx-1", 8000, Duration::from_secs(60))
            .unwrap();
        let read = signer.verify_preview_token(&token, unix_now(), 5).unwrap();
        assert_eq!(read, claims);
        assert_eq!((read.sub.as_str(), read.port), ("sbx-1", 8000));
    }

    #[test]
    fn an_expired_preview_token_is_refused_without_leeway() {
        let signer = signer();
        let (token, claims) = signer
            .create_preview_token("sbx-1", 8000, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            signer.verify_preview_token(&token, claims.exp, 30),
            Err(TokenError::Expired)
        );
        assert!(
            signer
                .verify_preview_token(&token, claims.exp - 1, 0)
                .is_ok()
        );
    }

    #[test]
    fn other_kinds_and_other_keys_are_refused() {
        let signer = signer();
        let fingerprint = "00".repeat(32);
        let spec = JoinTokenSpec {
            ttl: Duration::from_secs(60),
            uses: 1,
            worker_id: None,
            not_before: None,
        };
        let (join, _) = signer.create_join_token(&spec, &fingerprint).unwrap();
        assert_eq!(
            signer.verify_preview_token(&join, unix_now(), 5),
            Err(TokenError::WrongAudience)
        );
        let (preview, _) = signer
            .create_preview_token("sbx-1", 80, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            signer
                .verify_worker_token(&preview, unix_now(), 5)
                .unwrap_err(),
            TokenError::WrongAudience
        );
        assert_eq!(
            TokenSigner::generate("berth-test")
                .unwrap()
                .verify_preview_token(&preview, unix_now(), 5),
            Err(TokenError::BadSignature)
        );
    }
}
