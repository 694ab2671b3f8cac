//! The crate's error types: [`PkiError`] for everything certificate, key and file
//! related, and [`TokenError`] for the precise reasons a join or worker token is refused.

use std::path::PathBuf;

/// Anything that can go wrong while creating, loading, issuing or parsing identities.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// reading or writing a key or certificate file failed
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// a PEM document could not be decoded, or held the wrong kind of section
    #[error("invalid pem: {0}")]
    Pem(String),
    /// a private key could not be generated, parsed or used
    #[error("invalid key: {0}")]
    Key(String),
    /// a certificate could not be built, signed or parsed
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// a certificate signing request was unreadable, badly signed or unsupported
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// a spiffe id, worker id or trust domain is malformed or not the expected one
    #[error("invalid identity: {0}")]
    Identity(String),
    /// a token could not be created or was refused
    #[error(transparent)]
    Token(#[from] TokenError),
    /// a caller-supplied value (lifetime, use count, fingerprint, ...) is out of range
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// a rustls configuration could not be built
    #[error("tls configuration error: {0}")]
    Tls(String),
}

impl PkiError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Renders a foreign error message in our lowercase style.
pub(crate) fn lowercase(err: impl std::fmt::Display) -> String {
    let message = err.to_string();
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => message,
    }
}

/// Why a join token or worker token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued for another audience")]
    WrongAudience,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token pins a different ca certificate")]
    CaMismatch,
    #[error("token is of the wrong kind")]
    WrongKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase() {
        let errors: Vec<String> = vec![
            PkiError::io("/x", std::io::Error::other("boom")).to_string(),
            PkiError::Pem("no section".into()).to_string(),
            PkiError::Token(TokenError::Expired).to_string(),
            TokenError::NotYetValid.to_string(),
            TokenError::Malformed("bad".into()).to_string(),
        ];
        for message in errors {
            let first = message.chars().next().unwrap_or('a');
            assert!(!first.is_uppercase(), "{message}");
        }
        assert_eq!(TokenError::Expired.to_string(), "token has expired");
        assert_eq!(lowercase("Could not parse"), "could not parse");
        assert_eq!(lowercase(""), "");
    }
}
