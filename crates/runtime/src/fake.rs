//! A runtime in memory for unit tests: it records every call, keeps
//! containers in a table, and lets the test play the engine's part (a
//! container exits, a health check fails, a registry is down).

use crate::pull::Plan;
use crate::{
    Binding, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ContainerSummary,
    Event, EventKind, Health, LogChunk, LogStream, PullBehavior, Pulled, RuntimeError, Stats,
    TaskLimits,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// A call the fake received, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Pull(String, PullBehavior),
    Create(Box<ContainerSpec>),
    Start(String),
    Stop(String, Duration),
    Remove(String),
    TaskCgroup(String, TaskLimits),
    RemoveTaskCgroup(String),
    EnsureNetwork(crate::NetworkSpec),
    RemoveNetwork(String),
    EnsurePauseImage,
    ApplyFilter(String, crate::firewall::Filter),
    RouteEndpoint(String, std::net::Ipv4Addr, u16),
    RouteHostEndpoint(u16),
    UnrouteEndpoint(std::net::Ipv4Addr, u16),
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    containers: BTreeMap<String, ContainerInfo>,
    logs: BTreeMap<String, Vec<LogChunk>>,
    /// Images a pull can fetch.
    registry: HashSet<String>,
    /// Images on the "host".
    cached: HashSet<String>,
    pulled: HashSet<String>,
    next_id: u64,
    next_port: u16,
}

pub struct FakeRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            state: Mutex::new(State {
                next_port: 49153,
                ..Default::default()
            }),
            events: broadcast::channel(1024).0,
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `image` pullable from the "registry".
    pub fn publish(&self, image: &str) {
        self.state().registry.insert(image.to_string());
    }

    /// Puts `image` in the "host's" cache.
    pub fn cache(&self, image: &str) {
        self.state().cached.insert(image.to_string());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Appends output to a container's log.
    pub fn write_log(&self, id: &str, stream: LogStream, bytes: &[u8]) {
        self.state()
            .logs
            .entry(id.to_string())
            .or_default()
            .push(LogChunk {
                stream,
                bytes: bytes.to_vec(),
            });
    }

    /// The container's main process exits with `code`.
    pub fn exit(&self, id: &str, code: i64) {
        self.transition(
            id,
            EventKind::Died {
                exit_code: Some(code),
            },
        );
    }

    pub fn set_health(&self, id: &str, health: Health) {
        self.transition(id, EventKind::Health(health));
    }

    fn transition(&self, id: &str, kind: EventKind) {
        let at = now();
        let labels = {
            let mut st = self.state();
            let Some(c) = st.containers.get_mut(id) else {
                return;
            };
            match &kind {
                EventKind::Started => {
                    c.state = ContainerState::Running;
                    c.started_at = Some(at);
                }
                EventKind::Died { exit_code } => {
                    if c.state != ContainerState::Running {
                        return;
                    }
                    c.state = ContainerState::Exited;
                    c.exit_code = *exit_code;
                    c.finished_at = Some(at);
                }
                EventKind::Health(h) => c.health = Some(*h),
                EventKind::OutOfMemory => c.oom_killed = true,
                EventKind::Removed => {}
            }
            c.labels.clone()
        };
        let _ = self.events.send(Event {
            id: id.to_string(),
            labels,
            kind,
            at,
        });
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<crate::Version, RuntimeError> {
        Ok(crate::Version {
            engine: "fake".into(),
            api: "1.41".into(),
            log_drivers: vec!["json-file".into(), "local".into(), "syslog".into()],
        })
    }

    async fn pull_with(
        &self,
        image: &str,
        behavior: PullBehavior,
        _auth: Option<&crate::RegistryAuth>,
    ) -> Result<Pulled, RuntimeError> {
        let mut st = self.state();
        st.calls.push(Call::Pull(image.to_string(), behavior));
        let cached = st.cached.contains(image);
        match behavior.plan(cached, st.pulled.contains(image)) {
            Plan::UseCache => Ok(Pulled::Cached),
            Plan::Pull { .. } if st.registry.contains(image) => {
                st.cached.insert(image.to_string());
                st.pulled.insert(image.to_string());
                Ok(Pulled::Fetched)
            }
            Plan::Pull {
                fallback_to_cache: true,
            } => Ok(Pulled::Cached),
            Plan::Pull { .. } => Err(RuntimeError::CannotPull(format!(
                "pull access denied for {image}, repository does not exist"
            ))),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut st = self.state();
        st.calls.push(Call::Create(Box::new(spec.clone())));
        if !st.cached.contains(&spec.image) {
            return Err(RuntimeError::NotFound(format!(
                "No such image: {}",
                spec.image
            )));
        }
        if st.containers.values().any(|c| c.name == spec.name) {
            return Err(RuntimeError::Rejected(format!(
                "Conflict. The container name \"/{}\" is already in use",
                spec.name
            )));
        }
        st.next_id += 1;
        let id = format!("{:064x}", st.next_id);
        let mut ports = Vec::new();
        for p in &spec.ports {
            let host_port = match p.host_port {
                Some(h) => h,
                None => {
                    st.next_port += 1;
                    st.next_port
                }
            };
            ports.push(Binding {
                container_port: p.container_port,
                host_port,
                host_ip: "0.0.0.0".into(),
                protocol: p.protocol,
            });
        }
        st.containers.insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                name: spec.name.clone(),
                image: spec.image.clone(),
                image_id: format!("sha256:{:064x}", spec.image.len()),
                labels: spec.labels.clone(),
                state: ContainerState::Created,
                created_at: Some(now()),
                started_at: None,
                finished_at: None,
                exit_code: None,
                health: spec.health_check.as_ref().map(|_| Health::Starting),
                oom_killed: false,
                error: None,
                ports,
                networks: match &spec.network_mode {
                    crate::NetworkMode::Attached { network, ip } => vec![crate::Attachment {
                        network: network.clone(),
                        ip: ip.clone(),
                        mac: "02:42:00:00:00:01".into(),
                        prefix_len: 24,
                        gateway: String::new(),
                    }],
                    _ => vec![],
                },
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        {
            let mut st = self.state();
            st.calls.push(Call::Start(id.to_string()));
            if !st.containers.contains_key(id) {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
        }
        self.transition(id, EventKind::Started);
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        {
            let mut st = self.state();
            st.calls.push(Call::Stop(id.to_string(), timeout));
            if !st.containers.contains_key(id) {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
        }
        // A process that obeys SIGTERM: exit code 143 (128 + 15).
        self.exit(id, 143);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let removed = {
            let mut st = self.state();
            st.calls.push(Call::Remove(id.to_string()));
            st.containers.remove(id)
        };
        if let Some(c) = removed {
            let _ = self.events.send(Event {
                id: id.to_string(),
                labels: c.labels,
                kind: EventKind::Removed,
                at: now(),
            });
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        Ok(self.state().containers.get(id).cloned())
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        Ok(self
            .state()
            .containers
            .values()
            .filter(|c| c.labels.get(label).map(String::as_str) == Some(value))
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                labels: c.labels.clone(),
                state: c.state,
            })
            .collect())
    }

    fn events(&self, label: &str, value: &str) -> BoxStream<'static, Result<Event, RuntimeError>> {
        let (label, value) = (label.to_string(), value.to_string());
        tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe())
            .filter_map(move |e| {
                let keep = match e {
                    Ok(e) if e.labels.get(&label) == Some(&value) => Some(Ok(e)),
                    Ok(_) => None,
                    Err(lag) => Some(Err(RuntimeError::Unavailable(lag.to_string()))),
                };
                futures::future::ready(keep)
            })
            .boxed()
    }

    fn logs(&self, id: &str, _follow: bool) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let chunks = self.state().logs.get(id).cloned().unwrap_or_default();
        futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
    }

    async fn task_cgroup(
        &self,
        task_id: &str,
        limits: TaskLimits,
    ) -> Result<Option<String>, RuntimeError> {
        self.state()
            .calls
            .push(Call::TaskCgroup(task_id.to_string(), limits));
        Ok(Some(crate::cgroup::Layout::parent(task_id)))
    }

    async fn remove_task_cgroup(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.state()
            .calls
            .push(Call::RemoveTaskCgroup(task_id.to_string()));
        Ok(())
    }

    async fn ensure_network(&self, spec: &crate::NetworkSpec) -> Result<(), RuntimeError> {
        self.state().calls.push(Call::EnsureNetwork(spec.clone()));
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.state()
            .calls
            .push(Call::RemoveNetwork(name.to_string()));
        Ok(())
    }

    async fn apply_filter(
        &self,
        id: &str,
        filter: &crate::firewall::Filter,
    ) -> Result<(), RuntimeError> {
        self.state()
            .calls
            .push(Call::ApplyFilter(id.to_string(), filter.clone()));
        Ok(())
    }

    async fn route_endpoint(
        &self,
        network: &str,
        source: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<(), RuntimeError> {
        self.state()
            .calls
            .push(Call::RouteEndpoint(network.to_string(), source, port));
        Ok(())
    }

    async fn route_host_endpoint(&self, port: u16) -> Result<(), RuntimeError> {
        self.state().calls.push(Call::RouteHostEndpoint(port));
        Ok(())
    }

    async fn unroute_endpoint(
        &self,
        source: std::net::Ipv4Addr,
        port: u16,
    ) -> Result<(), RuntimeError> {
        self.state().calls.push(Call::UnrouteEndpoint(source, port));
        Ok(())
    }

    async fn ensure_pause_image(&self) -> Result<(), RuntimeError> {
        let mut st = self.state();
        st.calls.push(Call::EnsurePauseImage);
        st.cached.insert(crate::pause::IMAGE.to_string());
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        match self.state().containers.get(id) {
            Some(c) if c.state == ContainerState::Running => Ok(Stats::default()),
            _ => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    async fn stats_document(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        match self.state().containers.get(id) {
            Some(c) if c.state == ContainerState::Running => Ok(serde_json::json!({
                "id": id,
                "name": format!("/{}", c.name),
                "cpu_stats": {"cpu_usage": {"total_usage": 0}},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}},
                "memory_stats": {"usage": 0},
            })),
            _ => Err(RuntimeError::NotFound(id.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_plays_the_engine() {
        let rt = FakeRuntime::new();
        rt.publish("app:1");
        assert_eq!(
            rt.pull("app:1", PullBehavior::Always).await.ok(),
            Some(Pulled::Fetched)
        );
        assert!(matches!(
            rt.pull("gone:1", PullBehavior::Default).await,
            Err(RuntimeError::CannotPull(_))
        ));
        let mut events = rt.events("owner", "me");
        let spec = ContainerSpec {
            name: "c1".into(),
            image: "app:1".into(),
            labels: [("owner".to_string(), "me".to_string())].into(),
            ..Default::default()
        };
        let id = rt.create(&spec).await.expect("create");
        assert!(matches!(
            rt.create(&spec).await,
            Err(RuntimeError::Rejected(_))
        ));
        rt.start(&id).await.expect("start");
        rt.exit(&id, 3);
        let kinds: Vec<EventKind> = [events.next().await, events.next().await]
            .into_iter()
            .map(|e| e.expect("event").expect("ok").kind)
            .collect();
        assert_eq!(
            kinds,
            [EventKind::Started, EventKind::Died { exit_code: Some(3) }]
        );
        let info = rt.inspect(&id).await.expect("inspect").expect("exists");
        assert_eq!(
            (info.state, info.exit_code),
            (ContainerState::Exited, Some(3))
        );
        assert_eq!(rt.list("owner", "me").await.expect("list").len(), 1);
        assert_eq!(rt.list("owner", "you").await.expect("list").len(), 0);
        rt.remove(&id).await.expect("remove");
        assert_eq!(rt.inspect(&id).await.expect("inspect"), None);
        assert!(matches!(
            rt.calls().as_slice(),
            [
                Call::Pull(..),
                Call::Pull(..),
                Call::Create(_),
                Call::Create(_),
                Call::Start(_),
                Call::Remove(_)
            ]
        ));
    }
}
