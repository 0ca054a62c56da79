//! Secrets Manager (AWS JSON 1.1, `secretsmanager.*`): decode, call
//! `berth_control::secrets`, encode. The rules are `berth_domain::secrets`'.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::secrets::{self as ctl, Create, NewValue, SecretsFailure};
use berth_domain::secrets::{
    self, check_name, check_tag, check_token, SecretId, SecretRecord, SecretsError,
};
use berth_wire::secretsmanager as w;

json_operations! { "Secrets Manager", w::OPERATIONS;
    "CreateSecret" => create_secret,
    "GetSecretValue" => get_secret_value,
    "PutSecretValue" => put_secret_value,
    "UpdateSecret" => update_secret,
    "DescribeSecret" => describe_secret,
    "ListSecrets" => list_secrets,
    "ListSecretVersionIds" => list_secret_version_ids,
    "UpdateSecretVersionStage" => update_secret_version_stage,
    "DeleteSecret" => delete_secret,
    "RestoreSecret" => restore_secret,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
}

impl From<SecretsFailure> for ApiError {
    fn from(e: SecretsFailure) -> Self {
        match e {
            SecretsFailure::Secrets(e) => ApiError::Secrets(e),
            SecretsFailure::Control(e) => e.into(),
        }
    }
}

type Out<T> = Result<T, ApiError>;

/// The answer of an operation with no output shape: `{}`.
#[derive(serde::Serialize)]
struct Empty {}

fn required<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, SecretsError> {
    v.as_deref().ok_or_else(|| SecretsError::required(field))
}

/// The secret a SecretId names in this account and region.
fn secret_id(ctx: &RequestContext, v: &Option<String>) -> Result<SecretId, SecretsError> {
    let given = required(v, "secretId")?;
    SecretId::parse(given, &ctx.scope.region, &ctx.scope.account)
        .ok_or_else(SecretsError::not_found)
}

/// A member Berth does not support: refused, never ignored.
fn unsupported<T>(value: &Option<T>, member: &str) -> Result<(), SecretsError> {
    match value {
        Some(_) => Err(SecretsError::invalid(format!(
            "Berth does not support {member} yet; leave it out (see docs/api-coverage.md)."
        ))),
        None => Ok(()),
    }
}

fn tags_of(tags: Option<Vec<w::Tag>>) -> Result<Vec<(String, String)>, SecretsError> {
    let tags: Vec<(String, String)> = tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            Ok((
                required(&t.key, "tags.key")?.to_string(),
                t.value.unwrap_or_default(),
            ))
        })
        .collect::<Result<_, SecretsError>>()?;
    for (k, v) in &tags {
        check_tag(k, v)?;
    }
    Ok(tags)
}

/// MaxResults of the listings: 1 to 100, 100 when not given.
fn max_results(v: Option<i32>) -> Result<usize, SecretsError> {
    match v {
        None => Ok(100),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(SecretsError::invalid(format!(
            "MaxResults must be between 1 and 100; got {n}."
        ))),
    }
}

fn check_description(d: &Option<String>) -> Result<(), SecretsError> {
    match d {
        Some(d) if d.chars().count() > 2048 => Err(SecretsError::new(
            "ValidationException",
            "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 2048",
        )),
        _ => Ok(()),
    }
}

fn new_value(
    string: Option<String>,
    binary: Option<String>,
    token: Option<String>,
    stages: Vec<String>,
) -> Result<NewValue, SecretsError> {
    secrets::check_value(string.as_deref(), binary.as_deref())?;
    if let Some(t) = &token {
        check_token(t)?;
    }
    Ok(NewValue {
        string,
        binary,
        token,
        stages,
    })
}

fn arn(ctx: &RequestContext, r: &SecretRecord) -> Option<String> {
    Some(r.arn(&ctx.scope.region, &ctx.scope.account))
}

async fn create_secret(
    st: &AppState,
    ctx: &RequestContext,
    i: w::CreateSecretRequest,
) -> Out<w::CreateSecretResponse> {
    let name = required(&i.name, "name")?.to_string();
    check_name(&name)?;
    check_description(&i.description)?;
    unsupported(&i.add_replica_regions, "AddReplicaRegions (replication)")?;
    unsupported(&i.cross_account_primary_arn, "CrossAccountPrimaryArn")?;
    unsupported(&i.r#type, "Type (managed external secrets)")?;
    if i.force_overwrite_replica_secret == Some(true) {
        unsupported(&Some(()), "ForceOverwriteReplicaSecret (replication)")?;
    }
    let tags = tags_of(i.tags)?;
    if tags.len() > secrets::MAX_TAGS {
        return Err(SecretsError::invalid(format!(
            "A secret can have at most {} tags.",
            secrets::MAX_TAGS
        ))
        .into());
    }
    let value = new_value(
        i.secret_string,
        i.secret_binary,
        i.client_request_token,
        vec![],
    )?;
    let req = Create {
        name,
        description: i.description,
        kms_key_id: i.kms_key_id,
        tags,
        value,
    };
    let (record, version) = ctl::create(&st.ctl, &ctx.scope, st.now(), req).await?;
    Ok(w::CreateSecretResponse {
        arn: arn(ctx, &record),
        name: Some(record.name),
        replication_status: None,
        version_id: version,
    })
}

async fn get_secret_value(
    st: &AppState,
    ctx: &RequestContext,
    i: w::GetSecretValueRequest,
) -> Out<w::GetSecretValueResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    let record = ctl::find(&st.ctl, &ctx.scope, &id, st.now()).await?.value;
    if record.deleted.is_some() {
        return Err(SecretsError::marked_for_deletion().into());
    }
    let version = record.version(i.version_id.as_deref(), i.version_stage.as_deref())?;
    let (string, binary) = ctl::value(&st.ctl, &ctx.scope, &record, version)?;
    Ok(w::GetSecretValueResponse {
        arn: arn(ctx, &record),
        created_date: Some(version.created),
        name: Some(record.name.clone()),
        secret_binary: binary,
        secret_string: string,
        version_id: Some(version.id.clone()),
        version_stages: Some(version.stages.clone()),
    })
}

async fn put_secret_value(
    st: &AppState,
    ctx: &RequestContext,
    i: w::PutSecretValueRequest,
) -> Out<w::PutSecretValueResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    unsupported(&i.rotation_token, "RotationToken (rotation)")?;
    if i.secret_string.is_none() && i.secret_binary.is_none() {
        return Err(
            SecretsError::invalid("You must provide either SecretString or SecretBinary.").into(),
        );
    }
    let stages = i.version_stages.unwrap_or_default();
    if stages.len() > 20 || stages.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(SecretsError::invalid(
            "VersionStages must be 1 to 20 labels of 1 to 256 characters.",
        )
        .into());
    }
    let value = new_value(
        i.secret_string,
        i.secret_binary,
        i.client_request_token,
        stages,
    )?;
    let (record, (version, stages)) =
        ctl::put_value(&st.ctl, &ctx.scope, st.now(), &id, &value).await?;
    Ok(w::PutSecretValueResponse {
        arn: arn(ctx, &record),
        name: Some(record.name),
        version_id: Some(version),
        version_stages: Some(stages),
    })
}

async fn update_secret(
    st: &AppState,
    ctx: &RequestContext,
    i: w::UpdateSecretRequest,
) -> Out<w::UpdateSecretResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    check_description(&i.description)?;
    unsupported(&i.r#type, "Type (managed external secrets)")?;
    let value = new_value(
        i.secret_string,
        i.secret_binary,
        i.client_request_token,
        vec![],
    )?;
    let now = st.now();
    let (description, kms) = (i.description, i.kms_key_id);
    // One write: a value refused leaves the description as it was.
    let (record, version) = ctl::change(&st.ctl, &ctx.scope, now, &id, false, |r| {
        if description.is_some() {
            r.description = description.clone();
        }
        if kms.is_some() {
            r.kms_key_id = kms.clone();
        }
        r.changed = now;
        if value.is_empty() {
            return Ok(None);
        }
        ctl::add_value(&st.ctl, &ctx.scope, r, &value, now).map(|(v, _)| Some(v))
    })
    .await?;
    Ok(w::UpdateSecretResponse {
        arn: arn(ctx, &record),
        name: Some(record.name),
        version_id: version,
    })
}

fn wire_tags(r: &SecretRecord) -> Option<Vec<w::Tag>> {
    Some(
        r.tags
            .iter()
            .map(|(k, v)| w::Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
    )
}

async fn describe_secret(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DescribeSecretRequest,
) -> Out<w::DescribeSecretResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    let r = ctl::find(&st.ctl, &ctx.scope, &id, st.now()).await?.value;
    Ok(w::DescribeSecretResponse {
        arn: arn(ctx, &r),
        created_date: Some(r.created),
        deleted_date: r.deleted.map(|(at, _)| at),
        description: r.description.clone(),
        kms_key_id: r.kms_key_id.clone(),
        last_changed_date: Some(r.changed),
        name: Some(r.name.clone()),
        primary_region: Some(ctx.scope.region.clone()),
        rotation_enabled: Some(false),
        tags: wire_tags(&r),
        version_ids_to_stages: Some(r.stages()),
        ..Default::default()
    })
}

async fn list_secrets(
    st: &AppState,
    ctx: &RequestContext,
    i: w::ListSecretsRequest,
) -> Out<w::ListSecretsResponse> {
    let limit = max_results(i.max_results)?;
    let filters: Vec<(String, Vec<String>)> = i
        .filters
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f.key.unwrap_or_default(), f.values.unwrap_or_default()))
        .collect();
    secrets::check_filters(&filters)?;
    let sort_by = i.sort_by.as_deref().unwrap_or("created-date");
    if !w::enums::SORT_BY_TYPE.contains(&sort_by) {
        return Err(SecretsError::invalid(format!("Invalid SortBy: {sort_by}")).into());
    }
    let descending = match i.sort_order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(SecretsError::invalid(format!(
                "Invalid SortOrder: {other}; use asc or desc."
            ))
            .into())
        }
    };
    let planned = i.include_planned_deletion.unwrap_or(false);
    let mut all: Vec<SecretRecord> = ctl::list(&st.ctl, &ctx.scope, st.now())
        .await?
        .into_iter()
        .filter(|r| {
            (planned || r.deleted.is_none()) && secrets::matches(r, &ctx.scope.region, &filters)
        })
        .collect();
    all.sort_by(|a, b| match sort_by {
        "name" => a.name.cmp(&b.name),
        "last-changed-date" => a.changed.total_cmp(&b.changed).then(a.name.cmp(&b.name)),
        _ => a.created.total_cmp(&b.created).then(a.name.cmp(&b.name)),
    });
    if descending {
        all.reverse();
    }
    // The position in this order: a listing's order is not a key order.
    let listing = format!("secrets:{sort_by}:{descending}");
    let bad = || {
        SecretsError::new(
            "InvalidNextTokenException",
            "The NextToken value isn't valid.",
        )
    };
    let from =
        match berth_domain::paging::resume(&listing, i.next_token.as_deref()).map_err(|_| bad())? {
            None => 0,
            Some(k) => k.parse::<usize>().map_err(|_| bad())?,
        };
    let page: Vec<&SecretRecord> = all.iter().skip(from).take(limit).collect();
    let next = (from + page.len() < all.len())
        .then(|| berth_domain::paging::token(&listing, &(from + page.len()).to_string()));
    Ok(w::ListSecretsResponse {
        next_token: next,
        secret_list: Some(
            page.into_iter()
                .map(|r| w::SecretListEntry {
                    arn: arn(ctx, r),
                    created_date: Some(r.created),
                    deleted_date: r.deleted.map(|(at, _)| at),
                    description: r.description.clone(),
                    kms_key_id: r.kms_key_id.clone(),
                    last_changed_date: Some(r.changed),
                    name: Some(r.name.clone()),
                    primary_region: Some(ctx.scope.region.clone()),
                    rotation_enabled: Some(false),
                    secret_versions_to_stages: Some(r.stages()),
                    tags: wire_tags(r),
                    ..Default::default()
                })
                .collect(),
        ),
    })
}

async fn list_secret_version_ids(
    st: &AppState,
    ctx: &RequestContext,
    i: w::ListSecretVersionIdsRequest,
) -> Out<w::ListSecretVersionIdsResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    let limit = max_results(i.max_results)?;
    let r = ctl::find(&st.ctl, &ctx.scope, &id, st.now()).await?.value;
    let deprecated = i.include_deprecated.unwrap_or(false);
    let listing = format!("secret-versions:{}", r.name);
    let after = berth_domain::paging::resume(&listing, i.next_token.as_deref()).map_err(|_| {
        SecretsError::new(
            "InvalidNextTokenException",
            "The NextToken value isn't valid.",
        )
    })?;
    let items: Vec<(String, &secrets::SecretVersion)> = r
        .versions
        .iter()
        .filter(|v| deprecated || !v.stages.is_empty())
        .enumerate()
        .map(|(n, v)| (format!("{n:05}"), v))
        .collect();
    let (page, next) = berth_domain::paging::page(&listing, items, after.as_deref(), limit);
    Ok(w::ListSecretVersionIdsResponse {
        arn: arn(ctx, &r),
        name: Some(r.name.clone()),
        next_token: next,
        versions: Some(
            page.into_iter()
                .map(|v| w::SecretVersionsListEntry {
                    created_date: Some(v.created),
                    kms_key_ids: r.kms_key_id.clone().map(|k| vec![k]),
                    last_accessed_date: None,
                    version_id: Some(v.id.clone()),
                    version_stages: Some(v.stages.clone()),
                })
                .collect(),
        ),
    })
}

async fn update_secret_version_stage(
    st: &AppState,
    ctx: &RequestContext,
    i: w::UpdateSecretVersionStageRequest,
) -> Out<w::UpdateSecretVersionStageResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    let stage = required(&i.version_stage, "versionStage")?.to_string();
    let (remove, moved) = (i.remove_from_version_id, i.move_to_version_id);
    let (record, ()) = ctl::change(&st.ctl, &ctx.scope, st.now(), &id, false, |r| {
        let holder = r.versions.iter().find(|v| v.stages.contains(&stage)).map(|v| v.id.clone());
        for v in [&remove, &moved].into_iter().flatten() {
            if !r.versions.iter().any(|x| &x.id == v) {
                return Err(SecretsError::new(
                    "ResourceNotFoundException",
                    format!("Secrets Manager can't find the specified secret value for VersionId: {v}"),
                )
                .into());
            }
        }
        if let Some(from) = &remove {
            if holder.as_ref() != Some(from) {
                return Err(SecretsError::invalid(format!(
                    "The staging label {stage} is not attached to version {from}."
                ))
                .into());
            }
        } else if let (Some(h), Some(to)) = (&holder, &moved) {
            if h != to {
                return Err(SecretsError::invalid(format!(
                    "The staging label {stage} is currently attached to version {h}, but you have not specified it in RemoveFromVersionId."
                ))
                .into());
            }
        }
        if stage == secrets::CURRENT && moved.is_none() {
            return Err(SecretsError::invalid("You can't remove AWSCURRENT from a version without moving it to another.").into());
        }
        match (&remove, &moved) {
            (_, Some(to)) => r.stage(&stage, to),
            (Some(from), None) => r.unstage(&stage, from),
            (None, None) => {}
        }
        Ok(())
    })
    .await?;
    Ok(w::UpdateSecretVersionStageResponse {
        arn: arn(ctx, &record),
        name: Some(record.name),
    })
}

async fn delete_secret(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DeleteSecretRequest,
) -> Out<w::DeleteSecretResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    let force = i.force_delete_without_recovery.unwrap_or(false);
    if force && i.recovery_window_in_days.is_some() {
        return Err(SecretsError::invalid(
            "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
        )
        .into());
    }
    let days = i
        .recovery_window_in_days
        .unwrap_or(secrets::DEFAULT_RECOVERY_DAYS);
    if !secrets::RECOVERY_DAYS.contains(&days) {
        return Err(SecretsError::invalid(
            "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
        )
        .into());
    }
    let (record, at) = ctl::delete(&st.ctl, &ctx.scope, st.now(), &id, days, force).await?;
    Ok(w::DeleteSecretResponse {
        arn: arn(ctx, &record),
        deletion_date: Some(at),
        name: Some(record.name),
    })
}

async fn restore_secret(
    st: &AppState,
    ctx: &RequestContext,
    i: w::RestoreSecretRequest,
) -> Out<w::RestoreSecretResponse> {
    let id = secret_id(ctx, &i.secret_id)?;
    let (record, ()) = ctl::change(&st.ctl, &ctx.scope, st.now(), &id, true, |r| {
        r.deleted = None;
        Ok(())
    })
    .await?;
    Ok(w::RestoreSecretResponse {
        arn: arn(ctx, &record),
        name: Some(record.name),
    })
}

async fn tag_resource(st: &AppState, ctx: &RequestContext, i: w::TagResourceRequest) -> Out<Empty> {
    let id = secret_id(ctx, &i.secret_id)?;
    let tags = tags_of(Some(i.tags.ok_or_else(|| SecretsError::required("tags"))?))?;
    ctl::change(&st.ctl, &ctx.scope, st.now(), &id, false, |r| {
        ctl::add_tags(r, &tags)
    })
    .await?;
    Ok(Empty {})
}

async fn untag_resource(
    st: &AppState,
    ctx: &RequestContext,
    i: w::UntagResourceRequest,
) -> Out<Empty> {
    let id = secret_id(ctx, &i.secret_id)?;
    let keys = i
        .tag_keys
        .ok_or_else(|| SecretsError::required("tagKeys"))?;
    ctl::change(&st.ctl, &ctx.scope, st.now(), &id, false, |r| {
        r.tags.retain(|k, _| !keys.contains(k));
        Ok(())
    })
    .await?;
    Ok(Empty {})
}
