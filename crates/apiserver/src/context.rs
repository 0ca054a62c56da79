//! Who and where a request acts, from its headers.

use axum::http::HeaderMap;
use berth_domain::Scope;
use berth_wire::sigv4;

/// Identity and scope of one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub scope: Scope,
    /// The caller's IAM principal ARN: the authenticated caller's, or the
    /// account root's when authentication is off.
    pub principal: String,
    /// Who signed the request, once the front door has checked it (`None`
    /// with `--auth off`).
    pub caller: Option<berth_control::identity::Caller>,
    /// The SigV4 service of the credential scope, if signed.
    pub service: Option<String>,
    /// Where the request came from, when the connection says.
    pub source_ip: Option<std::net::IpAddr>,
    /// Whether it came over TLS.
    pub secure: bool,
    /// The Host header: where the caller reached this server, which is
    /// where the URLs it is given (SQS queue URLs) must point.
    pub host: Option<String>,
    /// A region in the credential scope that cannot be a region name; such
    /// a request is rejected rather than stored under a strange key.
    pub bad_region: Option<String>,
    /// The request's SigV4 signature as read, or why it cannot be.
    pub signature: Result<sigv4::Signature, sigv4::ParseError>,
}

/// Region names are short, lowercase, digits and hyphens (`us-east-1`).
fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl RequestContext {
    /// The context of a request with these headers and query string: the
    /// credential scope comes from the `Authorization` header, or from the
    /// query string of a presigned request.
    pub fn from_request(
        headers: &HeaderMap,
        query: Option<&str>,
        account: &str,
        default_region: &str,
        verify: bool,
    ) -> Self {
        // The signature is read once, here: its scope routes the request,
        // and authentication checks it.
        // Unless nobody is asked who they are (`verify` false), in which case
        // only the scope is read.
        let signature = if verify {
            // Reading the signature needs these headers only.
            let pairs: Vec<(&str, &str)> = ["authorization", "x-amz-date", "x-amz-security-token"]
                .into_iter()
                .filter_map(|name| Some((name, headers.get(name)?.to_str().ok()?)))
                .collect();
            sigv4::parse(&sigv4::Request {
                method: "",
                path: "",
                query: query.unwrap_or_default(),
                headers: &pairs,
            })
        } else {
            Err(sigv4::ParseError::Missing)
        };
        // A signature that cannot be checked may still name a scope, which
        // says which service's error to answer with.
        let unchecked;
        let scope_info = match &signature {
            Ok(sig) => Some((sig.region(), sig.service())),
            Err(_) => {
                unchecked = match headers.get("authorization") {
                    Some(v) => v.to_str().ok().and_then(sigv4::parse_authorization),
                    None => query.and_then(sigv4::presigned_scope),
                };
                unchecked
                    .as_ref()
                    .map(|s| (s.region.as_str(), s.service.as_str()))
            }
        };
        let signed_region = scope_info.map(|(region, _)| region);
        let bad_region = signed_region
            .filter(|r| !valid_region(r))
            .map(str::to_string);
        let region = signed_region
            .filter(|r| valid_region(r))
            .unwrap_or(default_region)
            .to_string();
        let scope = Scope::new(account, region);
        RequestContext {
            // A version 4 id from the thread's generator: `new_v4` asks the
            // kernel for randomness on every request.
            request_id: uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string(),
            principal: scope.root_principal(),
            caller: None,
            source_ip: None,
            secure: false,
            host: headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
            scope,
            service: scope_info.map(|(_, service)| service.to_string()),
            bad_region,
            signature,
        }
    }
}
