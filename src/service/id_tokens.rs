//! Jobs' `id_tokens`: OpenID Connect ID tokens (JWTs, RS256) that a job hands to a cloud or
//! to Vault to log in without a stored secret, with GitLab's claims
//! ‹lib/gitlab/ci/jwt.rb, lib/gitlab/ci/jwt_v2.rb›. Runway signs them with its own RSA key,
//! generated on first start and kept in the database (sealed), so that every instance signs
//! with the same key; `rotate` makes a new one. The public keys are served as a JWKS
//! (`/oauth/discovery/keys`) with an OpenID configuration, as GitLab serves them.
//!
//! The keys live in memory: a job's payload is signed without a database round trip, and
//! a database that fails right after a job was assigned cannot keep its token from it.

use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::db::models::now;
use crate::db::models::signing_key::SigningKeyRow;
use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};
use crate::secrets::SecretBox;

/// How long a retired key stays in the JWKS: tokens it signed before a rotation verify
/// until then (a token lives its job's timeout and five minutes).
const RETIRED_KEYS_PUBLISHED: chrono::TimeDelta = chrono::TimeDelta::days(7);

struct Key {
    kid: String,
    pair: KeyPair,
}

impl Key {
    /// The public key as a JWK (RFC 7517).
    fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "kid": self.kid,
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "use": "sig",
            "alg": "RS256",
        })
    }
}

/// The key id GitLab gives its signing key: the JWK thumbprint (RFC 7638).
fn thumbprint(pair: &KeyPair) -> String {
    let public = pair.public_key();
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The signing key (newest first) and the published ones.
#[derive(Default)]
struct Keys {
    all: Vec<Arc<Key>>,
}

#[derive(Clone)]
pub struct IdTokens {
    db: DbPool,
    secrets: SecretBox,
    keys: Arc<RwLock<Keys>>,
}

fn internal(what: &'static str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(what))
}

impl IdTokens {
    /// Loads the keys, making the first one if there is none.
    pub async fn load(db: DbPool, secrets: SecretBox) -> ApiResult<IdTokens> {
        let tokens = IdTokens {
            db,
            secrets,
            keys: Arc::default(),
        };
        tokens.refresh().await?;
        if tokens
            .keys
            .read()
            .map_err(|_| internal("keys lock"))?
            .all
            .is_empty()
        {
            tokens.add_key().await?;
            tokens.refresh().await?;
        }
        Ok(tokens)
    }

    /// Reads the published keys again (another instance may have rotated).
    pub async fn refresh(&self) -> ApiResult<()> {
        let rows = {
            let mut db = self.db.read().await?;
            SigningKeyRow::published(&mut db.conn(), now() - RETIRED_KEYS_PUBLISHED).await?
        };
        let mut all = Vec::with_capacity(rows.len());
        for row in rows {
            let der = self
                .secrets
                .open(&row.private_key)
                .ok()
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
            let Some(pair) = der.and_then(|der| KeyPair::from_pkcs8(&der).ok()) else {
                tracing::error!(kid = %row.kid, "an ID token signing key cannot be opened");
                continue;
            };
            // Retired keys verify, never sign: they go after the one in use.
            all.push((
                row.retired_at.is_some(),
                Arc::new(Key { kid: row.kid, pair }),
            ));
        }
        all.sort_by_key(|(retired, _)| *retired);
        self.keys.write().map_err(|_| internal("keys lock"))?.all =
            all.into_iter().map(|(_, k)| k).collect();
        Ok(())
    }

    /// Makes a new RSA-2048 key and stores it sealed; answers its id.
    async fn add_key(&self) -> ApiResult<String> {
        let pair =
            KeyPair::generate(KeySize::Rsa2048).map_err(|_| internal("RSA key generation"))?;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .map_err(|_| internal("RSA key encoding"))?;
        let kid = thumbprint(&pair);
        let sealed = self
            .secrets
            .seal(&base64::engine::general_purpose::STANDARD.encode(der.as_ref()));
        let mut db = self.db.write().await?;
        SigningKeyRow::insert(&mut db.conn(), &kid, &sealed, now()).await?;
        Ok(kid)
    }

    /// A new signing key; the others are retired (still published for a while). Answers
    /// the new key's id.
    pub async fn rotate(&self) -> ApiResult<String> {
        let kid = self.add_key().await?;
        {
            let mut db = self.db.write().await?;
            SigningKeyRow::retire_all_but(&mut db.conn(), &kid, now()).await?;
        }
        self.refresh().await?;
        Ok(kid)
    }

    /// The JWKS: every published key.
    pub fn jwks(&self) -> Value {
        let keys = self
            .keys
            .read()
            .map(|k| k.all.iter().map(|k| k.jwk()).collect::<Vec<_>>());
        json!({ "keys": keys.unwrap_or_default() })
    }

    /// `claims` signed with the key in use, as a compact JWS; `None` without a key.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let key = self.keys.read().ok()?.all.first()?.clone();
        sign_with(&key, claims)
    }
}

/// `claims` as a compact JWS signed RS256 with `key`.
fn sign_with(key: &Key, claims: &Value) -> Option<String> {
    {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": key.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; key.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        key.pair
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
            .ok()?;
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// What a job's token says of it.
pub struct JobClaims<'a> {
    pub issuer: &'a str,
    pub audience: &'a [String],
    pub project_id: i64,
    pub project_path: &'a str,
    pub namespace_path: &'a str,
    pub pipeline_id: i64,
    pub pipeline_source: &'a str,
    pub job_id: i64,
    pub ref_: &'a str,
    pub tag: bool,
    pub ref_protected: bool,
    pub sha: &'a str,
    pub runner_id: i64,
    /// The job's timeout, seconds: the token expires five minutes after it.
    pub timeout: i64,
    /// `(name, tier, action)` of the job's environment.
    pub environment: Option<(&'a str, &'a str, &'a str)>,
}

impl JobClaims<'_> {
    /// GitLab's claims (`Gitlab::Ci::JwtV2`): the reserved ones, the job's and the
    /// pipeline's, `aud` a string for one audience, an array for several.
    pub fn to_json(&self) -> Value {
        let issued = chrono::Utc::now().timestamp();
        let ref_type = if self.tag { "tag" } else { "branch" };
        let ref_path = if self.tag {
            format!("refs/tags/{}", self.ref_)
        } else {
            format!("refs/heads/{}", self.ref_)
        };
        let host = self
            .issuer
            .split_once("://")
            .map_or(self.issuer, |(_, rest)| rest);
        let mut claims = json!({
            "namespace_path": self.namespace_path,
            "project_id": self.project_id.to_string(),
            "project_path": self.project_path,
            "user_id": "1",
            "user_login": "root",
            "user_email": "admin@example.com",
            "user_access_level": "owner",
            "pipeline_id": self.pipeline_id.to_string(),
            "pipeline_source": self.pipeline_source,
            "job_id": self.job_id.to_string(),
            "ref": self.ref_,
            "ref_type": ref_type,
            "ref_path": ref_path,
            "ref_protected": self.ref_protected.to_string(),
            "runner_id": self.runner_id,
            "runner_environment": "self-hosted",
            "sha": self.sha,
            "project_visibility": "private",
            "ci_config_ref_uri": format!("{host}/{}//.gitlab-ci.yml@{ref_path}", self.project_path),
            "ci_config_sha": self.sha,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued - 5,
            "exp": issued + self.timeout.max(0) + 300,
            "sub": format!("project_path:{}:ref_type:{ref_type}:ref:{}", self.project_path, self.ref_),
            "aud": match self.audience {
                [one] => json!(one),
                many => json!(many),
            },
        });
        if let Some((name, tier, action)) = self.environment {
            claims["environment"] = json!(name);
            claims["environment_protected"] = json!("false");
            claims["deployment_tier"] = json!(tier);
            claims["environment_action"] = json!(action);
        }
        claims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_its_jwk() {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let kid = thumbprint(&pair);
        let key = Key {
            kid: kid.clone(),
            pair,
        };
        let jwt = sign_with(&key, &json!({ "aud": "x" })).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({ "alg": "RS256", "typ": "JWT", "kid": kid }));
        let jwk = key.jwk();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &signature,
            )
            .expect("verifies");
        assert!(public
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                b"other",
                &signature
            )
            .is_err());
    }
}
