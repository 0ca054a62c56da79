//! AWS JSON 1.1: target parsing, input decoding and the error envelope.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Content type of AWS JSON 1.1 requests and responses.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Splits `X-Amz-Target` (`Prefix.Operation`) into its two halves.
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    let (prefix, op) = target.rsplit_once('.')?;
    if prefix.is_empty() || op.is_empty() {
        return None;
    }
    Some((prefix, op))
}

/// Why a request body could not be decoded into the operation's input shape.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The body is not a JSON object.
    #[error("{0}")]
    Malformed(String),
    /// A member has the wrong JSON type; `path` names it (`containerDefinitions[0].memory`).
    #[error("{path}: {message}")]
    WrongType { path: String, message: String },
}

/// Decodes a request body. An empty body counts as `{}` because some clients
/// send nothing for operations without input; unknown members are ignored.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // Input shapes are structures: anything but an object is malformed.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeError::Malformed(
            "Request body must be a JSON object".into(),
        ));
    }
    // One pass straight from the bytes, tracking the path for the message.
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            DecodeError::Malformed(format!("Malformed JSON: {inner}"))
        } else {
            DecodeError::WrongType {
                path,
                message: inner.to_string(),
            }
        }
    })?;
    de.end()
        .map_err(|e| DecodeError::Malformed(format!("Malformed JSON: {e}")))?;
    Ok(value)
}

/// Encodes an output shape. Unset members are left out, as AWS does.
pub fn encode<T: Serialize>(output: &T) -> Vec<u8> {
    // Serializing generated shapes (strings, numbers, maps with string keys) cannot fail.
    serde_json::to_vec(output).unwrap_or_else(|_| b"{}".to_vec())
}

/// The body of an AWS JSON 1.1 error. botocore reads `__type` and strips any
/// namespace, so the bare exception name is what every client understands.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorBody {
    #[serde(rename = "__type")]
    pub kind: String,
    pub message: String,
    /// Only `ConflictException` carries this.
    #[serde(rename = "resourceIds", skip_serializing_if = "Option::is_none")]
    pub resource_ids: Option<Vec<String>>,
}

/// Encodes the error body for `code` with `message`.
pub fn encode_error(code: &str, message: &str) -> Vec<u8> {
    encode(&ErrorBody {
        kind: code.to_string(),
        message: message.to_string(),
        resource_ids: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::{ContainerDefinition, RegisterTaskDefinitionRequest};

    #[test]
    fn split_target_takes_last_dot() {
        assert_eq!(
            split_target("AmazonEC2ContainerServiceV20141113.CreateCluster"),
            Some(("AmazonEC2ContainerServiceV20141113", "CreateCluster"))
        );
        assert_eq!(split_target("NoDot"), None);
        assert_eq!(split_target("Prefix."), None);
    }

    #[test]
    fn decode_ignores_unknown_members_and_accepts_empty_body() {
        let req: RegisterTaskDefinitionRequest =
            decode(br#"{"family":"web","clientToken":"x","containerDefinitions":[{"name":"a","bogus":1}]}"#)
                .expect("decodes");
        assert_eq!(req.family.as_deref(), Some("web"));
        let empty: RegisterTaskDefinitionRequest = decode(b"").expect("empty body is {}");
        assert_eq!(empty, RegisterTaskDefinitionRequest::default());
    }

    #[test]
    fn decode_wrong_type_names_the_path() {
        let err = decode::<RegisterTaskDefinitionRequest>(
            br#"{"family":"web","containerDefinitions":[{"name":"a","memory":"lots"}]}"#,
        )
        .expect_err("memory must be a number");
        match err {
            DecodeError::WrongType { path, .. } => {
                assert_eq!(path, "containerDefinitions[0].memory")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode::<RegisterTaskDefinitionRequest>(b"{nope"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode::<RegisterTaskDefinitionRequest>(b"[1]"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn encode_leaves_out_unset_members() {
        let c = ContainerDefinition {
            name: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(encode(&c), br#"{"name":"a"}"#.to_vec());
    }

    #[test]
    fn error_body_has_type_and_message() {
        let body: serde_json::Value = serde_json::from_slice(&encode_error(
            "ClusterNotFoundException",
            "Cluster not found.",
        ))
        .expect("json");
        assert_eq!(
            body,
            serde_json::json!({"__type":"ClusterNotFoundException","message":"Cluster not found."})
        );
    }
}
