//! Signature Version 4: reading a request's signature (the `Authorization`
//! header or the presigned query string), computing what the signer must
//! have signed, and signing.
//!
//! Verification here is arithmetic only: the caller looks the access key up,
//! checks the clock and the scope, and decides what a failure means for its
//! protocol. The canonical request follows botocore's signer (the reference
//! clients Berth is tested with): every signed header the request names,
//! values trimmed with inner runs of spaces collapsed, the path normalised
//! and encoded once more, the query decoded and re-encoded with only
//! `-_.~` left bare.

use ring::{digest, hmac};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash a signer may claim instead of hashing the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The longest a presigned URL may live (`X-Amz-Expires`), in seconds.
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;

/// What a SigV4 credential scope says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl CredentialScope {
    /// `date/region/service/aws4_request`, the scope line of the string to sign.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// A request's signature as the client sent it. Every request that is
/// authenticated reads one, so its parts share one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Access key, scope date, region, service, the signed header names
    /// (lower case, `;`-separated, in the client's order), the hex
    /// signature (lower case), `X-Amz-Date`, then the session token if any.
    text: String,
    /// Where each part but the token ends in `text`.
    ends: [usize; 7],
    token: bool,
    /// Presigned requests: `X-Amz-Expires` in seconds.
    pub expires: Option<u64>,
}

impl Signature {
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    pub fn access_key(&self) -> &str {
        self.part(0)
    }

    /// The credential scope's date, `yyyymmdd`.
    pub fn date(&self) -> &str {
        self.part(1)
    }

    pub fn region(&self) -> &str {
        self.part(2)
    }

    pub fn service(&self) -> &str {
        self.part(3)
    }

    /// The signed header names, lower case and `;`-separated, as listed.
    pub fn signed_headers(&self) -> &str {
        self.part(4)
    }

    /// The hex signature, lower case.
    pub fn signature(&self) -> &str {
        self.part(5)
    }

    /// `X-Amz-Date`, `yyyymmddTHHMMSSZ`.
    pub fn amz_date(&self) -> &str {
        self.part(6)
    }

    /// `X-Amz-Security-Token`, for temporary credentials.
    pub fn security_token(&self) -> Option<&str> {
        self.token.then(|| &self.text[self.ends[6]..])
    }

    /// `date/region/service/aws4_request`, the scope line of the string to sign.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region(),
            self.service()
        )
    }
}

/// Why a request's signature cannot even be read. Each maps to one AWS error
/// per protocol; the messages are AWS's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Neither an `Authorization` header nor presigned query parameters.
    #[error("Missing Authentication Token")]
    Missing,
    /// Present but unusable (IncompleteSignatureException).
    #[error("{0}")]
    Incomplete(String),
    /// Readable, but not for SigV4 or inconsistent (InvalidSignatureException).
    #[error("{0}")]
    Invalid(String),
}

/// The parts of an HTTP request that a signature covers.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Every header as (name, value); names in any case.
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> Request<'a> {
    /// Every value of header `name`, in order.
    fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ecs/aws4_request, SignedHeaders=..., Signature=...`
/// for its credential scope only: how the front door routes. Returns `None`
/// for anything else (including unsigned requests).
pub fn parse_authorization(header: &str) -> Option<CredentialScope> {
    let rest = header.trim().strip_prefix(ALGORITHM)?;
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    parse_credential(credential)
}

/// The credential scope of a presigned request's query string.
pub fn presigned_scope(query: &str) -> Option<CredentialScope> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "X-Amz-Credential")
        .and_then(|(_, v)| parse_credential(&v))
}

fn parse_credential(credential: &str) -> Option<CredentialScope> {
    let [access_key, date, region, service] = credential_parts(credential)?;
    Some(CredentialScope {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
    })
}

/// `AKID/date/region/service/aws4_request` as its first four parts, none empty.
fn credential_parts(credential: &str) -> Option<[&str; 4]> {
    let mut parts = credential.split('/');
    let out = [parts.next()?, parts.next()?, parts.next()?, parts.next()?];
    (parts.next()? == "aws4_request" && parts.next().is_none() && out.iter().all(|p| !p.is_empty()))
        .then_some(out)
}

/// Reads the signature of a request: from its `Authorization` header, else
/// from presigned query parameters.
pub fn parse(req: &Request<'_>) -> Result<Signature, ParseError> {
    match req.header("authorization") {
        Some(h) => parse_header(req, h),
        None => {
            let q = query_pairs(req.query);
            if q.iter().any(|(k, _)| k == "X-Amz-Algorithm") {
                parse_presigned(&q)
            } else {
                Err(ParseError::Missing)
            }
        }
    }
}

fn parse_header(req: &Request<'_>, header: &str) -> Result<Signature, ParseError> {
    let header = header.trim();
    let Some(rest) = header.strip_prefix(ALGORITHM) else {
        let scheme = header.split_whitespace().next().unwrap_or_default();
        return Err(ParseError::Incomplete(format!(
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. \
             Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either \
             a 'X-Amz-Date' or a 'Date' header. Authorization={scheme}"
        )));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(ParseError::Incomplete(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: '{header}'."
            )));
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let amz_date = req.header("x-amz-date").map(str::trim);
    let mut missing = String::new();
    for (name, value) in [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed.is_none()),
    ] {
        if value {
            let _ = write!(
                missing,
                "Authorization header requires '{name}' parameter. "
            );
        }
    }
    if amz_date.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    if !missing.is_empty() {
        return Err(ParseError::Incomplete(format!(
            "{missing}Authorization={header}"
        )));
    }
    let (credential, signed, signature, amz_date) = (
        credential.unwrap_or_default(),
        signed.unwrap_or_default(),
        signature.unwrap_or_default(),
        amz_date.unwrap_or_default(),
    );
    finish(
        credential,
        signed,
        signature,
        amz_date,
        req.header("x-amz-security-token"),
        None,
    )
}

fn parse_presigned(q: &[(String, String)]) -> Result<Signature, ParseError> {
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(ParseError::Invalid(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\""
        )));
    }
    let mut missing = vec![];
    for name in [
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ] {
        if get(name).is_none() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Err(ParseError::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let expires = match get("X-Amz-Expires") {
        None => None,
        Some(e) => match e.parse::<u64>() {
            Ok(n) if n <= MAX_PRESIGN_EXPIRES => Some(n),
            Ok(_) => {
                return Err(ParseError::Invalid(format!(
                "X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}"
            )))
            }
            Err(_) => {
                return Err(ParseError::Invalid(
                    "X-Amz-Expires should be a number".into(),
                ))
            }
        },
    };
    finish(
        get("X-Amz-Credential").unwrap_or_default(),
        get("X-Amz-SignedHeaders").unwrap_or_default(),
        get("X-Amz-Signature").unwrap_or_default(),
        get("X-Amz-Date").unwrap_or_default(),
        get("X-Amz-Security-Token"),
        Some(expires.unwrap_or(MAX_PRESIGN_EXPIRES)),
    )
}

fn finish(
    credential: &str,
    signed: &str,
    signature: &str,
    amz_date: &str,
    security_token: Option<&str>,
    expires: Option<u64>,
) -> Result<Signature, ParseError> {
    let Some([access_key, date, region, service]) = credential_parts(credential) else {
        return Err(ParseError::Incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    };
    if parse_amz_date(amz_date).is_none() {
        return Err(ParseError::Invalid(format!(
            "Invalid X-Amz-Date '{amz_date}': it must be in ISO 8601 basic format, yyyyMMdd'T'HHmmss'Z'"
        )));
    }
    if !amz_date.starts_with(date) || date.len() != 8 {
        return Err(ParseError::Invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
            &amz_date[..8]
        )));
    }
    let names = || header_names(signed);
    if names().next().is_none() {
        return Err(ParseError::Incomplete(
            "Authorization header requires 'SignedHeaders' parameter.".into(),
        ));
    }
    if !names().any(|h| h.eq_ignore_ascii_case("host")) {
        return Err(ParseError::Invalid(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let token = security_token.unwrap_or_default();
    let mut text = String::with_capacity(
        credential.len() + signed.len() + signature.len() + amz_date.len() + token.len(),
    );
    let mut ends = [0; 7];
    for (i, part) in [access_key, date, region, service].into_iter().enumerate() {
        text.push_str(part);
        ends[i] = text.len();
    }
    for (i, name) in names().enumerate() {
        if i > 0 {
            text.push(';');
        }
        text.push_str(name);
    }
    ends[4] = text.len();
    text.push_str(signature);
    ends[5] = text.len();
    text[ends[3]..].make_ascii_lowercase();
    text.push_str(amz_date);
    ends[6] = text.len();
    text.push_str(token);
    Ok(Signature {
        text,
        ends,
        token: security_token.is_some(),
        expires,
    })
}

/// `yyyymmddTHHMMSSZ` as a time.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    // Read by hand: every signed request's date is read on every request.
    let digits = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (digits(0, 4)?, digits(4, 6)?, digits(6, 8)?);
    let (hour, minute, second) = (digits(9, 11)?, digits(11, 13)?, digits(13, 15)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A time as `yyyymmddTHHMMSSZ`.
pub fn format_amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The lower-case hex SHA-256 of `data`.
pub fn hex_sha256(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// A SHA-256 or HMAC-SHA256 (32 bytes) as a hex string.
fn hex(bytes: &[u8]) -> String {
    hex32(bytes).iter().map(|&b| char::from(b)).collect()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The bytes of a SHA-256 in hex (a signature): `None` for anything else.
fn unhex32(s: &str) -> Option<[u8; 32]> {
    // Every request's signature is decoded: a table, not a match per digit.
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (TABLE[usize::from(pair[0])], TABLE[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0xf);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// Where a canonical request is written: a string (to sign, or to show
/// when a signature does not match) or straight into the hash a verifier
/// needs, which then never holds the whole text.
trait Sink {
    fn put(&mut self, s: &str);
    /// An ASCII byte.
    fn put_byte(&mut self, b: u8);
}

impl Sink for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
    fn put_byte(&mut self, b: u8) {
        self.push(char::from(b));
    }
}

/// Hashes what it is given, a buffer at a time: `ring` pays a call per
/// update, and a canonical request arrives a few bytes at a time.
struct Hashing {
    ctx: digest::Context,
    buf: [u8; 256],
    len: usize,
}

impl Hashing {
    fn new() -> Hashing {
        Hashing {
            ctx: digest::Context::new(&digest::SHA256),
            buf: [0; 256],
            len: 0,
        }
    }

    fn finish(mut self) -> digest::Digest {
        self.ctx.update(&self.buf[..self.len]);
        self.ctx.finish()
    }
}

impl Hashing {
    fn put_bytes(&mut self, b: &[u8]) {
        if self.len + b.len() > self.buf.len() {
            self.ctx.update(&self.buf[..self.len]);
            self.len = 0;
            if b.len() > self.buf.len() {
                self.ctx.update(b);
                return;
            }
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
}

impl Sink for Hashing {
    fn put(&mut self, s: &str) {
        self.put_bytes(s.as_bytes());
    }
    fn put_byte(&mut self, b: u8) {
        self.put_bytes(&[b]);
    }
}

/// Percent-encodes every byte but the unreserved ones (and `/` when `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool, out: &mut impl Sink) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.put_byte(b);
        } else {
            out.put_byte(b'%');
            out.put_byte(DIGITS[usize::from(b >> 4)]);
            out.put_byte(DIGITS[usize::from(b & 0xf)]);
        }
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw query string's pairs, decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The path with `.` and `..` segments resolved, as botocore normalises it
/// before signing.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = vec![];
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut joined = out.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    if (path.ends_with("/.") || path.ends_with("/..")) && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

/// The canonical request a signer with these signed headers and payload
/// hash computed for `req`. Presigned requests leave `X-Amz-Signature` out
/// of the query, as their signer did.
pub fn canonical_request(req: &Request<'_>, signed_headers: &str, payload_hash: &str) -> String {
    let headers_len: usize = req.headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = String::with_capacity(headers_len + req.path.len() + req.query.len() + 160);
    write_canonical(req, signed_headers, payload_hash, &mut out);
    out
}

/// `signed_headers` is the `;`-separated list as the client sent it.
fn write_canonical(
    req: &Request<'_>,
    signed_headers: &str,
    payload_hash: &str,
    out: &mut impl Sink,
) {
    out.put(req.method);
    out.put_byte(b'\n');
    // Nearly every request of the JSON and query protocols is to `/`.
    if req.path == "/" {
        out.put_byte(b'/');
    } else {
        uri_encode(&normalize_path(req.path), true, out);
    }
    out.put_byte(b'\n');
    if !req.query.is_empty() {
        let mut pairs: Vec<(String, String)> = query_pairs(req.query)
            .into_iter()
            .filter(|(k, _)| k != "X-Amz-Signature")
            .map(|(k, v)| {
                let (mut ek, mut ev) = (String::new(), String::new());
                uri_encode(&k, false, &mut ek);
                uri_encode(&v, false, &mut ev);
                (ek, ev)
            })
            .collect();
        pairs.sort();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.put_byte(b'&');
            }
            out.put(k);
            out.put_byte(b'=');
            out.put(v);
        }
    }
    out.put_byte(b'\n');
    let names = || header_names(signed_headers);
    // Signers list the names sorted, as the canonical request needs them;
    // only another order costs a sort.
    let mut prev = "";
    if names().all(|n| std::mem::replace(&mut prev, n) < n) {
        write_headers(req, names(), payload_hash, out);
    } else {
        let mut sorted: Vec<&str> = names().collect();
        sorted.sort_unstable();
        sorted.dedup();
        write_headers(req, sorted.iter().copied(), payload_hash, out);
    }
}

/// The canonical request from its headers on: `names` sorted, unique and
/// lower case.
fn write_headers<'n>(
    req: &Request<'_>,
    names: impl Iterator<Item = &'n str> + Clone,
    payload_hash: &str,
    out: &mut impl Sink,
) {
    for name in names.clone() {
        out.put(name);
        out.put_byte(b':');
        for (i, v) in req.header_values(name).enumerate() {
            if i > 0 {
                out.put_byte(b',');
            }
            // Nearly every value needs neither trimming nor collapsing:
            // it is written whole rather than a word at a time.
            if is_canonical_value(v) {
                out.put(v);
                continue;
            }
            let mut words = v.split_whitespace();
            if let Some(w) = words.next() {
                out.put(w);
            }
            for w in words {
                out.put_byte(b' ');
                out.put(w);
            }
        }
        out.put_byte(b'\n');
    }
    out.put_byte(b'\n');
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.put_byte(b';');
        }
        out.put(name);
    }
    out.put_byte(b'\n');
    out.put(payload_hash);
}

/// The names of a `SignedHeaders` list.
fn header_names(list: &str) -> impl Iterator<Item = &str> + Clone {
    list.split(';').filter(|n| !n.is_empty())
}

/// Whether a header value is already as the canonical request writes it:
/// printable ASCII, no space at either end, no run of spaces.
fn is_canonical_value(v: &str) -> bool {
    // One pass: every value of every signed header is checked.
    let mut prev = b' ';
    for &c in v.as_bytes() {
        let ok = c.is_ascii_graphic() || (c == b' ' && prev != b' ');
        if !ok {
            return false;
        }
        prev = c;
    }
    prev != b' ' || v.is_empty()
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &CredentialScope, canonical_request: &str) -> String {
    let hash = hex32(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref());
    let parts = string_to_sign_parts(amz_date, &scope.date, &scope.region, &scope.service, &hash);
    String::from_utf8_lossy(&parts.concat()).into_owned()
}

/// The string to sign, in the pieces both the signer and the verifier
/// join: the hex hash of the canonical request last.
fn string_to_sign_parts<'a>(
    amz_date: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    canonical_hex: &'a [u8; 64],
) -> [&'a [u8]; 11] {
    [
        ALGORITHM.as_bytes(),
        b"\n",
        amz_date.as_bytes(),
        b"\n",
        date.as_bytes(),
        b"/",
        region.as_bytes(),
        b"/",
        service.as_bytes(),
        b"/aws4_request\n",
        canonical_hex,
    ]
}

/// 32 bytes (a SHA-256) as lower-case hex.
fn hex32(bytes: &[u8]) -> [u8; 64] {
    let mut hex = [0u8; 64];
    for (pair, b) in hex.chunks_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
    hex
}

/// Whether `sig` signs `req` (whose payload hash, as the signer claimed
/// it, is `payload_hash`) with `key`. Neither the canonical request nor
/// the string to sign is allocated: the first is hashed as it is written,
/// the second written on the stack.
pub fn verify(key: &SigningKey, req: &Request<'_>, sig: &Signature, payload_hash: &str) -> bool {
    let Some(given) = unhex32(sig.signature()) else {
        return false;
    };
    let mut h = Hashing::new();
    write_canonical(req, sig.signed_headers(), payload_hash, &mut h);
    let canonical_hex = hex32(h.finish().as_ref());
    let parts = string_to_sign_parts(
        sig.amz_date(),
        sig.date(),
        sig.region(),
        sig.service(),
        &canonical_hex,
    );
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut stack = [0u8; 256];
    let mut heap = vec![];
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    hmac::verify(&key.0, buf, &given).is_ok()
}

/// The key derived from a secret for one day, region and service: what a
/// verifier caches, since deriving it costs four HMACs.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub fn derive(secret: &str, date: &str, region: &str, service: &str) -> SigningKey {
        let step = |key: &[u8], data: &str| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        };
        let k_date = step(format!("AWS4{secret}").as_bytes(), date);
        let k_region = step(k_date.as_ref(), region);
        let k_service = step(k_region.as_ref(), service);
        let k_signing = step(k_service.as_ref(), "aws4_request");
        SigningKey(hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref()))
    }

    /// The hex signature of a string to sign.
    pub fn sign(&self, string_to_sign: &str) -> String {
        hex(hmac::sign(&self.0, string_to_sign.as_bytes()).as_ref())
    }

    /// Whether `signature` (hex) signs `string_to_sign`, compared in constant time.
    pub fn verify(&self, string_to_sign: &str, signature: &str) -> bool {
        unhex32(signature)
            .is_some_and(|tag| hmac::verify(&self.0, string_to_sign.as_bytes(), &tag).is_ok())
    }
}

/// The payload hash a signature covers: the signer's `X-Amz-Content-SHA256`
/// claim when it makes one (it must then be the body's, unless unsigned),
/// else the body's hash. `None` when the claim is false.
pub fn payload_hash(req: &Request<'_>, body: &[u8]) -> Option<PayloadHash> {
    let actual = || PayloadHash::Sha256(hex32(digest::digest(&digest::SHA256, body).as_ref()));
    match req.header("x-amz-content-sha256").map(str::trim) {
        Some(UNSIGNED_PAYLOAD) => Some(PayloadHash::Unsigned),
        Some(claimed) => {
            let a = actual();
            claimed.eq_ignore_ascii_case(a.as_str()).then_some(a)
        }
        None => Some(actual()),
    }
}

/// A payload hash as the canonical request writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadHash {
    Unsigned,
    /// The body's SHA-256 in lower-case hex.
    Sha256([u8; 64]),
}

impl PayloadHash {
    pub fn as_str(&self) -> &str {
        match self {
            PayloadHash::Unsigned => UNSIGNED_PAYLOAD,
            PayloadHash::Sha256(hex) => std::str::from_utf8(hex).unwrap_or_default(),
        }
    }
}

/// Credentials a client signs with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Signs a request as botocore does: the headers to add (`X-Amz-Date`,
/// `X-Amz-Security-Token` when there is a session, `Authorization`). Every
/// header of `req` is signed, so `req` must already carry `host` and
/// whatever else will be sent.
pub fn sign(
    req: &Request<'_>,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    let amz_date = format_amz_date(now);
    let mut extra: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if let Some(t) = &creds.session_token {
        extra.push(("x-amz-security-token", t.clone()));
    }
    let mut headers: Vec<(&str, &str)> = req.headers.to_vec();
    for (k, v) in &extra {
        headers.push((k, v));
    }
    let all = Request {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: &headers,
    };
    let signed = {
        let mut names: Vec<String> = headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names.join(";")
    };
    let scope = CredentialScope {
        access_key: creds.access_key_id.clone(),
        date: amz_date[..8].to_string(),
        region: region.to_string(),
        service: service.to_string(),
    };
    let canonical = canonical_request(&all, &signed, &hex_sha256(body));
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let key = SigningKey::derive(&creds.secret_access_key, &scope.date, region, service);
    extra.push((
        "authorization",
        format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
            creds.access_key_id,
            scope.scope(),
            signed,
            key.sign(&sts)
        ),
    ));
    extra
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

    /// A request's headers with those signing added.
    fn with_added<'a>(
        headers: &[(&'a str, &'a str)],
        added: &'a [(&'static str, String)],
    ) -> Vec<(&'a str, &'a str)> {
        let added = added.iter().map(|(k, v)| (*k, v.as_str()));
        headers.iter().copied().chain(added).collect()
    }

    // AWS's published example (the SigV4 test suite's get-vanilla-query-order-key-case).
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn vanilla_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed_only_when_they_need_it() {
        let headers = [
            ("host", "example.amazonaws.com"),
            ("my-header1", "  value1 "),
            ("my-header2", "\"a   b\tc\""),
            ("my-header3", "a b"),
        ];
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
        };
        let canonical = canonical_request(
            &req,
            "host;my-header1;my-header2;my-header3",
            UNSIGNED_PAYLOAD,
        );
        assert!(canonical.contains("\nmy-header1:value1\nmy-header2:\"a b c\"\nmy-header3:a b\n"));
        assert!(is_canonical_value("a b"));
        for v in [" a", "a ", "a  b", "a\tb", ""] {
            assert_eq!(is_canonical_value(v), v.is_empty(), "{v:?}");
        }
    }

    #[test]
    fn matches_the_aws_test_suite() {
        let headers = vanilla_headers();
        let req = Request {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &headers,
        };
        let canonical = canonical_request(&req, "x-amz-date;host", &hex_sha256(b""));
        assert_eq!(
            canonical,
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let scope = CredentialScope {
            access_key: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "service".into(),
        };
        let sts = string_to_sign("20150830T123600Z", &scope, &canonical);
        let key = SigningKey::derive(SECRET, "20150830", "us-east-1", "service");
        let sig = key.sign(&sts);
        assert_eq!(
            sig,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        assert!(key.verify(&sts, &sig));
        assert!(!key.verify(&sts, &sig.replace('b', "c")));
        assert!(!key.verify(&sts, "zz"));
    }

    /// The streaming verifier hashes exactly the text `canonical_request`
    /// writes: short and long headers (past the hasher's buffer), a query,
    /// an encoded path.
    #[test]
    fn streamed_verification_matches_the_written_request() {
        let long = "v ".repeat(400);
        let headers = vec![
            ("Host", "127.0.0.1:8750"),
            ("X-Amz-Date", "20261123T101010Z"),
            ("X-Long", long.as_str()),
        ];
        let req = Request {
            method: "POST",
            path: "/a b/./c",
            query: "B=2&A=%2F1",
            headers: &headers,
        };
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            session_token: None,
        };
        let at = parse_amz_date("20261123T101010Z").expect("valid date");
        let added = sign(&req, b"{}", &creds, "us-east-1", "ecs", at);
        let all = with_added(&headers, &added);
        let signed_req = Request {
            headers: &all,
            ..req
        };
        let sig = parse(&signed_req).expect("signed");
        let key = SigningKey::derive(SECRET, "20261123", "us-east-1", "ecs");
        let hash = hex_sha256(b"{}");
        assert!(verify(&key, &signed_req, &sig, &hash));
        assert!(!verify(&key, &signed_req, &sig, &hex_sha256(b"{ }")));
        let other = SigningKey::derive(SECRET, "20261123", "us-east-1", "sts");
        assert!(!verify(&other, &signed_req, &sig, &hash));
        // A scope too long for the string to sign's stack buffer.
        let region = "r".repeat(300);
        let added = sign(&req, b"{}", &creds, &region, "ecs", at);
        let all = with_added(&headers, &added);
        let long_req = Request {
            headers: &all,
            ..req
        };
        let sig = parse(&long_req).expect("signed");
        assert_eq!(
            (sig.access_key(), sig.region()),
            ("AKIDEXAMPLE", region.as_str())
        );
        let key = SigningKey::derive(SECRET, "20261123", &region, "ecs");
        assert!(verify(&key, &long_req, &sig, &hash));
    }

    #[test]
    fn what_sign_writes_parses_and_verifies() {
        let headers = vec![
            ("Host", "127.0.0.1:8750"),
            ("Content-Type", "application/x-amz-json-1.1"),
            (
                "X-Amz-Target",
                "AmazonEC2ContainerServiceV20141113.ListClusters",
            ),
        ];
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
        };
        let creds = Credentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            session_token: Some("tok".into()),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let added = sign(&req, b"{}", &creds, "eu-west-1", "ecs", now);
        let all = with_added(&headers, &added);
        let signed_req = Request {
            headers: &all,
            ..req
        };
        let sig = parse(&signed_req).expect("parses");
        assert_eq!(sig.region(), "eu-west-1");
        assert_eq!(sig.security_token(), Some("tok"));
        assert_eq!(parse_amz_date(sig.amz_date()), Some(now));
        let hash = payload_hash(&signed_req, b"{}").expect("no claim");
        assert_eq!(hash.as_str(), hex_sha256(b"{}"));
        let canonical = canonical_request(&signed_req, sig.signed_headers(), hash.as_str());
        let scope = parse_authorization(signed_req.header("authorization").expect("signed"))
            .expect("a scope");
        assert_eq!(
            (scope.date.as_str(), scope.service.as_str()),
            (sig.date(), sig.service())
        );
        let sts = string_to_sign(sig.amz_date(), &scope, &canonical);
        let key = SigningKey::derive(SECRET, sig.date(), "eu-west-1", "ecs");
        assert!(key.verify(&sts, sig.signature()));
        assert!(verify(&key, &signed_req, &sig, hash.as_str()));
        let tampered = canonical_request(&signed_req, sig.signed_headers(), &hex_sha256(b"{ }"));
        assert!(!key.verify(
            &string_to_sign(sig.amz_date(), &scope, &tampered),
            sig.signature()
        ));
    }

    #[test]
    fn broken_headers_get_aws_messages() {
        let headers = vec![(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ecs/aws4_request",
        )];
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
        };
        let Err(ParseError::Incomplete(m)) = parse(&req) else {
            panic!("incomplete")
        };
        assert!(m.starts_with("Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."), "{m}");
        let headers = vec![("Authorization", "AWS4-HMAC-SHA256 Credential AK")];
        let req = Request {
            headers: &headers,
            ..req
        };
        let Err(ParseError::Incomplete(m)) = parse(&req) else {
            panic!("incomplete")
        };
        assert!(
            m.contains("not a valid key=value pair (missing equal-sign)"),
            "{m}"
        );
        let req = Request {
            headers: &[],
            ..req
        };
        assert_eq!(parse(&req), Err(ParseError::Missing));
    }

    #[test]
    fn scope_date_must_be_the_request_date() {
        let headers = vec![
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ecs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
            ("X-Amz-Date", "20260102T000000Z"),
        ];
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
        };
        let Err(ParseError::Invalid(m)) = parse(&req) else {
            panic!("invalid")
        };
        assert!(m.contains("'20260101' != '20260102'"), "{m}");
    }

    #[test]
    fn presigned_parameters_are_read_and_left_out_of_the_canonical_query() {
        let q = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
                 &X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20260101T000000Z\
                 &X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=ab";
        let headers = vec![("Host", "h")];
        let req = Request {
            method: "GET",
            path: "/",
            query: q,
            headers: &headers,
        };
        let sig = parse(&req).expect("parses");
        assert_eq!(sig.expires, Some(60));
        assert_eq!(sig.service(), "sts");
        let c = canonical_request(&req, sig.signed_headers(), UNSIGNED_PAYLOAD);
        assert!(!c.contains("X-Amz-Signature"));
        assert!(c.contains("X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fsts%2Faws4_request"));
    }

    #[test]
    fn paths_are_normalised_then_encoded_again() {
        let headers = vec![("Host", "h")];
        let req = Request {
            method: "GET",
            path: "/a/./b/../c%20d",
            query: "",
            headers: &headers,
        };
        let c = canonical_request(&req, "host", "x");
        assert!(c.starts_with("GET\n/a/c%2520d\n"), "{c}");
    }

    #[test]
    fn amz_dates_round_trip() {
        let t = parse_amz_date("20261206T013005Z").expect("valid");
        assert_eq!(format_amz_date(t), "20261206T013005Z");
        assert!(parse_amz_date("20261306T013005Z").is_none());
        assert!(parse_amz_date("2026-12-06T01:30:05Z").is_none());
        for bad in [
            "20260230T000000Z",
            "20250229T000000Z",
            "20261206T240000Z",
            "2026120+T013005Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
        assert!(parse_amz_date("20240229T235959Z").is_some());
        // Every day from 1970 to 2300, leap days and 2100 and 2200 included.
        let mut secs = 0u64;
        while secs < 330 * 365 * 86_400 {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
            secs += 86_400 + 3_661;
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Fuzzing the reader with arbitrary headers and query strings:
        /// it answers every input without panicking, and what it accepts
        /// is consistent (a scope whose date starts the request's date).
        #[test]
        fn reading_signatures_never_panics(
            auth in "(AWS4-HMAC-SHA256 )?[ -~]{0,160}",
            date in "[0-9TZ]{0,18}",
            query in "[ -~]{0,160}",
            with_header in proptest::bool::ANY,
        ) {
            let mut headers = vec![("X-Amz-Date", date.as_str()), ("Host", "h")];
            if with_header {
                headers.push(("Authorization", auth.as_str()));
            }
            let req = Request { method: "POST", path: "/", query: &query, headers: &headers };
            if let Ok(sig) = parse(&req) {
                proptest::prop_assert!(sig.amz_date().starts_with(sig.date()));
                let _ = canonical_request(&req, sig.signed_headers(), UNSIGNED_PAYLOAD);
            }
            let _ = presigned_scope(&query);
            let _ = parse_authorization(&auth);
        }

        #[test]
        fn presigned_queries_never_panic(
            pairs in proptest::collection::vec(("X-Amz-(Algorithm|Credential|Date|Expires|SignedHeaders|Signature|Security-Token)", "[ -~]{0,40}"), 0..8),
        ) {
            let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let query = query.join("&");
            let headers = vec![("Host", "h")];
            let req = Request { method: "GET", path: "/a/../b", query: &query, headers: &headers };
            let _ = parse(&req);
            let _ = canonical_request(&req, "host", "x");
        }
    }
}
