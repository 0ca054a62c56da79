//! Access keys: the stored record and how new ones are made.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Whom an access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyOwner {
    /// The account root.
    Root,
    /// An IAM user, by name.
    User(String),
    /// A container instance's agent, by cluster (or the Fargate pool) and
    /// EC2-style instance id: issued when it joins with a join token.
    Instance { cluster: String, instance: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }
}

/// A long-term access key as stored: the secret only sealed
/// ([`crate::seal::Sealer`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub access_key_id: String,
    pub owner: KeyOwner,
    pub status: KeyStatus,
    /// The secret, sealed.
    pub sealed_secret: String,
    /// Seconds since the epoch.
    pub created: f64,
}

/// Whose temporary credentials these are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionOwner {
    /// A session of a role (AssumeRole), by role name and session name.
    Role { role: String, session: String },
    /// The owner of the long-term key that asked (GetSessionToken).
    Same(KeyOwner),
}

/// Temporary credentials (STS) as stored: the secret sealed, the session
/// token only as its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub access_key_id: String,
    pub owner: SessionOwner,
    pub sealed_secret: String,
    /// Hex SHA-256 of the session token.
    pub token_hash: String,
    /// Seconds since the epoch.
    pub expires: f64,
    /// An inline session policy that limits the session.
    #[serde(default)]
    pub policy: Option<String>,
    /// Managed session policies (AssumeRole's PolicyArns), their default
    /// versions' documents as they were when the session began: with
    /// `policy`, they limit the session together.
    #[serde(default)]
    pub managed_policies: Vec<String>,
    /// Session tags: the session's principal tags (aws:PrincipalTag/*).
    #[serde(default)]
    pub tags: Vec<crate::records::Tag>,
    /// The tag keys a session this one assumes carries on.
    #[serde(default)]
    pub transitive_tag_keys: Vec<String>,
}

/// What a new session is issued with besides its owner and lifetime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionTerms {
    pub policy: Option<String>,
    pub managed_policies: Vec<String>,
    pub tags: Vec<crate::records::Tag>,
    pub transitive_tag_keys: Vec<String>,
}

/// Whether two secrets (or their hashes) are equal, compared without
/// stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A new session token.
pub fn new_session_token(rng: &mut impl Rng) -> String {
    pick(rng, SECRET_CHARS, 256)
}

/// Characters of key ids after their prefix: base32's, as AWS's.
const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters of secrets (base64's).
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn pick(rng: &mut impl Rng, chars: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| chars[rng.random_range(0..chars.len())] as char)
        .collect()
}

/// A new long-term key id: `AKIA` and 16 more.
pub fn new_access_key_id(rng: &mut impl Rng) -> String {
    format!("AKIA{}", pick(rng, ID_CHARS, 16))
}

/// A new temporary key id: `ASIA` and 16 more.
pub fn new_temporary_key_id(rng: &mut impl Rng) -> String {
    format!("ASIA{}", pick(rng, ID_CHARS, 16))
}

/// A new secret access key: 40 characters.
pub fn new_secret(rng: &mut impl Rng) -> String {
    pick(rng, SECRET_CHARS, 40)
}

/// A unique id with IAM's prefix for its kind (`AIDA` users, `AROA` roles,
/// `ANPA` policies, `AGPA` groups, `AIPA` instance profiles).
pub fn new_unique_id(rng: &mut impl Rng, prefix: &str) -> String {
    format!("{prefix}{}", pick(rng, ID_CHARS, 17))
}

/// Whether `id` can be an access key id at all (what a stored key's id is
/// checked against before it is looked up).
pub fn plausible_key_id(id: &str) -> bool {
    (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_have_aws_shapes() {
        let mut rng = rand::rng();
        let id = new_access_key_id(&mut rng);
        assert!(id.starts_with("AKIA") && id.len() == 20 && plausible_key_id(&id));
        assert!(new_temporary_key_id(&mut rng).starts_with("ASIA"));
        assert_eq!(new_secret(&mut rng).len(), 40);
        assert_eq!(new_unique_id(&mut rng, "AIDA").len(), 21);
        assert_ne!(new_secret(&mut rng), new_secret(&mut rng));
        assert!(!plausible_key_id("AK/x"));
    }
}
