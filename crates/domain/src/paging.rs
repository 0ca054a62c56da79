//! Opaque pagination tokens and maxResults checks.

use crate::EcsError;
use base64::Engine;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A token that resumes a listing after `last`. Tokens are opaque to
/// clients; they say where to continue, scoped to the listing that made them.
pub fn token(listing: &str, last: &str) -> String {
    ENGINE.encode(serde_json::json!({"l": listing, "k": last}).to_string())
}

/// Decodes a token made by [`token`] for the same listing.
pub fn resume(listing: &str, token: Option<&str>) -> Result<Option<String>, EcsError> {
    let Some(t) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        EcsError::invalid(
            "Invalid nextToken: it was not returned by a previous call of this operation.",
        )
    };
    let bytes = ENGINE.decode(t).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if v["l"].as_str() != Some(listing) {
        return Err(bad());
    }
    v["k"].as_str().map(|k| Some(k.to_string())).ok_or_else(bad)
}

/// A page of `items` (at most `size`) after what earlier pages gave,
/// counted in a token of `listing`; and the next page's token. None when
/// the token was not made by this listing.
pub fn by_offset<T: Clone>(
    listing: &str,
    items: &[T],
    token: Option<&str>,
    size: usize,
) -> Option<(Vec<T>, Option<String>)> {
    let skip = match token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => resume(listing, Some(t))
            .ok()
            .flatten()
            .and_then(|k| k.parse::<usize>().ok())?,
    };
    let page: Vec<T> = items.iter().skip(skip).take(size).cloned().collect();
    let next =
        (skip + page.len() < items.len()).then(|| self::token(listing, &(skip + size).to_string()));
    Some((page, next))
}

/// Checks `maxResults` against the operation's range; None gives `max`.
pub fn max_results(value: Option<i32>, max: i32) -> Result<usize, EcsError> {
    match value {
        None => Ok(max as usize),
        Some(v) if (1..=max).contains(&v) => Ok(v as usize),
        Some(v) => Err(EcsError::invalid(format!(
            "maxResults must be between 1 and {max}; got {v}."
        ))),
    }
}

/// Pages an ordered list of (key, item): items after the token, at most
/// `limit`, and the token for the next page.
pub fn page<T>(
    listing: &str,
    items: Vec<(String, T)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    let mut rest = items
        .into_iter()
        .skip_while(|(k, _)| after.is_some_and(|a| k.as_str() <= a))
        .peekable();
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < limit {
        match rest.next() {
            Some((k, v)) => {
                last = Some(k);
                out.push(v);
            }
            None => break,
        }
    }
    let next = match (rest.peek(), last) {
        (Some(_), Some(k)) => Some(token(listing, &k)),
        _ => None,
    };
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_scoped() {
        let t = token("clusters", "/k/b");
        assert_eq!(
            resume("clusters", Some(&t)).expect("ok").as_deref(),
            Some("/k/b")
        );
        assert!(resume("families", Some(&t)).is_err());
        assert!(resume("clusters", Some("garbage!")).is_err());
        assert_eq!(resume("clusters", None).expect("ok"), None);
    }

    #[test]
    fn page_walks_everything_once() {
        let items: Vec<(String, i32)> = (0..7).map(|i| (format!("k{i}"), i)).collect();
        let mut after = None;
        let mut seen = vec![];
        loop {
            let (got, next) = page("x", items.clone(), after.as_deref(), 3);
            seen.extend(got);
            match next {
                Some(t) => after = resume("x", Some(&t)).expect("ok"),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert!(max_results(Some(0), 100).is_err());
        assert_eq!(max_results(None, 100).expect("ok"), 100);
    }
}
