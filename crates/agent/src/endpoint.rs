//! The task endpoint: what a task's containers reach at 169.254.170.2
//! (routed to this agent's port on the host's loopback, one rule per task
//! address; `berth_runtime::endpoint`).
//!
//! - `GET /v2/credentials/<id>` (and `/v1/credentials?id=<id>`): the task
//!   role's temporary credentials, in the JSON shape SDKs read. Unlike
//!   ECS, where the id alone is the key, the answer goes only to the task
//!   that owns the id, by the address the request came from: a task that
//!   learns another's id gets nothing with it.
//! - `/v4/<id>`, `/v4/<id>/task`, `/v4/<id>/stats`, `/v4/<id>/task/stats`
//!   and the same under `/v3/`: task metadata (`metadata`), `<id>` being
//!   a container's; again only to the task it describes.
//! - `/` (any method): Berth's APIs, passed to the server as they came.
//!   The task signs them with its role's credentials, so they carry exactly
//!   its role's permissions; containers get `AWS_ENDPOINT_URL` pointing
//!   here, so an unconfigured SDK reaches Berth from any network mode.
//!
//! Credentials live in memory only. The agent asks the server for them
//! when a task starts and again halfway through their life, and forgets
//! them when the task stops (the server ends the sessions then too).

use crate::metadata::{self, Snapshot, Version};
use crate::{EcsClient, ServerAsk};
use berth_runtime::ContainerRuntime;
use berth_wire::agent::RoleCredentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The largest API request a task may pass through.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What containers of a task with a role reach the endpoint's API at.
pub const API_URL: &str = "http://169.254.170.2";

#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    /// Makes each task's credentials id: unguessable, and the same after
    /// an agent restart, so the containers it left running keep theirs.
    key: String,
    table: Mutex<Table>,
    asks: UnboundedSender<ServerAsk>,
    runtime: Arc<dyn ContainerRuntime>,
    servers: Vec<EcsClient>,
    /// The server that answered last: the first one tried next.
    current: AtomicUsize,
}

#[derive(Default)]
struct Table {
    tasks: HashMap<String, Entry>,
    /// Task address -> task ARN.
    sources: HashMap<Ipv4Addr, String>,
    /// Container metadata id -> task ARN and container name.
    metadata: HashMap<String, (String, String)>,
    /// Containers of host-network tasks (no address of their own): id ->
    /// task ARN.
    host: HashMap<String, String>,
}

#[derive(Default)]
struct Entry {
    /// The driver's latest view of the task, for its metadata.
    snapshot: Option<Arc<Snapshot>>,
    credentials: Option<RoleCredentials>,
    /// Addresses routed here for the task, with the network of each.
    sources: Vec<Ipv4Addr>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The key in `dir/endpoint.key`, made on first use; readable by the
/// agent's user only.
fn load_key(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join("endpoint.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if k.trim().len() >= 32 => return Ok(k.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    crate::write_private(&path, key.as_bytes())?;
    Ok(key)
}

impl Endpoint {
    /// Listens on 127.0.0.1:`port` (0: any free port) and serves until
    /// the process ends.
    pub async fn start(
        data_dir: &std::path::Path,
        port: u16,
        servers: Vec<EcsClient>,
        asks: UnboundedSender<ServerAsk>,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> std::io::Result<Endpoint> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let port = listener.local_addr()?.port();
        let endpoint = Endpoint {
            inner: Arc::new(Inner {
                port,
                key: load_key(data_dir)?,
                table: Mutex::default(),
                asks,
                runtime,
                servers,
                current: AtomicUsize::new(0),
            }),
        };
        tracing::info!(port, "task endpoint listening");
        let serving = endpoint.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "task endpoint accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ep = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let ep = ep.clone();
                        async move { Ok::<_, std::convert::Infallible>(ep.serve(peer, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(endpoint)
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The credentials id of `task_arn`'s containers, as a UUID.
    pub fn credentials_id(&self, task_arn: &str) -> String {
        self.derived_id(&format!("credentials\n{task_arn}"))
    }

    fn derived_id(&self, what: &str) -> String {
        let h = berth_wire::sigv4::hex_sha256(format!("{}\n{what}", self.inner.key).as_bytes());
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The metadata id of `container` of `task_arn`, as a UUID.
    pub fn metadata_id(&self, task_arn: &str, container: &str) -> String {
        self.derived_id(&format!("metadata\n{task_arn}\n{container}"))
    }

    /// Keeps `snapshot` as what the task's metadata says.
    pub fn describe(&self, snapshot: Snapshot) {
        let arn = snapshot.desired.task_arn.clone();
        let mut table = self.inner.table.lock();
        let entry = table.tasks.entry(arn.clone()).or_default();
        // Its containers' ids were registered with its first view.
        if entry.snapshot.is_some() {
            entry.snapshot = Some(Arc::new(snapshot));
            return;
        }
        drop(table);
        let ids: Vec<(String, String)> = snapshot
            .desired
            .definition
            .container_definitions
            .iter()
            .flatten()
            .filter_map(|c| c.name.clone())
            .map(|name| (self.metadata_id(&arn, &name), name))
            .collect();
        let mut table = self.inner.table.lock();
        for (id, name) in ids {
            table.metadata.insert(id, (arn.clone(), name));
        }
        table.tasks.entry(arn).or_default().snapshot = Some(Arc::new(snapshot));
    }

    /// Fetches the task role's credentials for `task_arn` and keeps them
    /// fresh until [`Endpoint::forget`]; the error is the task's stopped
    /// reason.
    pub async fn credentials(&self, task_arn: &str) -> Result<(), String> {
        if self
            .inner
            .table
            .lock()
            .tasks
            .get(task_arn)
            .is_some_and(|e| e.credentials.is_some())
        {
            return Ok(());
        }
        let creds = self.inner.ask(task_arn).await?;
        let refresher = tokio::spawn(refresh(
            Arc::downgrade(&self.inner),
            task_arn.to_string(),
            creds.expiration,
        ));
        let mut table = self.inner.table.lock();
        let entry = table.tasks.entry(task_arn.to_string()).or_default();
        entry.credentials = Some(creds);
        entry.refresher = Some(refresher);
        Ok(())
    }

    /// Routes the endpoint for `source`, an address of `task_arn`'s on
    /// `network`, to this agent.
    pub async fn route(
        &self,
        task_arn: &str,
        network: &str,
        source: Ipv4Addr,
    ) -> Result<(), berth_runtime::RuntimeError> {
        {
            let mut table = self.inner.table.lock();
            // The address was another task's before: it is this one's now.
            if let Some(old) = table.sources.insert(source, task_arn.to_string()) {
                if old != task_arn {
                    if let Some(e) = table.tasks.get_mut(&old) {
                        e.sources.retain(|s| *s != source);
                    }
                }
            }
            let entry = table.tasks.entry(task_arn.to_string()).or_default();
            if !entry.sources.contains(&source) {
                entry.sources.push(source);
            }
        }
        self.inner
            .runtime
            .route_endpoint(network, source, self.inner.port)
            .await
    }

    /// Routes the endpoint for container `id` of host-network task
    /// `task_arn` to this agent: the host's rule, and the container known
    /// by the processes behind its connections.
    pub async fn route_host(
        &self,
        task_arn: &str,
        id: &str,
    ) -> Result<(), berth_runtime::RuntimeError> {
        self.inner
            .table
            .lock()
            .host
            .insert(id.to_string(), task_arn.to_string());
        self.inner
            .runtime
            .route_host_endpoint(self.inner.port)
            .await
    }

    /// Drops the task's credentials and routes.
    pub async fn forget(&self, task_arn: &str) {
        let entry = {
            let mut table = self.inner.table.lock();
            let Some(entry) = table.tasks.remove(task_arn) else {
                return;
            };
            for s in &entry.sources {
                if table.sources.get(s).is_some_and(|t| t == task_arn) {
                    table.sources.remove(s);
                }
            }
            table.metadata.retain(|_, (arn, _)| arn != task_arn);
            table.host.retain(|_, arn| arn != task_arn);
            entry
        };
        for s in &entry.sources {
            if let Err(e) = self
                .inner
                .runtime
                .unroute_endpoint(*s, self.inner.port)
                .await
            {
                tracing::warn!(source = %s, error = %e, "task endpoint route not removed");
            }
        }
    }

    /// One request from `peer`.
    async fn serve(
        &self,
        peer: SocketAddr,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let source = match peer.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        let task = source.and_then(|s| self.inner.table.lock().sources.get(&s).cloned());
        // No task has the address: a host-network task's, if the process
        // behind the connection is in one of their containers.
        let host_tasks = !self.inner.table.lock().host.is_empty();
        let task = match task {
            Some(t) => Some(t),
            None if host_tasks => {
                let ids = tokio::task::spawn_blocking(move || containers_behind(peer))
                    .await
                    .unwrap_or_default();
                let table = self.inner.table.lock();
                ids.iter().find_map(|id| table.host.get(id).cloned())
            }
            None => None,
        };
        if path == "/" {
            let Some(task) = task else {
                return error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "not a task of this host",
                );
            };
            return self.pass(&task, req).await;
        }
        if let Some(rest) = path.strip_prefix("/api/") {
            return self.agent_api(task.as_deref(), rest, req).await;
        }
        if req.method() != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "only GET is served here",
            );
        }
        if let Some(rest) = path.strip_prefix("/v4/") {
            return self.metadata(task.as_deref(), Version::V4, rest).await;
        }
        if let Some(rest) = path.strip_prefix("/v3/") {
            return self.metadata(task.as_deref(), Version::V3, rest).await;
        }
        self.answer(task.as_deref(), &path, &query)
    }

    /// The metadata routes, for a request from `from` (None: no task of
    /// this host): `rest` is `<id>[/task][/stats]`.
    async fn metadata(
        &self,
        from: Option<&str>,
        version: Version,
        rest: &str,
    ) -> Response<Full<Bytes>> {
        let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
        let found = {
            let table = self.inner.table.lock();
            table.metadata.get(id).and_then(|(arn, name)| {
                let snapshot = table.tasks.get(arn)?.snapshot.clone()?;
                Some((arn.clone(), name.clone(), snapshot))
            })
        };
        let Some((arn, name, snapshot)) = found.filter(|(arn, _, _)| from == Some(arn.as_str()))
        else {
            tracing::warn!(from = ?from, "a metadata request for another task's id, or from no task, refused");
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "unable to get task arn from request: no task of this host has the endpoint id",
            );
        };
        let rt = &self.inner.runtime;
        let ids: Vec<(String, String)> = snapshot
            .report
            .containers
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.runtime_id.clone()?)))
            .collect();
        let docker_id = |n: &str| ids.iter().find(|(c, _)| c == n).map(|(_, d)| d.clone());
        match what {
            "" => {
                let info = match docker_id(&name) {
                    Some(d) => rt.inspect(&d).await.ok().flatten(),
                    None => None,
                };
                json(
                    StatusCode::OK,
                    metadata::container(&snapshot, &name, info.as_ref(), version).to_string(),
                )
            }
            "task" => {
                let looked =
                    futures::future::join_all(ids.iter().map(|(n, d)| async move {
                        (n.clone(), rt.inspect(d).await.ok().flatten())
                    }))
                    .await;
                let infos = looked
                    .into_iter()
                    .filter_map(|(n, i)| Some((n, i?)))
                    .collect();
                json(
                    StatusCode::OK,
                    metadata::task(&snapshot, &infos, version).to_string(),
                )
            }
            "stats" => match docker_id(&name) {
                Some(d) => match rt.stats_document(&d).await {
                    Ok(v) => json(StatusCode::OK, v.to_string()),
                    Err(e) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalServerError",
                        &e.to_string(),
                    ),
                },
                None => json(StatusCode::OK, "{}".into()),
            },
            "task/stats" => {
                let all = futures::future::join_all(
                    ids.iter()
                        .map(|(_, d)| async move { (d.clone(), rt.stats_document(d).await.ok()) }),
                )
                .await;
                let map: serde_json::Map<String, serde_json::Value> = all
                    .into_iter()
                    .map(|(d, v)| (d, v.unwrap_or(serde_json::Value::Null)))
                    .collect();
                json(StatusCode::OK, serde_json::Value::Object(map).to_string())
            }
            _ => {
                tracing::debug!(task = %arn, what, "no such metadata route");
                error(StatusCode::NOT_FOUND, "NotFound", "no such route")
            }
        }
    }

    /// The credentials routes, for a request from `task` (None: from no
    /// task of this host).
    fn answer(&self, task: Option<&str>, path: &str, query: &str) -> Response<Full<Bytes>> {
        let id = if let Some(rest) = path.strip_prefix("/v2/credentials") {
            rest.trim_start_matches('/').to_string()
        } else if path == "/v1/credentials" {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("id="))
                .unwrap_or_default()
                .to_string()
        } else {
            return error(StatusCode::NOT_FOUND, "NotFound", "no such route");
        };
        if id.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "NoIdInRequest",
                "CredentialsV2Request: No Credential ID in the request",
            );
        }
        let not_found = || {
            error(
                StatusCode::BAD_REQUEST,
                "InvalidIdInRequest",
                "CredentialsV2Request: Credentials not found",
            )
        };
        let Some(task) = task.filter(|t| self.credentials_id(t) == id) else {
            tracing::warn!(from = ?task, "a credentials request for another task's id, or from no task, refused");
            return not_found();
        };
        let table = self.inner.table.lock();
        let Some(entry) = table.tasks.get(task) else {
            return not_found();
        };
        let Some(c) = &entry.credentials else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "CredentialsUninitialized",
                "CredentialsV2Request: Credentials uninitialized for ID",
            );
        };
        let body = serde_json::json!({
            "RoleArn": c.role_arn,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key,
            "Token": c.session_token,
            "Expiration": metadata::rfc3339_seconds(c.expiration),
        });
        json(StatusCode::OK, body.to_string())
    }

    /// Passes an API request of `task`'s to a server.
    /// `$ECS_AGENT_URI/task-protection/v1/state`: GET or PUT the task's
    /// scale-in protection, asked of the server's ECS API with the task's
    /// role, answered in the shapes ECS's agent answers.
    async fn agent_api(
        &self,
        from: Option<&str>,
        rest: &str,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
        let found = {
            let table = self.inner.table.lock();
            table.metadata.get(id).map(|(arn, _)| {
                let creds = table.tasks.get(arn).and_then(|t| t.credentials.clone());
                (arn.clone(), creds)
            })
        };
        let Some((arn, creds)) = found.filter(|(arn, _)| from == Some(arn.as_str())) else {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "unable to get task arn from request: no task of this host has the endpoint id",
            );
        };
        if what != "task-protection/v1/state" {
            return error(StatusCode::NOT_FOUND, "NotFound", "no such agent API path");
        }
        let failed = |status: StatusCode, code: &str, message: &str| {
            json(
                status,
                serde_json::json!({"error": {"Arn": arn, "Code": code, "Message": message}})
                    .to_string(),
            )
        };
        let Some(creds) = creds else {
            return failed(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "the task has no task role (taskRoleArn) to call ECS with",
            );
        };
        let cluster = arn
            .split(":task/")
            .nth(1)
            .and_then(|r| r.split_once('/'))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let (op, input) = match *req.method() {
            Method::GET => (
                "GetTaskProtection",
                serde_json::json!({"cluster": cluster, "tasks": [arn]}),
            ),
            Method::PUT => {
                let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return failed(
                            StatusCode::BAD_REQUEST,
                            "InvalidRequest",
                            "the body cannot be read",
                        )
                    }
                };
                let v: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return failed(
                            StatusCode::BAD_REQUEST,
                            "InvalidRequest",
                            &format!("the body is not JSON: {e}"),
                        )
                    }
                };
                let Some(enabled) = v["ProtectionEnabled"].as_bool() else {
                    return failed(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequest",
                        "ProtectionEnabled (true or false) is required",
                    );
                };
                let mut input = serde_json::json!({"cluster": cluster, "tasks": [arn], "protectionEnabled": enabled});
                if let Some(m) = v["ExpiresInMinutes"].as_i64() {
                    input["expiresInMinutes"] = m.into();
                }
                ("UpdateTaskProtection", input)
            }
            _ => {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "GET or PUT",
                )
            }
        };
        let signing = Some(berth_wire::sigv4::Credentials {
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.clone(),
            session_token: Some(creds.session_token.clone()),
        });
        let n = self.inner.servers.len();
        let first = self.inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for k in 0..n {
            let i = (first + k) % n;
            let client = self.inner.servers[i]
                .clone()
                .with_credentials(signing.clone());
            match client.call::<_, serde_json::Value>(op, &input).await {
                Ok(out) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    if let Some(p) = out["protectedTasks"].as_array().and_then(|a| a.first()) {
                        let expires = p["expirationDate"]
                            .as_f64()
                            .map(|e| crate::metadata::rfc3339_seconds(e as i64));
                        return json(
                            StatusCode::OK,
                            serde_json::json!({"protection": {
                                "ExpirationDate": expires,
                                "ProtectionEnabled": p["protectionEnabled"].as_bool().unwrap_or(false),
                                "TaskArn": p["taskArn"],
                            }})
                            .to_string(),
                        );
                    }
                    let f = out["failures"]
                        .as_array()
                        .and_then(|a| a.first())
                        .cloned()
                        .unwrap_or_default();
                    return json(
                        StatusCode::OK,
                        serde_json::json!({"failure": {"Arn": f["arn"], "Detail": f["detail"], "Reason": f["reason"]}})
                            .to_string(),
                    );
                }
                Err(crate::EcsError::Api { code, message }) => {
                    return failed(StatusCode::BAD_REQUEST, &code, &message);
                }
                Err(e) => last = e.to_string(),
            }
        }
        failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "RequestCanceled",
            &format!("Timed out calling Amazon ECS Task Protection API: {last}"),
        )
    }

    async fn pass(&self, task: &str, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, BODY_LIMIT).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLargeException",
                    "the request body is too large",
                )
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // An unsigned request is signed with the task's role, so that a
        // task without an SDK (a shell script with wget) can call the APIs
        // too; it could sign with the credentials it can fetch itself, so
        // this gives it nothing more.
        let unsigned =
            !parts.headers.contains_key("authorization") && !path.contains("X-Amz-Signature=");
        let creds = unsigned
            .then(|| {
                let table = self.inner.table.lock();
                table.tasks.get(task).and_then(|t| t.credentials.clone())
            })
            .flatten()
            .map(|c| berth_wire::sigv4::Credentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: Some(c.session_token),
            });
        let service = creds.as_ref().and_then(|_| {
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok());
            let version = form_version(&parts.headers, &body);
            berth_wire::signing_name(target, version.as_deref())
        });
        let sign = creds.as_ref().zip(service);
        let n = self.inner.servers.len();
        let first = self.inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for k in 0..n {
            let i = (first + k) % n;
            match self.inner.servers[i]
                .forward(
                    parts.method.clone(),
                    &path,
                    &parts.headers,
                    body.clone(),
                    sign,
                )
                .await
            {
                Ok(resp) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    let (parts, bytes) = resp.into_parts();
                    return Response::from_parts(parts, Full::new(bytes));
                }
                Err(e) => last = e.to_string(),
            }
        }
        tracing::warn!(task, error = %last, "no server took a task's API request");
        error(StatusCode::BAD_GATEWAY, "ServiceUnavailable", &last)
    }
}

/// The `Version` of an awsQuery form body.
fn form_version(headers: &hyper::HeaderMap, body: &[u8]) -> Option<String> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return None;
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "Version")
        .map(|(_, v)| v.into_owned())
}

impl Inner {
    /// The task role's credentials, from the server.
    async fn ask(&self, task_arn: &str) -> Result<RoleCredentials, String> {
        loop {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let ask = ServerAsk::Credentials {
                task_arn: task_arn.to_string(),
                execution: false,
                reply,
            };
            if self.asks.send(ask).is_err() {
                return Err("the agent is stopping".into());
            }
            match answer.await {
                Ok(result) => return result,
                // The connection went with the question: ask on the next.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// The container ids in the cgroups of the process that holds the client
/// end of a connection from `peer` (in this host's network namespace):
/// its socket in `/proc/net/tcp`, the process with that socket open, and
/// the ids (64 hex digits) in that process's `/proc/PID/cgroup`.
fn containers_behind(peer: SocketAddr) -> Vec<String> {
    let IpAddr::V4(ip) = peer.ip() else {
        return vec![];
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        peer.port()
    );
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return vec![];
    };
    let Some(inode) = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str())).then(|| f.get(9).map(|s| s.to_string()))?
    }) else {
        return vec![];
    };
    let wanted = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
        });
        if holds {
            let cgroups = std::fs::read_to_string(p.path().join("cgroup")).unwrap_or_default();
            return container_ids(&cgroups);
        }
    }
    vec![]
}

/// The container ids in a `/proc/PID/cgroup`, whatever the cgroup driver
/// (`/docker/ID`, `/system.slice/docker-ID.scope`, a task's parent).
fn container_ids(cgroups: &str) -> Vec<String> {
    let mut out: Vec<String> = cgroups
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|t| t.len() == 64)
        .map(String::from)
        .collect();
    out.dedup();
    out
}

/// Asks for new credentials each time half of the current ones' life has
/// passed; failing, tries again every half minute while the old ones last.
async fn refresh(inner: std::sync::Weak<Inner>, task_arn: String, mut expiration: i64) {
    let mut issued = unix_now();
    loop {
        let half = ((expiration as f64 - issued) / 2.0).max(1.0);
        let due = issued + half - unix_now();
        tokio::time::sleep(Duration::from_secs_f64(due.max(0.0))).await;
        loop {
            let Some(inner) = inner.upgrade() else { return };
            match inner.ask(&task_arn).await {
                Ok(creds) => {
                    issued = unix_now();
                    expiration = creds.expiration;
                    if let Some(e) = inner.table.lock().tasks.get_mut(&task_arn) {
                        e.credentials = Some(creds);
                    }
                    tracing::debug!(task = %task_arn, "task role credentials refreshed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(task = %task_arn, error = %e, "task role credentials not refreshed; trying again");
                    drop(inner);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// An error in the shape ECS's agent answers with.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"code": code, "message": message}).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::fake::{Call, FakeRuntime};

    fn creds(n: i64) -> RoleCredentials {
        RoleCredentials {
            role_arn: "arn:aws:iam::1:role/app".into(),
            access_key_id: format!("ASIA{n}"),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: unix_now() as i64 + 900,
        }
    }

    /// An endpoint whose server answers every credentials ask with the
    /// next numbered credentials.
    async fn endpoint(dir: &std::path::Path, rt: Arc<FakeRuntime>) -> Endpoint {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ServerAsk>();
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(ask) = rx.recv().await {
                if let ServerAsk::Credentials { reply, .. } = ask {
                    n += 1;
                    let _ = reply.send(Ok(creds(n)));
                }
            }
        });
        Endpoint::start(dir, 0, vec![], tx, rt)
            .await
            .expect("start")
    }

    async fn body(r: Response<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn credentials_go_only_to_the_task_that_owns_the_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = Arc::new(FakeRuntime::new());
        let ep = endpoint(dir.path(), rt.clone()).await;
        let (a, b) = ("arn:task/a", "arn:task/b");
        let (ip_a, ip_b) = (Ipv4Addr::new(172, 17, 0, 2), Ipv4Addr::new(172, 17, 0, 3));
        ep.route(a, "bridge", ip_a).await.expect("route a");
        ep.route(b, "bridge", ip_b).await.expect("route b");
        let uri_a = format!("/v2/credentials/{}", ep.credentials_id(a));
        // Known, not fetched yet: SDKs retry.
        let (s, v) = body(ep.answer(Some(a), &uri_a, "")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("CredentialsUninitialized")
            )
        );
        ep.credentials(a).await.expect("fetched");
        let (s, v) = body(ep.answer(Some(a), &uri_a, "")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["AccessKeyId"], "ASIA1");
        assert_eq!(v["RoleArn"], "arn:aws:iam::1:role/app");
        assert!(v["Expiration"].as_str().expect("when").ends_with('Z'));
        let id = ep.credentials_id(a);
        let (s, _) = body(ep.answer(Some(a), "/v1/credentials", &format!("id={id}"))).await;
        assert_eq!(s, StatusCode::OK);
        // Task b knows a's id: it gets what a stranger gets.
        let (s, v) = body(ep.answer(Some(b), &uri_a, "")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("InvalidIdInRequest"))
        );
        let (s, _) = body(ep.answer(None, &uri_a, "")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, v) = body(ep.answer(Some(a), "/v2/credentials/", "")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("NoIdInRequest"))
        );
        // The id is stable across restarts (same key) and differs by task.
        assert_eq!(
            ep.credentials_id(a),
            endpoint(dir.path(), rt.clone()).await.credentials_id(a)
        );
        assert_ne!(ep.credentials_id(a), ep.credentials_id(b));
        ep.forget(a).await;
        let (s, _) = body(ep.answer(Some(a), &uri_a, "")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let port = ep.port();
        let calls = rt.calls();
        assert!(calls.contains(&Call::RouteEndpoint("bridge".into(), ip_a, port)));
        assert!(calls.contains(&Call::UnrouteEndpoint(ip_a, port)));
        assert!(!calls.contains(&Call::UnrouteEndpoint(ip_b, port)));
    }

    #[test]
    fn container_ids_are_read_from_any_cgroup_layout() {
        let id = "a".repeat(64);
        assert_eq!(
            container_ids(&format!("12:memory:/docker/{id}\n")),
            vec![id.clone()]
        );
        assert_eq!(
            container_ids(&format!("0::/system.slice/docker-{id}.scope\n")),
            vec![id]
        );
        assert!(container_ids("0::/user.slice\n").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_are_fetched_again_halfway_through_their_life() {
        let dir = tempfile::tempdir().expect("tmp");
        let ep = endpoint(dir.path(), Arc::new(FakeRuntime::new())).await;
        let a = "arn:task/a";
        ep.route(a, "bridge", Ipv4Addr::new(10, 0, 0, 9))
            .await
            .expect("route");
        ep.credentials(a).await.expect("fetched");
        let key = |ep: &Endpoint| {
            ep.inner.table.lock().tasks[a]
                .credentials
                .as_ref()
                .map(|c| c.access_key_id.clone())
        };
        assert_eq!(key(&ep).as_deref(), Some("ASIA1"));
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(key(&ep).as_deref(), Some("ASIA1"));
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(key(&ep).as_deref(), Some("ASIA2"));
    }
}
