//! The key layout: the one place that knows where each record lives.
//! See docs/adr/0001-store-key-layout.md before changing anything here;
//! stored data outlives the code that wrote it.
//!
//! Every resource key is scoped by account and region, as ECS resources are:
//! `/berth/v1/{account}/{region}/{service}/{kind}/...`. Names are the users'
//! own (ECS names are `[A-Za-z0-9_-]`, so they never contain `/`).

use berth_domain::Scope;

/// Where each record of a scope lives.
pub trait Keys {
    fn base(&self) -> String;
    fn clusters(&self) -> String;
    fn cluster(&self, name: &str) -> String;
    fn taskdef_families(&self) -> String;
    fn taskdef_family(&self, family: &str) -> String;
    fn taskdefs(&self) -> String;
    fn taskdefs_of(&self, family: &str) -> String;
    fn taskdef(&self, family: &str, revision: i64) -> String;
    fn taskdef_status_index(&self, status: &str) -> String;
    fn taskdef_status_of(&self, status: &str, family: &str) -> String;
    fn taskdef_status(&self, status: &str, family: &str, revision: i64) -> String;
    fn account_settings(&self) -> String;
    fn account_setting(&self, principal: &str, name: &str) -> String;
    fn tasks_of(&self, cluster: &str) -> String;
    fn services_of(&self, cluster: &str) -> String;
    fn service(&self, cluster: &str, name: &str) -> String;
    fn inactive_services_of(&self, cluster: &str) -> String;
    fn inactive_service(&self, cluster: &str, name: &str) -> String;
    fn instances_all(&self) -> String;
    fn instances_of(&self, cluster: &str) -> String;
    fn instance(&self, cluster: &str, id: &str) -> String;
    fn inactive_instances_of(&self, cluster: &str) -> String;
    fn inactive_instance(&self, cluster: &str, id: &str) -> String;
    fn agent_connections_of(&self, cluster: &str) -> String;
    fn agent_connection(&self, cluster: &str, id: &str) -> String;
    fn task(&self, cluster: &str, id: &str) -> String;
    fn task_states_of(&self, cluster: &str) -> String;
    fn task_state(&self, cluster: &str, id: &str) -> String;
    fn waiting_tasks_of(&self, cluster: &str) -> String;
    fn waiting_task(&self, cluster: &str, id: &str) -> String;
    fn instance_tasks_all(&self, cluster: &str) -> String;
    fn instance_tasks_of(&self, cluster: &str, instance: &str) -> String;
    fn instance_task(&self, cluster: &str, instance: &str, id: &str) -> String;
    fn placement(&self, cluster: &str) -> String;
    fn run_token(&self, cluster: &str, token: &str) -> String;
    fn usages_of(&self, cluster: &str) -> String;
    fn usage(&self, cluster: &str, id: &str) -> String;
    fn instance_usages_of(&self, cluster: &str) -> String;
    fn instance_usage(&self, cluster: &str, id: &str) -> String;
    fn warm_ips_all(&self, host_cluster: &str) -> String;
    fn warm_ips_of(&self, host_cluster: &str, host: &str) -> String;
    fn warm_ip(&self, host_cluster: &str, host: &str, subnet: &str, ip: &str) -> String;
    fn subnet_ips(&self) -> String;
    fn subnet_ips_of(&self, subnet: &str) -> String;
    fn subnet_ip(&self, subnet: &str, ip: &str) -> String;
    fn task_credentials(&self, cluster: &str, id: &str) -> String;
}

impl Keys for Scope {
    fn base(&self) -> String {
        format!("/berth/v1/{}/{}/ecs", self.account, self.region)
    }

    /// Prefix of every cluster record.
    fn clusters(&self) -> String {
        format!("{}/clusters/", self.base())
    }
    fn cluster(&self, name: &str) -> String {
        format!("{}{name}", self.clusters())
    }

    /// Prefix of every task definition family record (revision counters).
    fn taskdef_families(&self) -> String {
        format!("{}/taskdef-families/", self.base())
    }
    fn taskdef_family(&self, family: &str) -> String {
        format!("{}{family}", self.taskdef_families())
    }

    /// Prefix of every task definition revision, ordered by family then revision.
    fn taskdefs(&self) -> String {
        format!("{}/taskdefs/", self.base())
    }
    /// Prefix of one family's revisions. The trailing `/` keeps `web` from
    /// matching `webapp`.
    fn taskdefs_of(&self, family: &str) -> String {
        format!("{}{family}/", self.taskdefs())
    }
    /// Revisions are zero-padded so key order is revision order.
    fn taskdef(&self, family: &str, revision: i64) -> String {
        format!("{}{revision:010}", self.taskdefs_of(family))
    }

    /// Index of revisions by status (empty values), written in the same
    /// transaction as the revision, so listings and "latest ACTIVE" walk
    /// keys instead of decoding records.
    fn taskdef_status_index(&self, status: &str) -> String {
        format!("{}/taskdef-status/{status}/", self.base())
    }
    fn taskdef_status_of(&self, status: &str, family: &str) -> String {
        format!("{}{family}/", self.taskdef_status_index(status))
    }
    fn taskdef_status(&self, status: &str, family: &str, revision: i64) -> String {
        format!("{}{revision:010}", self.taskdef_status_of(status, family))
    }

    /// Prefix of account settings; `principal` is an IAM ARN or `default`
    /// for the account-wide default.
    fn account_settings(&self) -> String {
        format!("{}/account-settings/", self.base())
    }
    fn account_setting(&self, principal: &str, name: &str) -> String {
        format!(
            "{}{}/{name}",
            self.account_settings(),
            principal_segment(principal)
        )
    }

    /// Prefix of the desired records of one cluster's tasks.
    fn tasks_of(&self, cluster: &str) -> String {
        format!("{}/tasks/{cluster}/", self.base())
    }
    fn task(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.tasks_of(cluster))
    }
    /// What agents observed of each task: written only by the gateway.
    fn task_states_of(&self, cluster: &str) -> String {
        format!("{}/task-states/{cluster}/", self.base())
    }
    fn task_state(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.task_states_of(cluster))
    }
    /// Tasks waiting in PROVISIONING for an Auto Scaling group capacity
    /// provider's capacity, with what placing them later needs.
    fn waiting_tasks_of(&self, cluster: &str) -> String {
        format!("{}/waiting-tasks/{cluster}/", self.base())
    }
    fn waiting_task(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.waiting_tasks_of(cluster))
    }
    /// The tasks placed on one instance and not yet reported STOPPED,
    /// written with each task's desired record (the value is its desired
    /// status), so the gateway watches one prefix per agent.
    fn instance_tasks_all(&self, cluster: &str) -> String {
        format!("{}/instance-tasks/{cluster}/", self.base())
    }
    /// The Fargate pool's hosts run tasks of every cluster: their entries
    /// are `{cluster}/{id}` (berth_domain::task::Task::index_entry).
    fn instance_tasks_of(&self, cluster: &str, instance: &str) -> String {
        format!("{}{instance}/", self.instance_tasks_all(cluster))
    }
    fn instance_task(&self, cluster: &str, instance: &str, id: &str) -> String {
        format!("{}{id}", self.instance_tasks_of(cluster, instance))
    }
    /// Bumped by every placement in a cluster; placements compare it, so
    /// two plans made from the same snapshot cannot both commit.
    fn placement(&self, cluster: &str) -> String {
        format!("{}/placement/{cluster}", self.base())
    }
    /// RunTask clientTokens, kept for a while under a lease.
    fn run_token(&self, cluster: &str, token: &str) -> String {
        format!("{}/run-tokens/{cluster}/{token}", self.base())
    }
    /// Metering: what each stopped task ran (`billing::TaskUsage`),
    /// written when it is recorded STOPPED and kept after its records go.
    fn usages_of(&self, cluster: &str) -> String {
        format!("{}/usage/tasks/{cluster}/", self.base())
    }
    fn usage(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.usages_of(cluster))
    }
    /// Metering of deregistered container instances (`billing::InstanceUsage`).
    fn instance_usages_of(&self, cluster: &str) -> String {
        format!("{}/usage/instances/{cluster}/", self.base())
    }
    fn instance_usage(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.instance_usages_of(cluster))
    }
    /// Warm addresses: a few addresses per host and subnet of its zone held
    /// for tasks not placed yet, each with a namespace the host keeps
    /// ready (`network::WarmAddress`). The address is also held under
    /// `subnet-ips/`, with the value `warm:{host cluster}/{host}`.
    fn warm_ips_all(&self, host_cluster: &str) -> String {
        format!("{}/warm-ips/{host_cluster}/", self.base())
    }
    fn warm_ips_of(&self, host_cluster: &str, host: &str) -> String {
        format!("{}{host}/", self.warm_ips_all(host_cluster))
    }
    fn warm_ip(&self, host_cluster: &str, host: &str, subnet: &str, ip: &str) -> String {
        format!("{}{subnet}/{ip}", self.warm_ips_of(host_cluster, host))
    }
    /// The addresses awsvpc tasks hold in a subnet (the value is the
    /// task's key), written with the task and removed once it stopped, so
    /// that two placements never hand out one address. Also every
    /// security group's members.
    fn subnet_ips(&self) -> String {
        format!("{}/subnet-ips/", self.base())
    }
    fn subnet_ips_of(&self, subnet: &str) -> String {
        format!("{}{subnet}/", self.subnet_ips())
    }
    fn subnet_ip(&self, subnet: &str, ip: &str) -> String {
        format!("{}{ip}", self.subnet_ips_of(subnet))
    }
    /// The lease a task's role sessions live under (the value is its id,
    /// and the key is under it too): revoking it ends every session the
    /// task was given at once.
    fn task_credentials(&self, cluster: &str, id: &str) -> String {
        format!("{}/task-credentials/{cluster}/{id}", self.base())
    }
    /// Prefix of the ACTIVE and DRAINING services of one cluster: the
    /// spec users gave and the deployments and events the service
    /// controller keeps, in one record.
    fn services_of(&self, cluster: &str) -> String {
        format!("{}/services/{cluster}/", self.base())
    }
    fn service(&self, cluster: &str, name: &str) -> String {
        format!("{}{name}", self.services_of(cluster))
    }
    /// Deleted services whose tasks are all gone, kept under a lease so
    /// that they stay describable for a while; apart from the live ones so
    /// that the name can be used again and counts never see them.
    fn inactive_services_of(&self, cluster: &str) -> String {
        format!("{}/services-inactive/{cluster}/", self.base())
    }
    fn inactive_service(&self, cluster: &str, name: &str) -> String {
        format!("{}{name}", self.inactive_services_of(cluster))
    }
    /// Prefix of the ACTIVE and DRAINING container instances of every cluster.
    fn instances_all(&self) -> String {
        format!("{}/container-instances/", self.base())
    }
    /// Prefix of the ACTIVE and DRAINING container instances of one cluster.
    fn instances_of(&self, cluster: &str) -> String {
        format!("{}{cluster}/", self.instances_all())
    }
    fn instance(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.instances_of(cluster))
    }
    /// Deregistered instances, kept under a lease so that they stay
    /// describable for a while and then go; apart from the live ones so
    /// that counts and listings never see them.
    fn inactive_instances_of(&self, cluster: &str) -> String {
        format!("{}/container-instances-inactive/{cluster}/", self.base())
    }
    fn inactive_instance(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.inactive_instances_of(cluster))
    }
    /// Agents connected to the gateway, one key per instance under the
    /// connection's lease: observed state, written only by the gateway.
    fn agent_connections_of(&self, cluster: &str) -> String {
        format!("{}/agent-connections/{cluster}/", self.base())
    }
    fn agent_connection(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.agent_connections_of(cluster))
    }
}

/// Where the load balancer's records live: `/berth/v1/{account}/{region}/elbv2/...`.
pub trait ElbKeys {
    fn elb_base(&self) -> String;
    fn load_balancers(&self) -> String;
    fn load_balancer(&self, name: &str) -> String;
    fn target_groups(&self) -> String;
    fn target_group(&self, name: &str) -> String;
    fn listeners(&self) -> String;
    fn listeners_of(&self, lb_id: &str) -> String;
    fn listener(&self, lb_id: &str, id: &str) -> String;
    fn listener_port(&self, port: i32) -> String;
    fn elb_routing(&self) -> String;
    fn targets(&self) -> String;
    fn targets_of(&self, tg_id: &str) -> String;
    fn target(&self, tg_id: &str, target: &str) -> String;
    fn target_healths_of(&self, tg_id: &str) -> String;
    fn target_health(&self, tg_id: &str, target: &str) -> String;
    fn target_requests_of(&self, tg_id: &str) -> String;
    fn target_requests(&self, tg_id: &str, target: &str) -> String;
    fn target_observed(&self, tg_id: &str, target: &str) -> [String; 2];
}

impl ElbKeys for Scope {
    fn elb_base(&self) -> String {
        format!("/berth/v1/{}/{}/elbv2", self.account, self.region)
    }
    /// Load balancers by name (`elb::LoadBalancer`).
    fn load_balancers(&self) -> String {
        format!("{}/load-balancers/", self.elb_base())
    }
    fn load_balancer(&self, name: &str) -> String {
        format!("{}{name}", self.load_balancers())
    }
    /// Target groups by name (`elb::TargetGroup`).
    fn target_groups(&self) -> String {
        format!("{}/target-groups/", self.elb_base())
    }
    fn target_group(&self, name: &str) -> String {
        format!("{}{name}", self.target_groups())
    }
    /// Listeners, with their rules, by load balancer id (`elb::Listener`).
    fn listeners(&self) -> String {
        format!("{}/listeners/", self.elb_base())
    }
    fn listeners_of(&self, lb_id: &str) -> String {
        format!("{}{lb_id}/", self.listeners())
    }
    fn listener(&self, lb_id: &str, id: &str) -> String {
        format!("{}{id}", self.listeners_of(lb_id))
    }
    /// Which listener has a port (the value is its key): every load
    /// balancer listens on this host's ports, so a port is taken once.
    fn listener_port(&self, port: i32) -> String {
        format!("{}/listener-ports/{port}", self.elb_base())
    }
    /// Bumped by every write of a listener (rules included): what forwards
    /// to a target group is decided by comparing it, so a target group
    /// cannot be deleted while a listener starts to use it.
    fn elb_routing(&self) -> String {
        format!("{}/routing", self.elb_base())
    }
    /// Registered targets by target group id and `{id}:{port}`
    /// (`elb::Registration`): desired state.
    fn targets(&self) -> String {
        format!("{}/targets/", self.elb_base())
    }
    fn targets_of(&self, tg_id: &str) -> String {
        format!("{}{tg_id}/", self.targets())
    }
    fn target(&self, tg_id: &str, target: &str) -> String {
        format!("{}{target}", self.targets_of(tg_id))
    }
    /// What health checks found (`elb::HealthRecord`): observed state,
    /// written only by the data path.
    fn target_healths_of(&self, tg_id: &str) -> String {
        format!("{}/target-health/{tg_id}/", self.elb_base())
    }
    fn target_health(&self, tg_id: &str, target: &str) -> String {
        format!("{}{target}", self.target_healths_of(tg_id))
    }
    /// Requests sent to each target (`elb::RequestCount`): observed,
    /// written by the data path every few seconds while they change.
    fn target_requests_of(&self, tg_id: &str) -> String {
        format!("{}/target-requests/{tg_id}/", self.elb_base())
    }
    fn target_requests(&self, tg_id: &str, target: &str) -> String {
        format!("{}{target}", self.target_requests_of(tg_id))
    }
    /// What the data path records of a registration (its health and its
    /// request count), removed with it.
    fn target_observed(&self, tg_id: &str, target: &str) -> [String; 2] {
        [
            self.target_health(tg_id, target),
            self.target_requests(tg_id, target),
        ]
    }
}

/// IAM's records: global, so per account only, under the region `global`
/// (which no AWS region is named), keeping every key's
/// `{account}/{region}/{service}/{kind}` shape.
pub mod iam {
    pub fn base(account: &str) -> String {
        format!("/berth/v1/{account}/global/iam")
    }
    /// Long-term access keys by id (`berth_iam::AccessKey`).
    pub fn access_keys(account: &str) -> String {
        format!("{}/access-keys/", base(account))
    }
    pub fn access_key(account: &str, id: &str) -> String {
        format!("{}{id}", access_keys(account))
    }
    /// Temporary credentials by key id (`berth_iam::Session`), under a
    /// lease that ends a little after they expire.
    pub fn sessions(account: &str) -> String {
        format!("{}/sessions/", base(account))
    }
    pub fn session(account: &str, id: &str) -> String {
        format!("{}{id}", sessions(account))
    }
    /// The id of the account root's bootstrap key: written once, by the
    /// first server to start on the store.
    pub fn root_key(account: &str) -> String {
        format!("{}/root-key", base(account))
    }
    /// Users by lower-cased name (IAM names are unique regardless of case),
    /// with their inline policies and attachments (`berth_iam::records::User`).
    pub fn users(account: &str) -> String {
        format!("{}/users/", base(account))
    }
    pub fn user(account: &str, name: &str) -> String {
        format!("{}{}", users(account), name.to_lowercase())
    }
    /// Groups by lower-cased name, with their inline policies and
    /// attachments (`berth_iam::records::Group`); members are named in
    /// their user records.
    pub fn groups(account: &str) -> String {
        format!("{}/groups/", base(account))
    }
    pub fn group(account: &str, name: &str) -> String {
        format!("{}{}", groups(account), name.to_lowercase())
    }
    /// Roles by lower-cased name, with their trust policy, inline policies
    /// and attachments (`berth_iam::records::Role`).
    pub fn roles(account: &str) -> String {
        format!("{}/roles/", base(account))
    }
    pub fn role(account: &str, name: &str) -> String {
        format!("{}{}", roles(account), name.to_lowercase())
    }
    /// Instance profiles by lower-cased name (`berth_iam::records::InstanceProfile`).
    pub fn instance_profiles(account: &str) -> String {
        format!("{}/instance-profiles/", base(account))
    }
    pub fn instance_profile(account: &str, name: &str) -> String {
        format!("{}{}", instance_profiles(account), name.to_lowercase())
    }
    /// Customer-managed policies by lower-cased name, with their versions.
    pub fn policies(account: &str) -> String {
        format!("{}/policies/", base(account))
    }
    pub fn policy(account: &str, name: &str) -> String {
        format!("{}{}", policies(account), name.to_lowercase())
    }
    /// The access key id a container instance's agent got when it joined,
    /// by cluster (or the Fargate pool) and EC2-style id: a host that joins
    /// again replaces its key.
    pub fn instance_key(account: &str, cluster: &str, instance: &str) -> String {
        format!("{}/instance-keys/{cluster}/{instance}", base(account))
    }
    /// Join tokens by id (`berth_iam::join::JoinToken`). Outside `base`:
    /// issuing one changes no principal, so it must not drop what the
    /// front door keeps of keys and policies.
    pub fn join_tokens(account: &str) -> String {
        format!("/berth/v1/{account}/global/join-tokens/")
    }
    pub fn join_token(account: &str, id: &str) -> String {
        format!("{}{id}", join_tokens(account))
    }
    /// The hosts that joined with a token, one key each: counted for
    /// `berth token ls` without every join writing the token's record.
    pub fn join_token_uses(account: &str, id: &str) -> String {
        format!("/berth/v1/{account}/global/join-token-uses/{id}/")
    }
}

/// Parameter Store's records: regional, like ECS's.
pub mod ssm {
    use berth_domain::Scope;

    /// Parameters by name without its leading slash (`berth_domain::ssm::key_of`),
    /// each with its kept versions (`berth_domain::ssm::ParameterRecord`):
    /// a hierarchy's parameters share the key prefix of its path.
    pub fn parameters(scope: &Scope) -> String {
        format!(
            "/berth/v1/{}/{}/ssm/parameters/",
            scope.account, scope.region
        )
    }
    pub fn parameter(scope: &Scope, key: &str) -> String {
        format!("{}{key}", parameters(scope))
    }
}

/// Secrets Manager's records: regional, by name
/// (`berth_domain::secrets::SecretRecord`, with its versions).
pub mod secrets {
    use berth_domain::Scope;

    pub fn all(scope: &Scope) -> String {
        format!(
            "/berth/v1/{}/{}/secretsmanager/secrets/",
            scope.account, scope.region
        )
    }
    pub fn secret(scope: &Scope, name: &str) -> String {
        format!("{}{name}", all(scope))
    }
}

/// CloudWatch's alarms: regional. An alarm as users set it and its state
/// as the evaluator finds it are two records with one writer each; each
/// history item is a record of its own. Names may hold `/`, escaped to
/// keep one segment. The regions that have alarms are listed under the
/// account, so the evaluator finds them all.
pub mod cloudwatch {
    use berth_domain::Scope;

    fn base(scope: &Scope) -> String {
        format!("/berth/v1/{}/{}/cloudwatch", scope.account, scope.region)
    }
    fn segment(name: &str) -> String {
        super::principal_segment(name)
    }
    pub fn alarms(scope: &Scope) -> String {
        format!("{}/alarms/", base(scope))
    }
    pub fn alarm(scope: &Scope, name: &str) -> String {
        format!("{}{}", alarms(scope), segment(name))
    }
    pub fn alarm_states(scope: &Scope) -> String {
        format!("{}/alarm-states/", base(scope))
    }
    pub fn alarm_state(scope: &Scope, name: &str) -> String {
        format!("{}{}", alarm_states(scope), segment(name))
    }
    pub fn history(scope: &Scope) -> String {
        format!("{}/alarm-history/", base(scope))
    }
    pub fn history_of(scope: &Scope, name: &str) -> String {
        format!("{}{}/", history(scope), segment(name))
    }
    /// One item: ordered by time within its alarm.
    pub fn history_item(scope: &Scope, name: &str, at_ms: i64, unique: &str) -> String {
        format!("{}{at_ms:016}-{unique}", history_of(scope, name))
    }
    pub fn regions(account: &str) -> String {
        format!("/berth/v1/{account}/global/cloudwatch-regions/")
    }
    pub fn region(account: &str, region: &str) -> String {
        format!("{}{region}", regions(account))
    }
    /// An alarm's name from the last segment of its keys.
    pub fn name_of(segment: &str) -> String {
        segment.replace("%2F", "/").replace("%25", "%")
    }
}

/// Application Auto Scaling's records: regional, by the target's resource
/// id (escaped to one segment). Targets and policies are the API's; the
/// cooldowns and activities are the scaler's.
pub mod scaling {
    use berth_domain::Scope;

    fn base(scope: &Scope) -> String {
        format!(
            "/berth/v1/{}/{}/application-autoscaling",
            scope.account, scope.region
        )
    }
    fn segment(resource: &str) -> String {
        super::principal_segment(resource)
    }
    pub fn targets(scope: &Scope) -> String {
        format!("{}/targets/", base(scope))
    }
    pub fn target(scope: &Scope, resource: &str) -> String {
        format!("{}{}", targets(scope), segment(resource))
    }
    pub fn policies(scope: &Scope) -> String {
        format!("{}/policies/", base(scope))
    }
    pub fn policies_of(scope: &Scope, resource: &str) -> String {
        format!("{}{}/", policies(scope), segment(resource))
    }
    pub fn policy(scope: &Scope, resource: &str, name: &str) -> String {
        format!("{}{}", policies_of(scope, resource), segment(name))
    }
    pub fn scheduled(scope: &Scope) -> String {
        format!("{}/scheduled/", base(scope))
    }
    pub fn scheduled_of(scope: &Scope, resource: &str) -> String {
        format!("{}{}/", scheduled(scope), segment(resource))
    }
    pub fn scheduled_action(scope: &Scope, resource: &str, name: &str) -> String {
        format!("{}{}", scheduled_of(scope, resource), segment(name))
    }
    pub fn scheduled_state(scope: &Scope, resource: &str, name: &str) -> String {
        format!(
            "{}/scheduled-states/{}/{}",
            base(scope),
            segment(resource),
            segment(name)
        )
    }
    pub fn cooldowns(scope: &Scope, resource: &str) -> String {
        format!("{}/cooldowns/{}", base(scope), segment(resource))
    }
    pub fn activities(scope: &Scope) -> String {
        format!("{}/activities/", base(scope))
    }
    pub fn activities_of(scope: &Scope, resource: &str) -> String {
        format!("{}{}/", activities(scope), segment(resource))
    }
    pub fn activity(scope: &Scope, resource: &str, at_ms: i64, id: &str) -> String {
        format!("{}{at_ms:016}-{id}", activities_of(scope, resource))
    }
}

/// IAM ARNs contain `/` and `:`; escape `/` so a principal is one segment.
fn principal_segment(principal: &str) -> String {
    principal.replace('%', "%25").replace('/', "%2F")
}

/// Splits the tail of a task definition key (`{family}/{revision:010}`).
pub fn parse_family_revision(tail: &str) -> Option<(&str, i64)> {
    let (family, rev) = tail.rsplit_once('/')?;
    Some((family, rev.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn taskdef_keys_sort_by_revision() {
        let s = scope();
        assert!(s.taskdef("web", 9) < s.taskdef("web", 10));
        assert!(s.taskdef("web", 10).starts_with(&s.taskdefs_of("web")));
        assert!(!s.taskdef("webapp", 1).starts_with(&s.taskdefs_of("web")));
    }

    #[test]
    fn status_index_keys_parse_back() {
        let s = scope();
        let k = s.taskdef_status("ACTIVE", "web", 12);
        let tail = k
            .strip_prefix(&s.taskdef_status_index("ACTIVE"))
            .expect("prefix");
        assert_eq!(parse_family_revision(tail), Some(("web", 12)));
    }

    #[test]
    fn principal_is_one_segment() {
        let k = scope().account_setting("arn:aws:iam::1:role/a/b", "containerInsights");
        assert!(k.ends_with("/arn:aws:iam::1:role%2Fa%2Fb/containerInsights"));
    }
}

/// SQS: regional. A queue's record is the API's; its messages are records
/// of their own under the queue, keyed by sequence number (so a range
/// reads them oldest first), each written by its send and then by every
/// receive. FIFO deduplication ids are remembered for five minutes; a
/// deleted queue's name is held for a minute.
pub mod sqs {
    use berth_domain::Scope;

    fn base(scope: &Scope) -> String {
        format!("/berth/v1/{}/{}/sqs", scope.account, scope.region)
    }
    pub fn queues(scope: &Scope) -> String {
        format!("{}/queues/", base(scope))
    }
    pub fn queue(scope: &Scope, name: &str) -> String {
        format!("{}{name}", queues(scope))
    }
    pub fn messages_of(scope: &Scope, queue: &str) -> String {
        format!("{}/messages/{queue}/", base(scope))
    }
    pub fn message(scope: &Scope, queue: &str, sequence: &str) -> String {
        format!("{}{sequence}", messages_of(scope, queue))
    }
    pub fn dedup_of(scope: &Scope, queue: &str) -> String {
        format!("{}/dedup/{queue}/", base(scope))
    }
    pub fn dedup(scope: &Scope, queue: &str, id: &str) -> String {
        format!("{}{}", dedup_of(scope, queue), super::principal_segment(id))
    }
    pub fn deleted(scope: &Scope, queue: &str) -> String {
        format!("{}/deleted/{queue}", base(scope))
    }
}

/// Auto Scaling groups: regional, by group name (escaped to one segment).
/// A group's record, its lifecycle hooks, its instances' protection, and
/// the terminations and lifecycle actions asked for are the API's; its
/// instances and activities are the group controller's.
pub mod autoscaling {
    use berth_domain::Scope;

    fn base(scope: &Scope) -> String {
        format!("/berth/v1/{}/{}/autoscaling", scope.account, scope.region)
    }
    fn segment(name: &str) -> String {
        super::principal_segment(name)
    }
    /// A group's name from the last segment of its keys.
    pub fn name_of(segment: &str) -> String {
        segment.replace("%2F", "/").replace("%25", "%")
    }
    pub fn groups(scope: &Scope) -> String {
        format!("{}/groups/", base(scope))
    }
    pub fn group(scope: &Scope, name: &str) -> String {
        format!("{}{}", groups(scope), segment(name))
    }
    fn under(scope: &Scope, kind: &str, group: &str) -> String {
        format!("{}/{kind}/{}/", base(scope), segment(group))
    }
    pub fn instances_of(scope: &Scope, group: &str) -> String {
        under(scope, "instances", group)
    }
    pub fn instance(scope: &Scope, group: &str, id: &str) -> String {
        format!("{}{id}", instances_of(scope, group))
    }
    pub fn protections_of(scope: &Scope, group: &str) -> String {
        under(scope, "protection", group)
    }
    pub fn protection(scope: &Scope, group: &str, id: &str) -> String {
        format!("{}{id}", protections_of(scope, group))
    }
    pub fn terminations_of(scope: &Scope, group: &str) -> String {
        under(scope, "terminations", group)
    }
    pub fn termination(scope: &Scope, group: &str, id: &str) -> String {
        format!("{}{id}", terminations_of(scope, group))
    }
    pub fn actions_of(scope: &Scope, group: &str) -> String {
        under(scope, "lifecycle-actions", group)
    }
    pub fn action(scope: &Scope, group: &str, id: &str) -> String {
        format!("{}{id}", actions_of(scope, group))
    }
    pub fn hooks_of(scope: &Scope, group: &str) -> String {
        under(scope, "hooks", group)
    }
    pub fn hook(scope: &Scope, group: &str, name: &str) -> String {
        format!("{}{}", hooks_of(scope, group), segment(name))
    }
    pub fn activities_of(scope: &Scope, group: &str) -> String {
        under(scope, "activities", group)
    }
    /// Ordered by start within the group.
    pub fn activity(scope: &Scope, group: &str, start_ms: i64, id: &str) -> String {
        format!("{}{start_ms:016}-{id}", activities_of(scope, group))
    }
    /// Every record of a group, for deleting it.
    pub fn all_of(scope: &Scope, group: &str) -> Vec<String> {
        [
            "instances",
            "protection",
            "terminations",
            "lifecycle-actions",
            "hooks",
            "activities",
        ]
        .iter()
        .map(|k| under(scope, k, group))
        .collect()
    }
}

/// EC2's launch templates: regional, by id, with a name index; each
/// version a record of its own.
pub mod ec2 {
    use berth_domain::Scope;

    fn base(scope: &Scope) -> String {
        format!("/berth/v1/{}/{}/ec2", scope.account, scope.region)
    }
    pub fn templates(scope: &Scope) -> String {
        format!("{}/launch-templates/", base(scope))
    }
    pub fn template(scope: &Scope, id: &str) -> String {
        format!("{}{id}", templates(scope))
    }
    pub fn template_name(scope: &Scope, name: &str) -> String {
        format!(
            "{}/launch-template-names/{}",
            base(scope),
            super::principal_segment(name)
        )
    }
    pub fn versions_of(scope: &Scope, id: &str) -> String {
        format!("{}/launch-template-versions/{id}/", base(scope))
    }
    pub fn version(scope: &Scope, id: &str, number: i64) -> String {
        format!("{}{number:010}", versions_of(scope, id))
    }
    /// The account's VPCs, subnets and security groups, one record
    /// (`network::NetworkConfig`): small, changed rarely, and changed as a
    /// whole with compare-and-swap so that no check (overlapping blocks,
    /// names, rules naming groups) races another change. Not regional:
    /// Berth's hosts share one network whatever region a caller names.
    pub fn network(account: &str) -> String {
        format!("{}config", network_prefix(account))
    }
    /// The prefix the network record is under, for watches.
    pub fn network_prefix(account: &str) -> String {
        format!("/berth/v1/{account}/ec2-network/")
    }
}

/// ECS's custom capacity providers (over Auto Scaling groups): regional,
/// by name; written by the ECS API.
pub mod capacity {
    use berth_domain::Scope;

    pub fn providers(scope: &Scope) -> String {
        format!(
            "/berth/v1/{}/{}/ecs/capacity-providers/",
            scope.account, scope.region
        )
    }
    pub fn provider(scope: &Scope, name: &str) -> String {
        format!("{}{name}", providers(scope))
    }
}
