//! Services: CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices, and the service-deployment API (ListServiceDeployments,
//! DescribeServiceDeployments, DescribeServiceRevisions,
//! StopServiceDeployment). Handlers write what users ask for; the service
//! controller (`crate::controller`) starts and stops the tasks and moves
//! the deployments on.

use super::{compare_and_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::clusters::{active_cluster, still_active};
use berth_control::launch::{launch_type, prepare, LaunchInput};
use berth_control::placement::ClusterTasks;
use berth_control::services::{counts_of, deployment_digits};
use berth_domain::deployment::Scheduling;
use berth_domain::service::{self, Counts, Service, ServiceStatus};
use berth_domain::{arn, paging, tags, EcsError, Scope};
use berth_store::keys::Keys;
use berth_store::{typed, Op, Txn};
use berth_wire::ecs as w;

/// Services per DescribeServices call.
const MAX_DESCRIBE: usize = 10;

/// A service record and whether it is the INACTIVE copy.
pub(crate) struct Found {
    pub service: typed::Versioned<Service>,
    pub key: String,
}

impl Found {
    /// The record, if the service is ACTIVE (ServiceNotActive otherwise).
    fn active(&self) -> Result<Service, ApiError> {
        match self.service.value.status {
            ServiceStatus::Active => Ok(self.service.value.clone()),
            _ => Err(EcsError::ServiceNotActive.into()),
        }
    }

    /// Writes `next` over the record as read, comparing its revision, if
    /// it differs.
    fn rewrite(&self, mut next: Service) -> Attempt<Service> {
        if next == self.service.value {
            return Attempt::Done(next);
        }
        next.version = self.service.value.version + 1;
        let txn = Txn::when(
            vec![typed::unchanged(&self.key, self.service.mod_revision)],
            vec![typed::put(&self.key, &next)],
        );
        Attempt::Write(txn, next)
    }
}

/// The service a `service` parameter names: the live record, or the
/// INACTIVE one kept after deletion when `inactive_too`.
pub(crate) async fn find(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    given: Option<&str>,
    inactive_too: bool,
) -> Result<Option<Found>, ApiError> {
    let given = given.unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid("service is required.").into());
    }
    let Some(name) = arn::service_name(scope, cluster, given) else {
        return Ok(None);
    };
    let key = scope.service(cluster, &name);
    if let Some(s) = typed::get::<Service>(&*st.store, &key).await? {
        return Ok(Some(Found { service: s, key }));
    }
    if inactive_too {
        let key = scope.inactive_service(cluster, &name);
        if let Some(s) = typed::get::<Service>(&*st.store, &key).await? {
            return Ok(Some(Found { service: s, key }));
        }
    }
    Ok(None)
}

fn scheduling(given: Option<&str>) -> Result<Scheduling, EcsError> {
    let s = given.unwrap_or("REPLICA");
    berth_domain::one_of(s, &["REPLICA", "DAEMON"], "schedulingStrategy")?;
    Ok(if s == "DAEMON" {
        Scheduling::Daemon
    } else {
        Scheduling::Replica
    })
}

/// What CreateService and UpdateService may ask for that Berth does not
/// have: refused, never stored and ignored.
struct Asked<'a> {
    registries: Option<&'a [w::ServiceRegistry]>,
    connect: Option<&'a w::ServiceConnectConfiguration>,
    controller: Option<&'a w::DeploymentController>,
    gateways: bool,
    lattice: bool,
    volumes: bool,
    rebalancing: Option<&'a str>,
}

/// What a CreateService or UpdateService request asks of the parts Berth
/// does not run: the two shapes differ, their members do not.
macro_rules! asked {
    ($req:expr) => {
        Asked {
            registries: $req.service_registries.as_deref(),
            connect: $req.service_connect_configuration.as_ref(),
            controller: $req.deployment_controller.as_ref(),
            gateways: $req
                .gateway_connectors
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            lattice: $req
                .vpc_lattice_configurations
                .as_ref()
                .is_some_and(|l| !l.is_empty()),
            volumes: $req
                .volume_configurations
                .as_ref()
                .is_some_and(|v| !v.is_empty()),
            rebalancing: $req.availability_zone_rebalancing.as_deref(),
        }
    };
}

/// What Berth cannot do for a service yet, refused by name rather than
/// accepted and ignored.
fn unsupported_parts(a: Asked<'_>) -> Result<(), EcsError> {
    if a.registries.is_some_and(|r| !r.is_empty()) {
        return Err(EcsError::UnsupportedFeature(
            "serviceRegistries: Berth has no Cloud Map service discovery.".into(),
        ));
    }
    if a.connect.is_some_and(|c| c.enabled == Some(true)) {
        return Err(EcsError::UnsupportedFeature(
            "serviceConnectConfiguration: Berth has no Service Connect.".into(),
        ));
    }
    if let Some(t) = a.controller.and_then(|c| c.r#type.as_deref()) {
        berth_domain::one_of(
            t,
            &["ECS", "CODE_DEPLOY", "EXTERNAL"],
            "deploymentController.type",
        )?;
        if t != "ECS" {
            return Err(EcsError::UnsupportedFeature(format!(
                "deploymentController.type {t}: Berth runs the ECS deployment controller only."
            )));
        }
    }
    for (asked, what) in [
        (a.gateways, "gatewayConnectors: Berth has no ECS gateways."),
        (
            a.lattice,
            "vpcLatticeConfigurations: Berth has no VPC Lattice.",
        ),
        (
            a.volumes,
            "volumeConfigurations: Berth has no Amazon EBS volumes to attach to tasks.",
        ),
    ] {
        if asked {
            return Err(EcsError::UnsupportedFeature(what.into()));
        }
    }
    if let Some(r) = a.rebalancing {
        berth_domain::one_of(r, &["ENABLED", "DISABLED"], "availabilityZoneRebalancing")?;
        if r == "ENABLED" {
            return Err(EcsError::UnsupportedFeature(
                "availabilityZoneRebalancing ENABLED: Berth spreads a service's tasks over zones when it places them but does not move running tasks to rebalance; use DISABLED.".into(),
            ));
        }
    }
    Ok(())
}

fn propagate_tags(given: Option<&str>) -> Result<String, EcsError> {
    let p = given.unwrap_or("NONE");
    berth_domain::one_of(p, &["TASK_DEFINITION", "SERVICE", "NONE"], "propagateTags")?;
    Ok(p.to_string())
}

fn daemon_rules(
    desired: Option<i32>,
    strategy: Option<&[w::PlacementStrategy]>,
) -> Result<(), EcsError> {
    if desired.is_some() {
        return Err(EcsError::invalid(
            "The daemon scheduling strategy does not support a desired count for services. Remove the desired count value and try again",
        ));
    }
    if strategy.is_some_and(|s| !s.is_empty()) {
        return Err(EcsError::invalid(
            "The daemon scheduling strategy does not support placement strategies. Remove the placement strategy and try again",
        ));
    }
    Ok(())
}

/// Checks that `task_definition` can run as this service's tasks, with
/// the service's placement and load balancers; returns its ARN.
#[allow(clippy::too_many_arguments)]
async fn checked_task_definition(
    st: &AppState,
    scope: &Scope,
    name: &str,
    task_definition: Option<&str>,
    launch_type: &str,
    constraints: &[w::PlacementConstraint],
    strategy: &[w::PlacementStrategy],
    network: Option<&w::NetworkConfiguration>,
    load_balancers: &[w::LoadBalancer],
) -> Result<String, ApiError> {
    if task_definition.is_none_or(str::is_empty) {
        return Err(EcsError::invalid("taskDefinition is required.").into());
    }
    let group = format!("service:{name}");
    let launch = prepare(
        st,
        scope,
        LaunchInput {
            task_definition,
            group: Some(&group),
            service: Some(name),
            constraints: Some(constraints),
            strategies: Some(strategy),
            launch_type,
            count: 1,
            network_configuration: network,
            ..Default::default()
        },
    )
    .await?;
    berth_control::service_lb::validate(st, scope, launch.definition(), load_balancers).await?;
    Ok(launch.arn().to_string())
}

pub async fn create_service(
    st: &AppState,
    ctx: &RequestContext,
    req: w::CreateServiceRequest,
) -> Result<w::CreateServiceResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, record) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let name = service::validate_name(req.service_name.as_deref())?.to_string();
    let sched = scheduling(req.scheduling_strategy.as_deref())?;
    unsupported_parts(asked!(req))?;
    let desired = match sched {
        Scheduling::Daemon => {
            daemon_rules(req.desired_count, req.placement_strategy.as_deref())?;
            if req.launch_type.as_deref() == Some("FARGATE") {
                return Err(EcsError::invalid(
                    "Tasks using the Fargate launch type do not support the DAEMON scheduling strategy.",
                )
                .into());
            }
            if req
                .capacity_provider_strategy
                .as_ref()
                .is_some_and(|s| !s.is_empty())
            {
                return Err(EcsError::invalid(
                    "Specifying a capacity provider strategy is not supported when you create a service using the DAEMON scheduling strategy.",
                )
                .into());
            }
            0
        }
        Scheduling::Replica => {
            service::validate_desired_count(req.desired_count.ok_or_else(|| {
                EcsError::invalid(
                    "desiredCount is required for a service with the REPLICA scheduling strategy.",
                )
            })?)?
        }
    };
    // DAEMON services run on EC2 whatever the cluster's default strategy.
    let default_strategy = match sched {
        Scheduling::Daemon => vec![],
        Scheduling::Replica => record.value.default_strategy.clone(),
    };
    let capacity = launch_type(
        req.launch_type.as_deref(),
        req.capacity_provider_strategy.as_deref(),
        &record.value.capacity_providers,
        &default_strategy,
    )?;
    berth_domain::task::check_platform_version(
        req.platform_version.as_deref(),
        &capacity.launch_type,
    )?;
    let grace = service::validate_grace_period(req.health_check_grace_period_seconds.unwrap_or(0))?;
    let (rolling, breaker) =
        service::deployment_configuration(sched, req.deployment_configuration.as_ref(), None)?;
    let tag_list = req.tags.clone().unwrap_or_default();
    tags::validate(&tag_list)?;
    if let Some(t) = &req.client_token {
        if t.is_empty() || t.len() > 36 {
            return Err(EcsError::invalid("clientToken must be 1 to 36 characters.").into());
        }
    }
    let constraints = req.placement_constraints.clone().unwrap_or_default();
    let strategy = req.placement_strategy.clone().unwrap_or_default();
    let td = checked_task_definition(
        st,
        scope,
        &name,
        req.task_definition.as_deref(),
        &capacity.launch_type,
        &constraints,
        &strategy,
        req.network_configuration.as_ref(),
        req.load_balancers.as_deref().unwrap_or_default(),
    )
    .await?;
    let role_arn = berth_control::service_lb::service_role(
        st,
        scope,
        req.role.as_deref(),
        !req.load_balancers.as_deref().unwrap_or_default().is_empty(),
    )
    .await?;
    if let Some(m) = &req.monitoring {
        service::check_monitoring(m)?;
    }
    let monitoring = req.monitoring.clone();
    let at = st.now();
    let svc = Service {
        name: name.clone(),
        cluster: cluster.clone(),
        status: ServiceStatus::Active,
        scheduling: sched,
        desired_count: desired,
        launch_type: capacity.launch_type,
        capacity_provider_strategy: capacity.strategy,
        task_definition_arn: td.clone(),
        rolling,
        circuit_breaker: breaker,
        monitoring,
        placement_constraints: constraints,
        placement_strategy: strategy,
        health_check_grace_period_seconds: grace,
        load_balancers: req.load_balancers.clone().unwrap_or_default(),
        role_arn,
        network_configuration: req.network_configuration.clone(),
        propagate_tags: propagate_tags(req.propagate_tags.as_deref())?,
        enable_ecs_managed_tags: req.enable_ecs_managed_tags.unwrap_or(false),
        enable_execute_command: req.enable_execute_command.unwrap_or(false),
        tags: tag_list,
        created_at: at,
        created_by: ctx.principal.clone(),
        client_token: req.client_token.clone(),
        deployments: vec![service::Deployment {
            load_balancers: req.load_balancers.clone().unwrap_or_default(),
            ..service::Deployment::new(&td, at, deployment_digits())
        }],
        events: vec![],
        steady: false,
        deleted_at: None,
        daemon_desired: 0,
        unplaceable_reported_at: None,
        version: 1,
    };
    let key = scope.service(&cluster, &name);
    let (key, svc, cluster) = (&key, &svc, &cluster);
    let stored = compare_and_swap(
        st,
        || "The service is being created by another request; try again.".into(),
        move || async move {
            if let Some(existing) = typed::get::<Service>(&*st.store, key).await? {
                let same = svc.client_token.is_some()
                    && existing.value.client_token == svc.client_token
                    && existing.value.task_definition_arn == svc.task_definition_arn;
                if same {
                    return Ok(Attempt::Done(existing.value));
                }
                return Err(EcsError::invalid("Creation of service was not idempotent.").into());
            }
            // The name of a deleted service may be used again.
            let gone = scope.inactive_service(cluster, &svc.name);
            let txn = Txn::when(
                vec![
                    typed::unchanged(key, 0),
                    still_active(st, scope, cluster).await?,
                ],
                vec![
                    typed::put(key, svc),
                    Op::delete(gone),
                    Op::put(scope.placement(cluster), vec![]),
                ],
            );
            Ok(Attempt::Write(txn, svc.clone()))
        },
    )
    .await?;
    tracing::info!(cluster = %cluster, service = %name, desired, "service created");
    Ok(w::CreateServiceResponse {
        service: Some(stored.view(scope, &Counts::default(), true)),
    })
}

pub async fn update_service(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UpdateServiceRequest,
) -> Result<w::UpdateServiceResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, record) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    unsupported_parts(asked!(req))?;
    // A new strategy moves the service onto those providers (FARGATE).
    let new_capacity = match req.capacity_provider_strategy.as_deref() {
        Some(s) if !s.is_empty() => Some(launch_type(
            None,
            Some(s),
            &record.value.capacity_providers,
            &[],
        )?),
        _ => None,
    };
    let (req, cluster, new_capacity) = (&req, &cluster, &new_capacity);
    let updated = compare_and_swap(
        st,
        || "The service is being changed by another request; try again.".into(),
        move || async move {
            let found = find(st, scope, cluster, req.service.as_deref(), false)
                .await?
                .ok_or(EcsError::ServiceNotFound)?;
            let mut svc = found.active()?;
            let before = svc.clone();
            if let Some(m) = &req.monitoring {
                service::check_monitoring(m)?;
                svc.monitoring = Some(m.clone());
            }
            if let Some(n) = req.desired_count {
                if svc.scheduling == Scheduling::Daemon {
                    daemon_rules(Some(n), None)?;
                }
                let n = service::validate_desired_count(n)?;
                if n != svc.desired_count {
                    svc.desired_count = n;
                    svc.steady = false;
                }
            }
            if let Some(s) = &req.placement_strategy {
                if svc.scheduling == Scheduling::Daemon {
                    daemon_rules(None, Some(s))?;
                }
                svc.placement_strategy = s.clone();
            }
            if let Some(c) = &req.placement_constraints {
                svc.placement_constraints = c.clone();
            }
            if let Some(g) = req.health_check_grace_period_seconds {
                svc.health_check_grace_period_seconds = service::validate_grace_period(g)?;
            }
            if let Some(p) = req.propagate_tags.as_deref() {
                svc.propagate_tags = propagate_tags(Some(p))?;
            }
            if let Some(e) = req.enable_execute_command {
                svc.enable_execute_command = e;
            }
            if let Some(e) = req.enable_ecs_managed_tags {
                svc.enable_ecs_managed_tags = e;
            }
            if req.deployment_configuration.is_some() {
                let (rolling, breaker) = service::deployment_configuration(
                    svc.scheduling,
                    req.deployment_configuration.as_ref(),
                    Some((svc.rolling, svc.circuit_breaker)),
                )?;
                svc.rolling = rolling;
                svc.circuit_breaker = breaker;
            }
            // The task definition (or the placement it must satisfy) is
            // checked as a launch would check it.
            if let Some(n) = &req.network_configuration {
                svc.network_configuration = Some(n.clone());
            }
            let mut moved = false;
            // New target groups take a new deployment, as in ECS.
            if let Some(lbs) = &req.load_balancers {
                moved |= *lbs != svc.load_balancers;
                svc.load_balancers = lbs.clone();
            }
            if let Some(c) = new_capacity {
                if svc.scheduling == Scheduling::Daemon {
                    return Err(EcsError::invalid(
                        "Specifying a capacity provider strategy is not supported for a service using the DAEMON scheduling strategy.",
                    )
                    .into());
                }
                moved = svc.launch_type != c.launch_type
                    || svc.capacity_provider_strategy != c.strategy;
                svc.launch_type = c.launch_type.clone();
                svc.capacity_provider_strategy = c.strategy.clone();
            }
            berth_domain::task::check_platform_version(
                req.platform_version.as_deref(),
                &svc.launch_type,
            )?;
            let td = match req.task_definition.as_deref() {
                Some(given) => Some(given),
                None if req.placement_constraints.is_some()
                    || req.network_configuration.is_some()
                    || moved =>
                {
                    Some(svc.task_definition_arn.as_str())
                }
                None => None,
            };
            if let Some(td) = td {
                let arn = checked_task_definition(
                    st,
                    scope,
                    &svc.name,
                    Some(td),
                    &svc.launch_type,
                    &svc.placement_constraints,
                    &svc.placement_strategy,
                    svc.network_configuration.as_ref(),
                    &svc.load_balancers,
                )
                .await?;
                if arn != svc.task_definition_arn || moved {
                    svc.deploy(&arn, st.now(), deployment_digits());
                }
            }
            if req.force_new_deployment.unwrap_or(false)
                && svc.primary().created_at == before.primary().created_at
            {
                let td = svc.task_definition_arn.clone();
                svc.deploy(&td, st.now(), deployment_digits());
            }
            Ok(found.rewrite(svc))
        },
    )
    .await?;
    tracing::info!(cluster = %cluster, service = %updated.name, desired = updated.desired_count, deployment = %updated.primary().id, "service updated");
    let tasks = ClusterTasks::load(st, scope, cluster).await?;
    Ok(w::UpdateServiceResponse {
        service: Some(updated.view(scope, &counts_of(&tasks, &updated), false)),
    })
}

pub async fn delete_service(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteServiceRequest,
) -> Result<w::DeleteServiceResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, _) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let (req, cluster) = (&req, &cluster);
    let deleted = compare_and_swap(
        st,
        || "The service is being changed by another request; try again.".into(),
        move || async move {
            let found = find(st, scope, cluster, req.service.as_deref(), false)
                .await?
                .ok_or(EcsError::ServiceNotFound)?;
            let mut svc = found.active()?;
            let force = req.force.unwrap_or(false);
            if svc.scheduling == Scheduling::Replica && svc.desired_count > 0 && !force {
                return Err(EcsError::invalid(
                    "The service cannot be stopped while it is scaled above 0.",
                )
                .into());
            }
            svc.status = ServiceStatus::Draining;
            svc.desired_count = 0;
            svc.deleted_at = Some(st.now());
            Ok(found.rewrite(svc))
        },
    )
    .await?;
    tracing::info!(cluster = %cluster, service = %deleted.name, "service deleted");
    let tasks = ClusterTasks::load(st, scope, cluster).await?;
    Ok(w::DeleteServiceResponse {
        service: Some(deleted.view(scope, &counts_of(&tasks, &deleted), false)),
    })
}

fn missing(arn: String) -> w::Failure {
    berth_control::placement::failure(arn, "MISSING")
}

pub async fn describe_services(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeServicesRequest,
) -> Result<w::DescribeServicesResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, _) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let given = req.services.clone().unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid("services cannot be empty.").into());
    }
    if given.len() > MAX_DESCRIBE {
        return Err(EcsError::invalid(format!(
            "services: at most {MAX_DESCRIBE} services per request."
        ))
        .into());
    }
    let mut include_tags = false;
    for i in req.include.iter().flatten() {
        berth_domain::one_of(i, &["TAGS"], "include")?;
        include_tags = true;
    }
    let tasks = ClusterTasks::load(st, scope, &cluster).await?;
    let (mut found, mut failures) = (vec![], vec![]);
    for g in &given {
        match find(st, scope, &cluster, Some(g), true).await? {
            Some(f) => {
                let s = &f.service.value;
                found.push(s.view(scope, &counts_of(&tasks, s), include_tags));
            }
            None => failures.push(missing(if g.starts_with("arn:") {
                g.clone()
            } else {
                scope.service_arn(&cluster, g)
            })),
        }
    }
    Ok(w::DescribeServicesResponse {
        services: Some(found),
        failures: Some(failures),
    })
}

pub async fn list_services(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListServicesRequest,
) -> Result<w::ListServicesResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, _) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let limit = paging::max_results(req.max_results, 100)?;
    if let Some(lt) = req.launch_type.as_deref() {
        berth_domain::one_of(lt, berth_domain::task::LAUNCH_TYPES, "launchType")?;
    }
    let sched = match req.scheduling_strategy.as_deref() {
        Some(s) => Some(scheduling(Some(s))?),
        None => None,
    };
    let listing = format!("ListServices/{cluster}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let all = typed::list::<Service>(&*st.store, &scope.services_of(&cluster)).await?;
    let chosen = all
        .into_iter()
        .map(|(_, s)| s.value)
        .filter(|s| req.launch_type.as_ref().is_none_or(|l| &s.launch_type == l))
        .filter(|s| sched.is_none_or(|x| s.scheduling == x))
        .map(|s| (s.name.clone(), s.arn(scope)))
        .collect();
    let (arns, next_token) = paging::page(&listing, chosen, after.as_deref(), limit);
    Ok(w::ListServicesResponse {
        service_arns: Some(arns),
        next_token,
    })
}

const DEPLOYMENT_STATUSES: &[&str] = &[
    "PENDING",
    "IN_PROGRESS",
    "SUCCESSFUL",
    "STOPPED",
    "STOP_REQUESTED",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
];

pub async fn list_service_deployments(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListServiceDeploymentsRequest,
) -> Result<w::ListServiceDeploymentsResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, _) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let limit = paging::max_results(req.max_results, 100)?;
    let wanted = req.status.clone().unwrap_or_default();
    for s in &wanted {
        berth_domain::one_of(s, DEPLOYMENT_STATUSES, "status")?;
    }
    let found = find(st, scope, &cluster, req.service.as_deref(), true)
        .await?
        .ok_or(EcsError::ServiceNotFound)?;
    let svc = &found.service.value;
    let listing = format!("ListServiceDeployments/{cluster}/{}", svc.name);
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let (from, until) = (
        req.created_at.as_ref().and_then(|c| c.after),
        req.created_at.as_ref().and_then(|c| c.before),
    );
    // Newest first; a rollback belongs to the deployment it rolls back.
    let chosen = svc
        .deployments
        .iter()
        .filter(|d| d.rollback_of.is_none())
        .filter(|d| from.is_none_or(|a| d.created_at >= a))
        .filter(|d| until.is_none_or(|b| d.created_at <= b))
        .filter_map(|d| {
            let (status, reason) = svc.deployment_status(d);
            if !wanted.is_empty() && !wanted.iter().any(|w| w == status) {
                return None;
            }
            // Keys sort newest first: the digits of the creation time, inverted.
            let order = format!("{:020}", u64::MAX - (d.created_at * 1000.0) as u64);
            Some((
                format!("{order}/{}", d.digits()),
                w::ServiceDeploymentBrief {
                    service_deployment_arn: Some(scope.service_deployment_arn(
                        &cluster,
                        &svc.name,
                        d.digits(),
                    )),
                    service_arn: Some(svc.arn(scope)),
                    cluster_arn: Some(scope.cluster_arn(&cluster)),
                    created_at: Some(d.created_at),
                    started_at: Some(d.created_at),
                    finished_at: d.finished_at,
                    target_service_revision_arn: Some(scope.service_revision_arn(
                        &cluster,
                        &svc.name,
                        d.digits(),
                    )),
                    status: Some(status.into()),
                    status_reason: Some(reason),
                },
            ))
        })
        .collect();
    let (briefs, next_token) = paging::page(&listing, chosen, after.as_deref(), limit);
    Ok(w::ListServiceDeploymentsResponse {
        service_deployments: Some(briefs),
        next_token,
    })
}

/// The service and deployment an ARN of `kind` names, if both exist.
async fn deployment_of(
    st: &AppState,
    scope: &Scope,
    kind: &str,
    given: &str,
) -> Result<Option<(Found, String)>, ApiError> {
    let Some((cluster, name, digits)) = arn::service_deployment_parts(scope, kind, given) else {
        return Ok(None);
    };
    let Some(found) = find(st, scope, &cluster, Some(&name), true).await? else {
        return Ok(None);
    };
    let id = format!("ecs-svc/{digits}");
    Ok(found
        .service
        .value
        .deployment(&id)
        .is_some()
        .then_some((found, id)))
}

/// Looks up each ARN of `kind` (1 to 20 of them): the service and the
/// deployment it names, or a MISSING failure.
async fn each_deployment(
    st: &AppState,
    scope: &Scope,
    kind: &str,
    given: Option<&[String]>,
    field: &str,
) -> Result<(Vec<(String, Service, String)>, Vec<w::Failure>), ApiError> {
    const MAX: usize = 20;
    let given = given.unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid(format!("{field} cannot be empty.")).into());
    }
    if given.len() > MAX {
        return Err(EcsError::invalid(format!("{field}: at most {MAX} ARNs per request.")).into());
    }
    let (mut found, mut failures) = (vec![], vec![]);
    for g in given {
        match deployment_of(st, scope, kind, g).await? {
            Some((f, id)) => found.push((g.clone(), f.service.value, id)),
            None => failures.push(missing(g.clone())),
        }
    }
    Ok((found, failures))
}

pub async fn describe_service_deployments(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeServiceDeploymentsRequest,
) -> Result<w::DescribeServiceDeploymentsResponse, ApiError> {
    let scope = &ctx.scope;
    let (found, failures) = each_deployment(
        st,
        scope,
        "service-deployment",
        req.service_deployment_arns.as_deref(),
        "serviceDeploymentArns",
    )
    .await?;
    // Each cluster's tasks are read once, however many ARNs name it.
    let mut tasks: std::collections::HashMap<String, ClusterTasks> = Default::default();
    let mut out = vec![];
    for (_, s, id) in &found {
        if !tasks.contains_key(&s.cluster) {
            let t = ClusterTasks::load(st, scope, &s.cluster).await?;
            tasks.insert(s.cluster.clone(), t);
        }
        if let (Some(d), Some(t)) = (s.deployment(id), tasks.get(&s.cluster)) {
            out.push(s.service_deployment(scope, d, &counts_of(t, s)));
        }
    }
    Ok(w::DescribeServiceDeploymentsResponse {
        service_deployments: Some(out),
        failures: Some(failures),
    })
}

pub async fn describe_service_revisions(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeServiceRevisionsRequest,
) -> Result<w::DescribeServiceRevisionsResponse, ApiError> {
    let scope = &ctx.scope;
    let (found, failures) = each_deployment(
        st,
        scope,
        "service-revision",
        req.service_revision_arns.as_deref(),
        "serviceRevisionArns",
    )
    .await?;
    let revisions = found
        .iter()
        .filter_map(|(arn, s, id)| {
            let d = s.deployment(id)?;
            Some(w::ServiceRevision {
                service_revision_arn: Some(arn.clone()),
                service_arn: Some(s.arn(scope)),
                cluster_arn: Some(scope.cluster_arn(&s.cluster)),
                task_definition: Some(d.task_definition_arn.clone()),
                launch_type: s
                    .capacity_provider_strategy
                    .is_empty()
                    .then(|| s.launch_type.clone()),
                capacity_provider_strategy: (!s.capacity_provider_strategy.is_empty())
                    .then(|| s.capacity_provider_strategy.clone()),
                created_at: Some(d.created_at),
                load_balancers: Some(d.load_balancers.clone()),
                // CreateService refuses serviceRegistries (no Cloud Map),
                // so no revision has any.
                service_registries: Some(vec![]),
                monitoring: s.monitoring.clone(),
                ..Default::default()
            })
        })
        .collect();
    Ok(w::DescribeServiceRevisionsResponse {
        service_revisions: Some(revisions),
        failures: Some(failures),
    })
}

pub async fn stop_service_deployment(
    st: &AppState,
    ctx: &RequestContext,
    req: w::StopServiceDeploymentRequest,
) -> Result<w::StopServiceDeploymentResponse, ApiError> {
    let scope = &ctx.scope;
    let given = req.service_deployment_arn.clone().unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid("serviceDeploymentArn is required.").into());
    }
    let stop_type = req.stop_type.as_deref().unwrap_or("ROLLBACK");
    berth_domain::one_of(stop_type, &["ABORT", "ROLLBACK"], "stopType")?;
    if stop_type == "ABORT" {
        return Err(EcsError::UnsupportedFeature(
            "stopType ABORT: Berth stops a deployment by rolling it back (stopType ROLLBACK)."
                .into(),
        )
        .into());
    }
    let given = &given;
    compare_and_swap(
        st,
        || "The service is being changed by another request; try again.".into(),
        move || async move {
            let (found, id) = deployment_of(st, scope, "service-deployment", given)
                .await?
                .ok_or_else(|| {
                    EcsError::ServiceDeploymentNotFound(format!(
                        "The service deployment {given} does not exist."
                    ))
                })?;
            let mut svc = found.service.value.clone();
            let in_progress = svc.primary().id == id
                && svc.primary().rollout_state == service::RolloutState::InProgress
                && svc.status == ServiceStatus::Active;
            if !in_progress {
                return Err(EcsError::Conflict(
                    "Only the service's deployment that is in progress can be stopped.".into(),
                )
                .into());
            }
            let at = st.now();
            if let Some(d) = svc.deployments.iter_mut().find(|d| d.id == id) {
                d.rollout_state_reason = "Stopped by user request (ROLLBACK).".into();
            }
            let good = svc
                .roll_back(&id, at, deployment_digits(), |good| {
                    format!("Rolling back to deployment {good} as requested.")
                })
                .ok_or_else(|| {
                    EcsError::Conflict(
                        "The service has no completed deployment to roll back to.".into(),
                    )
                })?;
            svc.say(
                at,
                uuid::Uuid::new_v4().to_string(),
                &format!("rolling back to deployment {good} as requested."),
            );
            Ok(found.rewrite(svc))
        },
    )
    .await?;
    Ok(w::StopServiceDeploymentResponse {
        service_deployment_arn: Some(given.clone()),
    })
}
