//! Signing the load generators' requests as SDKs do (SigV4), with the
//! credentials in the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, as bench/credentials.sh sets them). Without
//! them a request carries only a credential scope, which peers that route
//! by it (and a Berth server with `--auth off`) read.

use berth_wire::sigv4::{self, Credentials};

#[derive(Clone)]
pub struct Signer {
    credentials: Option<Credentials>,
    region: String,
    service: &'static str,
}

impl Signer {
    pub fn from_env() -> Signer {
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(access_key_id), Ok(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            }),
            _ => None,
        };
        Signer {
            credentials,
            region: "us-east-1".into(),
            service: "ecs",
        }
    }

    /// A signer with credentials of its own (a simulated host's).
    pub fn with(credentials: Credentials) -> Signer {
        Signer {
            credentials: Some(credentials),
            region: "us-east-1".into(),
            service: "ecs",
        }
    }

    /// The same signer for another service's credential scope
    /// (`monitoring` for CloudWatch).
    pub fn for_service(mut self, service: &'static str) -> Signer {
        self.service = service;
        self
    }

    /// The headers that authenticate a request to `url` (`http://host:port/path`)
    /// carrying `headers` (all signed) and `body`, including `host`.
    pub fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let Some(creds) = &self.credentials else {
            return vec![
                ("host", authority.to_string()),
                (
                    "authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/{}/{}/aws4_request, SignedHeaders=host, Signature=0",
                        self.region, self.service
                    ),
                ),
            ];
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut all = vec![("host", authority)];
        all.extend_from_slice(headers);
        let req = sigv4::Request {
            method,
            path,
            query,
            headers: &all,
        };
        let mut out = sigv4::sign(
            &req,
            body,
            creds,
            &self.region,
            self.service,
            std::time::SystemTime::now(),
        );
        out.push(("host", authority.to_string()));
        out
    }
}
