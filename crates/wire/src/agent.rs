//! Berth's own agent protocol: the messages on the WebSocket an agent holds
//! to the server's gateway (`GET /agent/v1/connect`), as JSON text frames.
//!
//! The agent says hello, then sends a heartbeat at the interval the server
//! asks for. The server answers the hello with a welcome and pushes the
//! whole desired task set of the instance, with a revision, whenever it
//! changes (the set is empty until tasks exist). Missing heartbeats for the
//! server's timeout marks the agent disconnected.

use serde::{Deserialize, Serialize};

/// Path of the gateway on the API port.
pub const CONNECT_PATH: &str = "/agent/v1/connect";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// The first message on a connection.
    #[serde(rename_all = "camelCase")]
    Hello {
        cluster: String,
        container_instance_arn: String,
        agent_version: String,
    },
    Heartbeat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// How often the agent must send a heartbeat.
        heartbeat_interval_ms: u64,
        /// Silence longer than this and the agent counts as disconnected.
        timeout_ms: u64,
    },
    /// Everything that should run on the instance, as of `revision`.
    #[serde(rename_all = "camelCase")]
    Desired {
        revision: i64,
        tasks: Vec<DesiredTask>,
    },
    /// The server ends the connection; `message` says why.
    Refused { message: String },
}

/// One task the instance should run (filled in with the task runner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredTask {
    pub task_arn: String,
    pub desired_status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let hello = AgentMessage::Hello {
            cluster: "c".into(),
            container_instance_arn: "arn".into(),
            agent_version: "0.1.0".into(),
        };
        let text = serde_json::to_string(&hello).expect("encode");
        assert_eq!(
            text,
            r#"{"type":"hello","cluster":"c","containerInstanceArn":"arn","agentVersion":"0.1.0"}"#
        );
        assert_eq!(
            serde_json::from_str::<AgentMessage>(&text).ok(),
            Some(hello)
        );
        assert_eq!(
            serde_json::to_string(&AgentMessage::Heartbeat).expect("encode"),
            r#"{"type":"heartbeat"}"#
        );
        let desired: ServerMessage =
            serde_json::from_str(r#"{"type":"desired","revision":7,"tasks":[]}"#).expect("decode");
        assert_eq!(
            desired,
            ServerMessage::Desired {
                revision: 7,
                tasks: vec![]
            }
        );
    }
}
