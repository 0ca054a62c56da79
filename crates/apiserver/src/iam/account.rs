//! IAM's account-wide operations: instance profiles, service-linked roles,
//! the account's authorization details, and the policy simulator.

use super::{
    account, attached_page, iso8601, name_arg, page, path_arg, required, role_arg, tags_arg,
    under_path, url_encode, wire_role, wire_tags, Out,
};
use crate::{context::RequestContext, AppState};
use berth_control::iam as ctl_iam;
use berth_iam::managed;
use berth_iam::policy::{evaluate, Context, Decision, Policy, PolicyKind, Request};
use berth_iam::records::{IamError, InstanceProfile, Role};
use berth_wire::iam as w;
use std::collections::BTreeMap;

fn profile_arg(v: &Option<String>) -> Result<&str, IamError> {
    name_arg(v, "instanceProfileName").and_then(|n| {
        berth_iam::records::check_name(n, "instanceProfileName", 128)?;
        Ok(n)
    })
}

/// An instance profile as IAM answers it: with its role in full.
async fn wire_profile(st: &AppState, p: &InstanceProfile) -> Out<w::InstanceProfile> {
    let mut roles = vec![];
    for r in &p.roles {
        if let Ok(role) = ctl_iam::role(st, r).await {
            roles.push(wire_role(account(st), &role.value, false));
        }
    }
    Ok(w::InstanceProfile {
        arn: Some(p.arn(account(st))),
        create_date: Some(iso8601(p.created)),
        instance_profile_id: Some(p.id.clone()),
        instance_profile_name: Some(p.name.clone()),
        path: Some(p.path.clone()),
        roles: Some(roles),
        tags: wire_tags(&p.tags),
    })
}

async fn wire_profiles(
    st: &AppState,
    profiles: &[InstanceProfile],
) -> Out<Vec<w::InstanceProfile>> {
    let mut out = Vec::with_capacity(profiles.len());
    for p in profiles {
        out.push(wire_profile(st, p).await?);
    }
    Ok(out)
}

pub(super) async fn create_instance_profile(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreateInstanceProfileRequest,
) -> Out<w::CreateInstanceProfileResponse> {
    let name = profile_arg(&r.instance_profile_name)?;
    let path = path_arg(&r.path, "path")?;
    let tags = tags_arg(r.tags)?;
    let p = ctl_iam::create_instance_profile(st, name, &path, tags).await?;
    Ok(w::CreateInstanceProfileResponse {
        instance_profile: Some(wire_profile(st, &p).await?),
    })
}

pub(super) async fn get_instance_profile(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetInstanceProfileRequest,
) -> Out<w::GetInstanceProfileResponse> {
    let name = profile_arg(&r.instance_profile_name)?;
    let p = ctl_iam::instance_profile(st, name).await?.value;
    Ok(w::GetInstanceProfileResponse {
        instance_profile: Some(wire_profile(st, &p).await?),
    })
}

pub(super) async fn list_instance_profiles(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListInstanceProfilesRequest,
) -> Out<w::ListInstanceProfilesResponse> {
    let items = under_path(ctl_iam::instance_profiles(st).await?, &r.path_prefix, |p| {
        (&p.path, &p.name)
    });
    let (profiles, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListInstanceProfilesResponse {
        instance_profiles: Some(wire_profiles(st, &profiles).await?),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

pub(super) async fn delete_instance_profile(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DeleteInstanceProfileRequest,
) -> Out<()> {
    let name = profile_arg(&r.instance_profile_name)?;
    ctl_iam::delete_instance_profile(st, name).await?;
    Ok(())
}

pub(super) async fn add_role_to_instance_profile(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::AddRoleToInstanceProfileRequest,
) -> Out<()> {
    let profile = profile_arg(&r.instance_profile_name)?;
    let role = role_arg(&r.role_name)?;
    ctl_iam::set_profile_role(st, profile, role, true).await?;
    Ok(())
}

pub(super) async fn remove_role_from_instance_profile(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::RemoveRoleFromInstanceProfileRequest,
) -> Out<()> {
    let profile = profile_arg(&r.instance_profile_name)?;
    let role = role_arg(&r.role_name)?;
    ctl_iam::set_profile_role(st, profile, role, false).await?;
    Ok(())
}

pub(super) async fn list_instance_profiles_for_role(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListInstanceProfilesForRoleRequest,
) -> Out<w::ListInstanceProfilesForRoleResponse> {
    let name = role_arg(&r.role_name)?;
    let role = ctl_iam::role(st, name).await?.value;
    let mut items = vec![];
    for p in &role.instance_profiles {
        if let Ok(p) = ctl_iam::instance_profile(st, p).await {
            items.push((p.value.name.to_lowercase(), p.value));
        }
    }
    let (profiles, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListInstanceProfilesForRoleResponse {
        instance_profiles: Some(wire_profiles(st, &profiles).await?),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

pub(super) async fn create_service_linked_role(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreateServiceLinkedRoleRequest,
) -> Out<w::CreateServiceLinkedRoleResponse> {
    let service = required(&r.aws_service_name, "awsServiceName")?;
    let role = ctl_iam::create_service_linked_role(
        st,
        service,
        r.custom_suffix.as_deref(),
        r.description.clone(),
    )
    .await?;
    Ok(w::CreateServiceLinkedRoleResponse {
        role: Some(wire_role(account(st), &role, false)),
    })
}

fn details(inline: &BTreeMap<String, String>) -> Option<Vec<w::PolicyDetail>> {
    Some(
        inline
            .iter()
            .map(|(name, doc)| w::PolicyDetail {
                policy_name: Some(name.clone()),
                policy_document: Some(url_encode(doc)),
            })
            .collect(),
    )
}

fn attached(arns: &[String]) -> Result<Option<Vec<w::AttachedPolicy>>, IamError> {
    Ok(Some(attached_page(arns, &None, None, Some(1000))?.0))
}

/// One entry of GetAccountAuthorizationDetails, in the order IAM lists
/// them (users, groups, roles, policies), each kind by name.
enum Detail {
    User(w::UserDetail),
    Group(w::GroupDetail),
    Role(w::RoleDetail),
    Policy(w::ManagedPolicyDetail),
}

pub(super) async fn get_account_authorization_details(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetAccountAuthorizationDetailsRequest,
) -> Out<w::GetAccountAuthorizationDetailsResponse> {
    let filter = r.filter.clone().unwrap_or_default();
    const KINDS: [&str; 5] = [
        "User",
        "Role",
        "Group",
        "LocalManagedPolicy",
        "AWSManagedPolicy",
    ];
    if let Some(bad) = filter.iter().find(|f| !KINDS.contains(&f.as_str())) {
        return Err(IamError::Validation(format!(
            "1 validation error detected: Value '[{bad}]' at 'filter' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
            KINDS.join(", ")
        ))
        .into());
    }
    let wants = |k: &str| filter.is_empty() || filter.iter().any(|f| f == k);
    let acct = account(st).to_string();
    let mut items: Vec<(String, Detail)> = vec![];
    let mut in_use: BTreeMap<String, i32> = BTreeMap::new();
    let users = ctl_iam::users(st).await?;
    let groups = ctl_iam::groups(st).await?;
    let roles = ctl_iam::roles(st).await?;
    for arn in users
        .iter()
        .flat_map(|u| &u.attached)
        .chain(groups.iter().flat_map(|g| &g.attached))
        .chain(roles.iter().flat_map(|r| &r.attached))
    {
        *in_use.entry(arn.clone()).or_default() += 1;
    }
    if wants("User") {
        for u in &users {
            items.push((
                format!("0{}", u.name.to_lowercase()),
                Detail::User(w::UserDetail {
                    arn: Some(u.arn(&acct)),
                    attached_managed_policies: attached(&u.attached)?,
                    create_date: Some(iso8601(u.created)),
                    group_list: Some(u.groups.clone()),
                    path: Some(u.path.clone()),
                    tags: wire_tags(&u.tags),
                    user_id: Some(u.id.clone()),
                    user_name: Some(u.name.clone()),
                    user_policy_list: details(&u.inline),
                    ..Default::default()
                }),
            ));
        }
    }
    if wants("Group") {
        for g in &groups {
            items.push((
                format!("1{}", g.name.to_lowercase()),
                Detail::Group(w::GroupDetail {
                    arn: Some(g.arn(&acct)),
                    attached_managed_policies: attached(&g.attached)?,
                    create_date: Some(iso8601(g.created)),
                    group_id: Some(g.id.clone()),
                    group_name: Some(g.name.clone()),
                    group_policy_list: details(&g.inline),
                    path: Some(g.path.clone()),
                }),
            ));
        }
    }
    if wants("Role") {
        for role in &roles {
            let mut held = vec![];
            for p in &role.instance_profiles {
                if let Ok(p) = ctl_iam::instance_profile(st, p).await {
                    held.push(p.value);
                }
            }
            let profiles = wire_profiles(st, &held).await?;
            items.push((
                format!("2{}", role.name.to_lowercase()),
                Detail::Role(w::RoleDetail {
                    arn: Some(role.arn(&acct)),
                    assume_role_policy_document: Some(url_encode(&role.trust)),
                    attached_managed_policies: attached(&role.attached)?,
                    create_date: Some(iso8601(role.created)),
                    instance_profile_list: Some(profiles),
                    path: Some(role.path.clone()),
                    role_id: Some(role.id.clone()),
                    role_name: Some(role.name.clone()),
                    role_policy_list: details(&role.inline),
                    tags: wire_tags(&role.tags),
                    ..Default::default()
                }),
            ));
        }
    }
    if wants("LocalManagedPolicy") {
        for p in ctl_iam::policies(st).await? {
            let arn = p.arn(&acct);
            items.push((
                format!("3{}", p.name.to_lowercase()),
                Detail::Policy(w::ManagedPolicyDetail {
                    attachment_count: Some(in_use.get(&arn).copied().unwrap_or(0)),
                    arn: Some(arn),
                    create_date: Some(iso8601(p.created)),
                    default_version_id: Some(format!("v{}", p.default_version)),
                    description: p.description.clone(),
                    is_attachable: Some(true),
                    path: Some(p.path.clone()),
                    permissions_boundary_usage_count: Some(0),
                    policy_id: Some(p.id.clone()),
                    policy_name: Some(p.name.clone()),
                    policy_version_list: Some(
                        p.versions
                            .iter()
                            .map(|v| super::wire_version(v, p.default_version, true))
                            .collect(),
                    ),
                    update_date: Some(iso8601(p.updated)),
                }),
            ));
        }
    }
    if wants("AWSManagedPolicy") {
        // As IAM does: the AWS-managed policies the account uses.
        for m in managed::AWS_MANAGED {
            let Some(&count) = in_use.get(&m.arn()) else {
                continue;
            };
            let shown = super::wire_aws_policy(m, count as usize);
            items.push((
                format!("4{}", m.name.to_lowercase()),
                Detail::Policy(w::ManagedPolicyDetail {
                    arn: shown.arn,
                    attachment_count: shown.attachment_count,
                    create_date: shown.create_date,
                    default_version_id: shown.default_version_id,
                    description: shown.description,
                    is_attachable: Some(true),
                    path: shown.path,
                    permissions_boundary_usage_count: Some(0),
                    policy_id: shown.policy_id,
                    policy_name: shown.policy_name,
                    policy_version_list: Some(vec![w::PolicyVersion {
                        create_date: shown.update_date.clone(),
                        document: Some(url_encode(m.document)),
                        is_default_version: Some(true),
                        version_id: Some("v1".into()),
                    }]),
                    update_date: shown.update_date,
                }),
            ));
        }
    }
    let (shown, next) = page(items, r.marker.as_deref(), r.max_items)?;
    let mut out = w::GetAccountAuthorizationDetailsResponse {
        group_detail_list: Some(vec![]),
        is_truncated: Some(next.is_some()),
        marker: next,
        policies: Some(vec![]),
        role_detail_list: Some(vec![]),
        user_detail_list: Some(vec![]),
    };
    for d in shown {
        match d {
            Detail::User(u) => out.user_detail_list.get_or_insert_with(Vec::new).push(u),
            Detail::Group(g) => out.group_detail_list.get_or_insert_with(Vec::new).push(g),
            Detail::Role(r) => out.role_detail_list.get_or_insert_with(Vec::new).push(r),
            Detail::Policy(p) => out.policies.get_or_insert_with(Vec::new).push(p),
        }
    }
    Ok(out)
}

/// The identity policies of the user, group or role `arn` names, and the
/// context its requests would carry.
async fn source_policies(st: &AppState, arn: &str) -> Out<(Vec<String>, Context)> {
    let acct = account(st).to_string();
    let bad = || {
        IamError::InvalidInput(format!(
            "Invalid ARN: {arn} does not name a user, group or role of this account."
        ))
    };
    let rest = arn
        .strip_prefix(&format!("arn:aws:iam::{acct}:"))
        .ok_or_else(bad)?;
    let (kind, path_name) = rest.split_once('/').ok_or_else(bad)?;
    let name = path_name.rsplit('/').next().unwrap_or(path_name);
    let mut docs = vec![];
    let mut attached = vec![];
    let mut context = Context::default();
    context.set("aws:PrincipalArn", arn);
    context.set("aws:PrincipalAccount", acct.clone());
    match kind {
        "user" => {
            let u = ctl_iam::user(st, name).await?.value;
            context.set("aws:username", u.name.clone());
            context.set("aws:userid", u.id.clone());
            context.set("aws:PrincipalType", "User");
            docs.extend(u.inline.values().cloned());
            attached.extend(u.attached.clone());
            for g in &u.groups {
                if let Ok(g) = ctl_iam::group(st, g).await {
                    docs.extend(g.value.inline.values().cloned());
                    attached.extend(g.value.attached.clone());
                }
            }
        }
        "group" => {
            let g = ctl_iam::group(st, name).await?.value;
            docs.extend(g.inline.values().cloned());
            attached.extend(g.attached);
        }
        "role" => {
            let r: Role = ctl_iam::role(st, name).await?.value;
            context.set("aws:userid", r.id.clone());
            context.set("aws:PrincipalType", "AssumedRole");
            docs.extend(r.inline.values().cloned());
            attached.extend(r.attached);
        }
        _ => return Err(bad().into()),
    }
    for a in &attached {
        if let Ok(d) = ctl_iam::managed_document(st, a).await {
            docs.push(d);
        }
    }
    Ok((docs, context))
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allowed",
        Decision::ExplicitDeny => "explicitDeny",
        Decision::ImplicitDeny => "implicitDeny",
    }
}

pub(super) async fn simulate_principal_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::SimulatePrincipalPolicyRequest,
) -> Out<w::SimulatePolicyResponse> {
    let source = required(&r.policy_source_arn, "policySourceArn")?;
    for (given, member) in [
        (r.resource_policy.is_some(), "ResourcePolicy"),
        (r.resource_owner.is_some(), "ResourceOwner"),
        (r.caller_arn.is_some(), "CallerArn"),
        (
            r.permissions_boundary_policy_input_list.is_some(),
            "PermissionsBoundaryPolicyInputList",
        ),
        (r.policy_exclusion_list.is_some(), "PolicyExclusionList"),
        (
            r.resource_handling_option.is_some(),
            "ResourceHandlingOption",
        ),
    ] {
        if given {
            return Err(IamError::InvalidInput(format!(
                "Berth's policy simulator does not take {member}: it evaluates all of the principal's identity policies"
            ))
            .into());
        }
    }
    let actions = r.action_names.clone().unwrap_or_default();
    if actions.is_empty() {
        return Err(IamError::missing("actionNames").into());
    }
    let resources = match r.resource_arns.clone() {
        Some(list) if !list.is_empty() => list,
        _ => vec!["*".to_string()],
    };
    let (mut docs, mut context) = source_policies(st, source).await?;
    for (i, extra) in r.policy_input_list.iter().flatten().enumerate() {
        Policy::parse(extra, PolicyKind::Identity).map_err(|e| {
            IamError::MalformedPolicyDocument(format!("policyInputList[{}]: {e}", i + 1))
        })?;
        docs.push(extra.clone());
    }
    for e in r.context_entries.iter().flatten() {
        let key = e.context_key_name.as_deref().unwrap_or_default();
        if key.is_empty() {
            return Err(IamError::missing("contextEntries.member.N.contextKeyName").into());
        }
        // The type says how many values a key may carry; the condition's
        // operator decides how they compare, as in IAM's evaluation.
        const TYPES: [&str; 6] = ["string", "numeric", "boolean", "ip", "binary", "date"];
        let values = e.context_key_values.clone().unwrap_or_default();
        let kind = e.context_key_type.as_deref().unwrap_or("string");
        let (base, list) = match kind.strip_suffix("List") {
            Some(b) => (b, true),
            None => (kind, false),
        };
        if !TYPES.contains(&base) {
            return Err(IamError::InvalidInput(format!(
                "contextKeyType '{kind}' for {key} must be one of string, numeric, boolean, ip, binary, date, or one of them with List"
            ))
            .into());
        }
        if !list && values.len() > 1 {
            return Err(IamError::InvalidInput(format!(
                "contextKeyType {kind} for {key} takes one value; use {kind}List for several"
            ))
            .into());
        }
        context.set_many(key, values);
    }
    let parsed: Vec<Policy> = docs
        .iter()
        .filter_map(|d| Policy::parse(d, PolicyKind::Identity).ok())
        .collect();
    let refs: Vec<&Policy> = parsed.iter().collect();
    let mut items = vec![];
    for (i, action) in actions.iter().enumerate() {
        for (j, resource) in resources.iter().enumerate() {
            let decision = evaluate(
                &refs,
                &[],
                &Request {
                    action,
                    resource,
                    caller: None,
                    context: &context,
                },
            );
            items.push((
                format!("{i:05}{j:05}"),
                w::EvaluationResult {
                    eval_action_name: Some(action.clone()),
                    eval_decision: Some(decision_name(decision).into()),
                    eval_resource_name: Some(resource.clone()),
                    matched_statements: Some(vec![]),
                    missing_context_values: Some(vec![]),
                    ..Default::default()
                },
            ));
        }
    }
    let (results, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::SimulatePolicyResponse {
        evaluation_results: Some(results),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}
