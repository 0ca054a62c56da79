//! CloudWatch metric math, the part target tracking and dashboards use:
//! arithmetic (`+ - * / ^`, parentheses, unary minus) on numbers, time
//! series and arrays of them, `[a, b]` arrays, `METRICS()` and
//! `METRICS("text")` (the metrics of the request whose id or label holds
//! the text), `SUM`, `AVG`, `MIN`, `MAX` and `SAMPLE_COUNT` (across an array
//! per timestamp, or over one series to a number), `ABS`, `FLOOR`, `CEIL`,
//! and `FILL(x, value | REPEAT | LINEAR)`. Series operate where both have a
//! datapoint, as CloudWatch's do. Pure.

use std::collections::{BTreeMap, HashMap};

/// A time series: epoch seconds to value.
pub type Series = BTreeMap<i64, f64>;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Series(Series),
    Array(Vec<Series>),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Number(f64),
    Id(String),
    Text(String),
    Word(String),
    Array(Vec<Expr>),
    Call(String, Vec<Expr>),
    Neg(Box<Expr>),
    Op(char, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Text(String),
    Sym(char),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = vec![];
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Token::Number(
                s.parse().map_err(|_| format!("{s} is not a number"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Name(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == c)
                .ok_or("a string is not closed")?;
            out.push(Token::Text(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if "+-*/^(),[]".contains(c) {
            out.push(Token::Sym(c));
            i += 1;
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Sym(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("'{c}' expected"))
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Some(Token::Sym(c @ ('+' | '-'))) => *c,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.product()?;
            left = Expr::Op(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.power()?;
        loop {
            let op = match self.peek() {
                Some(Token::Sym(c @ ('*' | '/'))) => *c,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.power()?;
            left = Expr::Op(op, Box::new(left), Box::new(right));
        }
    }

    fn power(&mut self) -> Result<Expr, String> {
        let base = self.unary()?;
        if self.eat('^') {
            let exp = self.power()?;
            return Ok(Expr::Op('^', Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat('-') {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat('+') {
            return self.unary();
        }
        self.atom()
    }

    fn list(&mut self, close: char) -> Result<Vec<Expr>, String> {
        let mut items = vec![];
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.sum()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(',')?;
        }
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Number(n)) => Ok(Expr::Number(n)),
            Some(Token::Text(t)) => Ok(Expr::Text(t)),
            Some(Token::Sym('(')) => {
                let e = self.sum()?;
                self.expect(')')?;
                Ok(e)
            }
            Some(Token::Sym('[')) => Ok(Expr::Array(self.list(']')?)),
            Some(Token::Name(n)) => {
                if self.eat('(') {
                    Ok(Expr::Call(n.to_ascii_uppercase(), self.list(')')?))
                } else if n.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    Ok(Expr::Id(n))
                } else {
                    Ok(Expr::Word(n))
                }
            }
            Some(Token::Sym(c)) => Err(format!("unexpected '{c}'")),
            None => Err("the expression ends too soon".into()),
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression(Expr);

impl Expression {
    pub fn parse(text: &str) -> Result<Expression, String> {
        let mut p = Parser {
            tokens: tokens(text)?,
            at: 0,
        };
        let e = p.sum()?;
        if p.at < p.tokens.len() {
            return Err("unexpected text after the expression".into());
        }
        Ok(Expression(e))
    }

    /// The query ids it reads (`METRICS()` reads every metric query).
    pub fn ids(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Id(i) => out.push(i.clone()),
                Expr::Array(items) | Expr::Call(_, items) => {
                    items.iter().for_each(|i| walk(i, out))
                }
                Expr::Neg(a) => walk(a, out),
                Expr::Op(_, a, b) => {
                    walk(a, out);
                    walk(b, out)
                }
                _ => {}
            }
        }
        let mut out = vec![];
        walk(&self.0, &mut out);
        out
    }

    fn uses_metrics(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::Call(n, items) => n == "METRICS" || items.iter().any(walk),
                Expr::Array(items) => items.iter().any(walk),
                Expr::Neg(a) => walk(a),
                Expr::Op(_, a, b) => walk(a) || walk(b),
                _ => false,
            }
        }
        walk(&self.0)
    }
}

/// What an expression reads: the values of other queries by id, the
/// metric queries (id, label) for `METRICS()`, and the period grid of the
/// request (for `FILL` and numbers that must become series).
pub struct Env<'a> {
    pub values: &'a HashMap<String, Value>,
    pub metrics: &'a [(String, String)],
    pub grid: &'a [i64],
}

fn combine(a: &Series, b: &Series, f: impl Fn(f64, f64) -> f64) -> Series {
    a.iter()
        .filter_map(|(t, x)| b.get(t).map(|y| (*t, f(*x, *y))))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

fn apply(op: char, a: Value, b: Value) -> Result<Value, String> {
    let f = move |x: f64, y: f64| match op {
        '+' => x + y,
        '-' => x - y,
        '*' => x * y,
        '/' => x / y,
        _ => x.powf(y),
    };
    let each = |s: &Series, n: f64, left: bool| -> Series {
        s.iter()
            .map(|(t, v)| (*t, if left { f(*v, n) } else { f(n, *v) }))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => Value::Number(f(x, y)),
        (Value::Series(s), Value::Number(n)) => Value::Series(each(&s, n, true)),
        (Value::Number(n), Value::Series(s)) => Value::Series(each(&s, n, false)),
        (Value::Series(a), Value::Series(b)) => Value::Series(combine(&a, &b, f)),
        (Value::Array(a), Value::Number(n)) => {
            Value::Array(a.iter().map(|s| each(s, n, true)).collect())
        }
        (Value::Number(n), Value::Array(a)) => {
            Value::Array(a.iter().map(|s| each(s, n, false)).collect())
        }
        (Value::Array(a), Value::Series(s)) => {
            Value::Array(a.iter().map(|x| combine(x, &s, f)).collect())
        }
        (Value::Series(s), Value::Array(a)) => {
            Value::Array(a.iter().map(|x| combine(&s, x, f)).collect())
        }
        (Value::Array(_), Value::Array(_)) => {
            return Err("an array of time series cannot be combined with another array".into())
        }
    })
}

/// Per timestamp across an array, or over one series to a number.
fn aggregate(name: &str, v: Value) -> Result<Value, String> {
    let reduce = |vals: &[f64]| -> f64 {
        match name {
            "SUM" => vals.iter().sum(),
            "AVG" => vals.iter().sum::<f64>() / vals.len() as f64,
            "MIN" => vals.iter().copied().fold(f64::INFINITY, f64::min),
            "MAX" => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            _ => vals.len() as f64,
        }
    };
    match v {
        Value::Number(n) => Ok(Value::Number(reduce(&[n]))),
        Value::Series(s) => {
            let vals: Vec<f64> = s.values().copied().collect();
            if vals.is_empty() {
                return Ok(Value::Series(Series::new()));
            }
            Ok(Value::Number(reduce(&vals)))
        }
        Value::Array(a) => {
            let mut by_time: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            for s in &a {
                for (t, v) in s {
                    by_time.entry(*t).or_default().push(*v);
                }
            }
            Ok(Value::Series(
                by_time.into_iter().map(|(t, v)| (t, reduce(&v))).collect(),
            ))
        }
    }
}

fn fill(s: &Series, how: &Value, word: Option<&str>, grid: &[i64]) -> Result<Series, String> {
    let mut out = Series::new();
    for t in grid {
        if let Some(v) = s.get(t) {
            out.insert(*t, *v);
            continue;
        }
        let before = s.range(..*t).next_back();
        let after = s.range(*t + 1..).next();
        let v = match (word, how) {
            (Some("REPEAT"), _) => before.or(after).map(|(_, v)| *v),
            (Some("LINEAR"), _) => match (before, after) {
                (Some((t0, v0)), Some((t1, v1))) => {
                    Some(v0 + (v1 - v0) * (*t - t0) as f64 / (*t1 - *t0) as f64)
                }
                _ => before.or(after).map(|(_, v)| *v),
            },
            (None, Value::Number(n)) => Some(*n),
            _ => return Err("FILL takes a number, REPEAT or LINEAR".into()),
        };
        if let Some(v) = v {
            out.insert(*t, v);
        }
    }
    Ok(out)
}

fn eval(e: &Expr, env: &Env<'_>) -> Result<Value, String> {
    match e {
        Expr::Number(n) => Ok(Value::Number(*n)),
        Expr::Id(id) => env
            .values
            .get(id)
            .cloned()
            .ok_or_else(|| format!("Unrecognized identifier {id}")),
        Expr::Text(_) | Expr::Word(_) => Err("a word or string is not a value here".into()),
        Expr::Neg(a) => apply('*', eval(a, env)?, Value::Number(-1.0)),
        Expr::Op(op, a, b) => apply(*op, eval(a, env)?, eval(b, env)?),
        Expr::Array(items) => {
            let mut out = vec![];
            for i in items {
                match eval(i, env)? {
                    Value::Series(s) => out.push(s),
                    Value::Array(a) => out.extend(a),
                    Value::Number(_) => {
                        return Err("an array holds time series, not numbers".into())
                    }
                }
            }
            Ok(Value::Array(out))
        }
        Expr::Call(name, args) => {
            let one = |args: &[Expr]| -> Result<Value, String> {
                match args {
                    [a] => eval(a, env),
                    _ => Err(format!("{name} takes one argument")),
                }
            };
            match name.as_str() {
                "METRICS" => {
                    let filter = match args.as_slice() {
                        [] => None,
                        [Expr::Text(t)] => Some(t.as_str()),
                        _ => return Err("METRICS takes nothing or a string".into()),
                    };
                    let series = env
                        .metrics
                        .iter()
                        .filter(|(id, label)| {
                            filter.is_none_or(|f| id.contains(f) || label.contains(f))
                        })
                        .filter_map(|(id, _)| match env.values.get(id) {
                            Some(Value::Series(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .collect();
                    Ok(Value::Array(series))
                }
                "SUM" | "AVG" | "MIN" | "MAX" | "SAMPLE_COUNT" => {
                    let v = if args.len() > 1 {
                        eval(&Expr::Array(args.clone()), env)?
                    } else {
                        one(args)?
                    };
                    aggregate(name, v)
                }
                "ABS" | "FLOOR" | "CEIL" => {
                    let f = |x: f64| match name.as_str() {
                        "ABS" => x.abs(),
                        "FLOOR" => x.floor(),
                        _ => x.ceil(),
                    };
                    Ok(match one(args)? {
                        Value::Number(n) => Value::Number(f(n)),
                        Value::Series(s) => {
                            Value::Series(s.into_iter().map(|(t, v)| (t, f(v))).collect())
                        }
                        Value::Array(a) => Value::Array(
                            a.into_iter()
                                .map(|s| s.into_iter().map(|(t, v)| (t, f(v))).collect())
                                .collect(),
                        ),
                    })
                }
                "FILL" => {
                    let [what, how] = args.as_slice() else {
                        return Err("FILL takes two arguments".into());
                    };
                    let (word, how) = match how {
                        Expr::Word(w) => (Some(w.to_ascii_uppercase()), Value::Number(0.0)),
                        other => (None, eval(other, env)?),
                    };
                    match eval(what, env)? {
                        Value::Series(s) => {
                            Ok(Value::Series(fill(&s, &how, word.as_deref(), env.grid)?))
                        }
                        Value::Array(a) => Ok(Value::Array(
                            a.iter()
                                .map(|s| fill(s, &how, word.as_deref(), env.grid))
                                .collect::<Result<_, _>>()?,
                        )),
                        Value::Number(_) => Err("FILL fills a time series".into()),
                    }
                }
                other => Err(format!("Unknown function {other}")),
            }
        }
    }
}

/// Evaluates expression queries in dependency order. `metrics` holds the
/// metric queries' series by id with their labels; `expressions` the
/// expression queries (id, text). Returns every expression's series, or
/// the first failing one's id and why.
pub fn evaluate_all(
    metrics: &[(String, String, Series)],
    expressions: &[(String, String)],
    grid: &[i64],
) -> Result<HashMap<String, Series>, (String, String)> {
    let mut values: HashMap<String, Value> = metrics
        .iter()
        .map(|(id, _, s)| (id.clone(), Value::Series(s.clone())))
        .collect();
    let labels: Vec<(String, String)> = metrics
        .iter()
        .map(|(id, label, _)| (id.clone(), label.clone()))
        .collect();
    let mut parsed = vec![];
    for (id, text) in expressions {
        let e = Expression::parse(text).map_err(|why| (id.clone(), why))?;
        if e.uses_metrics() && metrics.is_empty() {
            return Err((
                id.clone(),
                "METRICS() finds no metric in the request".into(),
            ));
        }
        parsed.push((id.clone(), e));
    }
    let mut out = HashMap::new();
    let mut pending = parsed;
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = vec![];
        for (id, e) in pending {
            let ready = e
                .ids()
                .iter()
                .all(|dep| values.contains_key(dep) || !expressions.iter().any(|(x, _)| x == dep));
            if !ready {
                still.push((id, e));
                continue;
            }
            let env = Env {
                values: &values,
                metrics: &labels,
                grid,
            };
            let series =
                match eval(&e.0, &env).map_err(|why| (id.clone(), why))? {
                    Value::Series(s) => s,
                    Value::Number(n) => grid.iter().map(|t| (*t, n)).collect(),
                    Value::Array(_) => return Err((
                        id,
                        "the expression gives several time series; wrap it in SUM, AVG, MIN or MAX"
                            .into(),
                    )),
                };
            values.insert(id.clone(), Value::Series(series.clone()));
            out.insert(id, series);
        }
        if still.len() == before {
            let (id, _) = &still[0];
            return Err((
                id.clone(),
                "the expressions refer to each other in a circle".into(),
            ));
        }
        pending = still;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, f64)]) -> Series {
        points.iter().copied().collect()
    }

    #[test]
    fn backlog_per_task_and_array_functions() {
        let grid = [0, 60, 120];
        let metrics = vec![
            (
                "visible".to_string(),
                "visible".to_string(),
                series(&[(0, 300.0), (60, 150.0), (120, 0.0)]),
            ),
            (
                "tasks".to_string(),
                "tasks".to_string(),
                series(&[(0, 3.0), (60, 3.0)]),
            ),
        ];
        let out = evaluate_all(
            &metrics,
            &[
                ("backlog".into(), "visible / FILL(tasks, REPEAT)".into()),
                ("total".into(), "SUM(METRICS())".into()),
                ("scaled".into(), "-(backlog - 10) * 2 ^ 2".into()),
                ("avg".into(), "AVG([visible, tasks])".into()),
                ("peak".into(), "MAX(visible)".into()),
                ("zeroes".into(), "FILL(tasks, 0)".into()),
                ("line".into(), "FILL(m_gap, LINEAR)".into()),
            ]
            .into_iter()
            .filter(|(id, _)| id != "line")
            .collect::<Vec<_>>(),
            &grid,
        )
        .expect("evaluates");
        assert_eq!(
            out["backlog"],
            series(&[(0, 100.0), (60, 50.0), (120, 0.0)])
        );
        assert_eq!(out["total"], series(&[(0, 303.0), (60, 153.0), (120, 0.0)]));
        assert_eq!(
            out["scaled"],
            series(&[(0, -360.0), (60, -160.0), (120, 40.0)])
        );
        assert_eq!(out["avg"][&0], 151.5);
        assert_eq!(
            out["peak"],
            series(&[(0, 300.0), (60, 300.0), (120, 300.0)])
        );
        assert_eq!(out["zeroes"][&120], 0.0);
        let gap = vec![(
            "m_gap".to_string(),
            "g".to_string(),
            series(&[(0, 0.0), (120, 10.0)]),
        )];
        let out = evaluate_all(
            &gap,
            &[("line".into(), "FILL(m_gap, LINEAR)".into())],
            &grid,
        )
        .expect("fills");
        assert_eq!(out["line"][&60], 5.0);
    }

    #[test]
    fn bad_expressions_say_which_query_and_why() {
        let m = vec![("m1".to_string(), "m1".to_string(), series(&[(0, 1.0)]))];
        let err = |text: &str| {
            evaluate_all(&m, &[("e1".into(), text.into())], &[0]).expect_err("refused")
        };
        assert_eq!(
            err("m1 +"),
            ("e1".into(), "the expression ends too soon".into())
        );
        assert_eq!(err("m2 * 2").1, "Unrecognized identifier m2");
        assert_eq!(err("NOPE(m1)").1, "Unknown function NOPE");
        assert!(err("METRICS()").1.contains("several time series"));
        let circle = evaluate_all(
            &m,
            &[("a".into(), "b + 1".into()), ("b".into(), "a + 1".into())],
            &[0],
        );
        assert!(circle.expect_err("circle").1.contains("circle"));
    }
}
