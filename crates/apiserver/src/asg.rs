//! Auto Scaling (`autoscaling`, 2011-01-01, awsQuery): groups, their
//! instances, activities, lifecycle hooks, tags and processes. Decode,
//! check with `berth_domain::asg`, call `berth_control::groups` (whose
//! group controller makes the instances follow), encode.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::groups::{self as ctl, Hook};
use berth_domain::asg::{self as rules, AsgError, GroupRecord, GroupTag, InstanceRecord};
use berth_wire::autoscaling as w;

query_operations! { "Auto Scaling", w::MODEL, AsgError::validation;
    "CreateAutoScalingGroup" => create_auto_scaling_group,
    "UpdateAutoScalingGroup" => update_auto_scaling_group,
    "DeleteAutoScalingGroup" => delete_auto_scaling_group,
    "DescribeAutoScalingGroups" => describe_auto_scaling_groups,
    "SetDesiredCapacity" => set_desired_capacity,
    "TerminateInstanceInAutoScalingGroup" => terminate_instance_in_auto_scaling_group,
    "SetInstanceProtection" => set_instance_protection,
    "DescribeAutoScalingInstances" => describe_auto_scaling_instances,
    "DescribeScalingActivities" => describe_scaling_activities,
    "PutLifecycleHook" => put_lifecycle_hook,
    "DeleteLifecycleHook" => delete_lifecycle_hook,
    "DescribeLifecycleHooks" => describe_lifecycle_hooks,
    "CompleteLifecycleAction" => complete_lifecycle_action,
    "RecordLifecycleActionHeartbeat" => record_lifecycle_action_heartbeat,
    "CreateOrUpdateTags" => create_or_update_tags,
    "DeleteTags" => delete_tags,
    "DescribeTags" => describe_tags,
    "SuspendProcesses" => suspend_processes,
    "ResumeProcesses" => resume_processes,
}

type Out<T> = Result<T, ApiError>;

/// What operations without an output answer.
#[derive(serde::Serialize)]
pub(crate) struct Empty {}

fn name_of(n: Option<&str>) -> Result<&str, AsgError> {
    rules::check_group_name(n)
}

fn template_view(t: &rules::TemplateRef) -> w::LaunchTemplateSpecification {
    w::LaunchTemplateSpecification {
        launch_template_id: Some(t.id.clone()),
        launch_template_name: Some(t.name.clone()),
        version: Some(t.version.clone()),
    }
}

fn tag_view(g: &str, t: &GroupTag) -> w::TagDescription {
    w::TagDescription {
        key: Some(t.key.clone()),
        value: Some(t.value.clone()),
        propagate_at_launch: Some(t.propagate),
        resource_id: Some(g.to_string()),
        resource_type: Some("auto-scaling-group".into()),
    }
}

fn instance_view(i: &InstanceRecord, protected: bool) -> w::Instance {
    w::Instance {
        availability_zone: Some(i.zone.clone()),
        health_status: Some(i.health.clone()),
        instance_id: Some(i.id.clone()),
        instance_type: i.instance_type.clone(),
        launch_template: Some(w::LaunchTemplateSpecification {
            launch_template_id: Some(i.template.id.clone()),
            launch_template_name: Some(i.template.name.clone()),
            version: Some(i.template_version.to_string()),
        }),
        lifecycle_state: Some(i.lifecycle.clone()),
        protected_from_scale_in: Some(protected),
        ..Default::default()
    }
}

fn group_view(g: &GroupRecord, instances: Vec<w::Instance>) -> w::AutoScalingGroup {
    w::AutoScalingGroup {
        auto_scaling_group_arn: Some(g.arn.clone()),
        auto_scaling_group_name: Some(g.name.clone()),
        availability_zones: Some(g.zones.clone()),
        created_time: Some(rules::iso(g.created)),
        default_cooldown: Some(g.default_cooldown),
        default_instance_warmup: g.default_instance_warmup,
        desired_capacity: Some(g.desired),
        health_check_grace_period: Some(g.health_check_grace),
        health_check_type: Some(g.health_check_type.clone()),
        instances: Some(instances),
        launch_template: Some(template_view(&g.template)),
        max_size: Some(g.max),
        min_size: Some(g.min),
        new_instances_protected_from_scale_in: Some(g.protect_new),
        service_linked_role_arn: g.service_linked_role_arn.clone(),
        status: g.deleting.then(|| "Delete in progress".into()),
        suspended_processes: Some(
            g.suspended
                .iter()
                .map(|p| w::SuspendedProcess {
                    process_name: Some(p.clone()),
                    suspension_reason: Some(
                        "User suspended at ".to_string() + &rules::iso(g.created),
                    ),
                })
                .collect(),
        ),
        tags: Some(g.tags.iter().map(|t| tag_view(&g.name, t)).collect()),
        termination_policies: Some(g.termination_policies.clone()),
        vpc_zone_identifier: g.vpc_zone_identifier.clone(),
        max_instance_lifetime: g.max_instance_lifetime,
        capacity_rebalance: Some(g.capacity_rebalance),
        target_group_ar_ns: Some(vec![]),
        load_balancer_names: Some(vec![]),
        enabled_metrics: Some(vec![]),
        ..Default::default()
    }
}

fn refuse_unsupported(
    launch_configuration: Option<&str>,
    mixed: bool,
    instance_id: Option<&str>,
) -> Result<(), AsgError> {
    if launch_configuration.is_some() {
        return Err(AsgError::validation(
            "Launch configurations are not supported by Berth; use a launch template (LaunchTemplate).",
        ));
    }
    if mixed {
        return Err(AsgError::validation(
            "MixedInstancesPolicy is not supported by Berth; use a launch template (LaunchTemplate).",
        ));
    }
    if instance_id.is_some() {
        return Err(AsgError::validation(
            "Creating a group from an instance (InstanceId) is not supported by Berth; use a launch template.",
        ));
    }
    Ok(())
}

async fn create_auto_scaling_group(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateAutoScalingGroupType,
) -> Out<Empty> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?.to_string();
    refuse_unsupported(
        input.launch_configuration_name.as_deref(),
        input.mixed_instances_policy.is_some(),
        input.instance_id.as_deref(),
    )?;
    let min = input.min_size.ok_or_else(|| AsgError::missing("minSize"))?;
    let max = input.max_size.ok_or_else(|| AsgError::missing("maxSize"))?;
    let desired = rules::check_sizes(min, max, input.desired_capacity)?;
    let template = ctl::template_ref(st, &ctx.scope, input.launch_template.as_ref()).await?;
    let zones = ctl::zones_of(
        st,
        input.availability_zones.as_deref(),
        input.vpc_zone_identifier.as_deref(),
    )?;
    let tags = rules::check_tags(&input.tags.unwrap_or_default())?;
    let policies =
        rules::check_termination_policies(&input.termination_policies.unwrap_or_default())?;
    let health = input.health_check_type.unwrap_or_else(|| "EC2".into());
    if !matches!(health.as_str(), "EC2" | "ELB" | "EBS" | "VPC_LATTICE") {
        return Err(AsgError::validation(format!("Invalid health check type: {health}")).into());
    }
    let g = GroupRecord {
        arn: rules::group_arn(
            &ctx.scope.region,
            &ctx.scope.account,
            &uuid::Uuid::new_v4().to_string(),
            &name,
        ),
        name: name.clone(),
        min,
        max,
        desired,
        desired_cause: format!(
            "a user request created an AutoScalingGroup changing the desired capacity from 0 to {desired}"
        ),
        template,
        zones,
        vpc_zone_identifier: input.vpc_zone_identifier,
        protect_new: input.new_instances_protected_from_scale_in.unwrap_or(false),
        tags,
        default_cooldown: input.default_cooldown.unwrap_or(300),
        health_check_type: health,
        health_check_grace: input.health_check_grace_period.unwrap_or(0),
        termination_policies: policies,
        default_instance_warmup: input.default_instance_warmup,
        suspended: vec![],
        created: st.now(),
        deleting: false,
        service_linked_role_arn: input.service_linked_role_arn.or_else(|| {
            Some(format!(
                "arn:aws:iam::{}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
                ctx.scope.account
            ))
        }),
        max_instance_lifetime: input.max_instance_lifetime,
        capacity_rebalance: input.capacity_rebalance.unwrap_or(false),
    };
    ctl::create_group(st, &ctx.scope, g).await?;
    Ok(Empty {})
}

async fn update_auto_scaling_group(
    st: &AppState,
    ctx: &RequestContext,
    input: w::UpdateAutoScalingGroupType,
) -> Out<Empty> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?.to_string();
    refuse_unsupported(
        input.launch_configuration_name.as_deref(),
        input.mixed_instances_policy.is_some(),
        None,
    )?;
    let template = match &input.launch_template {
        Some(t) => Some(ctl::template_ref(st, &ctx.scope, Some(t)).await?),
        None => None,
    };
    let zones = if input.availability_zones.is_some() || input.vpc_zone_identifier.is_some() {
        Some(ctl::zones_of(
            st,
            input.availability_zones.as_deref(),
            input.vpc_zone_identifier.as_deref(),
        )?)
    } else {
        None
    };
    let policies = input
        .termination_policies
        .as_ref()
        .map(|p| rules::check_termination_policies(p))
        .transpose()?;
    let at = rules::iso(st.now());
    ctl::update_group(st, &ctx.scope, &name, |g| {
        let min = input.min_size.unwrap_or(g.min);
        let max = input.max_size.unwrap_or(g.max);
        // A new bound the desired capacity falls outside moves it, as
        // Auto Scaling does when no desired capacity is given.
        let desired = input
            .desired_capacity
            .unwrap_or_else(|| g.desired.clamp(min, max.max(min)));
        rules::check_sizes(min, max, Some(desired))?;
        let was = g.desired;
        g.min = min;
        g.max = max;
        ctl::set_desired(
            g,
            desired,
            format!(
                "a user request update of AutoScalingGroup constraints to min: {min}, max: {max}, desired: {desired} changing the desired capacity from {was} to {desired}"
            ),
        );
        let _ = &at;
        if let Some(t) = &template {
            g.template = t.clone();
        }
        if let Some(z) = &zones {
            g.zones = z.clone();
            if input.vpc_zone_identifier.is_some() {
                g.vpc_zone_identifier = input.vpc_zone_identifier.clone();
            }
        }
        if let Some(p) = &policies {
            g.termination_policies = p.clone();
        }
        if let Some(p) = input.new_instances_protected_from_scale_in {
            g.protect_new = p;
        }
        if let Some(c) = input.default_cooldown {
            g.default_cooldown = c;
        }
        if let Some(h) = &input.health_check_type {
            g.health_check_type = h.clone();
        }
        if let Some(h) = input.health_check_grace_period {
            g.health_check_grace = h;
        }
        if let Some(wu) = input.default_instance_warmup {
            g.default_instance_warmup = Some(wu);
        }
        if let Some(m) = input.max_instance_lifetime {
            g.max_instance_lifetime = Some(m);
        }
        if let Some(c) = input.capacity_rebalance {
            g.capacity_rebalance = c;
        }
        Ok(())
    })
    .await?;
    Ok(Empty {})
}

async fn delete_auto_scaling_group(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteAutoScalingGroupType,
) -> Out<Empty> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?;
    ctl::delete_group(st, &ctx.scope, name, input.force_delete.unwrap_or(false)).await?;
    Ok(Empty {})
}

async fn describe_auto_scaling_groups(
    st: &AppState,
    ctx: &RequestContext,
    input: w::AutoScalingGroupNamesType,
) -> Out<w::AutoScalingGroupsType> {
    let names = input.auto_scaling_group_names.unwrap_or_default();
    let filters = input.filters.unwrap_or_default();
    let mut out = vec![];
    for g in ctl::groups(st, &ctx.scope).await? {
        if !names.is_empty() && !names.contains(&g.name) {
            continue;
        }
        let keep = filters.iter().all(|f| {
            let values = f.values.clone().unwrap_or_default();
            match f.name.as_deref() {
                Some("tag-key") => g.tags.iter().any(|t| values.contains(&t.key)),
                Some("tag-value") => g.tags.iter().any(|t| values.contains(&t.value)),
                Some(k) if k.starts_with("tag:") => g
                    .tags
                    .iter()
                    .any(|t| t.key == k[4..] && values.contains(&t.value)),
                _ => true,
            }
        });
        if !keep {
            continue;
        }
        let instances = ctl::instances(st, &ctx.scope, &g.name)
            .await?
            .iter()
            .map(|(i, p)| instance_view(&i.value, *p))
            .collect();
        out.push(group_view(&g, instances));
    }
    Ok(w::AutoScalingGroupsType {
        auto_scaling_groups: Some(out),
        next_token: None,
    })
}

async fn set_desired_capacity(
    st: &AppState,
    ctx: &RequestContext,
    input: w::SetDesiredCapacityType,
) -> Out<Empty> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?;
    let desired = input
        .desired_capacity
        .ok_or_else(|| AsgError::missing("desiredCapacity"))?;
    ctl::update_group(st, &ctx.scope, name, |g| {
        rules::check_desired(g, desired)?;
        let was = g.desired;
        ctl::set_desired(
            g,
            desired,
            format!(
                "a user request explicitly set group desired capacity changing the desired capacity from {was} to {desired}"
            ),
        );
        Ok(())
    })
    .await?;
    Ok(Empty {})
}

fn activity_view(a: &rules::ActivityRecord, arn: Option<&str>) -> w::Activity {
    w::Activity {
        activity_id: Some(a.id.clone()),
        auto_scaling_group_name: Some(a.group.clone()),
        auto_scaling_group_arn: arn.map(str::to_string),
        cause: Some(a.cause.clone()),
        description: Some(a.description.clone()),
        details: a.details.clone(),
        end_time: a.end.map(rules::iso),
        progress: Some(a.progress),
        start_time: Some(rules::iso(a.start)),
        status_code: Some(a.status.clone()),
        status_message: a.status_message.clone(),
        ..Default::default()
    }
}

async fn terminate_instance_in_auto_scaling_group(
    st: &AppState,
    ctx: &RequestContext,
    input: w::TerminateInstanceInAutoScalingGroupType,
) -> Out<w::ActivityType> {
    let id = input
        .instance_id
        .ok_or_else(|| AsgError::missing("instanceId"))?;
    let decrement = input
        .should_decrement_desired_capacity
        .ok_or_else(|| AsgError::missing("shouldDecrementDesiredCapacity"))?;
    let a = ctl::terminate_instance(st, &ctx.scope, &id, decrement).await?;
    Ok(w::ActivityType {
        activity: Some(activity_view(&a, None)),
        ..Default::default()
    })
}

async fn set_instance_protection(
    st: &AppState,
    ctx: &RequestContext,
    input: w::SetInstanceProtectionQuery,
) -> Out<w::SetInstanceProtectionAnswer> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?;
    let ids = input.instance_ids.unwrap_or_default();
    let protected = input
        .protected_from_scale_in
        .ok_or_else(|| AsgError::missing("protectedFromScaleIn"))?;
    ctl::set_protection(st, &ctx.scope, name, &ids, protected).await?;
    Ok(w::SetInstanceProtectionAnswer {})
}

async fn describe_auto_scaling_instances(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeAutoScalingInstancesType,
) -> Out<w::AutoScalingInstancesType> {
    let ids = input.instance_ids.unwrap_or_default();
    let mut out = vec![];
    for g in ctl::groups(st, &ctx.scope).await? {
        for (i, p) in ctl::instances(st, &ctx.scope, &g.name).await? {
            let i = i.value;
            if !ids.is_empty() && !ids.contains(&i.id) {
                continue;
            }
            let v = instance_view(&i, p);
            out.push(w::AutoScalingInstanceDetails {
                auto_scaling_group_name: Some(g.name.clone()),
                availability_zone: v.availability_zone,
                health_status: v.health_status.map(|h| h.to_uppercase()),
                instance_id: v.instance_id,
                instance_type: v.instance_type,
                launch_template: v.launch_template,
                lifecycle_state: v.lifecycle_state,
                protected_from_scale_in: v.protected_from_scale_in,
                ..Default::default()
            });
        }
    }
    Ok(w::AutoScalingInstancesType {
        auto_scaling_instances: Some(out),
        next_token: None,
    })
}

async fn describe_scaling_activities(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeScalingActivitiesType,
) -> Out<w::ActivitiesType> {
    let max = match input.max_records {
        None => 100,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => {
            return Err(AsgError::validation(format!(
                "1 validation error detected: Value '{n}' at 'maxRecords' failed to satisfy constraint: Member must have value less than or equal to 100"
            ))
            .into())
        }
    };
    let groups = match input.auto_scaling_group_name.as_deref() {
        Some(n) => vec![ctl::group(st, &ctx.scope, n).await?.value],
        None => ctl::groups(st, &ctx.scope).await?,
    };
    let ids = input.activity_ids.unwrap_or_default();
    let mut all = vec![];
    for g in &groups {
        for a in ctl::activities(st, &ctx.scope, &g.name).await? {
            if ids.is_empty() || ids.contains(&a.id) {
                all.push(activity_view(&a, Some(&g.arn)));
            }
        }
    }
    all.sort_by(|a, b| b.start_time.cmp(&a.start_time));
    let skip: usize = match input.next_token.as_deref() {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| AsgError::validation("The token is invalid."))?,
    };
    let page: Vec<w::Activity> = all.iter().skip(skip).take(max).cloned().collect();
    let next_token = (skip + page.len() < all.len()).then(|| (skip + page.len()).to_string());
    Ok(w::ActivitiesType {
        activities: Some(page),
        next_token,
    })
}

async fn put_lifecycle_hook(
    st: &AppState,
    ctx: &RequestContext,
    input: w::PutLifecycleHookType,
) -> Out<w::PutLifecycleHookAnswer> {
    let group = name_of(input.auto_scaling_group_name.as_deref())?.to_string();
    let name = input
        .lifecycle_hook_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AsgError::missing("lifecycleHookName"))?;
    let transition = input
        .lifecycle_transition
        .ok_or_else(|| AsgError::validation("LifecycleTransition must be specified"))?;
    if !matches!(
        transition.as_str(),
        "autoscaling:EC2_INSTANCE_LAUNCHING" | "autoscaling:EC2_INSTANCE_TERMINATING"
    ) {
        return Err(
            AsgError::validation(format!("Invalid Lifecycle Transition: {transition}")).into(),
        );
    }
    let heartbeat = input.heartbeat_timeout.unwrap_or(3600);
    if !(30..=7200).contains(&heartbeat) {
        return Err(
            AsgError::validation("Heartbeat timeout must be between 30 and 7200 seconds").into(),
        );
    }
    let default_result = input.default_result.unwrap_or_else(|| "ABANDON".into());
    if !matches!(default_result.as_str(), "CONTINUE" | "ABANDON") {
        return Err(
            AsgError::validation(format!("Invalid default result: {default_result}")).into(),
        );
    }
    ctl::put_hook(
        st,
        &ctx.scope,
        Hook {
            name,
            group,
            transition,
            heartbeat_timeout: heartbeat,
            default_result,
            metadata: input.notification_metadata,
        },
    )
    .await?;
    Ok(w::PutLifecycleHookAnswer {})
}

async fn delete_lifecycle_hook(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteLifecycleHookType,
) -> Out<w::DeleteLifecycleHookAnswer> {
    let group = name_of(input.auto_scaling_group_name.as_deref())?;
    let name = input
        .lifecycle_hook_name
        .ok_or_else(|| AsgError::missing("lifecycleHookName"))?;
    ctl::delete_hook(st, &ctx.scope, group, &name).await?;
    Ok(w::DeleteLifecycleHookAnswer {})
}

async fn describe_lifecycle_hooks(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeLifecycleHooksType,
) -> Out<w::DescribeLifecycleHooksAnswer> {
    let group = name_of(input.auto_scaling_group_name.as_deref())?;
    ctl::group(st, &ctx.scope, group).await?;
    let names = input.lifecycle_hook_names.unwrap_or_default();
    let hooks = ctl::hooks(st, &ctx.scope, group)
        .await?
        .into_iter()
        .filter(|h| names.is_empty() || names.contains(&h.name))
        .map(|h| w::LifecycleHook {
            auto_scaling_group_name: Some(h.group),
            default_result: Some(h.default_result),
            global_timeout: Some(h.heartbeat_timeout * 100),
            heartbeat_timeout: Some(h.heartbeat_timeout),
            lifecycle_hook_name: Some(h.name),
            lifecycle_transition: Some(h.transition),
            notification_metadata: h.metadata,
            ..Default::default()
        })
        .collect();
    Ok(w::DescribeLifecycleHooksAnswer {
        lifecycle_hooks: Some(hooks),
    })
}

async fn complete_lifecycle_action(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CompleteLifecycleActionType,
) -> Out<w::CompleteLifecycleActionAnswer> {
    let group = name_of(input.auto_scaling_group_name.as_deref())?;
    let hook = input
        .lifecycle_hook_name
        .ok_or_else(|| AsgError::missing("lifecycleHookName"))?;
    let result = input
        .lifecycle_action_result
        .ok_or_else(|| AsgError::missing("lifecycleActionResult"))?;
    if !matches!(result.as_str(), "CONTINUE" | "ABANDON") {
        return Err(
            AsgError::validation(format!("Invalid lifecycle action result: {result}")).into(),
        );
    }
    let instance = input.instance_id.ok_or_else(|| {
        AsgError::validation("Either InstanceId or LifecycleActionToken must be specified")
    })?;
    ctl::lifecycle_action(st, &ctx.scope, group, &hook, &instance, Some(result)).await?;
    Ok(w::CompleteLifecycleActionAnswer {})
}

async fn record_lifecycle_action_heartbeat(
    st: &AppState,
    ctx: &RequestContext,
    input: w::RecordLifecycleActionHeartbeatType,
) -> Out<w::RecordLifecycleActionHeartbeatAnswer> {
    let group = name_of(input.auto_scaling_group_name.as_deref())?;
    let hook = input
        .lifecycle_hook_name
        .ok_or_else(|| AsgError::missing("lifecycleHookName"))?;
    let instance = input.instance_id.ok_or_else(|| {
        AsgError::validation("Either InstanceId or LifecycleActionToken must be specified")
    })?;
    ctl::lifecycle_action(st, &ctx.scope, group, &hook, &instance, None).await?;
    Ok(w::RecordLifecycleActionHeartbeatAnswer {})
}

/// Tags of requests grouped by the group they name.
fn tags_by_group(tags: &[w::Tag]) -> Result<Vec<(String, Vec<w::Tag>)>, AsgError> {
    let mut out: Vec<(String, Vec<w::Tag>)> = vec![];
    for t in tags {
        if t.resource_type
            .as_deref()
            .is_some_and(|r| r != "auto-scaling-group")
        {
            return Err(AsgError::validation(
                "ResourceType must be auto-scaling-group",
            ));
        }
        let g = t
            .resource_id
            .clone()
            .ok_or_else(|| AsgError::validation("ResourceId must be specified"))?;
        match out.iter_mut().find(|(n, _)| *n == g) {
            Some((_, list)) => list.push(t.clone()),
            None => out.push((g, vec![t.clone()])),
        }
    }
    Ok(out)
}

async fn create_or_update_tags(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateOrUpdateTagsType,
) -> Out<Empty> {
    for (group, tags) in tags_by_group(&input.tags.unwrap_or_default())? {
        let new = rules::check_tags(&tags)?;
        ctl::update_group(st, &ctx.scope, &group, |g| {
            for t in &new {
                match g.tags.iter_mut().find(|x| x.key == t.key) {
                    Some(x) => *x = t.clone(),
                    None => g.tags.push(t.clone()),
                }
            }
            if g.tags.len() > 50 {
                return Err(AsgError::limit(
                    "The number of tags exceeds the limit of 50 tags per resource.",
                )
                .into());
            }
            Ok(())
        })
        .await?;
    }
    Ok(Empty {})
}

async fn delete_tags(st: &AppState, ctx: &RequestContext, input: w::DeleteTagsType) -> Out<Empty> {
    for (group, tags) in tags_by_group(&input.tags.unwrap_or_default())? {
        let keys: Vec<String> = tags.iter().filter_map(|t| t.key.clone()).collect();
        ctl::update_group(st, &ctx.scope, &group, |g| {
            g.tags.retain(|t| !keys.contains(&t.key));
            Ok(())
        })
        .await?;
    }
    Ok(Empty {})
}

async fn describe_tags(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeTagsType,
) -> Out<w::TagsType> {
    let filters = input.filters.unwrap_or_default();
    let mut out = vec![];
    for g in ctl::groups(st, &ctx.scope).await? {
        for t in &g.tags {
            let keep = filters.iter().all(|f| {
                let values = f.values.clone().unwrap_or_default();
                match f.name.as_deref() {
                    Some("auto-scaling-group") => values.contains(&g.name),
                    Some("key") => values.contains(&t.key),
                    Some("value") => values.contains(&t.value),
                    Some("propagate-at-launch") => values.contains(&t.propagate.to_string()),
                    _ => true,
                }
            });
            if keep {
                out.push(tag_view(&g.name, t));
            }
        }
    }
    Ok(w::TagsType {
        tags: Some(out),
        next_token: None,
    })
}

fn processes(input: &w::ScalingProcessQuery) -> Result<Vec<String>, AsgError> {
    let asked = input.scaling_processes.clone().unwrap_or_default();
    for p in &asked {
        if !rules::PROCESSES.contains(&p.as_str()) {
            return Err(AsgError::validation(format!(
                "Process names should be among {}",
                rules::PROCESSES.join(", ")
            )));
        }
    }
    Ok(if asked.is_empty() {
        rules::PROCESSES.iter().map(|p| p.to_string()).collect()
    } else {
        asked
    })
}

async fn suspend_processes(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ScalingProcessQuery,
) -> Out<Empty> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?;
    let ps = processes(&input)?;
    ctl::update_group(st, &ctx.scope, name, |g| {
        for p in &ps {
            if !g.suspended.contains(p) {
                g.suspended.push(p.clone());
            }
        }
        Ok(())
    })
    .await?;
    Ok(Empty {})
}

async fn resume_processes(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ScalingProcessQuery,
) -> Out<Empty> {
    let name = name_of(input.auto_scaling_group_name.as_deref())?;
    let ps = processes(&input)?;
    ctl::update_group(st, &ctx.scope, name, |g| {
        g.suspended.retain(|p| !ps.contains(p));
        Ok(())
    })
    .await?;
    Ok(Empty {})
}
