//! How an Auto Scaling group gets a machine: a launcher starts one that
//! runs `berth agent`, which registers with the instance id it was given;
//! the group's instance is Pending until then. The launchers themselves
//! (a network namespace on this machine, or an operator's script) live in
//! `berth-launch`; the group controller only knows this trait.

use berth_domain::asg::LaunchFields;

/// What a launcher is asked to start.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// The Auto Scaling group (or the Fargate pool) it is for.
    pub group: String,
    pub instance_id: String,
    /// The ECS cluster its agent joins.
    pub cluster: String,
    /// The host joins the hidden Fargate pool (`berth agent --capacity
    /// fargate`) rather than `cluster`.
    pub fargate: bool,
    pub zone: String,
    pub region: String,
    /// A join token for the cluster, good for the launch timeout.
    pub join_token: String,
    /// The launch template's fields.
    pub fields: LaunchFields,
    /// Tags the group propagates to its instances.
    pub tags: Vec<(String, String)>,
}

/// Starts and stops machines.
#[async_trait::async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Its name in activities and logs (`netns`, `exec`).
    fn name(&self) -> &'static str;
    /// Starts a machine; Ok once it is on its way (its agent registers
    /// later), Err with why it cannot be.
    async fn launch(&self, req: &LaunchRequest) -> Result<(), String>;
    /// Stops a machine and everything on it. `container_instance` is the
    /// id its agent registered as, if it did. Stopping one that is gone
    /// already is not an error.
    async fn terminate(
        &self,
        instance_id: &str,
        container_instance: Option<&str>,
    ) -> Result<(), String>;
}
