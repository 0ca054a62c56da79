//! Parsing (not yet verifying) the SigV4 `Authorization` header.
//!
//! The credential scope tells which access key, region and service a request
//! is for; Berth routes and scopes by it. Verifying signatures comes with IAM.

/// What a SigV4 credential scope says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ecs/aws4_request, SignedHeaders=..., Signature=...`.
/// Returns `None` for anything else (including unsigned requests).
pub fn parse_authorization(header: &str) -> Option<CredentialScope> {
    let rest = header.trim().strip_prefix("AWS4-HMAC-SHA256")?;
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    let mut parts = credential.split('/');
    let access_key = parts.next()?.to_string();
    let date = parts.next()?.to_string();
    let region = parts.next()?.to_string();
    let service = parts.next()?.to_string();
    if parts.next()? != "aws4_request"
        || access_key.is_empty()
        || region.is_empty()
        || service.is_empty()
    {
        return None;
    }
    Some(CredentialScope {
        access_key,
        date,
        region,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_botocore_header() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/eu-west-1/ecs/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=abc123";
        assert_eq!(
            parse_authorization(h),
            Some(CredentialScope {
                access_key: "AKIDEXAMPLE".into(),
                date: "20261123".into(),
                region: "eu-west-1".into(),
                service: "ecs".into()
            })
        );
    }

    #[test]
    fn rejects_other_schemes_and_truncated_scopes() {
        assert_eq!(parse_authorization("Bearer x"), None);
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=AK/2026/us-east-1/ecs"),
            None
        );
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 SignedHeaders=host"),
            None
        );
    }
}
