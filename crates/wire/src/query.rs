//! The awsQuery protocol (STS, ELBv2): form-encoded parameters in, XML out.
//!
//! Both directions follow the botocore model's shapes (generated into
//! tables by the build script): `Names.member.1`, `Tags.member.2.Key` and
//! `<Names><member>..</member></Names>` are how the protocol lays out lists
//! and structures, so decoding goes form -> JSON value -> generated type,
//! and encoding generated type -> JSON value -> XML.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

/// The layout of one model shape.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Members: (name in the types, shape, name in XML, name in forms).
    Structure(&'static [(&'static str, &'static str, &'static str, &'static str)]),
    /// (member shape, item name, flattened): a flattened list's items
    /// stand directly in the parent under the member's wire name
    /// (`AttributeName.1`, `<Message>..</Message><Message>..`), others are
    /// wrapped (`Names.member.1`, `<Names><member>..`).
    List(&'static str, &'static str, bool),
    /// (key shape, value shape, key name, value name, flattened).
    Map(&'static str, &'static str, &'static str, &'static str, bool),
    Text,
    Integer,
    Double,
    Boolean,
    /// A timestamp of a model whose types are JSON's: ISO 8601 text on
    /// the form and in XML, epoch seconds in the types.
    Timestamp,
}

/// A served awsQuery model: its shape tables, as the build script generated them.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub shapes: &'static [(&'static str, Shape)],
    /// (operation, input shape, output shape)
    pub operations: &'static [(&'static str, &'static str, &'static str)],
    pub namespace: &'static str,
    /// EC2's dialect: every list in a form is `Name.N`, and responses have
    /// no result wrapper.
    pub ec2: bool,
}

/// A form parameter that does not fit its member's type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Invalid value '{value}' for {field}: expected {expected}")]
pub struct DecodeError {
    /// The parameter's name as sent, e.g. `Targets.member.1.Port`.
    pub field: String,
    pub value: String,
    pub expected: &'static str,
}

impl Model {
    fn shape(&self, name: &str) -> Option<Shape> {
        self.shapes
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| self.shapes[i].1)
    }

    fn io(&self, operation: &str) -> Option<(&'static str, &'static str)> {
        self.operations
            .iter()
            .find(|(n, _, _)| *n == operation)
            .map(|(_, i, o)| (*i, *o))
    }

    /// Decodes an operation's input from its form parameters. Members the
    /// model does not know are ignored, as JSON 1.1 decoding ignores them.
    pub fn decode<T: DeserializeOwned>(
        &self,
        operation: &str,
        params: &QueryParams,
    ) -> Result<T, DecodeError> {
        let input = self.io(operation).map(|(i, _)| i).unwrap_or_default();
        let value = match self.shape(input) {
            Some(_) => self.value(input, "", params)?,
            None => None,
        };
        let value = value.unwrap_or_else(|| Value::Object(Map::new()));
        serde_path_to_error::deserialize(value).map_err(|e| DecodeError {
            field: e.path().to_string(),
            value: String::new(),
            expected: "a value of the member's type",
        })
    }

    fn value(
        &self,
        shape: &str,
        path: &str,
        params: &QueryParams,
    ) -> Result<Option<Value>, DecodeError> {
        let join = |m: &str| {
            if path.is_empty() {
                m.to_string()
            } else {
                format!("{path}.{m}")
            }
        };
        let bad = |expected| DecodeError {
            field: path.to_string(),
            value: params.get(path).unwrap_or_default().to_string(),
            expected,
        };
        let Some(kind) = self.shape(shape) else {
            return Ok(None);
        };
        match kind {
            Shape::Structure(members) => {
                if !path.is_empty() && !params.has_under(path) {
                    return Ok(None);
                }
                let mut obj = Map::new();
                for (member, target, _, wire) in members {
                    if let Some(v) = self.value(target, &join(wire), params)? {
                        obj.insert((*member).to_string(), v);
                    }
                }
                Ok(Some(Value::Object(obj)))
            }
            Shape::List(member, item, flattened) => {
                let mut items = vec![];
                let at = |i: usize| {
                    if flattened || self.ec2 {
                        format!("{path}.{i}")
                    } else {
                        format!("{path}.{item}.{i}")
                    }
                };
                while let Some(v) = self.value(member, &at(items.len() + 1), params)? {
                    items.push(v);
                }
                // botocore sends an empty list as the bare name with no value.
                let given = !items.is_empty() || params.get(path).is_some();
                Ok(given.then_some(Value::Array(items)))
            }
            Shape::Map(key, value, key_name, value_name, flattened) => {
                let mut obj = Map::new();
                for i in 1.. {
                    let entry = if flattened {
                        format!("{path}.{i}")
                    } else {
                        format!("{path}.entry.{i}")
                    };
                    let Some(Value::String(k)) =
                        self.value(key, &format!("{entry}.{key_name}"), params)?
                    else {
                        break;
                    };
                    let v = self.value(value, &format!("{entry}.{value_name}"), params)?;
                    obj.insert(k, v.unwrap_or(Value::Null));
                }
                Ok((!obj.is_empty()).then_some(Value::Object(obj)))
            }
            Shape::Text => Ok(params.get(path).map(|s| Value::String(s.to_string()))),
            Shape::Integer => params
                .get(path)
                .map(|s| {
                    s.trim()
                        .parse::<i64>()
                        .map(|n| Value::Number(n.into()))
                        .map_err(|_| bad("an integer"))
                })
                .transpose(),
            Shape::Double => params
                .get(path)
                .map(|s| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| bad("a number"))
                })
                .transpose(),
            Shape::Timestamp => params
                .get(path)
                .map(|s| {
                    parse_timestamp(s.trim())
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| bad("an ISO 8601 timestamp"))
                })
                .transpose(),
            Shape::Boolean => params
                .get(path)
                .map(|s| match s.trim() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(bad("true or false")),
                })
                .transpose(),
        }
    }

    /// The XML body of an operation's result (what goes inside
    /// `<{operation}Result>`).
    pub fn encode<T: Serialize>(&self, operation: &str, output: &T) -> String {
        let mut out = String::new();
        if let (Some((_, shape)), Ok(value)) = (self.io(operation), serde_json::to_value(output)) {
            if let Some(Shape::Structure(members)) = self.shape(shape) {
                self.members(members, &value, &mut out);
            }
        }
        out
    }

    /// A whole successful response.
    pub fn respond<T: Serialize>(&self, operation: &str, output: &T, request_id: &str) -> String {
        if self.ec2 {
            return format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{operation}Response xmlns=\"{}\"><requestId>{}</requestId>{}</{operation}Response>",
                self.namespace,
                escape(request_id),
                self.encode(operation, output)
            );
        }
        success(
            operation,
            self.namespace,
            &self.encode(operation, output),
            request_id,
        )
    }

    fn members(&self, members: &[(&str, &str, &str, &str)], value: &Value, out: &mut String) {
        for (member, target, wire, _) in members {
            let Some(v) = value.get(*member).filter(|v| !v.is_null()) else {
                continue;
            };
            match (self.shape(target), v) {
                (Some(Shape::List(item_shape, _, true)), Value::Array(items)) => {
                    for item in items {
                        out.push_str(&format!("<{wire}>"));
                        self.xml(item_shape, item, out);
                        out.push_str(&format!("</{wire}>"));
                    }
                }
                (Some(Shape::Map(_, v_shape, k, v_name, true)), Value::Object(entries)) => {
                    for (key, item) in entries {
                        out.push_str(&format!("<{wire}><{k}>{}</{k}><{v_name}>", escape(key)));
                        self.xml(v_shape, item, out);
                        out.push_str(&format!("</{v_name}></{wire}>"));
                    }
                }
                _ => {
                    out.push_str(&format!("<{wire}>"));
                    self.xml(target, v, out);
                    out.push_str(&format!("</{wire}>"));
                }
            }
        }
    }

    fn xml(&self, shape: &str, value: &Value, out: &mut String) {
        match (self.shape(shape), value) {
            (Some(Shape::Structure(members)), _) => self.members(members, value, out),
            (Some(Shape::List(member, name, _)), Value::Array(items)) => {
                for item in items {
                    out.push_str(&format!("<{name}>"));
                    self.xml(member, item, out);
                    out.push_str(&format!("</{name}>"));
                }
            }
            (Some(Shape::Map(_, v, k_name, v_name, _)), Value::Object(entries)) => {
                for (k, item) in entries {
                    out.push_str(&format!(
                        "<entry><{k_name}>{}</{k_name}><{v_name}>",
                        escape(k)
                    ));
                    self.xml(v, item, out);
                    out.push_str(&format!("</{v_name}></entry>"));
                }
            }
            (Some(Shape::Timestamp), Value::Number(n)) => {
                out.push_str(&format_timestamp(n.as_f64().unwrap_or_default()))
            }
            (_, Value::String(s)) => out.push_str(&escape(s)),
            (_, Value::Number(n)) => out.push_str(&n.to_string()),
            (_, Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            _ => {}
        }
    }
}

/// Epoch seconds of an ISO 8601 timestamp (`2026-12-07T10:00:00Z`, with
/// fractions or an offset) or of a number of seconds.
pub fn parse_timestamp(text: &str) -> Option<f64> {
    if let Ok(n) = text.parse::<f64>() {
        return n.is_finite().then_some(n);
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .or_else(|_| {
            // Without an offset: UTC, as AWS reads it.
            time::OffsetDateTime::parse(
                &format!("{text}Z"),
                &time::format_description::well_known::Rfc3339,
            )
        })
        .ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// ISO 8601 in UTC, with milliseconds when the time has them, as AWS's
/// query services write timestamps.
pub fn format_timestamp(epoch: f64) -> String {
    // Whole milliseconds, rounded: nanoseconds of an f64 epoch are noise.
    let millis = (epoch * 1000.0).round() as i64;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)) else {
        return String::new();
    };
    let ms = millis.rem_euclid(1000);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    if ms == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

/// Decoded form parameters of an awsQuery request (`Action`, `Version`, and
/// flattened members such as `Names.member.1`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueryParams(pub BTreeMap<String, String>);

impl QueryParams {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        QueryParams(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The operation name.
    pub fn action(&self) -> Option<&str> {
        self.get("Action")
    }

    /// Whether any parameter is `path` itself or lies under `path.`.
    fn has_under(&self, path: &str) -> bool {
        self.0
            .range(path.to_string()..)
            .take_while(|(k, _)| k.starts_with(path))
            .any(|(k, _)| k.len() == path.len() || k[path.len()..].starts_with('.'))
    }
}

/// Escapes text for an XML element body or attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A successful awsQuery response: `<{action}Response><{action}Result>..`.
/// `result_xml` must already be escaped.
pub fn success(action: &str, namespace: &str, result_xml: &str, request_id: &str) -> String {
    format!(
        "<{action}Response xmlns=\"{namespace}\"><{action}Result>{result_xml}</{action}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    )
}

/// An awsQuery error response. `sender` is true for client faults.
pub fn error(namespace: &str, code: &str, message: &str, sender: bool, request_id: &str) -> String {
    let kind = if sender { "Sender" } else { "Receiver" };
    format!(
        "<ErrorResponse xmlns=\"{namespace}\"><Error><Type>{kind}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

/// An EC2 error response.
pub fn ec2_error(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_decodes_form_members() {
        let p =
            QueryParams::parse(b"Action=GetCallerIdentity&Version=2011-06-15&Names.member.1=a%20b");
        assert_eq!(p.action(), Some("GetCallerIdentity"));
        assert_eq!(p.get("Names.member.1"), Some("a b"));
        assert_eq!(p.get("Missing"), None);
    }

    use crate::elbv2::{self as e, MODEL};

    #[test]
    fn decode_follows_the_model_layout() {
        let p = QueryParams::parse(
            b"Action=RegisterTargets&TargetGroupArn=arn&Targets.member.1.Id=10.0.0.5\
              &Targets.member.1.Port=8080&Targets.member.2.Id=i-1&Unknown=x",
        );
        let input: e::RegisterTargetsInput = MODEL.decode("RegisterTargets", &p).expect("present");
        let targets = input.targets.expect("present");
        assert_eq!(input.target_group_arn.as_deref(), Some("arn"));
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].port, Some(8080));
        assert_eq!(targets[1].id.as_deref(), Some("i-1"));
        assert_eq!(targets[1].port, None);

        let p = QueryParams::parse(b"Action=CreateTargetGroup&Name=web&Matcher.HttpCode=200-299&HealthCheckEnabled=true&Tags.member.1.Key=k&Tags.member.1.Value=v");
        let input: e::CreateTargetGroupInput =
            MODEL.decode("CreateTargetGroup", &p).expect("present");
        assert_eq!(
            input.matcher.expect("present").http_code.as_deref(),
            Some("200-299")
        );
        assert_eq!(input.health_check_enabled, Some(true));
        assert_eq!(input.tags.expect("present")[0].value.as_deref(), Some("v"));

        // An empty list is the bare name.
        let p = QueryParams::parse(b"Action=DescribeLoadBalancers&Names=");
        let input: e::DescribeLoadBalancersInput =
            MODEL.decode("DescribeLoadBalancers", &p).expect("present");
        assert_eq!(input.names, Some(vec![]));
    }

    #[test]
    fn decode_names_a_member_of_the_wrong_type() {
        let p = QueryParams::parse(
            b"Action=RegisterTargets&Targets.member.1.Id=a&Targets.member.1.Port=http",
        );
        let err = MODEL
            .decode::<e::RegisterTargetsInput>("RegisterTargets", &p)
            .expect_err("refused");
        assert_eq!(err.field, "Targets.member.1.Port");
        assert_eq!(err.value, "http");
    }

    #[test]
    fn encode_writes_members_lists_and_escapes() {
        let out = e::DescribeTargetHealthOutput {
            target_health_descriptions: Some(vec![e::TargetHealthDescription {
                target: Some(e::TargetDescription {
                    id: Some("10.0.0.5".into()),
                    port: Some(80),
                    ..Default::default()
                }),
                target_health: Some(e::TargetHealth {
                    state: Some("unhealthy".into()),
                    description: Some("<500>".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
        };
        assert_eq!(
            MODEL.encode("DescribeTargetHealth", &out),
            "<TargetHealthDescriptions><member><Target><Id>10.0.0.5</Id><Port>80</Port></Target>\
             <TargetHealth><Description>&lt;500&gt;</Description><State>unhealthy</State></TargetHealth>\
             </member></TargetHealthDescriptions>"
        );
    }

    #[test]
    fn timestamps_of_json_typed_models_travel_as_iso_8601() {
        use crate::cloudwatch as cw;
        let p = QueryParams::parse(
            b"Action=GetMetricStatistics&Namespace=N&MetricName=M&StartTime=2026-12-07T10%3A00%3A00Z\
              &EndTime=2026-12-07T10%3A05%3A00.500%2B01%3A00&Period=60&Statistics.member.1=Average",
        );
        let input: cw::GetMetricStatisticsInput = cw::MODEL
            .decode("GetMetricStatistics", &p)
            .expect("decoded");
        let start = input.start_time.expect("start");
        assert_eq!(start, 1_796_637_600.0);
        assert_eq!(input.end_time, Some(start + 300.5 - 3600.0));
        let out = cw::GetMetricStatisticsOutput {
            datapoints: Some(vec![cw::Datapoint {
                timestamp: Some(start),
                average: Some(1.5),
                ..Default::default()
            }]),
            label: Some("M".into()),
        };
        assert_eq!(
            cw::MODEL.encode("GetMetricStatistics", &out),
            "<Datapoints><member><Average>1.5</Average><Timestamp>2026-12-07T10:00:00Z</Timestamp></member></Datapoints><Label>M</Label>"
        );
        assert_eq!(format_timestamp(start + 0.25), "2026-12-07T10:00:00.250Z");
        let bad = QueryParams::parse(b"Action=GetMetricStatistics&StartTime=yesterday");
        let err = cw::MODEL
            .decode::<cw::GetMetricStatisticsInput>("GetMetricStatistics", &bad)
            .expect_err("refused");
        assert_eq!(err.field, "StartTime");
    }

    #[test]
    fn flattened_members_use_their_wire_names() {
        use crate::sqs as q;
        let p = QueryParams::parse(
            b"Action=CreateQueue&QueueName=jobs&Attribute.1.Name=VisibilityTimeout\
              &Attribute.1.Value=40&Tag.1.Key=team&Tag.1.Value=a",
        );
        let input: q::CreateQueueRequest = q::MODEL.decode("CreateQueue", &p).expect("decoded");
        assert_eq!(
            input.attributes.expect("attributes")["VisibilityTimeout"],
            "40"
        );
        assert_eq!(input.tags.expect("tags")["team"], "a");
        let p = QueryParams::parse(
            b"Action=ReceiveMessage&QueueUrl=u&AttributeName.1=All&MessageAttributeName.1=k",
        );
        let input: q::ReceiveMessageRequest =
            q::MODEL.decode("ReceiveMessage", &p).expect("decoded");
        assert_eq!(input.attribute_names, Some(vec!["All".to_string()]));
        assert_eq!(input.message_attribute_names, Some(vec!["k".to_string()]));
        let out = q::ReceiveMessageResult {
            messages: Some(vec![q::Message {
                body: Some("b".into()),
                attributes: Some([("SenderId".to_string(), "x".to_string())].into()),
                ..Default::default()
            }]),
        };
        assert_eq!(
            q::MODEL.encode("ReceiveMessage", &out),
            "<Message><Attribute><Name>SenderId</Name><Value>x</Value></Attribute><Body>b</Body></Message>"
        );
        let out = q::ListQueuesResult {
            queue_urls: Some(vec!["a".into(), "b".into()]),
            next_token: None,
        };
        assert_eq!(
            q::MODEL.encode("ListQueues", &out),
            "<QueueUrl>a</QueueUrl><QueueUrl>b</QueueUrl>"
        );
    }

    #[test]
    fn ec2_forms_and_responses_follow_its_dialect() {
        use crate::ec2 as e;
        let p = QueryParams::parse(
            b"Action=CreateLaunchTemplate&LaunchTemplateName=web&LaunchTemplateData.InstanceType=t3.micro\
              &TagSpecification.1.ResourceType=launch-template&TagSpecification.1.Tag.1.Key=k\
              &TagSpecification.1.Tag.1.Value=v&LaunchTemplateData.SecurityGroupId.1=sg-1",
        );
        let input: e::CreateLaunchTemplateRequest = e::MODEL
            .decode("CreateLaunchTemplate", &p)
            .expect("decoded");
        let data = input.launch_template_data.expect("data");
        assert_eq!(data.instance_type.as_deref(), Some("t3.micro"));
        assert_eq!(data.security_group_ids, Some(vec!["sg-1".to_string()]));
        let spec = &input.tag_specifications.expect("tags")[0];
        assert_eq!(
            spec.tags.as_ref().expect("tags")[0].value.as_deref(),
            Some("v")
        );
        let out = e::CreateLaunchTemplateResult {
            launch_template: Some(e::LaunchTemplate {
                launch_template_id: Some("lt-1".into()),
                tags: Some(vec![e::Tag {
                    key: Some("k".into()),
                    value: Some("v".into()),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let xml = e::MODEL.respond("CreateLaunchTemplate", &out, "r1");
        assert!(xml.contains("<CreateLaunchTemplateResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15\"><requestId>r1</requestId><launchTemplate><launchTemplateId>lt-1</launchTemplateId><tagSet><item><key>k</key><value>v</value></item></tagSet></launchTemplate></CreateLaunchTemplateResponse>"), "{xml}");
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&apos;x&apos;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn error_is_sender_or_receiver() {
        let x = error("ns", "Bad", "m<", true, "r");
        assert!(x.contains("<Type>Sender</Type><Code>Bad</Code><Message>m&lt;</Message>"));
        assert!(error("ns", "Bad", "m", false, "r").contains("Receiver"));
    }
}
