//! Generates serde types for every shape of the vendored botocore models so
//! that field names and types are exactly what real AWS clients send and
//! expect. Hand-written code is for behaviour, not for transcribing shapes.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

// One entry per served model. IAM's, SSM's, Secrets Manager's, Logs' and
// CloudWatch's are trimmed to the operations Berth serves
// (scripts/vendor-model.py).
const MODELS: &[(&str, &str)] = &[
    ("ecs-2014-11-13.json", "ecs"),
    ("elasticloadbalancingv2-2015-12-01.json", "elbv2"),
    ("iam-2010-05-08.json", "iam"),
    ("ssm-2014-11-06.json", "ssm"),
    ("secretsmanager-2017-10-17.json", "secretsmanager"),
    ("logs-2014-03-28.json", "logs"),
    ("cloudwatch-2010-08-01.json", "cloudwatch"),
    ("sqs-2012-11-05.json", "sqs"),
    ("ec2-2016-11-15.json", "ec2"),
    ("autoscaling-2011-01-01.json", "autoscaling"),
    (
        "application-autoscaling-2016-02-06.json",
        "application_autoscaling",
    ),
];

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for (model, module) in MODELS {
        let path = Path::new("../../models").join(model);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("vendored model is readable");
        let json: Value = serde_json::from_str(&text).expect("vendored model is JSON");
        let code = generate(&json);
        std::fs::write(Path::new(&out_dir).join(format!("{module}.rs")), code)
            .expect("OUT_DIR is writable");
    }
}

fn rust_field_name(member: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = member.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = i + 1 < chars.len() && chars[i + 1].is_ascii_lowercase();
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    match out.as_str() {
        "type" | "return" | "override" | "match" | "ref" | "mod" | "move" | "loop" | "in"
        | "use" | "self" | "enum" | "struct" => {
            format!("r#{out}")
        }
        _ => out,
    }
}

fn const_name(shape: &str) -> String {
    let snake = rust_field_name(shape);
    snake.trim_start_matches("r#").to_ascii_uppercase()
}

struct Gen<'a> {
    shapes: &'a serde_json::Map<String, Value>,
    /// awsQuery (XML) rather than JSON 1.1: timestamps travel as ISO 8601 text.
    query: bool,
}

impl Gen<'_> {
    fn kind(&self, name: &str) -> &str {
        self.shapes[name]["type"]
            .as_str()
            .expect("shape has a type")
    }

    fn rust_type(&self, name: &str) -> String {
        let shape = &self.shapes[name];
        match self.kind(name) {
            "structure" => name.to_string(),
            "string" | "blob" => "String".into(),
            "integer" => "i32".into(),
            "long" => "i64".into(),
            "double" | "float" => "f64".into(),
            "boolean" => "bool".into(),
            // ISO 8601 text in XML; epoch seconds, fractions allowed, in JSON 1.1.
            "timestamp" if self.query => "String".into(),
            "timestamp" => "f64".into(),
            "list" => format!(
                "Vec<{}>",
                self.rust_type(shape["member"]["shape"].as_str().expect("list member"))
            ),
            "map" => format!(
                "std::collections::BTreeMap<String, {}>",
                self.rust_type(shape["value"]["shape"].as_str().expect("map value"))
            ),
            other => panic!("unsupported shape type {other} for {name}"),
        }
    }

    /// Structures reachable from themselves through direct (non-list, non-map)
    /// structure members need a Box to have a finite size.
    fn direct_struct_refs(&self, name: &str) -> Vec<String> {
        let shape = &self.shapes[name];
        let mut out = vec![];
        if let Some(members) = shape["members"].as_object() {
            for m in members.values() {
                let target = m["shape"].as_str().expect("member shape");
                if self.kind(target) == "structure" {
                    out.push(target.to_string());
                }
            }
        }
        out
    }

    fn reaches(&self, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
        for next in self.direct_struct_refs(from) {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) && self.reaches(&next, to, seen) {
                return true;
            }
        }
        false
    }
}

fn generate(model: &Value) -> String {
    let shapes = model["shapes"].as_object().expect("model has shapes");
    let ec2 = model["metadata"]["protocol"] == "ec2";
    let query = model["metadata"]["protocol"] == "query" || ec2;
    // Served over JSON and, for older clients, awsQuery (CloudWatch, SQS):
    // JSON's types, and the query tables with timestamps converted.
    let compatible = !query
        && model["metadata"].get("awsQueryCompatible").is_some()
        && model["metadata"]["protocols"]
            .as_array()
            .is_some_and(|p| p.iter().any(|v| v == "query"));
    let gen = Gen { shapes, query };
    let mut out = String::new();
    let mut enums: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut exceptions = vec![];

    for (name, shape) in shapes {
        match gen.kind(name) {
            "structure" => {
                if shape.get("exception").and_then(Value::as_bool) == Some(true) {
                    exceptions.push(name.clone());
                }
                writeln!(out, "/// botocore shape `{name}`.").ok();
                writeln!(out, "#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]").ok();
                writeln!(out, "pub struct {name} {{").ok();
                let members = shape["members"].as_object().cloned().unwrap_or_default();
                for (member, spec) in &members {
                    let target = spec["shape"].as_str().expect("member shape");
                    let mut ty = gen.rust_type(target);
                    if gen.kind(target) == "structure"
                        && gen.reaches(target, name, &mut BTreeSet::new())
                    {
                        ty = format!("Box<{ty}>");
                    }
                    writeln!(
                        out,
                        "    #[serde(rename = \"{member}\", default, skip_serializing_if = \"Option::is_none\")]\n    pub {}: Option<{ty}>,",
                        rust_field_name(member)
                    )
                    .ok();
                }
                writeln!(out, "}}\n").ok();
            }
            "string" => {
                if let Some(values) = shape.get("enum").and_then(Value::as_array) {
                    enums.insert(
                        name.clone(),
                        values
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }

    writeln!(
        out,
        "/// Allowed values of every enum shape, for validation that names the field."
    )
    .ok();
    writeln!(out, "pub mod enums {{").ok();
    for (name, values) in &enums {
        let list = values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "    /// botocore enum `{name}`.\n    pub const {}: &[&str] = &[{list}];",
            const_name(name)
        )
        .ok();
    }
    writeln!(out, "}}\n").ok();

    let ops = model["operations"]
        .as_object()
        .expect("model has operations");
    let names = ops
        .keys()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(out, "/// Every operation the model defines, in name order.\npub const OPERATIONS: &[&str] = &[{names}];").ok();
    let exc = exceptions
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(
        out,
        "/// Every modeled exception shape.\npub const EXCEPTIONS: &[&str] = &[{exc}];"
    )
    .ok();
    let meta = &model["metadata"];
    let signing = meta["signingName"]
        .as_str()
        .or(meta["endpointPrefix"].as_str())
        .expect("model names its endpoint");
    writeln!(
        out,
        "/// The service of this model's SigV4 credential scope.\npub const SIGNING_NAME: &str = {signing:?};"
    )
    .ok();
    if query || compatible {
        write_query_tables(&mut out, model, &gen);
    }
    if !query {
        let target = model["metadata"]["targetPrefix"]
            .as_str()
            .expect("json model has targetPrefix");
        writeln!(out, "/// The `X-Amz-Target` prefix of this service.\npub const TARGET_PREFIX: &str = {target:?};").ok();
    }
    out
}

fn flattened(shape: &Value) -> bool {
    shape["flattened"].as_bool().unwrap_or(false)
}

/// A structure member's name in an EC2 request form: its `queryName`,
/// else its `locationName` capitalized, else its name (botocore's
/// EC2Serializer).
fn ec2_input_name(member: &str, spec: &Value) -> String {
    if let Some(q) = spec["queryName"].as_str() {
        return q.to_string();
    }
    match spec["locationName"].as_str() {
        Some(l) => {
            let mut c = l.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
        None => member.to_string(),
    }
}

/// A structure member's name on the awsQuery wire, as botocore lays it
/// out: a flattened list's items carry their own name, else the member's
/// `locationName`, else the member's name.
fn wire_name(gen: &Gen, member: &str, spec: &Value) -> String {
    let target = &gen.shapes[spec["shape"].as_str().expect("shape ref")];
    if flattened(target) {
        if let Some(n) = target["member"]["locationName"].as_str() {
            return n.to_string();
        }
    }
    spec["locationName"].as_str().unwrap_or(member).to_string()
}

/// What the awsQuery codec needs at run time: every shape's structure (the
/// XML and form layouts follow it), each operation's input and output, and
/// each error's code and status.
fn write_query_tables(out: &mut String, model: &Value, gen: &Gen) {
    let meta = &model["metadata"];
    let ec2 = meta["protocol"] == "ec2";
    let s = |v: &Value| v.as_str().expect("metadata is text").to_string();
    writeln!(
        out,
        "/// The XML namespace of responses.\npub const XML_NAMESPACE: &str = {:?};\n/// The `Version` requests carry.\npub const API_VERSION: &str = {:?};",
        s(&meta["xmlNamespace"]),
        s(&meta["apiVersion"])
    )
    .ok();
    writeln!(
        out,
        "/// Whether this is EC2's dialect of the query protocol.\npub const EC2_PROTOCOL: bool = {ec2};"
    )
    .ok();
    writeln!(out, "/// Every shape of the model, by name (sorted).\npub static SHAPES: &[(&str, crate::query::Shape)] = &[").ok();
    let mut names: Vec<&String> = gen.shapes.keys().collect();
    names.sort();
    for name in names {
        let shape = &gen.shapes[name];
        let target = |v: &Value| format!("{:?}", v["shape"].as_str().expect("shape ref"));
        let kind = match gen.kind(name) {
            "structure" => {
                let members = shape["members"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let out = wire_name(gen, k, v);
                                let input = if ec2 {
                                    ec2_input_name(k, v)
                                } else {
                                    out.clone()
                                };
                                format!("({k:?}, {}, {out:?}, {input:?})", target(v))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                format!("Structure(&[{members}])")
            }
            "list" => format!(
                "List({}, {:?}, {})",
                target(&shape["member"]),
                shape["member"]["locationName"].as_str().unwrap_or("member"),
                flattened(shape)
            ),
            "map" => format!(
                "Map({}, {}, {:?}, {:?}, {})",
                target(&shape["key"]),
                target(&shape["value"]),
                shape["key"]["locationName"].as_str().unwrap_or("key"),
                shape["value"]["locationName"].as_str().unwrap_or("value"),
                flattened(shape)
            ),
            "integer" | "long" => "Integer".into(),
            "double" | "float" => "Double".into(),
            "boolean" => "Boolean".into(),
            "timestamp" if !gen.query => "Timestamp".into(),
            _ => "Text".into(),
        };
        writeln!(out, "    ({name:?}, crate::query::Shape::{kind}),").ok();
    }
    writeln!(out, "];").ok();
    let ops = model["operations"]
        .as_object()
        .expect("model has operations");
    writeln!(out, "/// Each operation's input and output shapes.\npub static OPERATION_SHAPES: &[(&str, &str, &str)] = &[").ok();
    for (name, op) in ops {
        let io = |k: &str| op[k]["shape"].as_str().unwrap_or_default().to_string();
        writeln!(
            out,
            "    ({name:?}, {:?}, {:?}),",
            io("input"),
            io("output")
        )
        .ok();
    }
    writeln!(out, "];").ok();
    writeln!(out, "/// Each exception shape's error code, HTTP status and whether the sender is at fault.\npub static ERRORS: &[(&str, &str, u16, bool)] = &[").ok();
    for (name, shape) in gen.shapes {
        if let Some(e) = shape.get("error") {
            writeln!(
                out,
                "    ({name:?}, {:?}, {}, {}),",
                e["code"].as_str().unwrap_or(name),
                e["httpStatusCode"].as_u64().unwrap_or(400),
                e["senderFault"].as_bool().unwrap_or(false)
            )
            .ok();
        }
    }
    writeln!(out, "];").ok();
}
