//! Tokens: random, prefixed as GitLab prefixes them, stored only as SHA-256 digests.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::enums::RunnerType;

/// Prefix of runner tokens created by an admin (`Ci::Runner::CREATED_RUNNER_TOKEN_PREFIX`);
/// the real runner checks for it to choose verify over legacy registration.
pub const CREATED_RUNNER_TOKEN_PREFIX: &str = "glrt-";
/// Prefix of job tokens (`Ci::Build::TOKEN_PREFIX`).
pub const JOB_TOKEN_PREFIX: &str = "glcbt-";
/// Longest token looked up; longer ones are rejected before hashing anything.
pub const MAX_TOKEN_BYTES: usize = 512;

/// Random characters in a token: 26 alphanumerics, about 154 bits.
const TOKEN_RANDOM_CHARS: usize = 26;

/// SHA-256 of a token: what the database stores and looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_hex(text: &str) -> Option<TokenDigest> {
        let bytes = hex::decode(text).ok()?;
        Some(TokenDigest(bytes.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison, for secrets compared in memory (admin, registration).
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Whether a digest as a row stores it (a nullable column's bytes) is this one,
    /// compared in constant time; no digest, or one of another length, is not.
    pub fn matches_stored(&self, stored: Option<&[u8]>) -> bool {
        stored
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .is_some_and(|d| self.matches(&TokenDigest(d)))
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigest({}…)", &self.to_hex()[..8])
    }
}

/// A freshly generated secret with its digest; the clear text leaves the server once.
pub struct NewToken {
    pub token: String,
    pub digest: TokenDigest,
}

impl NewToken {
    pub fn generate(prefix: &str) -> NewToken {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(TOKEN_RANDOM_CHARS)
            .map(char::from)
            .collect();
        let token = format!("{prefix}{random}");
        let digest = TokenDigest::of(&token);
        NewToken { token, digest }
    }

    /// The first characters, safe to store and show (the prefix plus two random ones).
    pub fn display_prefix(&self) -> String {
        let end = self
            .token
            .len()
            .min(self.token.len() - TOKEN_RANDOM_CHARS + 2);
        self.token[..end].to_string()
    }
}

/// Prefix of a runner token: `glrt-` for admin-created runners, then the partition marker
/// `t1_`/`t2_`/`t3_` of the runner type (`prefix_for_new_and_legacy_runner`).
pub fn runner_token_prefix(kind: RunnerType, created_by_admin: bool) -> String {
    let partition = match kind {
        RunnerType::Instance => "t1_",
        RunnerType::Group => "t2_",
        RunnerType::Project => "t3_",
    };
    if created_by_admin {
        format!("{CREATED_RUNNER_TOKEN_PREFIX}{partition}")
    } else {
        partition.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = NewToken::generate(&runner_token_prefix(RunnerType::Instance, true));
        let b = NewToken::generate(&runner_token_prefix(RunnerType::Instance, true));
        assert!(a.token.starts_with("glrt-t1_"));
        assert_eq!(a.token.len(), "glrt-t1_".len() + TOKEN_RANDOM_CHARS);
        assert_ne!(a.token, b.token);
        assert_eq!(a.digest, TokenDigest::of(&a.token));
        assert!(a.digest.matches(&TokenDigest::of(&a.token)));
        assert!(!a.digest.matches(&b.digest));
        assert_eq!(a.display_prefix(), a.token[..10]);
        assert_eq!(TokenDigest::from_hex(&a.digest.to_hex()), Some(a.digest));
        assert!(a.digest.matches_stored(Some(a.digest.as_bytes())));
        assert!(!a.digest.matches_stored(Some(b.digest.as_bytes())));
        assert!(!a.digest.matches_stored(Some(&a.digest.as_bytes()[..31])));
        assert!(!a.digest.matches_stored(None));
    }
}
