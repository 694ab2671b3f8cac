//! Verifying join and worker tokens against an explicit `now`: signature (algorithm
//! pinned to EdDSA), issuer, audience and token kind through jsonwebtoken, then
//! expiry/not-before with a leeway and the CA pin here. Also the unverified peek a new
//! worker uses to learn the CA pin.

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, Validation};
use serde::de::DeserializeOwned;

use super::{
    JOIN_AUDIENCE, JOIN_TYP, JoinClaims, TokenSigner, WORKER_TOKEN_AUDIENCE, WORKER_TYP,
    WorkerTokenClaims,
};
use crate::error::{TokenError, lowercase};
use crate::identity::validate_worker_id;

impl TokenSigner {
    /// Verifies a join token: EdDSA signature by this key, `iss` = our issuer, `aud` =
    /// [`JOIN_AUDIENCE`], `nbf - leeway <= now < exp + leeway`, and the pinned CA
    /// fingerprint equals `expected_ca_sha256` (else [`TokenError::CaMismatch`]).
    pub fn verify_join_token(
        &self,
        token: &str,
        expected_ca_sha256: &str,
        now: i64,
        leeway_secs: u64,
    ) -> Result<JoinClaims, TokenError> {
        let claims: JoinClaims = self.decode(token, JOIN_AUDIENCE, JOIN_TYP)?;
        check_join_fields(&claims)?;
        let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
        check_window(now, leeway, claims.nbf, claims.exp)?;
        if !claims.ca_sha256.eq_ignore_ascii_case(expected_ca_sha256) {
            return Err(TokenError::CaMismatch);
        }
        Ok(claims)
    }

    /// Verifies a worker token: EdDSA signature by this key, `iss` = our issuer, `aud` =
    /// [`WORKER_TOKEN_AUDIENCE`] (a join token here is [`TokenError::WrongAudience`]),
    /// `iat - leeway <= now < exp + leeway`.
    pub fn verify_worker_token(
        &self,
        token: &str,
        now: i64,
        leeway_secs: u64,
    ) -> Result<WorkerTokenClaims, TokenError> {
        let claims: WorkerTokenClaims = self.decode(token, WORKER_TOKEN_AUDIENCE, WORKER_TYP)?;
        validate_worker_id(&claims.sub)
            .map_err(|_| TokenError::Malformed("sub is not a valid worker id".into()))?;
        let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
        check_window(now, leeway, claims.iat, claims.exp)?;
        Ok(claims)
    }

    /// Signature, issuer, audience and kind; times are checked by the callers against
    /// their `now`, not the system clock jsonwebtoken would use. Claims beyond
    /// `exp`/`aud`/`iss` are required by the (non-optional) fields of `T`, checked after
    /// the audience so a token of the other kind reads as such.
    pub(super) fn decode<T: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        typ: &str,
    ) -> Result<T, TokenError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        // decode loosely first so a token of the other kind is reported by audience,
        // not as a shape mismatch
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation)
            .map_err(map_jwt_error)?;
        if data.header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongKind);
        }
        serde_json::from_value(data.claims).map_err(|e| TokenError::Malformed(lowercase(e)))
    }
}

/// Decodes a join token WITHOUT verifying its signature: what a new worker reads to
/// learn the CA pin before it trusts anything. Everything in it is a claim until the
/// control plane verifies the token and the TLS handshake proves the pinned CA.
pub fn peek_join_claims(token: &str) -> Result<JoinClaims, TokenError> {
    let data = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .map_err(map_jwt_error)?;
    match data.claims.get("aud").and_then(|aud| aud.as_str()) {
        Some(JOIN_AUDIENCE) => {}
        Some(_) => return Err(TokenError::WrongAudience),
        None => return Err(TokenError::Malformed("missing claim aud".into())),
    }
    if data.header.typ.as_deref() != Some(JOIN_TYP) {
        return Err(TokenError::WrongKind);
    }
    let claims: JoinClaims =
        serde_json::from_value(data.claims).map_err(|e| TokenError::Malformed(lowercase(e)))?;
    check_join_fields(&claims)?;
    Ok(claims)
}

fn check_join_fields(claims: &JoinClaims) -> Result<(), TokenError> {
    if claims.uses == 0 {
        return Err(TokenError::Malformed("uses must be at least 1".into()));
    }
    if let Some(worker_id) = &claims.worker_id {
        validate_worker_id(worker_id)
            .map_err(|_| TokenError::Malformed("worker_id is not a valid worker id".into()))?;
    }
    let fingerprint_ok =
        claims.ca_sha256.len() == 64 && claims.ca_sha256.chars().all(|c| c.is_ascii_hexdigit());
    if !fingerprint_ok {
        return Err(TokenError::Malformed(
            "ca_sha256 is not a sha-256 fingerprint".into(),
        ));
    }
    Ok(())
}

/// Valid while `start - leeway <= now < end + leeway`.
fn check_window(now: i64, leeway: i64, start: i64, end: i64) -> Result<(), TokenError> {
    if now >= end.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if now < start.saturating_sub(leeway) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

fn map_jwt_error(err: JwtError) -> TokenError {
    match err.kind() {
        // a foreign algorithm (HS256 with the public key as secret, ...) is a forgery
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::Malformed(format!("missing claim {claim}"))
        }
        _ => TokenError::Malformed(lowercase(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::token::{JoinTokenSpec, unix_now};

    const HOUR: Duration = Duration::from_secs(3600);
    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const OTHER_FP: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn signer() -> TokenSigner {
        TokenSigner::generate("berth-cp").unwrap()
    }

    fn spec(not_before: Option<i64>) -> JoinTokenSpec {
        JoinTokenSpec {
            ttl: HOUR,
            uses: 1,
            worker_id: None,
            not_before,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn join_token_round_trip() {
        let s = signer();
        let (token, claims) = s.create_join_token(&spec(None), FP).unwrap();
        let verified = s.verify_join_token(&token, FP, unix_now(), 0).unwrap();
        assert_eq!(verified, claims);
        // fingerprints compare case-insensitively
        s.verify_join_token(&token, &FP.to_uppercase(), unix_now(), 0)
            .unwrap();
    }

    #[test]
    fn worker_token_round_trip() {
        let s = signer();
        let (token, claims) = s.create_worker_token("w-1", HOUR).unwrap();
        let verified = s.verify_worker_token(&token, unix_now(), 0).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(verified.sub, "w-1");
        assert_eq!(verified.aud, WORKER_TOKEN_AUDIENCE);
    }

    #[test]
    fn expiry_and_not_before_are_checked_against_now_with_leeway() {
        let s = signer();
        let now = unix_now();
        let (token, claims) = s.create_join_token(&spec(None), FP).unwrap();
        assert_eq!(
            s.verify_join_token(&token, FP, claims.exp, 0),
            Err(TokenError::Expired)
        );
        assert_eq!(
            s.verify_join_token(&token, FP, claims.exp + 1000, 0),
            Err(TokenError::Expired)
        );
        s.verify_join_token(&token, FP, claims.exp, 30).unwrap();

        let (expired, _) = s.create_join_token(&spec(Some(now - 7200)), FP).unwrap();
        assert_eq!(
            s.verify_join_token(&expired, FP, now, 60),
            Err(TokenError::Expired)
        );

        let (future, claims) = s.create_join_token(&spec(Some(now + 600)), FP).unwrap();
        assert_eq!(
            s.verify_join_token(&future, FP, now, 60),
            Err(TokenError::NotYetValid)
        );
        s.verify_join_token(&future, FP, claims.nbf - 60, 60)
            .unwrap();
        s.verify_join_token(&future, FP, claims.nbf, 0).unwrap();

        let (worker, claims) = s.create_worker_token("w", HOUR).unwrap();
        assert_eq!(
            s.verify_worker_token(&worker, claims.exp, 0),
            Err(TokenError::Expired)
        );
        assert_eq!(
            s.verify_worker_token(&worker, claims.iat - 100, 10),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn tokens_of_the_other_kind_have_the_wrong_audience() {
        let s = signer();
        let (worker, _) = s.create_worker_token("w", HOUR).unwrap();
        let (join, _) = s.create_join_token(&spec(None), FP).unwrap();
        assert_eq!(
            s.verify_join_token(&worker, FP, unix_now(), 0),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            s.verify_worker_token(&join, unix_now(), 0),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(peek_join_claims(&worker), Err(TokenError::WrongAudience));
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        let ours = TokenSigner::from_pem(&key, "berth-cp").unwrap();
        let theirs = TokenSigner::from_pem(&key, "someone-else").unwrap();
        let (token, _) = theirs.create_join_token(&spec(None), FP).unwrap();
        assert_eq!(
            ours.verify_join_token(&token, FP, unix_now(), 0),
            Err(TokenError::WrongIssuer)
        );
        let (token, _) = theirs.create_worker_token("w", HOUR).unwrap();
        assert_eq!(
            ours.verify_worker_token(&token, unix_now(), 0),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn token_signed_by_another_key_is_refused() {
        let ours = signer();
        let theirs = signer();
        let (token, _) = theirs.create_join_token(&spec(None), FP).unwrap();
        assert_eq!(
            ours.verify_join_token(&token, FP, unix_now(), 0),
            Err(TokenError::BadSignature)
        );
        let (token, _) = theirs.create_worker_token("w", HOUR).unwrap();
        assert_eq!(
            ours.verify_worker_token(&token, unix_now(), 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn altered_claims_break_the_signature() {
        let s = signer();
        let (token, claims) = s.create_join_token(&spec(None), FP).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = JoinClaims {
            uses: 1000,
            ..claims
        };
        let payload = b64(&serde_json::to_vec(&forged_claims).unwrap());
        let forged = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(
            s.verify_join_token(&forged, FP, unix_now(), 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn hs256_and_none_algorithms_are_refused() {
        let s = signer();
        let (_, claims) = s.create_join_token(&spec(None), FP).unwrap();
        // the classic confusion attack: HMAC keyed with the (public) verification key
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(JOIN_TYP.into());
        let hs = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(s.public_key_pem().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            s.verify_join_token(&hs, FP, unix_now(), 0),
            Err(TokenError::BadSignature)
        );

        let none_header = b64(br#"{"alg":"none","typ":"berth-join+jwt"}"#);
        let payload = b64(&serde_json::to_vec(&claims).unwrap());
        for token in [
            format!("{none_header}.{payload}."),
            format!("{none_header}.{payload}.c2ln"),
        ] {
            let err = s.verify_join_token(&token, FP, unix_now(), 0).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_) | TokenError::BadSignature),
                "{err:?}"
            );
        }
    }

    #[test]
    fn ca_mismatch_is_refused() {
        let s = signer();
        let (token, _) = s.create_join_token(&spec(None), FP).unwrap();
        assert_eq!(
            s.verify_join_token(&token, OTHER_FP, unix_now(), 0),
            Err(TokenError::CaMismatch)
        );
    }

    #[test]
    fn peek_reads_claims_without_the_key() {
        let s = signer();
        let (token, claims) = s
            .create_join_token(
                &JoinTokenSpec {
                    worker_id: Some("pinned".into()),
                    ..spec(None)
                },
                FP,
            )
            .unwrap();
        assert_eq!(peek_join_claims(&token).unwrap(), claims);
        // peeking does not care who signed it
        let (theirs, _) = signer().create_join_token(&spec(None), OTHER_FP).unwrap();
        assert_eq!(peek_join_claims(&theirs).unwrap().ca_sha256, OTHER_FP);
    }

    #[test]
    fn garbage_is_malformed() {
        let s = signer();
        for junk in [
            "",
            "garbage",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
        ] {
            let err = s.verify_join_token(junk, FP, unix_now(), 0).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_) | TokenError::BadSignature),
                "{junk:?}: {err:?}"
            );
            let err = s.verify_worker_token(junk, unix_now(), 0).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_) | TokenError::BadSignature),
                "{junk:?}: {err:?}"
            );
            assert!(
                matches!(peek_join_claims(junk), Err(TokenError::Malformed(_))),
                "{junk:?}"
            );
        }
        assert!(matches!(
            s.verify_join_token("garbage", FP, unix_now(), 0),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn signed_tokens_with_missing_or_bad_fields_are_malformed() {
        let s = signer();
        let sign = |claims: serde_json::Value| s.sign(JOIN_TYP, &claims).unwrap();
        let now = unix_now();
        let base = serde_json::json!({
            "iss": "berth-cp", "aud": JOIN_AUDIENCE, "iat": now, "nbf": now,
            "exp": now + 3600, "jti": "x", "ca_sha256": FP, "uses": 1,
        });
        s.verify_join_token(&sign(base.clone()), FP, now, 0)
            .unwrap();
        for (field, value) in [
            ("exp", serde_json::Value::Null),
            ("nbf", serde_json::Value::Null),
            ("uses", serde_json::json!(0)),
            ("ca_sha256", serde_json::json!("nope")),
            ("worker_id", serde_json::json!("Not Valid")),
        ] {
            let mut claims = base.clone();
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(field);
            } else {
                claims[field] = value;
            }
            let err = s.verify_join_token(&sign(claims), FP, now, 0).unwrap_err();
            assert!(matches!(err, TokenError::Malformed(_)), "{field}: {err:?}");
        }
        // right audience, wrong kind
        let worker_shaped = s.sign(WORKER_TYP, &base).unwrap();
        assert_eq!(
            s.verify_join_token(&worker_shaped, FP, now, 0),
            Err(TokenError::WrongKind)
        );
    }
}
