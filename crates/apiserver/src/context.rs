//! Who and where a request acts, from its headers.

use axum::http::HeaderMap;
use berth_domain::Scope;
use berth_wire::sigv4;

/// Identity and scope of one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub scope: Scope,
    /// The caller's IAM principal; the account root until IAM arrives.
    pub principal: String,
    pub access_key: Option<String>,
    /// The SigV4 service of the credential scope, if signed.
    pub service: Option<String>,
    /// A region in the credential scope that cannot be a region name; such
    /// a request is rejected rather than stored under a strange key.
    pub bad_region: Option<String>,
}

/// Region names are short, lowercase, digits and hyphens (`us-east-1`).
fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl RequestContext {
    pub fn from_headers(headers: &HeaderMap, account: &str, default_region: &str) -> Self {
        let scope_info = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(sigv4::parse_authorization);
        let signed_region = scope_info.as_ref().map(|s| s.region.clone());
        let bad_region = signed_region.clone().filter(|r| !valid_region(r));
        let region = signed_region
            .filter(|r| valid_region(r))
            .unwrap_or_else(|| default_region.to_string());
        let scope = Scope::new(account, region);
        RequestContext {
            // A version 4 id from the thread's generator: `new_v4` asks the
            // kernel for randomness on every request.
            request_id: uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string(),
            principal: scope.root_principal(),
            scope,
            access_key: scope_info.as_ref().map(|s| s.access_key.clone()),
            service: scope_info.map(|s| s.service),
            bad_region,
        }
    }
}
