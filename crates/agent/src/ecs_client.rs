//! The few ECS API calls the agent makes itself (registration), over
//! plain HTTP/1.1 to the server's JSON 1.1 endpoint, signed with SigV4
//! when the agent has credentials.

use berth_wire::sigv4::{self, Credentials};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
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
    /// `host[:port]` of the server, as the Host header carries it.
    authority: String,
    region: String,
    credentials: Option<Credentials>,
    tls: Arc<berth_tls::ClientConfig>,
    http: HttpsClient,
    /// The service signed for and its JSON 1.1 target prefix.
    service: &'static str,
    target: &'static str,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client(tls: &Arc<berth_tls::ClientConfig>) -> HttpsClient {
    Client::builder(TokioExecutor::new()).build(berth_tls::https_connector(tls.clone()))
}

impl EcsClient {
    pub fn new(server: &str, region: &str) -> EcsClient {
        let url = format!("{}/", server.trim_end_matches('/'));
        let authority = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        // An https server is trusted as the aws CLI trusts one: the CA
        // bundle in AWS_CA_BUNDLE, else the system's roots.
        let tls = if url.starts_with("https://") {
            let bundle = std::env::var_os("AWS_CA_BUNDLE").map(std::path::PathBuf::from);
            berth_tls::client_config(bundle.as_deref()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "AWS_CA_BUNDLE cannot be used; trusting nothing");
                berth_tls::plain_client_config()
            })
        } else {
            berth_tls::plain_client_config()
        };
        EcsClient {
            url,
            authority,
            region: region.to_string(),
            credentials: None,
            http: http_client(&tls),
            tls,
            service: "ecs",
            target: "AmazonEC2ContainerServiceV20141113",
        }
    }

    /// The same client calling another JSON 1.1 service of the server
    /// (`logs`, `Logs_20140328`).
    pub fn for_service(mut self, service: &'static str, target: &'static str) -> Self {
        self.service = service;
        self.target = target;
        self
    }

    /// The same client trusting what `tls` trusts (an agent's `--ca`).
    pub fn with_tls(mut self, tls: Option<Arc<berth_tls::ClientConfig>>) -> Self {
        if let Some(tls) = tls {
            self.http = http_client(&tls);
            self.tls = tls;
        }
        self
    }

    /// What this client trusts, for other connections to the same server.
    pub fn tls(&self) -> Arc<berth_tls::ClientConfig> {
        self.tls.clone()
    }

    /// The HTTP client, for requests whose answers are streamed.
    pub fn http(&self) -> &HttpsClient {
        &self.http
    }

    /// The same client signing its requests with `credentials`.
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The headers that authenticate a request to `path_and_query` with
    /// `headers` (all of which are signed) and `body`: SigV4's, or without
    /// credentials an unsigned credential scope, which a server running
    /// with `--auth off` reads the region from.
    pub fn auth_headers(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let Some(creds) = &self.credentials else {
            return vec![(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=unsigned/20260101/{}/{}/aws4_request, SignedHeaders=host, Signature=0",
                    self.region, self.service
                ),
            )];
        };
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut all = vec![("host", self.authority.as_str())];
        all.extend_from_slice(headers);
        let req = sigv4::Request {
            method,
            path,
            query,
            headers: &all,
        };
        let mut out = sigv4::sign(
            &req,
            body,
            creds,
            &self.region,
            self.service,
            std::time::SystemTime::now(),
        );
        out.push(("host", self.authority.clone()));
        out
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

    /// Passes a request a task made to the server's API as it came (the
    /// Host header it was signed with included), and returns the answer as
    /// it came. A request the task signed itself goes as it is; `sign`
    /// signs one that came unsigned, for the given service, over its
    /// Host, content type and target.
    pub async fn forward(
        &self,
        method: hyper::Method,
        path_and_query: &str,
        headers: &hyper::HeaderMap,
        body: Bytes,
        sign: Option<(&Credentials, &str)>,
    ) -> Result<hyper::Response<Bytes>, EcsError> {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path_and_query);
        let mut req = hyper::Request::builder().method(method.clone()).uri(&url);
        if let Some((creds, service)) = sign {
            let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let host = text("host").unwrap_or(&self.authority).to_string();
            let mut signed: Vec<(&str, &str)> = vec![("host", &host)];
            for name in ["content-type", "x-amz-target"] {
                if let Some(v) = text(name) {
                    signed.push((name, v));
                }
            }
            let (path, query) = path_and_query
                .split_once('?')
                .unwrap_or((path_and_query, ""));
            let r = sigv4::Request {
                method: method.as_str(),
                path,
                query,
                headers: &signed,
            };
            for (k, v) in sigv4::sign(
                &r,
                &body,
                creds,
                &self.region,
                service,
                std::time::SystemTime::now(),
            ) {
                req = req.header(k, v);
            }
        }
        for (k, v) in headers {
            // Hop-by-hop headers belong to the task's connection.
            if !matches!(
                k.as_str(),
                "connection"
                    | "keep-alive"
                    | "transfer-encoding"
                    | "upgrade"
                    | "te"
                    | "proxy-connection"
                    | "content-length"
            ) {
                req = req.header(k, v);
            }
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| EcsError::Protocol(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| EcsError::Unreachable(with_causes(&e)))?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| EcsError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok(hyper::Response::from_parts(parts, bytes))
    }

    /// GETs one of Berth's own JSON routes (`/berth/v1/...`), in this
    /// client's region.
    pub async fn get_json<O: DeserializeOwned>(&self, path: &str) -> Result<O, EcsError> {
        self.own_route("GET", path, None).await
    }

    /// Calls one of Berth's own JSON routes with `method`, signed unless
    /// `body` is given (the join route is not signed: its token is the
    /// credential).
    pub async fn own_route<O: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<O, EcsError> {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let mut req = hyper::Request::builder().method(method).uri(&url);
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                serde_json::to_vec(b).map_err(|e| EcsError::Protocol(e.to_string()))?
            }
            None => {
                for (k, v) in self.auth_headers(method, path, &[], b"") {
                    req = req.header(k, v);
                }
                vec![]
            }
        };
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| EcsError::Protocol(e.to_string()))?;
        let (status, bytes) = self.send(req).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| EcsError::Protocol(e.to_string()))
    }

    pub async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        operation: &str,
        input: &I,
    ) -> Result<O, EcsError> {
        let body = serde_json::to_vec(input).map_err(|e| EcsError::Protocol(e.to_string()))?;
        let target = format!("{}.{operation}", self.target);
        let headers = [
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let mut req = hyper::Request::post(&self.url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        for (k, v) in self.auth_headers("POST", "/", &headers, &body) {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| EcsError::Protocol(e.to_string()))?;
        let (status, bytes) = self.send(req).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| EcsError::Protocol(e.to_string()));
        }
        Err(api_error(status, &bytes))
    }
}

/// An error answer in ECS's JSON shape; a body that is not one is told
/// as it came (its status and text).
fn api_error(status: hyper::StatusCode, bytes: &[u8]) -> EcsError {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return EcsError::Api {
            code: status.to_string(),
            message: String::from_utf8_lossy(bytes).trim().to_string(),
        };
    };
    let code = v["__type"]
        .as_str()
        .unwrap_or("ServerException")
        .rsplit('#')
        .next()
        .unwrap_or_default()
        .to_string();
    let message = v["message"].as_str().unwrap_or_default().to_string();
    EcsError::Api { code, message }
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
