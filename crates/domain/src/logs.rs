//! CloudWatch Logs' rules: names, retention, the limits of a PutLogEvents
//! batch, ARNs, and filter patterns, with the errors Logs answers in its
//! own words. Pure: times are epoch milliseconds the caller passes.

use serde_json::Value;

/// A Logs error: its `__type` and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LogsError {
    pub code: &'static str,
    pub message: String,
}

impl LogsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        LogsError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", message)
    }

    pub fn no_group() -> Self {
        Self::new(
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        )
    }

    pub fn no_stream() -> Self {
        Self::new(
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        )
    }

    pub fn required(field: &str) -> Self {
        Self::invalid(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }

    fn pattern(field: &str, value: &str, pattern: &str) -> Self {
        Self::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
        ))
    }

    fn length(field: &str, value: &str, min: usize, max: usize) -> Self {
        let (how, n) = if value.chars().count() < min {
            ("greater than or equal to", min)
        } else {
            ("less than or equal to", max)
        };
        Self::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must have length {how} {n}"
        ))
    }
}

/// The retention periods Logs accepts, in days.
pub const RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// At most this many bytes in one PutLogEvents (each event counts its
/// message's UTF-8 bytes and 26 more).
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD: usize = 26;
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// One event's message, with its overhead, fits in 256 KiB.
pub const MAX_EVENT_BYTES: usize = 262_144 - EVENT_OVERHEAD;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub fn check_group_name(name: &str) -> Result<(), LogsError> {
    let field = "logGroupName";
    if name.is_empty() || name.chars().count() > 512 {
        return Err(LogsError::length(field, name, 1, 512));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#'))
    {
        return Err(LogsError::pattern(field, name, r"[\.\-_/#A-Za-z0-9]+"));
    }
    Ok(())
}

pub fn check_stream_name(name: &str) -> Result<(), LogsError> {
    let field = "logStreamName";
    if name.is_empty() || name.chars().count() > 512 {
        return Err(LogsError::length(field, name, 1, 512));
    }
    if name.contains(':') || name.contains('*') {
        return Err(LogsError::pattern(field, name, "[^:*]*"));
    }
    Ok(())
}

pub fn check_retention(days: i32) -> Result<(), LogsError> {
    if RETENTION_DAYS.contains(&days) {
        return Ok(());
    }
    let set: Vec<String> = RETENTION_DAYS.iter().map(i32::to_string).collect();
    Err(LogsError::invalid(format!(
        "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        set.join(", ")
    )))
}

/// The group's ARN as DescribeLogGroups gives `arn` (with IAM's `:*`).
pub fn group_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{name}:*")
}

/// The stream's ARN.
pub fn stream_arn(region: &str, account: &str, group: &str, stream: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}")
}

/// A group named by `logGroupIdentifier`: its name, or its ARN (with or
/// without the trailing `:*`) in this account and region.
pub fn group_of_identifier<'a>(id: &'a str, region: &str, account: &str) -> Option<&'a str> {
    let Some(rest) = id.strip_prefix("arn:") else {
        return Some(id);
    };
    let rest = rest.split_once(':')?.1; // partition
    let rest = rest.strip_prefix("logs:")?;
    let rest = rest.strip_prefix(region)?.strip_prefix(':')?;
    let rest = rest.strip_prefix(account)?.strip_prefix(":log-group:")?;
    Some(rest.strip_suffix(":*").unwrap_or(rest))
}

/// Where the awslogs driver sends a container's output, from its log
/// options: the group and, when the options name it, the stream
/// (`awslogs-stream`, else ECS's `prefix/container/task-id`). Without
/// either the stream is the container's runtime id, known once it exists.
pub fn awslogs_destination(
    options: &std::collections::BTreeMap<String, String>,
    container: &str,
    task_id: &str,
) -> Option<(String, Option<String>)> {
    let group = options.get("awslogs-group")?.clone();
    let stream = match (
        options.get("awslogs-stream"),
        options.get("awslogs-stream-prefix"),
    ) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(p)) => Some(format!("{p}/{container}/{task_id}")),
        (None, None) => None,
    };
    Some((group, stream))
}

/// Which events of a PutLogEvents batch are kept: indexes `[from, to)`;
/// the rest are reported as AWS reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    pub too_new_start: Option<usize>,
    pub too_old_end: Option<usize>,
    pub expired_end: Option<usize>,
}

/// Checks a batch (timestamps in ms, message sizes in bytes) against Logs'
/// limits at `now`; returns the range of events to keep and what was
/// rejected. Whole-batch faults are errors and keep nothing.
pub fn check_batch(
    events: &[(i64, usize)],
    now: i64,
    retention_days: Option<i32>,
) -> Result<((usize, usize), Rejected), LogsError> {
    if events.is_empty() {
        return Err(LogsError::invalid(
            "1 validation error detected: Value '[]' at 'logEvents' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(LogsError::invalid(format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to {MAX_BATCH_EVENTS}"
        )));
    }
    let mut bytes = 0usize;
    for (i, (_, size)) in events.iter().enumerate() {
        if *size > MAX_EVENT_BYTES {
            return Err(LogsError::invalid(format!(
                "Log event too large: {} bytes exceeds limit of {} (logEvents.{})",
                size + EVENT_OVERHEAD,
                MAX_EVENT_BYTES + EVENT_OVERHEAD,
                i + 1
            )));
        }
        bytes += size + EVENT_OVERHEAD;
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(LogsError::invalid(format!(
            "Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}"
        )));
    }
    if events.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(LogsError::invalid(
            "Log events in a single PutLogEvents request must be in chronological order.",
        ));
    }
    let (first, last) = (events[0].0, events[events.len() - 1].0);
    if last - first > DAY_MS {
        return Err(LogsError::invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
        ));
    }
    let mut rejected = Rejected::default();
    let too_old = now - 14 * DAY_MS;
    let expired = retention_days.map(|d| now - i64::from(d) * DAY_MS);
    let old_end = events.iter().take_while(|(t, _)| *t < too_old).count();
    let expired_end = expired.map_or(0, |e| events.iter().take_while(|(t, _)| *t < e).count());
    if old_end > 0 {
        rejected.too_old_end = Some(old_end);
    }
    if expired_end > old_end {
        rejected.expired_end = Some(expired_end);
    }
    let from = old_end.max(expired_end);
    let to = events
        .iter()
        .position(|(t, _)| *t > now + 2 * HOUR_MS)
        .unwrap_or(events.len());
    if to < events.len() {
        rejected.too_new_start = Some(to);
    }
    Ok(((from, to.max(from)), rejected))
}

/// A filter pattern, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Matches every event.
    All,
    /// Text: every `all` term and phrase, at least one `any` term (when
    /// there are some), no `none` term.
    Terms {
        all: Vec<String>,
        any: Vec<String>,
        none: Vec<String>,
    },
    /// JSON: comparisons joined by `&&` and `||` (`&&` binds tighter).
    Json(Vec<Vec<Comparison>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// `$.a.b` as `["a", "b"]`.
    pub path: Vec<String>,
    pub op: Op,
    pub value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string, which may end with `*` (a prefix).
    Text(String),
    Number(f64),
    /// `EXISTS` / `NOT EXISTS` are written as `= EXISTS`... kept simple:
    /// `IS TRUE`, `IS FALSE`, `IS NULL`.
    Bool(bool),
    Null,
}

fn bad_pattern() -> LogsError {
    LogsError::invalid("Invalid filter pattern")
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, LogsError> {
        if text.chars().count() > 1024 {
            return Err(LogsError::length("filterPattern", text, 0, 1024));
        }
        let t = text.trim();
        if t.is_empty() || t == "\"\"" {
            return Ok(Pattern::All);
        }
        if t.starts_with('{') {
            return parse_json(t);
        }
        if t.starts_with('[') {
            // Space-delimited patterns are not served yet: said, not ignored.
            return Err(LogsError::invalid(
                "Invalid filter pattern: space-delimited patterns ([field, ...]) are not supported by Berth",
            ));
        }
        let (mut all, mut any, mut none) = (vec![], vec![], vec![]);
        for (term, quoted) in terms(t)? {
            if !quoted {
                if let Some(rest) = term.strip_prefix('?') {
                    any.push(unquote(rest)?);
                    continue;
                }
                if let Some(rest) = term.strip_prefix('-') {
                    none.push(unquote(rest)?);
                    continue;
                }
            }
            all.push(term);
        }
        Ok(Pattern::Terms { all, any, none })
    }

    pub fn matches(&self, message: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Terms { all, any, none } => {
                all.iter().all(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
                    && !none.iter().any(|t| message.contains(t.as_str()))
            }
            Pattern::Json(alternatives) => {
                let Ok(doc) = serde_json::from_str::<Value>(message.trim()) else {
                    return false;
                };
                alternatives
                    .iter()
                    .any(|conj| conj.iter().all(|c| c.holds(&doc)))
            }
        }
    }
}

/// Splits text into terms: quoted phrases whole (and marked), the rest by
/// spaces.
fn terms(t: &str) -> Result<Vec<(String, bool)>, LogsError> {
    let mut out = vec![];
    let mut chars = t.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut term = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                term.push(c);
            }
            if !closed {
                return Err(bad_pattern());
            }
            out.push((term, true));
            continue;
        }
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            term.push(c);
            chars.next();
        }
        out.push((term, false));
    }
    Ok(out)
}

fn unquote(t: &str) -> Result<String, LogsError> {
    match t.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .map(String::from)
            .ok_or_else(bad_pattern),
        None if t.is_empty() => Err(bad_pattern()),
        None => Ok(t.to_string()),
    }
}

fn parse_json(t: &str) -> Result<Pattern, LogsError> {
    let body = t
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(bad_pattern)?;
    if body.contains('(') {
        return Err(LogsError::invalid(
            "Invalid filter pattern: parentheses in JSON patterns are not supported by Berth",
        ));
    }
    let mut out = vec![];
    for alt in body.split("||") {
        let mut conj = vec![];
        for cmp in alt.split("&&") {
            conj.push(comparison(cmp.trim())?);
        }
        out.push(conj);
    }
    Ok(Pattern::Json(out))
}

fn comparison(t: &str) -> Result<Comparison, LogsError> {
    let rest = t.strip_prefix("$.").ok_or_else(bad_pattern)?;
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>'))
        .ok_or_else(bad_pattern)?;
    let path: Vec<String> = rest[..end].split('.').map(String::from).collect();
    if path.iter().any(String::is_empty) {
        return Err(bad_pattern());
    }
    let rest = rest[end..].trim_start();
    if let Some(v) = rest.strip_prefix("IS ") {
        let value = match v.trim() {
            "TRUE" => Literal::Bool(true),
            "FALSE" => Literal::Bool(false),
            "NULL" => Literal::Null,
            _ => return Err(bad_pattern()),
        };
        return Ok(Comparison {
            path,
            op: Op::Eq,
            value,
        });
    }
    let (op, v) = [
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (*op, v.trim())))
    .ok_or_else(bad_pattern)?;
    let value = if let Some(s) = v.strip_prefix('"') {
        Literal::Text(s.strip_suffix('"').ok_or_else(bad_pattern)?.to_string())
    } else if let Ok(n) = v.parse::<f64>() {
        Literal::Number(n)
    } else if !v.is_empty() && !v.contains(char::is_whitespace) {
        Literal::Text(v.to_string())
    } else {
        return Err(bad_pattern());
    };
    if matches!(value, Literal::Text(_)) && !matches!(op, Op::Eq | Op::Ne) {
        return Err(bad_pattern());
    }
    Ok(Comparison { path, op, value })
}

impl Comparison {
    fn holds(&self, doc: &Value) -> bool {
        let mut v = doc;
        for p in &self.path {
            match v.get(p) {
                Some(next) => v = next,
                None => return false,
            }
        }
        let equal = match (&self.value, v) {
            (Literal::Text(t), Value::String(s)) => match t.strip_suffix('*') {
                Some(prefix) => s.starts_with(prefix),
                None => s == t,
            },
            (Literal::Text(t), Value::Number(n)) => t == &n.to_string(),
            (Literal::Number(x), Value::Number(n)) => {
                let n = n.as_f64().unwrap_or(f64::NAN);
                return match self.op {
                    Op::Eq => n == *x,
                    Op::Ne => n != *x,
                    Op::Lt => n < *x,
                    Op::Le => n <= *x,
                    Op::Gt => n > *x,
                    Op::Ge => n >= *x,
                };
            }
            (Literal::Bool(b), Value::Bool(x)) => b == x,
            (Literal::Null, Value::Null) => true,
            _ => false,
        };
        match self.op {
            Op::Eq => equal,
            Op::Ne => !equal,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awslogs_streams_are_named_as_ecs_names_them() {
        let opts = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            awslogs_destination(
                &opts(&[("awslogs-group", "g"), ("awslogs-stream-prefix", "ecs")]),
                "web",
                "abc"
            ),
            Some(("g".into(), Some("ecs/web/abc".into())))
        );
        assert_eq!(
            awslogs_destination(
                &opts(&[
                    ("awslogs-group", "g"),
                    ("awslogs-stream-prefix", "ecs"),
                    ("awslogs-stream", "own")
                ]),
                "web",
                "abc"
            ),
            Some(("g".into(), Some("own".into())))
        );
        assert_eq!(
            awslogs_destination(&opts(&[("awslogs-group", "g")]), "web", "abc"),
            Some(("g".into(), None))
        );
        assert_eq!(
            awslogs_destination(&opts(&[("awslogs-stream-prefix", "ecs")]), "web", "abc"),
            None
        );
    }

    #[test]
    fn names_and_retention_are_checked_in_logs_words() {
        assert!(check_group_name("/ecs/web-app_1#x.y").is_ok());
        let e = check_group_name("bad name").expect_err("space");
        assert_eq!(e.code, "InvalidParameterException");
        assert!(e.message.contains("at 'logGroupName'"), "{}", e.message);
        assert!(check_group_name(&"a".repeat(513)).is_err());
        assert!(check_stream_name("ecs/web/abc").is_ok());
        assert!(check_stream_name("a:b").is_err());
        assert!(check_retention(14).is_ok());
        assert!(check_retention(2)
            .expect_err("2")
            .message
            .contains("enum value set: [1, 3, 5"));
    }

    #[test]
    fn identifiers_name_groups_of_this_account_and_region_only() {
        let arn = group_arn("us-east-1", "1", "/ecs/app");
        assert_eq!(
            group_of_identifier(&arn, "us-east-1", "1"),
            Some("/ecs/app")
        );
        assert_eq!(
            group_of_identifier("arn:aws:logs:us-east-1:1:log-group:g", "us-east-1", "1"),
            Some("g")
        );
        assert_eq!(group_of_identifier(&arn, "eu-west-1", "1"), None);
        assert_eq!(group_of_identifier("plain", "r", "a"), Some("plain"));
    }

    #[test]
    fn batches_keep_what_is_in_the_window_and_refuse_what_breaks_the_rules() {
        let now = 100 * DAY_MS;
        let ok = check_batch(&[(now - 1, 5), (now, 5)], now, None).expect("ok");
        assert_eq!(ok, ((0, 2), Rejected::default()));
    }

    #[test]
    fn an_old_or_future_event_is_rejected_alone() {
        let now = 100 * DAY_MS;
        let events = [
            (now - 15 * DAY_MS, 1),
            (now - 2 * DAY_MS, 1),
            (now - HOUR_MS, 1),
            (now + 3 * HOUR_MS, 1),
        ];
        // Spanning more than 24 hours is a fault of the whole batch.
        assert!(check_batch(&events, now, Some(1)).is_err());
        let events = [(now - 2 * HOUR_MS, 1), (now, 1), (now + 3 * HOUR_MS, 1)];
        let (range, r) = check_batch(&events, now, None).expect("ok");
        assert_eq!(range, (0, 2));
        assert_eq!(r.too_new_start, Some(2));
        let events = [(now - 15 * DAY_MS, 1), (now - 15 * DAY_MS + 1, 1)];
        let (range, r) = check_batch(&events, now, None).expect("ok");
        assert_eq!((range, r.too_old_end), ((2, 2), Some(2)));
        let events = [(now - 2 * DAY_MS, 1), (now - 2 * DAY_MS + HOUR_MS, 1)];
        let (range, r) = check_batch(&events, now, Some(1)).expect("ok");
        assert_eq!((range, r.expired_end), ((2, 2), Some(2)));
        assert!(check_batch(&[(2, 1), (1, 1)], now, None)
            .expect_err("order")
            .message
            .contains("chronological"));
        assert!(check_batch(&[], now, None).is_err());
        assert!(check_batch(&[(now, MAX_BATCH_BYTES)], now, None).is_err());
    }

    #[test]
    fn text_patterns_take_terms_phrases_alternatives_and_exclusions() {
        let p = Pattern::parse("ERROR \"disk full\"").expect("parse");
        assert!(p.matches("12:00 ERROR disk full on /"));
        assert!(!p.matches("12:00 ERROR disk is full"));
        let p = Pattern::parse("?WARN ?ERROR").expect("parse");
        assert!(p.matches("a WARN b") && p.matches("ERROR") && !p.matches("INFO"));
        let p = Pattern::parse("ERROR -Exiting").expect("parse");
        assert!(p.matches("ERROR x") && !p.matches("ERROR Exiting now"));
        assert!(Pattern::parse("").expect("all").matches("anything"));
        assert!(Pattern::parse("\"open").is_err());
        assert!(Pattern::parse("[ip, user]").is_err());
    }

    #[test]
    fn json_patterns_compare_fields() {
        let p = Pattern::parse(r#"{ $.level = "error" && $.code >= 500 }"#).expect("parse");
        assert!(p.matches(r#"{"level":"error","code":503}"#));
        assert!(!p.matches(r#"{"level":"error","code":404}"#));
        assert!(!p.matches("level=error"));
        let p = Pattern::parse(r#"{ $.user.name = "ad*" || $.ok IS FALSE }"#).expect("parse");
        assert!(p.matches(r#"{"user":{"name":"admin"}}"#));
        assert!(p.matches(r#"{"ok":false}"#));
        assert!(!p.matches(r#"{"user":{"name":"bob"},"ok":true}"#));
        assert!(Pattern::parse("{ $.a = }").is_err());
    }
}
