//! Secrets at rest: sealed with AES-256-GCM under a key that never enters
//! the store (a file in the data dir, or given by flag), so a copy of the
//! store alone does not yield anyone's secret access key.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// Bytes of a sealing key.
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("a sealing key is {KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
    /// Not sealed by this key, or altered.
    #[error("a sealed secret cannot be opened with this key")]
    Open,
}

/// Seals and opens secrets with one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Sealer {
    pub fn new(key: &[u8]) -> Result<Sealer, SealError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key).map_err(|_| SealError::KeyLength(key.len()))?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
        })
    }

    /// `secret` sealed under a fresh random nonce, as base64 of nonce and
    /// ciphertext. `context` (the key id) is bound in, so a sealed secret
    /// copied onto another record does not open.
    pub fn seal(&self, secret: &str, context: &str, nonce: [u8; NONCE_LEN]) -> String {
        let mut buf = secret.as_bytes().to_vec();
        // Sealing in place only fails for inputs beyond GCM's limit (64 GiB).
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("a secret is far below AES-GCM's input limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(tag.as_ref());
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let raw = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let s = Sealer::new(&[7; KEY_LEN]).expect("key");
        let sealed = s.seal("wJalrXUtnFEMI", "AKIA1", [1; NONCE_LEN]);
        assert!(!sealed.contains("wJalr"));
        assert_eq!(s.open(&sealed, "AKIA1").as_deref(), Ok("wJalrXUtnFEMI"));
        assert_eq!(s.open(&sealed, "AKIA2"), Err(SealError::Open));
        let other = Sealer::new(&[8; KEY_LEN]).expect("key");
        assert_eq!(other.open(&sealed, "AKIA1"), Err(SealError::Open));
        assert_eq!(s.open("not base64!", "AKIA1"), Err(SealError::Open));
        assert_eq!(Sealer::new(&[0; 3]).err(), Some(SealError::KeyLength(3)));
    }
}
