//! Values kept secret at rest (CI/CD variables): sealed with AES-256-GCM under the
//! instance's key. The key is `RUNWAY_SECRET_KEY` (64 hex digits), else the one generated on
//! the first start into `<data dir>/secret.key` (mode 0600) and read from there by later
//! starts — and by other instances that share the data dir, as they must to read the same
//! values. Losing the key loses the sealed values; back it up with the database.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use rand::RngCore;

/// Sealed values start with this, so a later scheme can be told apart.
const PREFIX: &str = "v1:";
const NONCE_BYTES: usize = 12;

/// Seals and opens secret values; cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox")
    }
}

/// A sealed value that does not open: another key, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("a sealed value could not be opened (another RUNWAY_SECRET_KEY, or damaged)")]
pub struct Unopenable;

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> SecretBox {
        SecretBox {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// The instance's box: from `configured` (hex), else from `<data_dir>/secret.key`,
    /// created with a random key if there is none yet.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<SecretBox> {
        let hex_key = match configured {
            Some(key) => key.trim().to_string(),
            None => key_file(&data_dir.join("secret.key"))?,
        };
        let bytes = hex::decode(&hex_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .context("RUNWAY_SECRET_KEY must be 64 hex digits (32 bytes)")?;
        Ok(SecretBox::new(&bytes))
    }

    /// `plain` sealed: a fresh random nonce each time, so equal values seal differently.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption fails only for inputs beyond what the API lets through (GiBs).
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// The value `sealed` holds.
    pub fn open(&self, sealed: &str) -> Result<String, Unopenable> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or(Unopenable)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| Unopenable)?;
        String::from_utf8(plain).map_err(|_| Unopenable)
    }
}

/// The key in `path`, written first if there is none: created exclusively, so that of
/// two instances starting at once one writes and the other reads its key.
fn key_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(hex::encode(key).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(hex::encode(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another instance may be writing it this very moment: wait for the whole key.
            for _ in 0..50 {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                if text.trim().len() == 64 {
                    return Ok(text.trim().to_string());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            anyhow::bail!("{} does not hold a key of 64 hex digits", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let one = SecretBox::new(&[7u8; 32]);
        let other = SecretBox::new(&[8u8; 32]);
        let sealed = one.seal("s3cr3t-value");
        assert!(sealed.starts_with("v1:") && !sealed.contains("s3cr3t"));
        assert_ne!(sealed, one.seal("s3cr3t-value"), "a fresh nonce each time");
        assert_eq!(one.open(&sealed).ok().as_deref(), Some("s3cr3t-value"));
        assert!(other.open(&sealed).is_err());
        for damaged in ["", "v1:", "v1:AAAA", "v2:xyz", &sealed[..sealed.len() - 2]] {
            assert!(one.open(damaged).is_err(), "{damaged:?}");
        }
    }

    #[test]
    fn the_key_file_is_made_once_and_read_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SecretBox::load(None, dir.path()).expect("made");
        let sealed = first.seal("kept");
        let again = SecretBox::load(None, dir.path()).expect("read");
        assert_eq!(again.open(&sealed).ok().as_deref(), Some("kept"));
        assert!(SecretBox::load(Some("not hex"), dir.path()).is_err());
        let given = SecretBox::load(Some(&"ab".repeat(32)), dir.path()).expect("given");
        assert!(given.open(&sealed).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key"))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
