//! The cluster query language of `memberOf` constraints and
//! `ListContainerInstances --filter`: `subject operator [argument]`, joined
//! with `and`/`&&`, `or`/`||`, negated with `not`/`!`, grouped with
//! parentheses.

use regex::Regex;
use std::cmp::Ordering;
use thiserror::Error;

/// ECS's limit on a memberOf expression.
pub const MAX_EXPRESSION_LEN: usize = 2000;

/// Why an expression was rejected; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Invalid query expression '{expression}': {reason}")]
pub struct QueryError {
    pub expression: String,
    pub reason: String,
}

/// What an expression can ask of a container instance.
pub trait Subjects {
    /// `None` if the instance lacks the attribute, `Some(None)` if it has
    /// it without a value.
    fn attribute(&self, name: &str) -> Option<Option<&str>>;
    fn agent_connected(&self) -> bool;
    fn agent_version(&self) -> &str;
    fn ec2_instance_id(&self) -> &str;
    /// Seconds since the epoch.
    fn registered_at(&self) -> i64;
    fn running_tasks_count(&self) -> u32;
    /// Groups of the tasks on the instance that are not stopped.
    fn task_groups(&self) -> Box<dyn Iterator<Item = &str> + '_>;
}

/// A parsed expression, ready to be evaluated against many instances.
#[derive(Debug, Clone)]
pub struct Query {
    root: Node,
    source: String,
}

#[derive(Debug, Clone)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Test(Test),
}

#[derive(Debug, Clone)]
struct Test {
    subject: Subject,
    op: Op,
    arg: Arg,
}

#[derive(Debug, Clone, PartialEq)]
enum Subject {
    AgentConnected,
    AgentVersion,
    Attribute(String),
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone)]
enum Arg {
    None,
    One(Value),
    List(Vec<Value>),
    Regex(Regex),
}

/// An argument, with the forms its subject compares by decoded up front.
#[derive(Debug, Clone)]
struct Value {
    text: String,
    number: Option<f64>,
    date: Option<i64>,
}

impl Query {
    pub fn parse(expression: &str) -> Result<Query, QueryError> {
        let fail = |reason: String| QueryError {
            expression: expression.to_string(),
            reason,
        };
        if expression.len() > MAX_EXPRESSION_LEN {
            return Err(fail(format!("longer than {MAX_EXPRESSION_LEN} characters")));
        }
        let mut p = Parser {
            src: expression,
            pos: 0,
        };
        let root = p.or().map_err(fail)?;
        p.skip_space();
        if p.pos < p.src.len() {
            return Err(fail(format!("unexpected '{}'", &p.src[p.pos..])));
        }
        Ok(Query {
            root,
            source: expression.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True if the answer depends only on what an instance is, not on the
    /// tasks placed on it, so it can be computed once per instance.
    pub fn is_static(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::And(a, b) | Node::Or(a, b) => walk(a) && walk(b),
                Node::Not(a) => walk(a),
                Node::Test(t) => {
                    !matches!(t.subject, Subject::RunningTasksCount | Subject::TaskGroup)
                }
            }
        }
        walk(&self.root)
    }

    pub fn matches(&self, on: &dyn Subjects) -> bool {
        eval(&self.root, on)
    }
}

fn eval(n: &Node, on: &dyn Subjects) -> bool {
    match n {
        Node::And(a, b) => eval(a, on) && eval(b, on),
        Node::Or(a, b) => eval(a, on) || eval(b, on),
        Node::Not(a) => !eval(a, on),
        Node::Test(t) => test(t, on),
    }
}

fn test(t: &Test, on: &dyn Subjects) -> bool {
    if t.subject == Subject::TaskGroup {
        // A set subject: a positive test holds if any task's group passes,
        // and a negative one is the negation of its positive form.
        let any = |op: Op| on.task_groups().any(|g| compare(&t.subject, op, &t.arg, g));
        return match t.op {
            Op::Exists => on.task_groups().next().is_some(),
            Op::NotExists => on.task_groups().next().is_none(),
            Op::Ne => !any(Op::Eq),
            Op::NotIn => !any(Op::In),
            Op::NotMatches => !any(Op::Matches),
            op => any(op),
        };
    }
    let owned;
    let value: Option<&str> = match &t.subject {
        Subject::Attribute(name) => match on.attribute(name) {
            None => None,
            Some(v) => Some(v.unwrap_or("")),
        },
        Subject::AgentConnected => Some(if on.agent_connected() {
            "true"
        } else {
            "false"
        }),
        Subject::AgentVersion => Some(on.agent_version()),
        Subject::Ec2InstanceId => Some(on.ec2_instance_id()),
        Subject::RegisteredAt => {
            owned = on.registered_at().to_string();
            Some(&owned)
        }
        Subject::RunningTasksCount => {
            owned = on.running_tasks_count().to_string();
            Some(&owned)
        }
        Subject::TaskGroup => None,
    };
    match (t.op, value) {
        (Op::Exists, v) => v.is_some(),
        (Op::NotExists, v) => v.is_none(),
        // A missing attribute equals nothing, so every negative test holds.
        (Op::Ne | Op::NotIn | Op::NotMatches, None) => true,
        (_, None) => false,
        (op, Some(v)) => compare(&t.subject, op, &t.arg, v),
    }
}

fn compare(subject: &Subject, op: Op, arg: &Arg, have: &str) -> bool {
    let order = |want: &Value| -> Option<Ordering> {
        match subject {
            Subject::RegisteredAt => {
                let have: i64 = have.parse().ok()?;
                Some(have.cmp(&want.date?))
            }
            Subject::AgentVersion => Some(version_cmp(have, &want.text)),
            _ => match (have.parse::<f64>().ok(), want.number) {
                (Some(h), Some(w)) => h.partial_cmp(&w),
                _ => Some(have.cmp(want.text.as_str())),
            },
        }
    };
    let equal = |want: &Value| order(want) == Some(Ordering::Equal);
    match (op, arg) {
        (Op::Eq, Arg::One(w)) => equal(w),
        (Op::Ne, Arg::One(w)) => !equal(w),
        (Op::Gt, Arg::One(w)) => order(w) == Some(Ordering::Greater),
        (Op::Ge, Arg::One(w)) => matches!(order(w), Some(Ordering::Greater | Ordering::Equal)),
        (Op::Lt, Arg::One(w)) => order(w) == Some(Ordering::Less),
        (Op::Le, Arg::One(w)) => matches!(order(w), Some(Ordering::Less | Ordering::Equal)),
        (Op::In, Arg::List(ws)) => ws.iter().any(equal),
        (Op::NotIn, Arg::List(ws)) => !ws.iter().any(equal),
        (Op::Matches, Arg::Regex(re)) => re.is_match(have),
        (Op::NotMatches, Arg::Regex(re)) => !re.is_match(have),
        _ => false,
    }
}

/// Dotted versions compare part by part, numerically where both parts are
/// numbers (`1.10.0` > `1.9.2`).
fn version_cmp(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| {
        s.trim_start_matches('v')
            .split(['.', '-'])
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    /// Consumes `word` if it comes next as a whole token.
    fn eat(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        if !rest.starts_with(word) {
            return false;
        }
        let after = rest[word.len()..].chars().next();
        let symbolic = !word.chars().all(|c| c.is_ascii_alphabetic());
        let boundary = match after {
            None => true,
            Some(c) if symbolic => !matches!(c, '=' | '&' | '|' | '~'),
            Some(c) => c.is_whitespace() || c == '(',
        };
        if boundary {
            self.pos += word.len();
        }
        boundary
    }

    fn or(&mut self) -> Result<Node, String> {
        let mut left = self.and()?;
        while self.eat("||") || self.eat("or") {
            left = Node::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, String> {
        let mut left = self.unary()?;
        while self.eat("&&") || self.eat("and") {
            left = Node::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, String> {
        self.skip_space();
        // `!exists` and `!=` are operators, so `!` negates only before a
        // space or a parenthesis.
        if self.rest().starts_with("!(") || self.rest().starts_with("! ") {
            self.pos += 1;
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        if self.eat("not") {
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err("missing ')'".into());
            }
            return Ok(inner);
        }
        self.test().map(Node::Test)
    }

    /// The next run of characters up to white space or a parenthesis, or a
    /// quoted string.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let rest = self.rest();
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"');
        if let Some(q) = quote {
            let end = rest[1..].find(q)?;
            self.pos += end + 2;
            return Some(rest[1..end + 1].to_string());
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        self.pos += end;
        Some(rest[..end].to_string())
    }

    fn test(&mut self) -> Result<Test, String> {
        let Some(name) = self.word() else {
            return Err(if self.rest().is_empty() {
                "expected an expression".into()
            } else {
                format!("unexpected '{}'", self.rest())
            });
        };
        let subject = match name.as_str() {
            "agentConnected" => Subject::AgentConnected,
            "agentVersion" => Subject::AgentVersion,
            "ec2InstanceId" => Subject::Ec2InstanceId,
            "registeredAt" => Subject::RegisteredAt,
            "runningTasksCount" => Subject::RunningTasksCount,
            "task:group" => Subject::TaskGroup,
            other => match other.strip_prefix("attribute:") {
                Some(attr) if !attr.is_empty() => Subject::Attribute(attr.to_string()),
                _ => return Err(format!("unknown subject '{other}'")),
            },
        };
        let Some(op_word) = self.word() else {
            return Err(format!("missing operator after '{name}'"));
        };
        let op = match op_word.as_str() {
            "==" | "equals" => Op::Eq,
            "!=" | "not_equals" => Op::Ne,
            ">" | "greater_than" => Op::Gt,
            ">=" | "greater_than_equal" => Op::Ge,
            "<" | "less_than" => Op::Lt,
            "<=" | "less_than_equal" => Op::Le,
            "exists" => Op::Exists,
            "!exists" | "not_exists" => Op::NotExists,
            "in" => Op::In,
            "!in" | "not_in" => Op::NotIn,
            "=~" | "matches" => Op::Matches,
            "!~" | "not_matches" => Op::NotMatches,
            other => return Err(format!("unknown operator '{other}'")),
        };
        let arg = match op {
            Op::Exists | Op::NotExists => Arg::None,
            Op::In | Op::NotIn => Arg::List(self.list(&subject)?),
            Op::Matches | Op::NotMatches => {
                let pattern = self
                    .word()
                    .ok_or_else(|| format!("missing pattern after '{op_word}'"))?;
                // Java's matches() must match the whole value.
                let re = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|_| format!("invalid regular expression '{pattern}'"))?;
                Arg::Regex(re)
            }
            _ => {
                let text = self
                    .word()
                    .ok_or_else(|| format!("missing value after '{op_word}'"))?;
                Arg::One(value(&subject, text)?)
            }
        };
        Ok(Test { subject, op, arg })
    }

    fn list(&mut self, subject: &Subject) -> Result<Vec<Value>, String> {
        self.skip_space();
        let rest = self.rest();
        if !rest.starts_with('[') {
            return Err("expected '[' to open the list".into());
        }
        let end = rest
            .find(']')
            .ok_or_else(|| "missing ']' to close the list".to_string())?;
        let inner = &rest[1..end];
        self.pos += end + 1;
        let items: Vec<Value> = inner
            .split(',')
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
            .filter(|s| !s.is_empty())
            .map(|s| value(subject, s))
            .collect::<Result<_, _>>()?;
        if items.is_empty() {
            return Err("empty list".into());
        }
        Ok(items)
    }
}

fn value(subject: &Subject, text: String) -> Result<Value, String> {
    let date = if *subject == Subject::RegisteredAt {
        Some(parse_date(&text).ok_or_else(|| {
            format!("'{text}' is not a date (use 2018-06-18, 2018-06-18T22:28:28Z or 2018-06-18T22:28:28+00:00)")
        })?)
    } else {
        None
    };
    if *subject == Subject::AgentConnected && text != "true" && text != "false" {
        return Err(format!("agentConnected is true or false, not '{text}'"));
    }
    Ok(Value {
        number: text.parse().ok(),
        date,
        text,
    })
}

/// `YYYY-MM-DD`, optionally followed by `THH:MM:SS` and `Z` or `±HH:MM`,
/// as seconds since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
            (c, 0)
        } else if t.len() > 6 && matches!(&t[t.len() - 6..t.len() - 5], "+" | "-") {
            let (c, o) = t.split_at(t.len() - 6);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':')?;
            (c, sign * (num(oh)? * 3600 + num(om)? * 60))
        } else {
            (t, 0)
        };
        let mut c = clock.splitn(3, ':');
        let (h, mi, se) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se - offset;
    }
    Some(secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Host {
        attrs: BTreeMap<String, Option<String>>,
        connected: bool,
        version: String,
        id: String,
        registered: i64,
        groups: Vec<String>,
    }

    impl Subjects for Host {
        fn attribute(&self, name: &str) -> Option<Option<&str>> {
            self.attrs.get(name).map(|v| v.as_deref())
        }
        fn agent_connected(&self) -> bool {
            self.connected
        }
        fn agent_version(&self) -> &str {
            &self.version
        }
        fn ec2_instance_id(&self) -> &str {
            &self.id
        }
        fn registered_at(&self) -> i64 {
            self.registered
        }
        fn running_tasks_count(&self) -> u32 {
            self.groups.len() as u32
        }
        fn task_groups(&self) -> Box<dyn Iterator<Item = &str> + '_> {
            Box::new(self.groups.iter().map(String::as_str))
        }
    }

    fn host() -> Host {
        let mut attrs = BTreeMap::new();
        attrs.insert("ecs.instance-type".into(), Some("t2.small".into()));
        attrs.insert("ecs.availability-zone".into(), Some("us-east-1a".into()));
        attrs.insert("ecs.os-type".into(), Some("linux".into()));
        attrs.insert("gpu".into(), None);
        attrs.insert("slots".into(), Some("12".into()));
        Host {
            attrs,
            connected: true,
            version: "1.9.2".into(),
            id: "i-abcd1234".into(),
            registered: parse_date("2018-06-18T22:28:28Z").expect("date"),
            groups: vec!["service:web".into(), "family:batch".into()],
        }
    }

    fn holds(expr: &str) -> bool {
        Query::parse(expr)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(&host())
    }

    #[test]
    fn the_documented_examples_evaluate_as_ecs_describes() {
        assert!(holds("attribute:ecs.instance-type == t2.small"));
        assert!(holds("attribute:ecs.instance-type =~ t2.*"));
        assert!(!holds("attribute:ecs.instance-type =~ t2"));
        assert!(holds(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"
        ));
        assert!(!holds(
            "attribute:ecs.availability-zone not_in [us-east-1a, us-east-1b]"
        ));
        assert!(holds("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']"));
        assert!(holds("task:group == service:web"));
        assert!(!holds("not(task:group == service:web)"));
        assert!(holds("!(task:group == database)"));
        assert!(holds("task:group != database"));
        assert!(holds("attribute:ecs.os-type == linux and attribute:ecs.instance-type in [t2.small, t2.medium]"));
        assert!(holds(
            "attribute:ecs.instance-type == m5.large || attribute:ecs.os-type == linux"
        ));
        assert!(holds("(attribute:ecs.instance-type == m5.large or agentConnected == true) && runningTasksCount == 2"));
        assert!(holds("registeredAt < 2018-06-19"));
        assert!(holds("registeredAt >= 2018-06-18T22:28:28+00:00"));
        assert!(!holds("registeredAt > 2018-06-18T23:28:28+01:00"));
        assert!(holds("registeredAt > 2018-06-18T23:28:27+01:00"));
        assert!(!holds("agentVersion > 1.10.0"));
        assert!(holds("agentVersion >= 1.9"));
        assert!(holds("attribute:gpu exists"));
        assert!(holds("attribute:missing !exists"));
        assert!(holds("attribute:missing != x"));
        assert!(!holds("attribute:missing == x"));
        assert!(holds("attribute:slots > 9"), "numbers compare as numbers");
        assert!(holds("attribute:ecs.instance-type !~ m5.*"));
        assert!(holds("runningTasksCount <= 2 and runningTasksCount > 1"));
    }

    #[test]
    fn bad_expressions_name_the_problem() {
        for (expr, reason) in [
            ("", "expected an expression"),
            ("attribute:x", "missing operator after 'attribute:x'"),
            ("color == red", "unknown subject 'color'"),
            ("attribute:x ~= y", "unknown operator '~='"),
            ("attribute:x ==", "missing value after '=='"),
            ("attribute:x in a, b", "expected '[' to open the list"),
            ("attribute:x in [a, b", "missing ']' to close the list"),
            ("attribute:x =~ t2.[", "invalid regular expression 't2.['"),
            ("(attribute:x exists", "missing ')'"),
            ("registeredAt < yesterday", "'yesterday' is not a date"),
            ("agentConnected == maybe", "agentConnected is true or false"),
            (
                "attribute:x exists attribute:y exists",
                "unexpected 'attribute:y exists'",
            ),
        ] {
            let err = Query::parse(expr).expect_err(expr);
            assert!(err.reason.contains(reason), "{expr}: {}", err.reason);
            assert!(err.to_string().contains(expr));
        }
        let long = format!("attribute:x == {}", "y".repeat(MAX_EXPRESSION_LEN));
        assert!(Query::parse(&long).is_err());
    }

    #[test]
    fn only_task_subjects_make_a_query_dynamic() {
        assert!(
            Query::parse("attribute:a exists and agentConnected == true")
                .expect("q")
                .is_static()
        );
        assert!(!Query::parse("attribute:a exists or not(task:group == x)")
            .expect("q")
            .is_static());
        assert!(!Query::parse("runningTasksCount == 0")
            .expect("q")
            .is_static());
    }

    #[test]
    fn dates_convert_to_epoch_seconds() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(
            parse_date("2018-06-18T22:28:28+02:00"),
            parse_date("2018-06-18T20:28:28Z")
        );
        assert_eq!(parse_date("2018-13-01"), None);
        assert_eq!(parse_date("2018-06-18T25:00:00Z"), None);
    }
}
