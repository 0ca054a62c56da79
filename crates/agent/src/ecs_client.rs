//! The few ECS API calls the agent makes itself (registration), over
//! plain HTTP/1.1 to the server's JSON 1.1 endpoint.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EcsError {
    /// The server answered with an ECS exception.
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    /// The server could not be reached.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The answer was not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

#[derive(Clone)]
pub struct EcsClient {
    url: String,
    region: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl EcsClient {
    pub fn new(server: &str, region: &str) -> EcsClient {
        EcsClient {
            url: format!("{}/", server.trim_end_matches('/')),
            region: region.to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// An `Authorization` header whose credential scope carries the region,
    /// which is how the server picks the region (signatures are not checked).
    pub fn authorization(&self) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=berth-agent/20260101/{}/ecs/aws4_request, SignedHeaders=host, Signature=0",
            self.region
        )
    }

    async fn send(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(hyper::StatusCode, Bytes), EcsError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| EcsError::Unreachable(with_causes(&e)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| EcsError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// GETs one of Berth's own JSON routes (`/berth/v1/...`), in this
    /// client's region.
    pub async fn get_json<O: DeserializeOwned>(&self, path: &str) -> Result<O, EcsError> {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let req = hyper::Request::get(&url)
            .header("authorization", self.authorization())
            .body(Full::new(Bytes::new()))
            .map_err(|e| EcsError::Protocol(e.to_string()))?;
        let (status, bytes) = self.send(req).await?;
        if !status.is_success() {
            return Err(EcsError::Api {
                code: status.to_string(),
                message: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| EcsError::Protocol(e.to_string()))
    }

    pub async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        operation: &str,
        input: &I,
    ) -> Result<O, EcsError> {
        let body = serde_json::to_vec(input).map_err(|e| EcsError::Protocol(e.to_string()))?;
        let req = hyper::Request::post(&self.url)
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{operation}"),
            )
            .header("content-type", "application/x-amz-json-1.1")
            .header("authorization", self.authorization())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| EcsError::Protocol(e.to_string()))?;
        let (status, bytes) = self.send(req).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| EcsError::Protocol(e.to_string()));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| EcsError::Protocol(format!("HTTP {status} without an error body")))?;
        let code = v["__type"]
            .as_str()
            .unwrap_or("ServerException")
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .to_string();
        let message = v["message"].as_str().unwrap_or_default().to_string();
        Err(EcsError::Api { code, message })
    }
}

/// An error and its causes, so that "client error (Connect)" says which
/// (connection refused, no route to host...).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
