//! Tasks: RunTask and StartTask place and record them, StopTask asks for
//! their stop, DescribeTasks and ListTasks read them. Handlers write only
//! the desired record; what the agents observed comes from the gateway.

use super::instances::references;
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::cas::Attempt;
use berth_control::clusters::active_cluster;
use berth_control::launch::{launch_type, prepare, LaunchInput};
use berth_control::placement::{failure, ClusterTasks};
use berth_control::tasks::{self, request_stop, ClientToken, RanTasks};
use berth_domain::arn::{self, container_instance_id as instance_id};
use berth_domain::task::ObservedTask;
use berth_domain::task::{DesiredStatus, StopCode, Task, MAX_RUN_COUNT};
use berth_domain::{paging, EcsError, Scope};
use berth_store::keys::Keys;
use berth_store::typed;
use berth_wire::ecs as w;

async fn views(
    st: &AppState,
    scope: &Scope,
    cluster: &str,
    ids: &[String],
    include_tags: bool,
) -> Result<Vec<w::Task>, ApiError> {
    let mut out = vec![];
    for id in ids {
        if let Some(t) = typed::get::<Task>(&*st.store, &scope.task(cluster, id)).await? {
            let report = typed::get::<ObservedTask>(&*st.store, &scope.task_state(cluster, id))
                .await?
                .map(|r| r.value);
            out.push(t.value.view(scope, report.as_ref(), include_tags));
        }
    }
    Ok(out)
}

pub async fn run_task(
    st: &AppState,
    ctx: &RequestContext,
    req: w::RunTaskRequest,
) -> Result<w::RunTaskResponse, ApiError> {
    let (cluster, record) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_RUN_COUNT).contains(&count) {
        return Err(EcsError::invalid(format!(
            "count must be between 1 and {MAX_RUN_COUNT}; got {count}."
        ))
        .into());
    }
    let capacity = launch_type(
        req.launch_type.as_deref(),
        req.capacity_provider_strategy.as_deref(),
        &record.value.capacity_providers,
        &record.value.default_strategy,
    )?;
    berth_domain::task::check_platform_version(
        req.platform_version.as_deref(),
        &capacity.launch_type,
    )?;
    if let Some(t) = &req.client_token {
        if t.is_empty() || t.len() > 64 {
            return Err(EcsError::invalid("clientToken must be 1 to 64 characters.").into());
        }
    }
    let launch = prepare(
        st,
        &ctx.scope,
        LaunchInput {
            task_definition: req.task_definition.as_deref(),
            overrides: req.overrides.as_ref(),
            group: req.group.as_deref(),
            started_by: req.started_by.as_deref(),
            service: None,
            tags: req.tags.as_deref(),
            definition_tags: false,
            constraints: req.placement_constraints.as_deref(),
            strategies: req.placement_strategy.as_deref(),
            launch_type: &capacity.launch_type,
            strategy: &capacity.strategy,
            count: count as usize,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            network_configuration: req.network_configuration.as_ref(),
        },
    )
    .await?;
    let token = ClientToken::of(&req);
    let (scope, cluster) = (&ctx.scope, &cluster);
    let ran = tasks::run(st, scope, cluster, launch, token.as_ref()).await?;
    // Tasks this call placed are answered from their records as placed
    // (PROVISIONING, as ECS answers); a clientToken's earlier tasks are read.
    let tasks = match &ran.tasks {
        RanTasks::Placed(placed) => placed.iter().map(|t| t.view(scope, None, true)).collect(),
        RanTasks::Earlier(ids) => views(st, scope, cluster, ids, true).await?,
    };
    Ok(w::RunTaskResponse {
        tasks: Some(tasks),
        failures: Some(ran.failures),
    })
}

pub async fn start_task(
    st: &AppState,
    ctx: &RequestContext,
    req: w::StartTaskRequest,
) -> Result<w::StartTaskResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = references(req.container_instances.as_deref(), 10)?;
    let launch = prepare(
        st,
        &ctx.scope,
        LaunchInput {
            task_definition: req.task_definition.as_deref(),
            overrides: req.overrides.as_ref(),
            group: req.group.as_deref(),
            started_by: req.started_by.as_deref(),
            service: None,
            tags: req.tags.as_deref(),
            definition_tags: false,
            constraints: None,
            strategies: None,
            launch_type: "EC2",
            strategy: &[],
            count: 1,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            network_configuration: req.network_configuration.as_ref(),
        },
    )
    .await?;
    let (scope, cluster) = (&ctx.scope, &cluster);
    let (ids, failures) = tasks::start_on(st, scope, cluster, &launch, &given).await?;
    Ok(w::StartTaskResponse {
        tasks: Some(views(st, scope, cluster, &ids, true).await?),
        failures: Some(failures),
    })
}

pub async fn stop_task(
    st: &AppState,
    ctx: &RequestContext,
    req: w::StopTaskRequest,
) -> Result<w::StopTaskResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = req.task.as_deref().unwrap_or_default();
    let not_found = || EcsError::invalid("The referenced task was not found.");
    let id = arn::task_id(&ctx.scope, &cluster, given).ok_or_else(not_found)?;
    let reason = req
        .reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("Task stopped by user");
    if reason.len() > 255 {
        return Err(EcsError::invalid("reason must be at most 255 characters.").into());
    }
    let t = request_stop(
        st,
        &ctx.scope,
        &cluster,
        &id,
        StopCode::UserInitiated,
        reason,
        false,
    )
    .await?
    .ok_or_else(not_found)?;
    tracing::info!(cluster = %cluster, task = %id, "task stop requested");
    let report = typed::get::<ObservedTask>(&*st.store, &ctx.scope.task_state(&cluster, &id))
        .await?
        .map(|r| r.value);
    Ok(w::StopTaskResponse {
        task: Some(t.view(&ctx.scope, report.as_ref(), false)),
    })
}

pub async fn describe_tasks(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTasksRequest,
) -> Result<w::DescribeTasksResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let given = req.tasks.clone().unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid("Tasks cannot be empty.").into());
    }
    if given.len() > 100 {
        return Err(EcsError::invalid("tasks: at most 100 tasks per request.").into());
    }
    let mut include_tags = false;
    for i in req.include.iter().flatten() {
        berth_domain::one_of(i, &["TAGS"], "include")?;
        include_tags = true;
    }
    let mut found = vec![];
    let mut failures = vec![];
    for g in &given {
        let id = arn::task_id(&ctx.scope, &cluster, g);
        let record = match &id {
            Some(id) => typed::get::<Task>(&*st.store, &ctx.scope.task(&cluster, id)).await?,
            None => None,
        };
        match (record, id) {
            (Some(t), Some(id)) => {
                let report =
                    typed::get::<ObservedTask>(&*st.store, &ctx.scope.task_state(&cluster, &id))
                        .await?
                        .map(|r| r.value);
                found.push(t.value.view(&ctx.scope, report.as_ref(), include_tags));
            }
            _ => {
                let arn = if g.starts_with("arn:") {
                    g.clone()
                } else {
                    ctx.scope.task_arn(&cluster, g)
                };
                failures.push(failure(arn, "MISSING"));
            }
        }
    }
    Ok(w::DescribeTasksResponse {
        tasks: Some(found),
        failures: Some(failures),
    })
}

pub async fn list_tasks(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListTasksRequest,
) -> Result<w::ListTasksResponse, ApiError> {
    let (cluster, _) = active_cluster(st, &ctx.scope, req.cluster.as_deref()).await?;
    let limit = paging::max_results(req.max_results, 100)?;
    let desired = req.desired_status.as_deref().unwrap_or("RUNNING");
    berth_domain::one_of(desired, &["RUNNING", "PENDING", "STOPPED"], "desiredStatus")?;
    if let Some(lt) = req.launch_type.as_deref() {
        berth_domain::one_of(lt, berth_domain::task::LAUNCH_TYPES, "launchType")?;
    }
    if req.family.is_some() && req.service_name.is_some() {
        return Err(EcsError::invalid(
            "family and serviceName cannot be used together; choose one.",
        )
        .into());
    }
    let instance = match req.container_instance.as_deref() {
        Some(g) => Some(instance_id(&ctx.scope, &cluster, g).ok_or_else(|| {
            EcsError::invalid(format!(
                "containerInstance '{g}' does not name a container instance of cluster {cluster}."
            ))
        })?),
        None => None,
    };
    let service_group = req.service_name.as_deref().map(|s| format!("service:{s}"));
    let listing = format!("ListTasks/{cluster}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let all = ClusterTasks::load(st, &ctx.scope, &cluster).await?;
    let chosen = all
        .tasks
        .iter()
        .map(|t| &t.value)
        .filter(|t| {
            let report = all.report(&t.id);
            let want = t.effective_desired(report);
            match desired {
                "STOPPED" => want == DesiredStatus::Stopped,
                "PENDING" => {
                    want == DesiredStatus::Running && Task::last_status(report).is_pending()
                }
                _ => want == DesiredStatus::Running,
            }
        })
        .filter(|t| req.family.as_ref().is_none_or(|f| &t.family == f))
        .filter(|t| {
            instance
                .as_ref()
                .is_none_or(|i| &t.container_instance == i && !t.fargate())
        })
        .filter(|t| {
            req.started_by
                .as_ref()
                .is_none_or(|s| t.started_by.as_ref() == Some(s))
        })
        .filter(|t| service_group.as_ref().is_none_or(|g| &t.group == g))
        .filter(|t| req.launch_type.as_ref().is_none_or(|l| &t.launch_type == l))
        .map(|t| (t.id.clone(), t.arn(&ctx.scope)))
        .collect();
    let (arns, next_token) = paging::page(&listing, chosen, after.as_deref(), limit);
    Ok(w::ListTasksResponse {
        task_arns: Some(arns),
        next_token,
    })
}

/// Scale-in protection lasts this long unless told otherwise (minutes).
const PROTECTION_DEFAULT_MINUTES: i32 = 120;
const PROTECTION_MAX_MINUTES: i32 = 2880;

/// The tasks a protection request names (1 to 10), as (ARN, id).
fn protection_tasks(
    scope: &Scope,
    cluster: &str,
    given: Option<&Vec<String>>,
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let given = given.cloned().unwrap_or_default();
    if given.is_empty() {
        return Err(EcsError::invalid("Tasks cannot be empty.").into());
    }
    if given.len() > 10 {
        return Err(EcsError::invalid("tasks: at most 10 tasks per request.").into());
    }
    Ok(given
        .iter()
        .map(|g| {
            let id = arn::task_id(scope, cluster, g);
            let arn = id
                .as_ref()
                .map_or_else(|| g.clone(), |id| scope.task_arn(cluster, id));
            (arn, id)
        })
        .collect())
}

fn protected_view(scope: &Scope, t: &Task, now: f64) -> w::ProtectedTask {
    let on = t.protected(now);
    w::ProtectedTask {
        task_arn: Some(scope.task_arn(&t.cluster, &t.id)),
        protection_enabled: Some(on),
        expiration_date: t.protected_until.filter(|_| on),
    }
}

fn protection_failure(arn: String, reason: &str, detail: Option<&str>) -> w::Failure {
    w::Failure {
        arn: Some(arn),
        reason: Some(reason.into()),
        detail: detail.map(String::from),
    }
}

pub async fn update_task_protection(
    st: &AppState,
    ctx: &RequestContext,
    req: w::UpdateTaskProtectionRequest,
) -> Result<w::UpdateTaskProtectionResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, _) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let enabled = req
        .protection_enabled
        .ok_or_else(|| EcsError::invalid("protectionEnabled is required."))?;
    let minutes = req.expires_in_minutes.unwrap_or(PROTECTION_DEFAULT_MINUTES);
    if !(1..=PROTECTION_MAX_MINUTES).contains(&minutes) {
        return Err(EcsError::invalid(format!(
            "expiresInMinutes must be between 1 and {PROTECTION_MAX_MINUTES}."
        ))
        .into());
    }
    let named = protection_tasks(scope, &cluster, req.tasks.as_ref())?;
    let (mut protected, mut failures) = (vec![], vec![]);
    for (task_arn, id) in named {
        let Some(id) = id else {
            failures.push(protection_failure(task_arn, "MISSING", None));
            continue;
        };
        let key = scope.task(&cluster, &id);
        let (key, cluster) = (&key, &cluster);
        let outcome = super::compare_and_swap(
            st,
            || "The task is being changed by another request; try again.".into(),
            move || async move {
                let Some(found) = typed::get::<Task>(&*st.store, key).await? else {
                    return Ok(Attempt::Done(Err("MISSING")));
                };
                let mut t = found.value.clone();
                if t.service.is_none() || t.desired_status == DesiredStatus::Stopped {
                    return Ok(Attempt::Done(Err("TASK_NOT_VALID")));
                }
                let now = st.now();
                t.protected_until = enabled.then(|| now + f64::from(minutes) * 60.0);
                t.version += 1;
                let txn = berth_store::Txn::when(
                    vec![typed::unchanged(key, found.mod_revision)],
                    vec![
                        typed::put(key, &t),
                        // The service looks again at what it may stop.
                        berth_store::Op::put(scope.placement(cluster), vec![]),
                    ],
                );
                Ok(Attempt::Write(txn, Ok(t)))
            },
        )
        .await?;
        match outcome {
            Ok(t) => protected.push(protected_view(scope, &t, st.now())),
            Err(reason) => failures.push(protection_failure(
                task_arn,
                reason,
                (reason == "TASK_NOT_VALID")
                    .then_some("Task protection is only supported for running tasks of a service."),
            )),
        }
    }
    Ok(w::UpdateTaskProtectionResponse {
        protected_tasks: Some(protected),
        failures: Some(failures),
    })
}

pub async fn get_task_protection(
    st: &AppState,
    ctx: &RequestContext,
    req: w::GetTaskProtectionRequest,
) -> Result<w::GetTaskProtectionResponse, ApiError> {
    let scope = &ctx.scope;
    let (cluster, _) = active_cluster(st, scope, req.cluster.as_deref()).await?;
    let named = protection_tasks(scope, &cluster, req.tasks.as_ref())?;
    let now = st.now();
    let (mut protected, mut failures) = (vec![], vec![]);
    for (task_arn, id) in named {
        let found = match &id {
            Some(id) => typed::get::<Task>(&*st.store, &scope.task(&cluster, id)).await?,
            None => None,
        };
        match found {
            None => failures.push(protection_failure(task_arn, "MISSING", None)),
            Some(t) if t.value.service.is_none() => failures.push(protection_failure(
                task_arn,
                "TASK_NOT_VALID",
                Some("Task protection is only supported for running tasks of a service."),
            )),
            Some(t) => protected.push(protected_view(scope, &t.value, now)),
        }
    }
    Ok(w::GetTaskProtectionResponse {
        protected_tasks: Some(protected),
        failures: Some(failures),
    })
}
