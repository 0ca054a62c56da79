//! IAM (awsQuery, `iam` 2010-05-08): users and their access keys,
//! customer-managed policies with versions, the AWS-managed policies Berth
//! ships, attachments and inline policies; instance profiles,
//! service-linked roles, the account's authorization details and the policy
//! simulator (`account`). Requests decode into the trimmed
//! model's shapes (scripts/vendor-model.py); the records and their rules are
//! `berth_iam`'s, the writes `berth_control::iam`'s.

mod account;

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::iam::{self as ctl_iam, IamFailure};
use berth_domain::elb::iso8601;
use berth_iam::keys::KeyStatus;
use berth_iam::managed::{self, AWS_MANAGED};
use berth_iam::records::{
    check_name, check_path, check_tags, merge_tags, Group, IamError, Role, Tag, User,
};
use berth_wire::iam::{self as w, MODEL};
use berth_wire::query::QueryParams;

macro_rules! operations {
    ($($name:literal => $handler:path),* $(,)?) => {
        /// The IAM operations Berth serves.
        pub const IMPLEMENTED: &[&str] = &[$($name),*];

        /// Decodes the form, runs the handler, encodes the XML response.
        pub async fn dispatch(st: &AppState, ctx: &RequestContext, action: &str, params: &QueryParams) -> Result<Vec<u8>, ApiError> {
            match action {
                $($name => {
                    let input = MODEL.decode(action, params).map_err(|e| IamError::Validation(e.to_string()))?;
                    let output = $handler(st, ctx, input).await?;
                    Ok(MODEL.respond(action, &output, &ctx.request_id).into_bytes())
                })*
                other if berth_wire::iam::OPERATIONS.contains(&other) => Err(ApiError::UnknownOperation(format!(
                    "Berth does not implement the IAM action {other} yet; see docs/api-coverage.md."
                ))),
                other => Err(ApiError::UnknownOperation(format!("The action {other} is not valid for this web service."))),
            }
        }
    };
}

operations! {
    "CreateUser" => create_user,
    "GetUser" => get_user,
    "ListUsers" => list_users,
    "UpdateUser" => update_user,
    "DeleteUser" => delete_user,
    "TagUser" => tag_user,
    "UntagUser" => untag_user,
    "ListUserTags" => list_user_tags,
    "CreateAccessKey" => create_access_key,
    "ListAccessKeys" => list_access_keys,
    "UpdateAccessKey" => update_access_key,
    "DeleteAccessKey" => delete_access_key,
    "GetAccessKeyLastUsed" => get_access_key_last_used,
    "CreatePolicy" => create_policy,
    "GetPolicy" => get_policy,
    "ListPolicies" => list_policies,
    "DeletePolicy" => delete_policy,
    "CreatePolicyVersion" => create_policy_version,
    "GetPolicyVersion" => get_policy_version,
    "ListPolicyVersions" => list_policy_versions,
    "DeletePolicyVersion" => delete_policy_version,
    "SetDefaultPolicyVersion" => set_default_policy_version,
    "AttachUserPolicy" => attach_user_policy,
    "DetachUserPolicy" => detach_user_policy,
    "ListAttachedUserPolicies" => list_attached_user_policies,
    "PutUserPolicy" => put_user_policy,
    "GetUserPolicy" => get_user_policy,
    "ListUserPolicies" => list_user_policies,
    "DeleteUserPolicy" => delete_user_policy,
    "CreateGroup" => create_group,
    "GetGroup" => get_group,
    "ListGroups" => list_groups,
    "DeleteGroup" => delete_group,
    "AddUserToGroup" => add_user_to_group,
    "RemoveUserFromGroup" => remove_user_from_group,
    "ListGroupsForUser" => list_groups_for_user,
    "AttachGroupPolicy" => attach_group_policy,
    "DetachGroupPolicy" => detach_group_policy,
    "ListAttachedGroupPolicies" => list_attached_group_policies,
    "PutGroupPolicy" => put_group_policy,
    "GetGroupPolicy" => get_group_policy,
    "ListGroupPolicies" => list_group_policies,
    "DeleteGroupPolicy" => delete_group_policy,
    "CreateRole" => create_role,
    "GetRole" => get_role,
    "ListRoles" => list_roles,
    "UpdateRole" => update_role,
    "UpdateAssumeRolePolicy" => update_assume_role_policy,
    "DeleteRole" => delete_role,
    "TagRole" => tag_role,
    "UntagRole" => untag_role,
    "ListRoleTags" => list_role_tags,
    "AttachRolePolicy" => attach_role_policy,
    "DetachRolePolicy" => detach_role_policy,
    "ListAttachedRolePolicies" => list_attached_role_policies,
    "PutRolePolicy" => put_role_policy,
    "GetRolePolicy" => get_role_policy,
    "ListRolePolicies" => list_role_policies,
    "DeleteRolePolicy" => delete_role_policy,
    "ListInstanceProfilesForRole" => account::list_instance_profiles_for_role,
    "CreateInstanceProfile" => account::create_instance_profile,
    "GetInstanceProfile" => account::get_instance_profile,
    "ListInstanceProfiles" => account::list_instance_profiles,
    "DeleteInstanceProfile" => account::delete_instance_profile,
    "AddRoleToInstanceProfile" => account::add_role_to_instance_profile,
    "RemoveRoleFromInstanceProfile" => account::remove_role_from_instance_profile,
    "CreateServiceLinkedRole" => account::create_service_linked_role,
    "GetAccountAuthorizationDetails" => account::get_account_authorization_details,
    "SimulatePrincipalPolicy" => account::simulate_principal_policy,
}

impl From<IamFailure> for ApiError {
    fn from(e: IamFailure) -> Self {
        match e {
            IamFailure::Iam(e) => ApiError::Iam(e),
            IamFailure::Control(e) => e.into(),
        }
    }
}

type Out<T> = Result<T, ApiError>;

fn required<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, IamError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IamError::missing(field))
}

fn name_arg<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, IamError> {
    let n = required(v, field)?;
    check_name(n, field, 64)?;
    Ok(n)
}

fn path_arg(v: &Option<String>, field: &str) -> Result<String, IamError> {
    let p = v.clone().unwrap_or_else(|| "/".into());
    check_path(&p, field)?;
    Ok(p)
}

fn tags_arg(v: Option<Vec<w::Tag>>) -> Result<Vec<Tag>, IamError> {
    let tags: Vec<Tag> = v
        .unwrap_or_default()
        .into_iter()
        .map(|t| Tag {
            key: t.key.unwrap_or_default(),
            value: t.value.unwrap_or_default(),
        })
        .collect();
    check_tags(&tags)?;
    Ok(tags)
}

/// A member Berth does not support yet: refused, never ignored.
fn unsupported<T>(value: &Option<T>, member: &str) -> Result<(), IamError> {
    match value {
        Some(_) => Err(IamError::InvalidInput(format!(
            "Berth does not support {member} yet; leave it out (see docs/api-coverage.md)."
        ))),
        None => Ok(()),
    }
}

fn wire_tags(tags: &[Tag]) -> Option<Vec<w::Tag>> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|t| w::Tag {
                key: Some(t.key.clone()),
                value: Some(t.value.clone()),
            })
            .collect()
    })
}

fn wire_user(account: &str, u: &User, with_tags: bool) -> w::User {
    w::User {
        arn: Some(u.arn(account)),
        create_date: Some(iso8601(u.created)),
        path: Some(u.path.clone()),
        user_id: Some(u.id.clone()),
        user_name: Some(u.name.clone()),
        tags: if with_tags { wire_tags(&u.tags) } else { None },
        ..Default::default()
    }
}

/// Documents travel URL-encoded in IAM's answers; botocore decodes them.
fn url_encode(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len() * 2);
    for b in doc.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The records whose path starts with `path_prefix` (every one without),
/// keyed by lower-cased name for [`page`].
fn under_path<T>(
    items: Vec<T>,
    path_prefix: &Option<String>,
    path_and_name: impl Fn(&T) -> (&str, &str),
) -> Vec<(String, T)> {
    let prefix = path_prefix.as_deref().unwrap_or("/");
    items
        .into_iter()
        .filter_map(|x| {
            let (path, name) = path_and_name(&x);
            let key = path.starts_with(prefix).then(|| name.to_lowercase())?;
            Some((key, x))
        })
        .collect()
}

/// One page of a sorted listing: `Marker` is the last item's sort key.
fn page<T>(
    items: Vec<(String, T)>,
    marker: Option<&str>,
    max_items: Option<i32>,
) -> Result<(Vec<T>, Option<String>), IamError> {
    let max = max_items.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(IamError::Validation(format!(
            "1 validation error detected: Value '{max}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000"
        )));
    }
    let mut items = items;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| marker.is_none_or(|m| k.as_str() > m))
        .collect();
    let more = rest.len() > max as usize;
    let page: Vec<(String, T)> = rest.into_iter().take(max as usize).collect();
    let next = if more {
        page.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    Ok((page.into_iter().map(|(_, v)| v).collect(), next))
}

fn account(st: &AppState) -> &str {
    &st.ctl.config.account
}

/// The user a request names, or (no name) the caller, who must then be a
/// user.
fn user_or_caller<'a>(
    ctx: &'a RequestContext,
    given: &'a Option<String>,
) -> Result<String, IamError> {
    if let Some(n) = given.as_deref().filter(|n| !n.is_empty()) {
        check_name(n, "userName", 64)?;
        return Ok(n.to_string());
    }
    match ctx.caller.as_ref().map(|c| &c.principal) {
        Some(berth_iam::Principal::User { name, .. }) => Ok(name.clone()),
        _ => Err(IamError::Validation(
            "Must specify userName when calling with non-User credentials".into(),
        )),
    }
}

async fn create_user(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreateUserRequest,
) -> Out<w::CreateUserResponse> {
    let name = name_arg(&r.user_name, "userName")?;
    unsupported(&r.permissions_boundary, "PermissionsBoundary")?;
    let path = path_arg(&r.path, "path")?;
    let tags = tags_arg(r.tags)?;
    let u = ctl_iam::create_user(st, name, &path, tags).await?;
    Ok(w::CreateUserResponse {
        user: Some(wire_user(account(st), &u, true)),
    })
}

async fn get_user(
    st: &AppState,
    ctx: &RequestContext,
    r: w::GetUserRequest,
) -> Out<w::GetUserResponse> {
    if r.user_name.as_deref().is_none_or(str::is_empty) {
        if let Some(berth_iam::Principal::Root { account }) =
            ctx.caller.as_ref().map(|c| &c.principal)
        {
            // The root answers as itself.
            return Ok(w::GetUserResponse {
                user: Some(w::User {
                    arn: Some(format!("arn:aws:iam::{account}:root")),
                    user_id: Some(account.clone()),
                    path: Some("/".into()),
                    create_date: Some(iso8601(0.0)),
                    ..Default::default()
                }),
            });
        }
    }
    let name = user_or_caller(ctx, &r.user_name)?;
    let u = ctl_iam::user(st, &name).await?.value;
    Ok(w::GetUserResponse {
        user: Some(wire_user(account(st), &u, true)),
    })
}

async fn list_users(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListUsersRequest,
) -> Out<w::ListUsersResponse> {
    let items = under_path(ctl_iam::users(st).await?, &r.path_prefix, |x| {
        (&x.path, &x.name)
    });
    let (users, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListUsersResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        users: Some(
            users
                .iter()
                .map(|u| wire_user(account(st), u, false))
                .collect(),
        ),
    })
}

async fn update_user(st: &AppState, _ctx: &RequestContext, r: w::UpdateUserRequest) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    if let Some(n) = r.new_user_name.as_deref() {
        check_name(n, "newUserName", 64)?;
    }
    if let Some(p) = r.new_path.as_ref() {
        check_path(p, "newPath")?;
    }
    ctl_iam::rename_user(st, name, r.new_user_name.as_deref(), r.new_path.as_deref()).await?;
    Ok(())
}

async fn delete_user(st: &AppState, _ctx: &RequestContext, r: w::DeleteUserRequest) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    ctl_iam::delete_user(st, name).await?;
    Ok(())
}

async fn tag_user(st: &AppState, _ctx: &RequestContext, r: w::TagUserRequest) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    let tags = tags_arg(r.tags)?;
    ctl_iam::update_user(st, name, |u| {
        let merged = merge_tags(&u.tags, &tags);
        check_tags(&merged)?;
        u.tags = merged;
        Ok(())
    })
    .await?;
    Ok(())
}

async fn untag_user(st: &AppState, _ctx: &RequestContext, r: w::UntagUserRequest) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    let keys = r.tag_keys.unwrap_or_default();
    ctl_iam::update_user(st, name, |u| {
        u.tags
            .retain(|t| !keys.iter().any(|k| k.eq_ignore_ascii_case(&t.key)));
        Ok(())
    })
    .await?;
    Ok(())
}

async fn list_user_tags(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListUserTagsRequest,
) -> Out<w::ListUserTagsResponse> {
    let name = name_arg(&r.user_name, "userName")?;
    let u = ctl_iam::user(st, name).await?.value;
    let items = u.tags.iter().map(|t| (t.key.clone(), t.clone())).collect();
    let (tags, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListUserTagsResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        tags: Some(wire_tags(&tags).unwrap_or_default()),
    })
}

async fn create_access_key(
    st: &AppState,
    ctx: &RequestContext,
    r: w::CreateAccessKeyRequest,
) -> Out<w::CreateAccessKeyResponse> {
    let name = user_or_caller(ctx, &r.user_name)?;
    let (key, secret) = ctl_iam::create_access_key(st, &name).await?;
    let owner = match &key.owner {
        berth_iam::KeyOwner::User(n) => n.clone(),
        berth_iam::KeyOwner::Root | berth_iam::KeyOwner::Instance { .. } => String::new(),
    };
    Ok(w::CreateAccessKeyResponse {
        access_key: Some(w::AccessKey {
            access_key_id: Some(key.access_key_id),
            create_date: Some(iso8601(key.created)),
            secret_access_key: Some(secret),
            status: Some(key.status.as_str().into()),
            user_name: Some(owner),
        }),
    })
}

async fn list_access_keys(
    st: &AppState,
    ctx: &RequestContext,
    r: w::ListAccessKeysRequest,
) -> Out<w::ListAccessKeysResponse> {
    let name = user_or_caller(ctx, &r.user_name)?;
    let u = ctl_iam::user(st, &name).await?.value;
    let items = ctl_iam::keys_of(st, &name)
        .await?
        .into_iter()
        .map(|(_, k)| (k.value.access_key_id.clone(), k.value))
        .collect();
    let (keys, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListAccessKeysResponse {
        access_key_metadata: Some(
            keys.into_iter()
                .map(|k| w::AccessKeyMetadata {
                    access_key_id: Some(k.access_key_id),
                    create_date: Some(iso8601(k.created)),
                    status: Some(k.status.as_str().into()),
                    user_name: Some(u.name.clone()),
                })
                .collect(),
        ),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

fn status_arg(v: &Option<String>) -> Result<KeyStatus, IamError> {
    match required(v, "status")? {
        "Active" => Ok(KeyStatus::Active),
        "Inactive" => Ok(KeyStatus::Inactive),
        other => Err(IamError::Validation(format!(
            "1 validation error detected: Value '{other}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive, Expired]"
        ))),
    }
}

async fn update_access_key(
    st: &AppState,
    ctx: &RequestContext,
    r: w::UpdateAccessKeyRequest,
) -> Out<()> {
    let name = user_or_caller(ctx, &r.user_name)?;
    let id = required(&r.access_key_id, "accessKeyId")?;
    let status = status_arg(&r.status)?;
    ctl_iam::set_access_key_status(st, &name, id, status).await?;
    Ok(())
}

async fn delete_access_key(
    st: &AppState,
    ctx: &RequestContext,
    r: w::DeleteAccessKeyRequest,
) -> Out<()> {
    let name = user_or_caller(ctx, &r.user_name)?;
    let id = required(&r.access_key_id, "accessKeyId")?;
    ctl_iam::delete_access_key(st, &name, id).await?;
    Ok(())
}

async fn get_access_key_last_used(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetAccessKeyLastUsedRequest,
) -> Out<w::GetAccessKeyLastUsedResponse> {
    let id = required(&r.access_key_id, "accessKeyId")?;
    let key = ctl_iam::key_owner(st, id).await?;
    let user_name = match key.owner {
        berth_iam::KeyOwner::User(n) => Some(n),
        berth_iam::KeyOwner::Root | berth_iam::KeyOwner::Instance { .. } => None,
    };
    // Berth does not record each key's last use: AWS answers N/A for a
    // key never used.
    Ok(w::GetAccessKeyLastUsedResponse {
        access_key_last_used: Some(w::AccessKeyLastUsed {
            last_used_date: None,
            region: Some("N/A".into()),
            service_name: Some("N/A".into()),
        }),
        user_name,
    })
}

fn wire_policy(
    st: &AppState,
    p: &berth_iam::records::ManagedPolicy,
    attachments: usize,
) -> w::Policy {
    w::Policy {
        arn: Some(p.arn(account(st))),
        attachment_count: Some(attachments as i32),
        create_date: Some(iso8601(p.created)),
        default_version_id: Some(format!("v{}", p.default_version)),
        description: p.description.clone(),
        is_attachable: Some(true),
        path: Some(p.path.clone()),
        permissions_boundary_usage_count: Some(0),
        policy_id: Some(p.id.clone()),
        policy_name: Some(p.name.clone()),
        tags: wire_tags(&p.tags),
        update_date: Some(iso8601(p.updated)),
    }
}

fn wire_aws_policy(p: &managed::AwsManaged, attachments: usize) -> w::Policy {
    w::Policy {
        arn: Some(p.arn()),
        attachment_count: Some(attachments as i32),
        create_date: Some(iso8601(1_420_070_400.0)),
        default_version_id: Some("v1".into()),
        description: Some(p.description.into()),
        is_attachable: Some(true),
        path: Some(p.path.into()),
        permissions_boundary_usage_count: Some(0),
        policy_id: Some(format!(
            "ANPA{}",
            &berth_wire::sigv4::hex_sha256(p.name.as_bytes())[..17].to_ascii_uppercase()
        )),
        policy_name: Some(p.name.into()),
        tags: None,
        update_date: Some(iso8601(1_420_070_400.0)),
    }
}

async fn create_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreatePolicyRequest,
) -> Out<w::CreatePolicyResponse> {
    let name = required(&r.policy_name, "policyName")?;
    check_name(name, "policyName", 128)?;
    let path = path_arg(&r.path, "path")?;
    let doc = required(&r.policy_document, "policyDocument")?;
    let tags = tags_arg(r.tags)?;
    let p = ctl_iam::create_policy(st, name, &path, doc, r.description.clone(), tags).await?;
    Ok(w::CreatePolicyResponse {
        policy: Some(wire_policy(st, &p, 0)),
    })
}

async fn get_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetPolicyRequest,
) -> Out<w::GetPolicyResponse> {
    let arn = required(&r.policy_arn, "policyArn")?;
    let attached = ctl_iam::attachment_count(st, arn).await?;
    if let Some(p) = managed::by_arn(arn) {
        return Ok(w::GetPolicyResponse {
            policy: Some(wire_aws_policy(p, attached)),
        });
    }
    let p = ctl_iam::policy(st, arn).await?.value;
    Ok(w::GetPolicyResponse {
        policy: Some(wire_policy(st, &p, attached)),
    })
}

async fn list_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListPoliciesRequest,
) -> Out<w::ListPoliciesResponse> {
    let scope = r.scope.as_deref().unwrap_or("All");
    // Berth has no permissions boundaries: every policy is used as a
    // permissions policy, none as a boundary.
    let boundaries_only = match r.policy_usage_filter.as_deref() {
        None | Some("PermissionsPolicy") => false,
        Some("PermissionsBoundary") => true,
        Some(other) => {
            return Err(IamError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'policyUsageFilter' failed to satisfy constraint: Member must satisfy enum value set: [PermissionsPolicy, PermissionsBoundary]"
            ))
            .into())
        }
    };
    let prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
    let users = ctl_iam::users(st).await?;
    let groups = ctl_iam::groups(st).await?;
    let count = |arn: &str| {
        users
            .iter()
            .filter(|u| u.attached.iter().any(|a| a == arn))
            .count()
            + groups
                .iter()
                .filter(|g| g.attached.iter().any(|a| a == arn))
                .count()
    };
    let mut items: Vec<(String, w::Policy)> = vec![];
    if scope == "All" || scope == "AWS" {
        for p in AWS_MANAGED {
            items.push((
                format!("aws:{}", p.name),
                wire_aws_policy(p, count(&p.arn())),
            ));
        }
    }
    if scope == "All" || scope == "Local" {
        for p in ctl_iam::policies(st).await? {
            let arn = p.arn(account(st));
            items.push((
                format!("local:{}", p.name.to_lowercase()),
                wire_policy(st, &p, count(&arn)),
            ));
        }
    }
    let only_attached = r.only_attached.unwrap_or(false);
    let items = items
        .into_iter()
        .filter(|(_, p)| p.path.as_deref().unwrap_or("/").starts_with(&prefix))
        .filter(|(_, p)| !only_attached || p.attachment_count.unwrap_or(0) > 0)
        .filter(|_| !boundaries_only)
        .collect();
    let (policies, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListPoliciesResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        policies: Some(policies),
    })
}

fn aws_managed_is_read_only(arn: &str) -> Result<(), IamError> {
    if managed::by_arn(arn).is_some() {
        return Err(IamError::InvalidInput(format!(
            "Policy {arn} is an AWS managed policy; it cannot be changed or deleted."
        )));
    }
    Ok(())
}

async fn delete_policy(st: &AppState, _ctx: &RequestContext, r: w::DeletePolicyRequest) -> Out<()> {
    let arn = required(&r.policy_arn, "policyArn")?;
    aws_managed_is_read_only(arn)?;
    ctl_iam::delete_policy(st, arn).await?;
    Ok(())
}

fn wire_version(
    v: &berth_iam::records::PolicyVersion,
    default: u32,
    with_doc: bool,
) -> w::PolicyVersion {
    w::PolicyVersion {
        create_date: Some(iso8601(v.created)),
        document: with_doc.then(|| url_encode(&v.document)),
        is_default_version: Some(v.number == default),
        version_id: Some(v.id()),
    }
}

async fn create_policy_version(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreatePolicyVersionRequest,
) -> Out<w::CreatePolicyVersionResponse> {
    let arn = required(&r.policy_arn, "policyArn")?;
    aws_managed_is_read_only(arn)?;
    let doc = required(&r.policy_document, "policyDocument")?;
    let set_default = r.set_as_default.unwrap_or(false);
    let v = ctl_iam::create_policy_version(st, arn, doc, set_default).await?;
    let default = if set_default { v.number } else { 0 };
    Ok(w::CreatePolicyVersionResponse {
        policy_version: Some(wire_version(&v, default, false)),
    })
}

async fn get_policy_version(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetPolicyVersionRequest,
) -> Out<w::GetPolicyVersionResponse> {
    let arn = required(&r.policy_arn, "policyArn")?;
    let id = required(&r.version_id, "versionId")?;
    let n = ctl_iam::version_number(id)?;
    let missing = || {
        IamError::NoSuchEntity(format!(
            "Policy {arn} version {id} does not exist or is not attachable."
        ))
    };
    if let Some(p) = managed::by_arn(arn) {
        if n != 1 {
            return Err(missing().into());
        }
        return Ok(w::GetPolicyVersionResponse {
            policy_version: Some(w::PolicyVersion {
                create_date: Some(iso8601(1_420_070_400.0)),
                document: Some(url_encode(p.document)),
                is_default_version: Some(true),
                version_id: Some("v1".into()),
            }),
        });
    }
    let p = ctl_iam::policy(st, arn).await?.value;
    let v = p
        .versions
        .iter()
        .find(|v| v.number == n)
        .ok_or_else(missing)?;
    Ok(w::GetPolicyVersionResponse {
        policy_version: Some(wire_version(v, p.default_version, true)),
    })
}

async fn list_policy_versions(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListPolicyVersionsRequest,
) -> Out<w::ListPolicyVersionsResponse> {
    let arn = required(&r.policy_arn, "policyArn")?;
    if managed::by_arn(arn).is_some() {
        return Ok(w::ListPolicyVersionsResponse {
            is_truncated: Some(false),
            marker: None,
            versions: Some(vec![w::PolicyVersion {
                create_date: Some(iso8601(1_420_070_400.0)),
                document: None,
                is_default_version: Some(true),
                version_id: Some("v1".into()),
            }]),
        });
    }
    let p = ctl_iam::policy(st, arn).await?.value;
    let items = p
        .versions
        .iter()
        .rev()
        .map(|v| {
            (
                format!("{:010}", u32::MAX - v.number),
                wire_version(v, p.default_version, false),
            )
        })
        .collect();
    let (versions, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListPolicyVersionsResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        versions: Some(versions),
    })
}

async fn delete_policy_version(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DeletePolicyVersionRequest,
) -> Out<()> {
    let arn = required(&r.policy_arn, "policyArn")?;
    aws_managed_is_read_only(arn)?;
    let id = required(&r.version_id, "versionId")?;
    ctl_iam::delete_policy_version(st, arn, id).await?;
    Ok(())
}

async fn set_default_policy_version(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::SetDefaultPolicyVersionRequest,
) -> Out<()> {
    let arn = required(&r.policy_arn, "policyArn")?;
    aws_managed_is_read_only(arn)?;
    let id = required(&r.version_id, "versionId")?;
    ctl_iam::set_default_version(st, arn, id).await?;
    Ok(())
}

async fn attach_user_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::AttachUserPolicyRequest,
) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    let arn = required(&r.policy_arn, "policyArn")?;
    ctl_iam::attach_user_policy(st, name, arn).await?;
    Ok(())
}

async fn detach_user_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DetachUserPolicyRequest,
) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    let arn = required(&r.policy_arn, "policyArn")?;
    ctl_iam::detach_user_policy(st, name, arn).await?;
    Ok(())
}

async fn list_attached_user_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListAttachedUserPoliciesRequest,
) -> Out<w::ListAttachedUserPoliciesResponse> {
    let name = name_arg(&r.user_name, "userName")?;
    let u = ctl_iam::user(st, name).await?.value;
    let (attached, next) = attached_page(
        &u.attached,
        &r.path_prefix,
        r.marker.as_deref(),
        r.max_items,
    )?;
    Ok(w::ListAttachedUserPoliciesResponse {
        attached_policies: Some(attached),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

/// One page of attached policies, by name.
fn attached_page(
    attached: &[String],
    path_prefix: &Option<String>,
    marker: Option<&str>,
    max_items: Option<i32>,
) -> Result<(Vec<w::AttachedPolicy>, Option<String>), IamError> {
    let prefix = path_prefix.clone().unwrap_or_else(|| "/".into());
    let items = attached
        .iter()
        .filter_map(|arn| {
            let (path, pname) = arn.split_once(":policy").map(|(_, rest)| {
                let (p, n) = rest.rsplit_once('/').unwrap_or(("", rest));
                (format!("{p}/"), n.to_string())
            })?;
            path.starts_with(&prefix).then(|| {
                (
                    pname.to_lowercase(),
                    w::AttachedPolicy {
                        policy_arn: Some(arn.clone()),
                        policy_name: Some(pname),
                    },
                )
            })
        })
        .collect();
    page(items, marker, max_items)
}

async fn put_user_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::PutUserPolicyRequest,
) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    let pname = required(&r.policy_name, "policyName")?;
    check_name(pname, "policyName", 128)?;
    let doc = required(&r.policy_document, "policyDocument")?;
    ctl_iam::put_user_policy(st, name, pname, doc).await?;
    Ok(())
}

async fn get_user_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetUserPolicyRequest,
) -> Out<w::GetUserPolicyResponse> {
    let name = name_arg(&r.user_name, "userName")?;
    let pname = required(&r.policy_name, "policyName")?;
    let u = ctl_iam::user(st, name).await?.value;
    let doc = u.inline.get(pname).ok_or_else(|| {
        IamError::NoSuchEntity(format!(
            "The user policy with name {pname} cannot be found."
        ))
    })?;
    Ok(w::GetUserPolicyResponse {
        policy_document: Some(url_encode(doc)),
        policy_name: Some(pname.to_string()),
        user_name: Some(u.name),
    })
}

async fn list_user_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListUserPoliciesRequest,
) -> Out<w::ListUserPoliciesResponse> {
    let name = name_arg(&r.user_name, "userName")?;
    let u = ctl_iam::user(st, name).await?.value;
    let items = u.inline.keys().map(|k| (k.clone(), k.clone())).collect();
    let (names, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListUserPoliciesResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        policy_names: Some(names),
    })
}

async fn delete_user_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DeleteUserPolicyRequest,
) -> Out<()> {
    let name = name_arg(&r.user_name, "userName")?;
    let pname = required(&r.policy_name, "policyName")?;
    ctl_iam::delete_user_policy(st, name, pname).await?;
    Ok(())
}

fn wire_group(account: &str, g: &Group) -> w::Group {
    w::Group {
        arn: Some(g.arn(account)),
        create_date: Some(iso8601(g.created)),
        group_id: Some(g.id.clone()),
        group_name: Some(g.name.clone()),
        path: Some(g.path.clone()),
    }
}

async fn create_group(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreateGroupRequest,
) -> Out<w::CreateGroupResponse> {
    let name = required(&r.group_name, "groupName")?;
    check_name(name, "groupName", 128)?;
    let path = path_arg(&r.path, "path")?;
    let g = ctl_iam::create_group(st, name, &path).await?;
    Ok(w::CreateGroupResponse {
        group: Some(wire_group(account(st), &g)),
    })
}

fn group_arg(v: &Option<String>) -> Result<&str, IamError> {
    let n = required(v, "groupName")?;
    check_name(n, "groupName", 128)?;
    Ok(n)
}

async fn get_group(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetGroupRequest,
) -> Out<w::GetGroupResponse> {
    let name = group_arg(&r.group_name)?;
    let g = ctl_iam::group(st, name).await?.value;
    let items = ctl_iam::members(st, name)
        .await?
        .into_iter()
        .map(|u| (u.name.to_lowercase(), u))
        .collect();
    let (users, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::GetGroupResponse {
        group: Some(wire_group(account(st), &g)),
        is_truncated: Some(next.is_some()),
        marker: next,
        users: Some(
            users
                .iter()
                .map(|u| wire_user(account(st), u, false))
                .collect(),
        ),
    })
}

async fn list_groups(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListGroupsRequest,
) -> Out<w::ListGroupsResponse> {
    let items = under_path(ctl_iam::groups(st).await?, &r.path_prefix, |x| {
        (&x.path, &x.name)
    });
    let (groups, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListGroupsResponse {
        groups: Some(groups.iter().map(|g| wire_group(account(st), g)).collect()),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

async fn delete_group(st: &AppState, _ctx: &RequestContext, r: w::DeleteGroupRequest) -> Out<()> {
    let name = group_arg(&r.group_name)?;
    ctl_iam::delete_group(st, name).await?;
    Ok(())
}

async fn add_user_to_group(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::AddUserToGroupRequest,
) -> Out<()> {
    let group = group_arg(&r.group_name)?;
    let user = name_arg(&r.user_name, "userName")?;
    ctl_iam::set_membership(st, group, user, true).await?;
    Ok(())
}

async fn remove_user_from_group(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::RemoveUserFromGroupRequest,
) -> Out<()> {
    let group = group_arg(&r.group_name)?;
    let user = name_arg(&r.user_name, "userName")?;
    ctl_iam::set_membership(st, group, user, false).await?;
    Ok(())
}

async fn list_groups_for_user(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListGroupsForUserRequest,
) -> Out<w::ListGroupsForUserResponse> {
    let name = name_arg(&r.user_name, "userName")?;
    let u = ctl_iam::user(st, name).await?.value;
    let mut items = vec![];
    for g in &u.groups {
        if let Ok(g) = ctl_iam::group(st, g).await {
            items.push((g.value.name.to_lowercase(), g.value));
        }
    }
    let (groups, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListGroupsForUserResponse {
        groups: Some(groups.iter().map(|g| wire_group(account(st), g)).collect()),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

async fn attach_group_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::AttachGroupPolicyRequest,
) -> Out<()> {
    let name = group_arg(&r.group_name)?;
    let arn = required(&r.policy_arn, "policyArn")?;
    ctl_iam::attach_group_policy(st, name, arn).await?;
    Ok(())
}

async fn detach_group_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DetachGroupPolicyRequest,
) -> Out<()> {
    let name = group_arg(&r.group_name)?;
    let arn = required(&r.policy_arn, "policyArn")?;
    ctl_iam::detach_group_policy(st, name, arn).await?;
    Ok(())
}

async fn list_attached_group_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListAttachedGroupPoliciesRequest,
) -> Out<w::ListAttachedGroupPoliciesResponse> {
    let name = group_arg(&r.group_name)?;
    let g = ctl_iam::group(st, name).await?.value;
    let (attached, next) = attached_page(
        &g.attached,
        &r.path_prefix,
        r.marker.as_deref(),
        r.max_items,
    )?;
    Ok(w::ListAttachedGroupPoliciesResponse {
        attached_policies: Some(attached),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

async fn put_group_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::PutGroupPolicyRequest,
) -> Out<()> {
    let name = group_arg(&r.group_name)?;
    let pname = required(&r.policy_name, "policyName")?;
    check_name(pname, "policyName", 128)?;
    let doc = required(&r.policy_document, "policyDocument")?;
    ctl_iam::put_group_policy(st, name, pname, doc).await?;
    Ok(())
}

async fn get_group_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetGroupPolicyRequest,
) -> Out<w::GetGroupPolicyResponse> {
    let name = group_arg(&r.group_name)?;
    let pname = required(&r.policy_name, "policyName")?;
    let g = ctl_iam::group(st, name).await?.value;
    let doc = g.inline.get(pname).ok_or_else(|| {
        IamError::NoSuchEntity(format!(
            "The group policy with name {pname} cannot be found."
        ))
    })?;
    Ok(w::GetGroupPolicyResponse {
        group_name: Some(g.name.clone()),
        policy_document: Some(url_encode(doc)),
        policy_name: Some(pname.to_string()),
    })
}

async fn list_group_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListGroupPoliciesRequest,
) -> Out<w::ListGroupPoliciesResponse> {
    let name = group_arg(&r.group_name)?;
    let g = ctl_iam::group(st, name).await?.value;
    let items = g.inline.keys().map(|k| (k.clone(), k.clone())).collect();
    let (names, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListGroupPoliciesResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        policy_names: Some(names),
    })
}

async fn delete_group_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DeleteGroupPolicyRequest,
) -> Out<()> {
    let name = group_arg(&r.group_name)?;
    let pname = required(&r.policy_name, "policyName")?;
    ctl_iam::delete_group_policy(st, name, pname).await?;
    Ok(())
}

fn role_arg(v: &Option<String>) -> Result<&str, IamError> {
    name_arg(v, "roleName")
}

fn wire_role(account: &str, r: &Role, with_tags: bool) -> w::Role {
    w::Role {
        arn: Some(r.arn(account)),
        assume_role_policy_document: Some(url_encode(&r.trust)),
        create_date: Some(iso8601(r.created)),
        description: r.description.clone(),
        max_session_duration: Some(r.max_session),
        path: Some(r.path.clone()),
        role_id: Some(r.id.clone()),
        role_name: Some(r.name.clone()),
        tags: if with_tags { wire_tags(&r.tags) } else { None },
        ..Default::default()
    }
}

async fn create_role(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::CreateRoleRequest,
) -> Out<w::CreateRoleResponse> {
    let name = role_arg(&r.role_name)?;
    unsupported(&r.permissions_boundary, "PermissionsBoundary")?;
    unsupported(&r.max_signin_session_duration, "MaxSigninSessionDuration")?;
    let path = path_arg(&r.path, "path")?;
    let trust = required(&r.assume_role_policy_document, "assumeRolePolicyDocument")?;
    let tags = tags_arg(r.tags)?;
    let role = ctl_iam::create_role(
        st,
        name,
        &path,
        trust,
        r.description.clone(),
        r.max_session_duration.unwrap_or(3600),
        tags,
    )
    .await?;
    Ok(w::CreateRoleResponse {
        role: Some(wire_role(account(st), &role, true)),
    })
}

async fn get_role(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetRoleRequest,
) -> Out<w::GetRoleResponse> {
    let name = role_arg(&r.role_name)?;
    let role = ctl_iam::role(st, name).await?.value;
    Ok(w::GetRoleResponse {
        role: Some(wire_role(account(st), &role, true)),
    })
}

async fn list_roles(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListRolesRequest,
) -> Out<w::ListRolesResponse> {
    let items = under_path(ctl_iam::roles(st).await?, &r.path_prefix, |x| {
        (&x.path, &x.name)
    });
    let (roles, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListRolesResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        roles: Some(
            roles
                .iter()
                .map(|x| wire_role(account(st), x, false))
                .collect(),
        ),
    })
}

async fn update_role(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::UpdateRoleRequest,
) -> Out<w::UpdateRoleResponse> {
    let name = role_arg(&r.role_name)?;
    unsupported(&r.max_signin_session_duration, "MaxSigninSessionDuration")?;
    unsupported(
        &r.reset_max_signin_session_duration,
        "ResetMaxSigninSessionDuration",
    )?;
    if let Some(m) = r.max_session_duration {
        ctl_iam::check_max_session(m)?;
    }
    ctl_iam::update_role(st, name, |role| {
        if let Some(d) = &r.description {
            role.description = Some(d.clone());
        }
        if let Some(m) = r.max_session_duration {
            role.max_session = m;
        }
        Ok(())
    })
    .await?;
    Ok(w::UpdateRoleResponse {})
}

async fn update_assume_role_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::UpdateAssumeRolePolicyRequest,
) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let doc = required(&r.policy_document, "policyDocument")?;
    ctl_iam::check_trust(st, doc).await?;
    ctl_iam::update_role(st, name, |role| {
        role.unprotected()?;
        role.trust = doc.to_string();
        Ok(())
    })
    .await?;
    Ok(())
}

async fn delete_role(st: &AppState, _ctx: &RequestContext, r: w::DeleteRoleRequest) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    ctl_iam::delete_role(st, name).await?;
    Ok(())
}

async fn tag_role(st: &AppState, _ctx: &RequestContext, r: w::TagRoleRequest) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let tags = tags_arg(r.tags)?;
    ctl_iam::update_role(st, name, |role| {
        let merged = merge_tags(&role.tags, &tags);
        check_tags(&merged)?;
        role.tags = merged;
        Ok(())
    })
    .await?;
    Ok(())
}

async fn untag_role(st: &AppState, _ctx: &RequestContext, r: w::UntagRoleRequest) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let keys = r.tag_keys.unwrap_or_default();
    ctl_iam::update_role(st, name, |role| {
        role.tags
            .retain(|t| !keys.iter().any(|k| k.eq_ignore_ascii_case(&t.key)));
        Ok(())
    })
    .await?;
    Ok(())
}

async fn list_role_tags(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListRoleTagsRequest,
) -> Out<w::ListRoleTagsResponse> {
    let name = role_arg(&r.role_name)?;
    let role = ctl_iam::role(st, name).await?.value;
    let items = role
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.clone()))
        .collect();
    let (tags, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListRoleTagsResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        tags: Some(wire_tags(&tags).unwrap_or_default()),
    })
}

async fn attach_role_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::AttachRolePolicyRequest,
) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let arn = required(&r.policy_arn, "policyArn")?;
    ctl_iam::attach_role_policy(st, name, arn).await?;
    Ok(())
}

async fn detach_role_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DetachRolePolicyRequest,
) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let arn = required(&r.policy_arn, "policyArn")?;
    ctl_iam::detach_role_policy(st, name, arn).await?;
    Ok(())
}

async fn list_attached_role_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListAttachedRolePoliciesRequest,
) -> Out<w::ListAttachedRolePoliciesResponse> {
    let name = role_arg(&r.role_name)?;
    let role = ctl_iam::role(st, name).await?.value;
    let (attached, next) = attached_page(
        &role.attached,
        &r.path_prefix,
        r.marker.as_deref(),
        r.max_items,
    )?;
    Ok(w::ListAttachedRolePoliciesResponse {
        attached_policies: Some(attached),
        is_truncated: Some(next.is_some()),
        marker: next,
    })
}

async fn put_role_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::PutRolePolicyRequest,
) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let pname = required(&r.policy_name, "policyName")?;
    check_name(pname, "policyName", 128)?;
    let doc = required(&r.policy_document, "policyDocument")?;
    ctl_iam::put_role_policy(st, name, pname, doc).await?;
    Ok(())
}

async fn get_role_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::GetRolePolicyRequest,
) -> Out<w::GetRolePolicyResponse> {
    let name = role_arg(&r.role_name)?;
    let pname = required(&r.policy_name, "policyName")?;
    let role = ctl_iam::role(st, name).await?.value;
    let doc = role.inline.get(pname).ok_or_else(|| {
        IamError::NoSuchEntity(format!(
            "The role policy with name {pname} cannot be found."
        ))
    })?;
    Ok(w::GetRolePolicyResponse {
        policy_document: Some(url_encode(doc)),
        policy_name: Some(pname.to_string()),
        role_name: Some(role.name.clone()),
    })
}

async fn list_role_policies(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::ListRolePoliciesRequest,
) -> Out<w::ListRolePoliciesResponse> {
    let name = role_arg(&r.role_name)?;
    let role = ctl_iam::role(st, name).await?.value;
    let items = role.inline.keys().map(|k| (k.clone(), k.clone())).collect();
    let (names, next) = page(items, r.marker.as_deref(), r.max_items)?;
    Ok(w::ListRolePoliciesResponse {
        is_truncated: Some(next.is_some()),
        marker: next,
        policy_names: Some(names),
    })
}

async fn delete_role_policy(
    st: &AppState,
    _ctx: &RequestContext,
    r: w::DeleteRolePolicyRequest,
) -> Out<()> {
    let name = role_arg(&r.role_name)?;
    let pname = required(&r.policy_name, "policyName")?;
    ctl_iam::delete_role_policy(st, name, pname).await?;
    Ok(())
}
