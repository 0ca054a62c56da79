//! Join tokens: what an operator hands a new host so that its agent can
//! join one cluster (or the hidden Fargate pool) and get credentials of
//! its own. A token is `{id}.{secret}`: the id names the stored record,
//! which keeps only the secret's SHA-256, so the store never holds a token
//! that works.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Characters of token ids and secrets: lower-case letters and digits, so
/// a token survives shells, URLs and copy-paste.
const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 32;

/// A join token as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub id: String,
    /// Hex SHA-256 of the secret half.
    pub secret_hash: String,
    /// The cluster a host joins with it; the Fargate pool's name for a
    /// pool token.
    pub cluster: String,
    pub description: String,
    /// Seconds since the epoch.
    pub created: f64,
    pub expires: f64,
    /// When it was revoked, if it was.
    #[serde(default)]
    pub revoked: Option<f64>,
    /// Hosts that joined with it.
    #[serde(default)]
    pub uses: u64,
}

/// Why a token does not let a host join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("the join token is malformed: expected ID.SECRET")]
    Malformed,
    #[error("the join token is not valid")]
    Unknown,
    #[error("the join token {0} has expired")]
    Expired(String),
    #[error("the join token {0} has been revoked")]
    Revoked(String),
}

impl JoinToken {
    /// A new token for `cluster`: the record to store and the token to
    /// show once.
    pub fn new(
        rng: &mut impl Rng,
        cluster: &str,
        description: &str,
        now: f64,
        lifetime_s: f64,
    ) -> (JoinToken, String) {
        let id = pick(rng, ID_LEN);
        let secret = pick(rng, SECRET_LEN);
        let record = JoinToken {
            id: id.clone(),
            secret_hash: hash(&secret),
            cluster: cluster.to_string(),
            description: description.to_string(),
            created: now,
            expires: now + lifetime_s,
            revoked: None,
            uses: 0,
        };
        (record, format!("{id}.{secret}"))
    }

    /// Whether `secret` is this token's and the token still works at `now`.
    pub fn admits(&self, secret: &str, now: f64) -> Result<(), JoinRefusal> {
        let given = hash(secret);
        if !crate::keys::same_secret(given.as_bytes(), self.secret_hash.as_bytes()) {
            return Err(JoinRefusal::Unknown);
        }
        if self.revoked.is_some() {
            return Err(JoinRefusal::Revoked(self.id.clone()));
        }
        if now >= self.expires {
            return Err(JoinRefusal::Expired(self.id.clone()));
        }
        Ok(())
    }

    /// `valid`, `expired` or `revoked` at `now`.
    pub fn status(&self, now: f64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if now >= self.expires {
            "expired"
        } else {
            "valid"
        }
    }
}

/// What a container instance's agent may do, as a policy: register into
/// its own cluster, hold its gateway connection and ship the awslogs
/// output of tasks without an execution role, nothing else (fewer
/// rights than AWS's AmazonEC2ContainerServiceforEC2Role, which is not
/// bound to one cluster). The gateway also binds each connection to the
/// instance that holds the credentials.
pub fn instance_policy(account: &str, cluster: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ecs:RegisterContainerInstance"],
                "Resource": format!("arn:aws:ecs:*:{account}:cluster/{cluster}"),
            },
            {
                "Effect": "Allow",
                "Action": [
                    "ecs:DiscoverPollEndpoint",
                    "ecs:Poll",
                    "ecs:StartTelemetrySession",
                    "ecs:SubmitContainerStateChange",
                    "ecs:SubmitTaskStateChange",
                ],
                "Resource": "*",
            },
            {
                // awslogs output of tasks without an execution role, as
                // AmazonEC2ContainerServiceforEC2Role allows.
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "*",
            },
        ],
    })
    .to_string()
}

/// Splits a token into its id and secret.
pub fn parse(token: &str) -> Result<(&str, &str), JoinRefusal> {
    let (id, secret) = token.trim().split_once('.').ok_or(JoinRefusal::Malformed)?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| CHARS.contains(&b));
    if ok(id, ID_LEN) && ok(secret, SECRET_LEN) {
        Ok((id, secret))
    } else {
        Err(JoinRefusal::Malformed)
    }
}

/// Whether `id` can be a token id (checked before it names a store key).
pub fn plausible_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| CHARS.contains(&b))
}

fn pick(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn hash(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_admits_its_secret_until_it_expires_or_is_revoked() {
        let mut rng = rand::rng();
        let (mut t, token) = JoinToken::new(&mut rng, "web", "", 100.0, 60.0);
        let (id, secret) = parse(&token).expect("parses");
        assert_eq!(id, t.id);
        assert!(!t.secret_hash.contains(secret));
        assert_eq!(t.admits(secret, 120.0), Ok(()));
        assert_eq!(
            t.admits(&"x".repeat(SECRET_LEN), 120.0),
            Err(JoinRefusal::Unknown)
        );
        assert_eq!(
            t.admits(secret, 160.0),
            Err(JoinRefusal::Expired(t.id.clone()))
        );
        assert_eq!(t.status(160.0), "expired");
        t.revoked = Some(130.0);
        assert_eq!(
            t.admits(secret, 131.0),
            Err(JoinRefusal::Revoked(t.id.clone()))
        );
        assert_eq!(t.status(131.0), "revoked");
    }

    #[test]
    fn malformed_tokens_are_told_apart_from_wrong_ones() {
        for bad in [
            "",
            "abc",
            "abcdef.",
            "ABCDEF.0123456789abcdef0123456789abcdef",
            "abcdef.short",
            "a/cdef.0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse(bad), Err(JoinRefusal::Malformed), "{bad}");
        }
        assert!(parse("abcdef.0123456789abcdef0123456789abcdef").is_ok());
        assert!(plausible_id("abc123") && !plausible_id("../x00"));
    }
}
