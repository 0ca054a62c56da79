//! The IAM policy language: documents parsed once (with IAM's
//! `MalformedPolicyDocument` reasons), and evaluated as IAM does for one
//! account: an explicit deny beats an allow, which beats the implicit deny.
//!
//! Evaluation is a pure function of the policies and the request: the
//! action, the resource ARN, the principal (trust policies) and the
//! condition keys the caller knows. Parsed documents keep actions in lower
//! case so that matching allocates nothing but variable substitutions.

use serde_json::Value;
use std::net::IpAddr;

/// What a document is for: which elements it must and must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user, group or role (or passed as a session policy):
    /// statements name resources and no principal.
    Identity,
    /// A role's trust policy: statements name principals and no resources.
    Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action`/`NotAction`, `Resource`/`NotResource`: patterns, and whether
/// the element is the negated one.
#[derive(Debug, Clone, PartialEq)]
pub struct Patterns {
    pub negated: bool,
    pub values: Vec<String>,
    /// Per value: the length of its literal prefix (before the first `*`,
    /// `?` or `${`), and whether that is all of it. Most patterns are
    /// refused by their prefix, or matched whole, without the glob.
    shapes: Vec<(usize, bool)>,
}

impl Patterns {
    fn new(negated: bool, values: Vec<String>) -> Patterns {
        let shapes = values
            .iter()
            .map(|v| {
                let b = v.as_bytes();
                let stop = (0..b.len())
                    .find(|&i| {
                        b[i] == b'*'
                            || b[i] == b'?'
                            || (b[i] == b'$' && b.get(i + 1) == Some(&b'{'))
                    })
                    .unwrap_or(b.len());
                (stop, stop == b.len())
            })
            .collect();
        Patterns {
            negated,
            values,
            shapes,
        }
    }

    /// Whether `text` can match value `i` at all, and, when the value has
    /// no wildcard or variable, whether it does: `Some(answer)` when the
    /// prefix decides, None when the glob must.
    fn quick(&self, i: usize, text: &str, fold: bool) -> Option<bool> {
        let (prefix, whole) = self.shapes[i];
        let p = &self.values[i].as_bytes()[..prefix];
        let t = text.as_bytes();
        let same = |a: &[u8], b: &[u8]| {
            if fold {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        if whole {
            return Some(p.len() == t.len() && same(p, t));
        }
        if t.len() < p.len() || !same(p, &t[..p.len()]) {
            return Some(false);
        }
        None
    }
}

/// One `Principal` entry: `*`, or a kind (`AWS`, `Service`, `Federated`)
/// and a value.
#[derive(Debug, Clone, PartialEq)]
pub enum PrincipalEntry {
    Anyone,
    Aws(String),
    Service(String),
    Federated(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Principals {
    pub negated: bool,
    pub entries: Vec<PrincipalEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

impl Operator {
    fn parse(name: &str) -> Option<Operator> {
        use Operator::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "DateEquals" => DateEquals,
            "DateNotEquals" => DateNotEquals,
            "DateLessThan" => DateLessThan,
            "DateLessThanEquals" => DateLessThanEquals,
            "DateGreaterThan" => DateGreaterThan,
            "DateGreaterThanEquals" => DateGreaterThanEquals,
            "Bool" => Bool,
            "BinaryEquals" => BinaryEquals,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "ArnEquals" => ArnEquals,
            "ArnLike" => ArnLike,
            "ArnNotEquals" => ArnNotEquals,
            "ArnNotLike" => ArnNotLike,
            "Null" => Null,
            _ => return None,
        })
    }

    /// The negated operators: true when the key is absent, and true for a
    /// value when the positive form is false.
    fn negated(self) -> Option<Operator> {
        use Operator::*;
        Some(match self {
            StringNotEquals => StringEquals,
            StringNotEqualsIgnoreCase => StringEqualsIgnoreCase,
            StringNotLike => StringLike,
            NumericNotEquals => NumericEquals,
            DateNotEquals => DateEquals,
            NotIpAddress => IpAddress,
            ArnNotEquals => ArnEquals,
            ArnNotLike => ArnLike,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOperator {
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub operator: Operator,
    pub set: Option<SetOperator>,
    pub if_exists: bool,
    /// The key, in lower case (condition keys are case-insensitive).
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// Lower-cased.
    pub actions: Patterns,
    pub resources: Option<Patterns>,
    pub principals: Option<Principals>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `2012-10-17` documents substitute policy variables; `2008-10-17`
    /// ones do not.
    pub variables: bool,
    pub statements: Vec<Statement>,
}

/// Why a document is refused: IAM's `MalformedPolicyDocument` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed<T>(m: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(m.into()))
}

/// A string or a list of strings (numbers and booleans as their text).
fn strings(v: &Value, field: &str) -> Result<Vec<String>, Malformed> {
    let one = |v: &Value| -> Result<String, Malformed> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => malformed(format!(
                "Syntax errors in policy. {field} must be a string or a list of strings"
            )),
        }
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// The size IAM counts against its quotas: the document without
/// whitespace outside strings.
pub fn packed_size(text: &str) -> usize {
    let mut n = 0;
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            n += 1;
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            n += 1;
        } else if !c.is_whitespace() {
            n += 1;
        }
    }
    n
}

impl Policy {
    /// Parses a policy document of `kind`.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, Malformed> {
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            Malformed(format!(
                "Syntax errors in policy. (line {}, column {}: {})",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
        })?;
        let Value::Object(top) = &doc else {
            return malformed("Syntax errors in policy. A policy is a JSON object.");
        };
        let mut variables = false;
        for (k, v) in top {
            match k.as_str() {
                "Version" => match v.as_str() {
                    Some("2012-10-17") => variables = true,
                    Some("2008-10-17") => {}
                    _ => {
                        return malformed(format!(
                            "The policy's Version {v} is not valid: it must be \"2012-10-17\" or \"2008-10-17\"."
                        ))
                    }
                },
                "Id" | "Statement" => {}
                other => return malformed(format!("Syntax errors in policy. Unknown field {other}")),
            }
        }
        let statements = match top.get("Statement") {
            None => return malformed("Missing required field Statement"),
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => {
                return malformed(
                    "Syntax errors in policy. Statement must be an object or a list of objects",
                )
            }
        };
        if statements.is_empty() {
            return malformed("Missing required field Statement");
        }
        let statements = statements
            .into_iter()
            .map(|s| parse_statement(s, kind))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            variables,
            statements,
        })
    }
}

fn strip_position(m: &str) -> &str {
    m.rsplit_once(" at line ").map_or(m, |(head, _)| head)
}

fn parse_statement(v: &Value, kind: PolicyKind) -> Result<Statement, Malformed> {
    let Value::Object(s) = v else {
        return malformed("Syntax errors in policy. A statement is a JSON object.");
    };
    for k in s.keys() {
        match k.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
            | "Principal" | "NotPrincipal" | "Condition" => {}
            other => return malformed(format!("Syntax errors in policy. Unknown field {other}")),
        }
    }
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return malformed(format!("Invalid effect: {other}")),
        None => return malformed("Missing required field Effect"),
    };
    let actions = match (s.get("Action"), s.get("NotAction")) {
        (Some(_), Some(_)) => {
            return malformed(
                "Syntax errors in policy. A statement has Action or NotAction, not both",
            )
        }
        (Some(a), None) => (false, strings(a, "Action")?),
        (None, Some(a)) => (true, strings(a, "NotAction")?),
        (None, None) => return malformed("Policy statement must contain actions."),
    };
    if actions.1.is_empty() {
        return malformed("Policy statement must contain actions.");
    }
    for a in &actions.1 {
        if a != "*" && !a.contains(':') {
            return malformed(
                "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
            );
        }
    }
    let actions = Patterns::new(
        actions.0,
        actions.1.iter().map(|a| a.to_ascii_lowercase()).collect(),
    );
    let resources = match (s.get("Resource"), s.get("NotResource")) {
        (Some(_), Some(_)) => {
            return malformed(
                "Syntax errors in policy. A statement has Resource or NotResource, not both",
            )
        }
        (Some(r), None) => Some(Patterns::new(false, strings(r, "Resource")?)),
        (None, Some(r)) => Some(Patterns::new(true, strings(r, "NotResource")?)),
        (None, None) => None,
    };
    let principals = match (s.get("Principal"), s.get("NotPrincipal")) {
        (Some(_), Some(_)) => {
            return malformed(
                "Syntax errors in policy. A statement has Principal or NotPrincipal, not both",
            )
        }
        (Some(p), None) => Some(parse_principals(p, false)?),
        (None, Some(p)) => Some(parse_principals(p, true)?),
        (None, None) => None,
    };
    match kind {
        PolicyKind::Identity => {
            if principals.is_some() {
                return malformed("Policy document should not specify a principal.");
            }
            match &resources {
                None => return malformed("Policy statement must contain resources."),
                Some(r) => {
                    if r.values.is_empty() {
                        return malformed("Policy statement must contain resources.");
                    }
                    for v in &r.values {
                        if v != "*" && !v.starts_with("arn:") {
                            return malformed(format!(
                                "Resource {v} must be in ARN format or \"*\"."
                            ));
                        }
                    }
                }
            }
        }
        PolicyKind::Trust => {
            if resources.is_some() {
                let field = if s.contains_key("Resource") {
                    "Resource"
                } else {
                    "NotResource"
                };
                return malformed(format!("Has prohibited field {field}"));
            }
            if principals.is_none() {
                return malformed("Missing required field Principal");
            }
        }
    }
    let conditions = match s.get("Condition") {
        None => vec![],
        Some(c) => parse_conditions(c)?,
    };
    Ok(Statement {
        sid: s.get("Sid").and_then(Value::as_str).map(str::to_string),
        effect,
        actions,
        resources,
        principals,
        conditions,
    })
}

fn parse_principals(v: &Value, negated: bool) -> Result<Principals, Malformed> {
    let entries = match v {
        Value::String(s) if s == "*" => vec![PrincipalEntry::Anyone],
        Value::Object(m) => {
            let mut out = vec![];
            for (kind, values) in m {
                for value in strings(values, "Principal")? {
                    out.push(match kind.as_str() {
                        "AWS" if value == "*" => PrincipalEntry::Anyone,
                        "AWS" => PrincipalEntry::Aws(value),
                        "Service" => PrincipalEntry::Service(value),
                        "Federated" => PrincipalEntry::Federated(value),
                        other => {
                            return malformed(format!(
                                "Invalid principal in policy: \"{other}\":\"{value}\""
                            ))
                        }
                    });
                }
            }
            out
        }
        other => return malformed(format!("Invalid principal in policy: {other}")),
    };
    Ok(Principals { negated, entries })
}

fn parse_conditions(v: &Value) -> Result<Vec<Condition>, Malformed> {
    let Value::Object(ops) = v else {
        return malformed("Syntax errors in policy. Condition must be an object");
    };
    let mut out = vec![];
    for (name, keys) in ops {
        let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (Some(SetOperator::ForAnyValue), r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (Some(SetOperator::ForAllValues), r)
        } else {
            (None, name.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let Some(operator) = Operator::parse(base) else {
            return malformed(format!("Invalid Condition type : {name}."));
        };
        if if_exists && operator == Operator::Null {
            return malformed(format!("Invalid Condition type : {name}."));
        }
        let Value::Object(keys) = keys else {
            return malformed(format!(
                "Syntax errors in policy. Condition {name} must map keys to values"
            ));
        };
        for (key, values) in keys {
            if !key.contains(':') {
                return malformed(
                    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
                );
            }
            out.push(Condition {
                operator,
                set,
                if_exists,
                key: key.to_ascii_lowercase(),
                values: strings(values, "Condition")?,
            });
        }
    }
    Ok(out)
}

/// `*` matches any run of characters (`:` and `/` included), `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes(), false)
}

fn glob_bytes(p: &[u8], t: &[u8], fold: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// One condition key's values: most keys have one.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    One(String),
    Many(Vec<String>),
    Deferred(Deferred),
}

/// A value written out only when a policy reads it: every request carries
/// its time twice (`aws:CurrentTime`, `aws:EpochTime`), and few policies ask.
#[derive(Clone)]
struct Deferred {
    input: Input,
    text: std::sync::OnceLock<String>,
}

/// What a deferred value is written from.
#[derive(Clone)]
enum Input {
    Number(f64, fn(f64) -> String),
    Ip(std::net::IpAddr),
}

impl Deferred {
    fn text(&self) -> &String {
        self.text.get_or_init(|| match &self.input {
            Input::Number(n, render) => render(*n),
            Input::Ip(ip) => ip.to_string(),
        })
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text().fmt(f)
    }
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl Values {
    fn as_slice(&self) -> &[String] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
            Values::Deferred(d) => std::slice::from_ref(d.text()),
        }
    }
}

/// The request's condition keys (lower-case names) and their values, over
/// an optional shared base (what is known of the caller whatever it asks),
/// which the request's own keys override. A request carries a dozen keys
/// at most, so a list searched in order beats hashing them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    base: Option<std::sync::Arc<Context>>,
    values: Vec<(std::borrow::Cow<'static, str>, Values)>,
}

impl Context {
    /// A context whose keys fall back to `base`'s.
    pub fn over(base: std::sync::Arc<Context>) -> Context {
        Context {
            base: Some(base),
            values: Vec::with_capacity(8),
        }
    }

    fn put(&mut self, key: std::borrow::Cow<'static, str>, values: Values) {
        match self.values.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = values,
            None => self.values.push((key, values)),
        }
    }

    fn owned_key(key: &str) -> std::borrow::Cow<'static, str> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(key.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Owned(key.to_string())
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.put(Self::owned_key(key), Values::One(value.into()));
    }

    /// [`Context::set`] for a key known at compile time, already lower-case.
    pub fn set_known(&mut self, key: &'static str, value: impl Into<String>) {
        debug_assert!(!key.bytes().any(|b| b.is_ascii_uppercase()));
        self.put(std::borrow::Cow::Borrowed(key), Values::One(value.into()));
    }

    /// A key known at compile time (lower-case) whose value `render`
    /// writes from `input` if and when a policy reads it.
    pub fn set_deferred(&mut self, key: &'static str, input: f64, render: fn(f64) -> String) {
        self.defer(key, Input::Number(input, render));
    }

    /// [`Context::set_deferred`] for an address (`aws:SourceIp`).
    pub fn set_deferred_ip(&mut self, key: &'static str, ip: std::net::IpAddr) {
        self.defer(key, Input::Ip(ip));
    }

    fn defer(&mut self, key: &'static str, input: Input) {
        debug_assert!(!key.bytes().any(|b| b.is_ascii_uppercase()));
        self.put(
            std::borrow::Cow::Borrowed(key),
            Values::Deferred(Deferred {
                input,
                text: std::sync::OnceLock::new(),
            }),
        );
    }

    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        self.put(Self::owned_key(key), Values::Many(values));
    }

    /// The values of a lower-case key.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        match self.values.iter().find(|(k, _)| k == key) {
            Some((_, v)) => Some(v.as_slice()),
            None => self.base.as_ref().and_then(|b| b.get(key)),
        }
    }
}

/// Who a trust policy is asked about.
#[derive(Debug, Clone)]
pub enum Caller<'a> {
    /// An IAM identity: its ARN and account.
    Aws { arn: &'a str, account: &'a str },
    /// An AWS service principal such as `ecs-tasks.amazonaws.com`.
    Service(&'a str),
}

/// One authorization question.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `service:Operation`, any case.
    pub action: &'a str,
    /// The resource ARN, or `*`.
    pub resource: &'a str,
    /// For trust policies: who asks to assume the role.
    pub caller: Option<Caller<'a>>,
    pub context: &'a Context,
}

/// The outcome, with what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A Deny statement matched.
    ExplicitDeny,
    /// No statement allowed it.
    ImplicitDeny,
}

/// `text` with `${key}` replaced from the context (and `${*}`, `${?}`,
/// `${$}` by the character). `None` when a variable has no value: the
/// element then matches nothing.
fn substitute<'t>(text: &'t str, ctx: &Context) -> Option<std::borrow::Cow<'t, str>> {
    if !text.contains("${") {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match name {
            "*" | "?" | "$" => out.push_str(name),
            _ => {
                let (key, default) = match name.split_once(',') {
                    Some((k, d)) => (k.trim(), Some(d.trim().trim_matches('\''))),
                    None => (name, None),
                };
                match ctx.get(&key.to_ascii_lowercase()).and_then(|v| v.first()) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(default?),
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(std::borrow::Cow::Owned(out))
}

fn action_matches(p: &Patterns, action: &str) -> bool {
    let any = p.values.iter().enumerate().any(|(i, pat)| {
        p.quick(i, action, true)
            .unwrap_or_else(|| glob_bytes(pat.as_bytes(), action.as_bytes(), true))
    });
    any != p.negated
}

fn resource_matches(p: &Patterns, resource: &str, ctx: &Context, variables: bool) -> bool {
    let any = p.values.iter().enumerate().any(|(i, pat)| {
        if let Some(answer) = p.quick(i, resource, false) {
            return answer;
        }
        let pat = if variables {
            match substitute(pat, ctx) {
                Some(p) => p,
                None => return false,
            }
        } else {
            std::borrow::Cow::Borrowed(pat.as_str())
        };
        glob(&pat, resource)
    });
    any != p.negated
}

fn principal_matches(p: &Principals, caller: Option<&Caller<'_>>) -> bool {
    let Some(caller) = caller else {
        return false;
    };
    let any = p.entries.iter().any(|e| match (e, caller) {
        (PrincipalEntry::Anyone, _) => true,
        (PrincipalEntry::Aws(v), Caller::Aws { arn, account }) => {
            if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) {
                v == account
            } else if let Some(acct) = v
                .strip_prefix("arn:aws:iam::")
                .and_then(|r| r.strip_suffix(":root"))
            {
                acct == *account
            } else {
                v == arn
            }
        }
        (PrincipalEntry::Service(v), Caller::Service(s)) => v == s,
        _ => false,
    });
    any != p.negated
}

fn parse_date(s: &str) -> Option<i128> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(i128::from(n) * 1_000_000_000);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| {
            let date =
                time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
                    .ok()?;
            Some(date.midnight().assume_utc())
        })?;
    Some(t.unix_timestamp_nanos())
}

fn ip_in(cidr: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let (net, len) = match cidr.split_once('/') {
        Some((n, l)) => (n, l.parse::<u32>().ok()),
        None => (cidr, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

/// Whether one context value satisfies a positive operator against one
/// policy value.
fn value_matches(op: Operator, policy: &str, value: &str) -> bool {
    use Operator::*;
    let num = |s: &str| s.trim().parse::<f64>().ok();
    match op {
        StringEquals => policy == value,
        StringEqualsIgnoreCase => policy.eq_ignore_ascii_case(value),
        StringLike => glob(policy, value),
        NumericEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => match (num(value), num(policy)) {
            (Some(v), Some(p)) => match op {
                NumericEquals => v == p,
                NumericLessThan => v < p,
                NumericLessThanEquals => v <= p,
                NumericGreaterThan => v > p,
                _ => v >= p,
            },
            _ => false,
        },
        DateEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => match (parse_date(value), parse_date(policy)) {
            (Some(v), Some(p)) => match op {
                DateEquals => v == p,
                DateLessThan => v < p,
                DateLessThanEquals => v <= p,
                DateGreaterThan => v > p,
                _ => v >= p,
            },
            _ => false,
        },
        Bool => policy.eq_ignore_ascii_case(value),
        BinaryEquals => policy == value,
        IpAddress => ip_in(policy, value),
        ArnEquals | ArnLike => arn_like(policy, value),
        // Negated operators and Null are decided by the caller.
        _ => false,
    }
}

fn condition_holds(c: &Condition, ctx: &Context, variables: bool) -> bool {
    let present = ctx.get(&c.key).filter(|v| !v.is_empty());
    if c.operator == Operator::Null {
        let want_absent = c.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
        return present.is_none() == want_absent;
    }
    let (positive, negated) = match c.operator.negated() {
        Some(p) => (p, true),
        None => (c.operator, false),
    };
    let Some(values) = present else {
        return match c.set {
            Some(SetOperator::ForAllValues) => true,
            Some(SetOperator::ForAnyValue) => false,
            None => c.if_exists || negated,
        };
    };
    // One context value against the condition: the positive operator
    // matches any policy value; a negated one matches none. (Requests
    // carry one value per key almost always: substituting per value costs
    // less than collecting the policy's values first.)
    let one = |value: &str| {
        let any = c.values.iter().any(|v| {
            let p = if variables {
                match substitute(v, ctx) {
                    Some(p) => p,
                    None => return false,
                }
            } else {
                std::borrow::Cow::Borrowed(v.as_str())
            };
            value_matches(positive, &p, value)
        });
        any != negated
    };
    match c.set {
        Some(SetOperator::ForAllValues) => values.iter().all(|v| one(v)),
        Some(SetOperator::ForAnyValue) | None => {
            if negated && c.set.is_none() {
                values.iter().all(|v| one(v))
            } else {
                values.iter().any(|v| one(v))
            }
        }
    }
}

fn statement_applies(s: &Statement, req: &Request<'_>, variables: bool) -> bool {
    if !action_matches(&s.actions, req.action) {
        return false;
    }
    if let Some(r) = &s.resources {
        if !resource_matches(r, req.resource, req.context, variables) {
            return false;
        }
    }
    if let Some(p) = &s.principals {
        if !principal_matches(p, req.caller.as_ref()) {
            return false;
        }
    }
    s.conditions
        .iter()
        .all(|c| condition_holds(c, req.context, variables))
}

/// Whether `policies` explicitly deny or allow the request.
fn decide<'p>(policies: impl IntoIterator<Item = &'p Policy>, req: &Request<'_>) -> Decision {
    let mut allowed = false;
    for p in policies {
        for s in &p.statements {
            if statement_applies(s, req, p.variables) {
                match s.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// IAM's decision for one account: any explicit deny wins; otherwise an
/// identity policy must allow, and so must every limiting policy (session
/// policies, a permissions boundary) when there are any.
pub fn evaluate(identity: &[&Policy], limits: &[&[&Policy]], req: &Request<'_>) -> Decision {
    let mut decision = decide(identity.iter().copied(), req);
    for limit in limits {
        match decide(limit.iter().copied(), req) {
            Decision::ExplicitDeny => return Decision::ExplicitDeny,
            Decision::ImplicitDeny if decision == Decision::Allow => {
                decision = Decision::ImplicitDeny;
            }
            _ => {}
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity(text: &str) -> Policy {
        Policy::parse(text, PolicyKind::Identity).expect("valid")
    }

    fn ask(policies: &[&Policy], action: &str, resource: &str, ctx: &Context) -> Decision {
        evaluate(
            policies,
            &[],
            &Request {
                action,
                resource,
                caller: None,
                context: ctx,
            },
        )
    }

    const ADMIN: &str =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

    #[test]
    fn deny_beats_allow_beats_nothing() {
        let admin = identity(ADMIN);
        let deny = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:RunTask","Resource":"*"}}"#,
        );
        let ctx = Context::default();
        assert_eq!(ask(&[&admin], "ecs:RunTask", "*", &ctx), Decision::Allow);
        assert_eq!(
            ask(&[&admin, &deny], "ecs:runtask", "*", &ctx),
            Decision::ExplicitDeny
        );
        assert_eq!(
            ask(&[&admin, &deny], "ecs:ListTasks", "*", &ctx),
            Decision::Allow
        );
        assert_eq!(ask(&[], "ecs:RunTask", "*", &ctx), Decision::ImplicitDeny);
        let session = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}}"#,
        );
        let req = |action| Request {
            action,
            resource: "*",
            caller: None,
            context: &ctx,
        };
        assert_eq!(
            evaluate(&[&admin], &[&[&session]], &req("ecs:DescribeTasks")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[&admin], &[&[&session]], &req("ecs:RunTask")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","NotAction":["iam:*","sts:*"],"Resource":"*"},
                {"Effect":"Deny","Action":"ecs:*","NotResource":"arn:aws:ecs:*:*:cluster/dev*"}]}"#,
        );
        let ctx = Context::default();
        assert_eq!(
            ask(&[&p], "iam:CreateUser", "*", &ctx),
            Decision::ImplicitDeny
        );
        assert_eq!(
            ask(
                &[&p],
                "ecs:DeleteCluster",
                "arn:aws:ecs:us-east-1:1:cluster/dev-a",
                &ctx
            ),
            Decision::Allow
        );
        assert_eq!(
            ask(
                &[&p],
                "ecs:DeleteCluster",
                "arn:aws:ecs:us-east-1:1:cluster/prod",
                &ctx
            ),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn conditions_and_variables() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ecs:RunTask","Resource":"*",
                 "Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:*:*:cluster/${aws:username}"},
                              "IpAddress":{"aws:SourceIp":["10.0.0.0/8","127.0.0.1"]},
                              "BoolIfExists":{"aws:SecureTransport":"false"}}}]}"#,
        );
        let mut ctx = Context::default();
        ctx.set("aws:username", "ana");
        ctx.set("ecs:cluster", "arn:aws:ecs:us-east-1:1:cluster/ana");
        ctx.set("aws:SourceIp", "127.0.0.1");
        assert_eq!(ask(&[&p], "ecs:RunTask", "*", &ctx), Decision::Allow);
        ctx.set("aws:SecureTransport", "true");
        assert_eq!(ask(&[&p], "ecs:RunTask", "*", &ctx), Decision::ImplicitDeny);
        let mut ctx2 = Context::default();
        ctx2.set("aws:username", "ana");
        ctx2.set("ecs:cluster", "arn:aws:ecs:us-east-1:1:cluster/bob");
        ctx2.set("aws:SourceIp", "10.1.2.3");
        assert_eq!(
            ask(&[&p], "ecs:RunTask", "*", &ctx2),
            Decision::ImplicitDeny
        );
        ctx2.set("ecs:cluster", "arn:aws:ecs:us-east-1:1:cluster/ana");
        assert_eq!(ask(&[&p], "ecs:RunTask", "*", &ctx2), Decision::Allow);
        ctx2.set("aws:SourceIp", "192.168.0.1");
        assert_eq!(
            ask(&[&p], "ecs:RunTask", "*", &ctx2),
            Decision::ImplicitDeny
        );
        // The front door's form: the address written only when asked for.
        ctx2.set_deferred_ip("aws:sourceip", "10.9.9.9".parse().expect("ip"));
        assert_eq!(ask(&[&p], "ecs:RunTask", "*", &ctx2), Decision::Allow);
        ctx2.set_deferred_ip("aws:sourceip", "11.0.0.1".parse().expect("ip"));
        assert_eq!(
            ask(&[&p], "ecs:RunTask", "*", &ctx2),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn negated_null_and_set_operators() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ecs:TagResource","Resource":"*",
                 "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]},
                              "StringNotEquals":{"aws:RequestTag/env":"prod"},
                              "Null":{"aws:RequestTag/team":"false"}}}]}"#,
        );
        let mut ctx = Context::default();
        ctx.set_many("aws:TagKeys", vec!["env".into(), "team".into()]);
        ctx.set("aws:RequestTag/env", "dev");
        ctx.set("aws:RequestTag/team", "a");
        assert_eq!(ask(&[&p], "ecs:TagResource", "*", &ctx), Decision::Allow);
        ctx.set("aws:RequestTag/env", "prod");
        assert_eq!(
            ask(&[&p], "ecs:TagResource", "*", &ctx),
            Decision::ImplicitDeny
        );
        ctx.set("aws:RequestTag/env", "dev");
        ctx.set_many("aws:TagKeys", vec!["env".into(), "owner".into()]);
        assert_eq!(
            ask(&[&p], "ecs:TagResource", "*", &ctx),
            Decision::ImplicitDeny
        );
        ctx.set_many("aws:TagKeys", vec!["env".into()]);
        let mut no_team = ctx.clone();
        no_team.set_many("aws:RequestTag/team", vec![]);
        assert_eq!(
            ask(&[&p], "ecs:TagResource", "*", &no_team),
            Decision::ImplicitDeny
        );
        let any = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*",
                "Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"own*"},
                             "NumericLessThanEquals":{"ecs:count":"10"},
                             "DateGreaterThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}}}"#,
        );
        let mut c = Context::default();
        c.set_many("aws:TagKeys", vec!["env".into(), "owner".into()]);
        c.set("ecs:count", "10");
        c.set("aws:CurrentTime", "2026-12-06T00:00:00Z");
        assert_eq!(ask(&[&any], "ecs:RunTask", "*", &c), Decision::Allow);
        c.set("ecs:count", "11");
        assert_eq!(ask(&[&any], "ecs:RunTask", "*", &c), Decision::ImplicitDeny);
        // A deferred time is written when the condition reads it.
        c.set("ecs:count", "1");
        let iso = |t: f64| {
            if t > 1.7e9 {
                "2026-12-06T00:00:00Z"
            } else {
                "2020-01-01T00:00:00Z"
            }
            .to_string()
        };
        c.set_deferred("aws:currenttime", 1.8e9, iso);
        assert_eq!(ask(&[&any], "ecs:RunTask", "*", &c), Decision::Allow);
        c.set_deferred("aws:currenttime", 1.6e9, iso);
        assert_eq!(ask(&[&any], "ecs:RunTask", "*", &c), Decision::ImplicitDeny);
    }

    #[test]
    fn trust_policies_name_principals() {
        let t = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"},
                {"Effect":"Allow","Principal":{"AWS":["123456789012","arn:aws:iam::999999999999:user/x"]},"Action":"sts:AssumeRole"}]}"#,
            PolicyKind::Trust,
        )
        .expect("valid");
        let ctx = Context::default();
        let ask = |caller| {
            evaluate(
                &[&t],
                &[],
                &Request {
                    action: "sts:AssumeRole",
                    resource: "arn:aws:iam::123456789012:role/r",
                    caller: Some(caller),
                    context: &ctx,
                },
            )
        };
        assert_eq!(
            ask(Caller::Service("ecs-tasks.amazonaws.com")),
            Decision::Allow
        );
        assert_eq!(
            ask(Caller::Service("ec2.amazonaws.com")),
            Decision::ImplicitDeny
        );
        assert_eq!(
            ask(Caller::Aws {
                arn: "arn:aws:iam::123456789012:user/any",
                account: "123456789012"
            }),
            Decision::Allow
        );
        assert_eq!(
            ask(Caller::Aws {
                arn: "arn:aws:iam::999999999999:user/x",
                account: "999999999999"
            }),
            Decision::Allow
        );
        assert_eq!(
            ask(Caller::Aws {
                arn: "arn:aws:iam::999999999999:user/y",
                account: "999999999999"
            }),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn malformed_documents_say_why() {
        let why = |text: &str, kind| Policy::parse(text, kind).expect_err("malformed").0;
        assert!(why("{\"Version\": ", PolicyKind::Identity)
            .starts_with("Syntax errors in policy. (line 1, column 12"));
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
                PolicyKind::Identity
            ),
            "Policy statement must contain actions."
        );
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*"}]}"#,
                PolicyKind::Identity
            ),
            "Policy statement must contain resources."
        );
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"RunTask","Resource":"*"}]}"#,
                PolicyKind::Identity
            ),
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
        );
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"cluster"}]}"#,
                PolicyKind::Identity
            ),
            "Resource cluster must be in ARN format or \"*\"."
        );
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole","Resource":"*"}]}"#,
                PolicyKind::Trust
            ),
            "Has prohibited field Resource"
        );
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}]}"#,
                PolicyKind::Identity
            ),
            "Policy document should not specify a principal."
        );
        assert_eq!(
            why(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"s3:*","Resource":"*"}]}"#,
                PolicyKind::Identity
            ),
            "Invalid effect: Maybe"
        );
        assert!(why(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringSorta":{"a:b":"c"}}}]}"#, PolicyKind::Identity)
            .starts_with("Invalid Condition type : StringSorta"));
        assert!(why(
            r#"{"Version":"2013-01-01","Statement":[]}"#,
            PolicyKind::Identity
        )
        .contains("Version"));
    }

    #[test]
    fn packed_size_ignores_whitespace_outside_strings() {
        assert_eq!(
            packed_size("{ \"a b\" : [ 1 , 2 ] }"),
            "{\"a b\":[1,2]}".len()
        );
    }

    #[test]
    fn old_documents_do_not_substitute_variables() {
        let p = identity(
            r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::${aws:username}"}}"#,
        );
        let mut ctx = Context::default();
        ctx.set("aws:username", "ana");
        assert_eq!(
            ask(&[&p], "s3:GetObject", "arn:aws:s3:::ana", &ctx),
            Decision::ImplicitDeny
        );
        assert_eq!(
            ask(&[&p], "s3:GetObject", "arn:aws:s3:::${aws:username}", &ctx),
            Decision::Allow
        );
    }

    /// A reference matcher: `*` as any run, `?` as one character, by regex.
    fn reference(pattern: &str, text: &str) -> bool {
        let mut re = String::from("^");
        for c in pattern.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex_escape(c)),
            }
        }
        re.push('$');
        simple_regex_match(&re, text)
    }

    fn regex_escape(c: char) -> String {
        if c.is_ascii_alphanumeric() {
            c.to_string()
        } else {
            format!("\\{c}")
        }
    }

    /// Backtracking matcher for the tiny regex subset `reference` builds.
    fn simple_regex_match(re: &str, text: &str) -> bool {
        fn go(re: &[char], t: &[char]) -> bool {
            if re.is_empty() || re == ['$'] {
                return t.is_empty();
            }
            if re.len() >= 2 && re[0] == '.' && re[1] == '*' {
                return (0..=t.len()).any(|i| go(&re[2..], &t[i..]));
            }
            let (c, rest) = if re[0] == '\\' {
                (Some(re[1]), &re[2..])
            } else if re[0] == '.' {
                (None, &re[1..])
            } else {
                (Some(re[0]), &re[1..])
            };
            match t.first() {
                Some(x) if c.is_none_or(|c| c == *x) => go(rest, &t[1..]),
                _ => false,
            }
        }
        let re: Vec<char> = re.chars().skip(1).collect();
        let t: Vec<char> = text.chars().collect();
        go(&re, &t)
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_reference(pattern in "[ab*?:/]{0,8}", text in "[ab:/]{0,10}") {
            prop_assert_eq!(glob(&pattern, &text), reference(&pattern, &text));
        }

        /// The prefix shortcut never answers otherwise than the glob.
        #[test]
        fn the_literal_prefix_shortcut_agrees_with_the_glob(pattern in "[aB*?:/]{0,8}", text in "[abAB:/]{0,10}") {
            let p = Patterns::new(false, vec![pattern.clone()]);
            let quick = p.quick(0, &text, false).unwrap_or_else(|| glob(&pattern, &text));
            prop_assert_eq!(quick, glob(&pattern, &text));
            let folded = p.quick(0, &text, true)
                .unwrap_or_else(|| glob_bytes(pattern.as_bytes(), text.as_bytes(), true));
            prop_assert_eq!(folded, glob_bytes(pattern.as_bytes(), text.as_bytes(), true));
        }

        /// Adding a Deny statement that matches never turns a deny into an
        /// allow, and an explicit deny always wins over any allow.
        #[test]
        fn explicit_deny_always_wins(
            allow_actions in proptest::collection::vec("(ecs|iam):(Run|List|Describe|\\*)[a-z]{0,3}\\*?", 1..4),
            action in "(ecs|iam):(Run|List|Describe)[a-z]{0,3}",
        ) {
            let allow = identity(&serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": allow_actions, "Resource": "*"}]
            }).to_string());
            let deny = identity(&serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Deny", "Action": action.clone(), "Resource": "*"}]
            }).to_string());
            let ctx = Context::default();
            prop_assert_eq!(ask(&[&allow, &deny], &action, "*", &ctx), Decision::ExplicitDeny);
            prop_assert_eq!(ask(&[&deny, &allow], &action, "*", &ctx), Decision::ExplicitDeny);
            let alone = ask(&[&allow], &action, "*", &ctx);
            prop_assert!(alone != Decision::ExplicitDeny);
        }

        /// The parser never panics, whatever it is given: arbitrary text,
        /// and JSON shaped like a policy with arbitrary parts.
        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = Policy::parse(&text, PolicyKind::Identity);
            let _ = Policy::parse(&text, PolicyKind::Trust);
        }

        #[test]
        fn policy_shaped_json_never_panics(
            version in "(2012-10-17|2008-10-17|x)",
            effect in "(Allow|Deny|x)",
            action in "[a-z:*?]{0,12}",
            resource in "(\\*|arn:[a-z:/*${}]{0,20}|[a-z]{0,5})",
            op in "(ForAnyValue:|ForAllValues:)?(String|Numeric|Date|Arn|Ip)[A-Za-z]{0,12}",
            key in "[a-z:/]{0,12}",
            value in "[ -~]{0,12}",
        ) {
            let doc = serde_json::json!({"Version": version, "Statement": [{
                "Effect": effect, "Action": action, "Resource": resource,
                "Condition": {op: {key: value}}}]}).to_string();
            if let Ok(p) = Policy::parse(&doc, PolicyKind::Identity) {
                let mut ctx = Context::default();
                ctx.set("aws:username", "a");
                let _ = evaluate(&[&p], &[], &Request { action: "s3:GetObject", resource: "arn:aws:s3:::b", caller: None, context: &ctx });
            }
        }
    }
}
