//! Systems Manager Parameter Store (AWS JSON 1.1, `AmazonSSM.*`): decode,
//! call `berth_control::ssm`, encode. The rules are `berth_domain::ssm`'s.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::ssm::{self as ctl, Put, SsmFailure};
use berth_domain::ssm::{
    self, key_of, matches, name_of, parse_selector, Filter, ParameterRecord, ParameterVersion,
    Selector, SsmError,
};
use berth_wire::ssm as w;

json_operations! { "SSM", w::OPERATIONS;
    "PutParameter" => put_parameter,
    "GetParameter" => get_parameter,
    "GetParameters" => get_parameters,
    "GetParametersByPath" => get_parameters_by_path,
    "DescribeParameters" => describe_parameters,
    "GetParameterHistory" => get_parameter_history,
    "DeleteParameter" => delete_parameter,
    "DeleteParameters" => delete_parameters,
    "LabelParameterVersion" => label_parameter_version,
    "UnlabelParameterVersion" => unlabel_parameter_version,
    "AddTagsToResource" => add_tags_to_resource,
    "ListTagsForResource" => list_tags_for_resource,
    "RemoveTagsFromResource" => remove_tags_from_resource,
}

impl From<SsmFailure> for ApiError {
    fn from(e: SsmFailure) -> Self {
        match e {
            SsmFailure::Ssm(e) => ApiError::Ssm(e),
            SsmFailure::Control(e) => e.into(),
        }
    }
}

type Out<T> = Result<T, ApiError>;

fn required<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, SsmError> {
    v.as_deref().ok_or_else(|| SsmError::required(field))
}

fn tags_of(tags: Option<Vec<w::Tag>>) -> Result<Vec<(String, String)>, SsmError> {
    tags.unwrap_or_default()
        .into_iter()
        .map(|t| {
            Ok((
                required(&t.key, "tags.key")?.to_string(),
                required(&t.value, "tags.value")?.to_string(),
            ))
        })
        .collect()
}

/// A name as this account and region know it: ARNs of other accounts or
/// regions name nothing here.
fn local_name<'a>(ctx: &RequestContext, given: &'a str) -> Option<&'a str> {
    name_of(given, &ctx.scope.region, &ctx.scope.account)
}

fn max_results(v: Option<i32>, max: i32, default: i32) -> Result<usize, SsmError> {
    match v {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(SsmError::validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value {} {max}",
            if n < 1 { "greater than or equal to" } else { "less than or equal to" }
        ))),
    }
}

fn resume(listing: &str, token: Option<&str>) -> Result<Option<String>, SsmError> {
    berth_domain::paging::resume(listing, token)
        .map_err(|_| SsmError::new("InvalidNextToken", "The specified token isn't valid."))
}

fn filters_of(
    v: Option<Vec<w::ParameterStringFilter>>,
    by_path: bool,
) -> Result<Vec<Filter>, SsmError> {
    let filters: Vec<Filter> = v
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let key = required(&f.key, "parameterFilters.key")?.to_string();
            let option = f
                .option
                .unwrap_or_else(|| if key == "Path" { "OneLevel" } else { "Equals" }.to_string());
            Ok(Filter {
                key,
                option,
                values: f.values.unwrap_or_default(),
            })
        })
        .collect::<Result<_, SsmError>>()?;
    ssm::check_filters(&filters, by_path)?;
    Ok(filters)
}

fn parameter(
    st: &AppState,
    ctx: &RequestContext,
    record: &ParameterRecord,
    version: &ParameterVersion,
    selector: &Selector,
    decrypt: bool,
) -> Out<w::Parameter> {
    Ok(w::Parameter {
        arn: Some(ssm::arn(
            &ctx.scope.region,
            &ctx.scope.account,
            &record.name,
        )),
        data_type: Some(version.data_type.clone()),
        last_modified_date: Some(version.modified),
        name: Some(record.name.clone()),
        selector: selector.shown(),
        source_result: None,
        r#type: Some(version.kind.clone()),
        value: Some(ctl::value(&st.ctl, &ctx.scope, record, version, decrypt)?),
        version: Some(version.version),
    })
}

fn metadata(ctx: &RequestContext, record: &ParameterRecord) -> w::ParameterMetadata {
    let p = record.current();
    w::ParameterMetadata {
        arn: Some(ssm::arn(
            &ctx.scope.region,
            &ctx.scope.account,
            &record.name,
        )),
        allowed_pattern: p.allowed_pattern.clone(),
        data_type: Some(p.data_type.clone()),
        description: p.description.clone(),
        key_id: p.key_id.clone(),
        last_modified_date: Some(p.modified),
        last_modified_user: Some(p.modified_by.clone()),
        name: Some(record.name.clone()),
        policies: Some(vec![]),
        tier: Some(p.tier.clone()),
        r#type: Some(p.kind.clone()),
        version: Some(p.version),
    }
}

async fn put_parameter(
    st: &AppState,
    ctx: &RequestContext,
    i: w::PutParameterRequest,
) -> Out<w::PutParameterResult> {
    let name = required(&i.name, "name")?.to_string();
    let value = required(&i.value, "value")?.to_string();
    if i.policies.is_some() {
        return Err(SsmError::validation(
            "Berth does not evaluate parameter policies (Expiration, ExpirationNotification, NoChangeNotification) yet; leave Policies out (see docs/api-coverage.md).",
        )
        .into());
    }
    let put = Put {
        name,
        value,
        kind: i.r#type,
        description: i.description,
        key_id: i.key_id,
        overwrite: i.overwrite.unwrap_or(false),
        allowed_pattern: i.allowed_pattern,
        tags: tags_of(i.tags)?,
        tier: i.tier,
        data_type: i.data_type,
    };
    let (version, tier) = ctl::put(&st.ctl, &ctx.scope, &ctx.principal, st.now(), put).await?;
    Ok(w::PutParameterResult {
        tier: Some(tier),
        version: Some(version),
    })
}

/// The parameter and version a `name[:selector]` names.
async fn select(
    st: &AppState,
    ctx: &RequestContext,
    given: &str,
) -> Out<(ParameterRecord, ParameterVersion, Selector)> {
    let (name, selector) = parse_selector(given)?;
    let Some(name) = local_name(ctx, name) else {
        return Err(SsmError::not_found(given).into());
    };
    let Some(record) = ctl::get(&st.ctl, &ctx.scope, name).await? else {
        return Err(SsmError::not_found(name).into());
    };
    let Some(version) = record.value.select(&selector).cloned() else {
        return Err(match &selector {
            Selector::Version(v) => SsmError::version_not_found(name, &v.to_string()),
            _ => SsmError::not_found(given),
        }
        .into());
    };
    Ok((record.value, version, selector))
}

async fn get_parameter(
    st: &AppState,
    ctx: &RequestContext,
    i: w::GetParameterRequest,
) -> Out<w::GetParameterResult> {
    let given = required(&i.name, "name")?;
    let (record, version, selector) = select(st, ctx, given).await?;
    let p = parameter(
        st,
        ctx,
        &record,
        &version,
        &selector,
        i.with_decryption.unwrap_or(false),
    )?;
    Ok(w::GetParameterResult { parameter: Some(p) })
}

async fn get_parameters(
    st: &AppState,
    ctx: &RequestContext,
    i: w::GetParametersRequest,
) -> Out<w::GetParametersResult> {
    let names = i.names.ok_or_else(|| SsmError::required("names"))?;
    if names.is_empty() || names.len() > 10 {
        return Err(SsmError::validation(format!(
            "1 validation error detected: Value '[{}]' at 'names' failed to satisfy constraint: Member must have length {}",
            names.join(", "),
            if names.is_empty() { "greater than or equal to 1" } else { "less than or equal to 10" }
        ))
        .into());
    }
    let decrypt = i.with_decryption.unwrap_or(false);
    let (mut found, mut invalid) = (vec![], vec![]);
    let mut seen = std::collections::HashSet::new();
    for given in &names {
        if !seen.insert(given) {
            continue;
        }
        match select(st, ctx, given).await {
            Ok((record, version, selector)) => {
                found.push(parameter(st, ctx, &record, &version, &selector, decrypt)?)
            }
            Err(ApiError::Ssm(_)) => invalid.push(given.clone()),
            Err(e) => return Err(e),
        }
    }
    Ok(w::GetParametersResult {
        invalid_parameters: Some(invalid),
        parameters: Some(found),
    })
}

async fn get_parameters_by_path(
    st: &AppState,
    ctx: &RequestContext,
    i: w::GetParametersByPathRequest,
) -> Out<w::GetParametersByPathResult> {
    let path = required(&i.path, "path")?;
    ssm::check_path(path)?;
    let limit = max_results(i.max_results, 10, 10)?;
    let filters = filters_of(i.parameter_filters, true)?;
    let recursive = i.recursive.unwrap_or(false);
    let listing = format!("ssm-path:{path}:{recursive}");
    let after = resume(&listing, i.next_token.as_deref())?;
    let base = key_of(path.trim_end_matches('/'));
    let under = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let records = ctl::list(&st.ctl, &ctx.scope, &under).await?;
    let items: Vec<(String, ParameterRecord)> = records
        .into_iter()
        .filter(|r| ssm::under_path(key_of(&r.name), path, recursive) && matches(r, &filters))
        .map(|r| (key_of(&r.name).to_string(), r))
        .collect();
    let (page, next) = berth_domain::paging::page(&listing, items, after.as_deref(), limit);
    let decrypt = i.with_decryption.unwrap_or(false);
    let parameters = page
        .iter()
        .map(|r| parameter(st, ctx, r, r.current(), &Selector::Latest, decrypt))
        .collect::<Out<Vec<_>>>()?;
    Ok(w::GetParametersByPathResult {
        next_token: next,
        parameters: Some(parameters),
    })
}

async fn describe_parameters(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DescribeParametersRequest,
) -> Out<w::DescribeParametersResult> {
    if i.filters.is_some() && i.parameter_filters.is_some() {
        return Err(SsmError::validation(
            "You can use either Filters or ParameterFilters in a single request.",
        )
        .into());
    }
    if i.shared == Some(true) {
        // Nothing is shared across accounts here: the answer is empty.
        return Ok(w::DescribeParametersResult {
            next_token: None,
            parameters: Some(vec![]),
        });
    }
    let limit = max_results(i.max_results, 50, 10)?;
    // The older Filters: Name, Type and KeyId, each Equals (Name BeginsWith).
    let legacy: Vec<w::ParameterStringFilter> = i
        .filters
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let key = f.key.unwrap_or_default();
            ssm::one_of(&key, &["Name", "Type", "KeyId"], "filters.key")?;
            Ok(w::ParameterStringFilter {
                option: Some(
                    if key == "Name" {
                        "BeginsWith"
                    } else {
                        "Equals"
                    }
                    .into(),
                ),
                key: Some(key),
                values: f.values,
            })
        })
        .collect::<Result<_, SsmError>>()?;
    let filters = filters_of(
        i.parameter_filters
            .or((!legacy.is_empty()).then_some(legacy)),
        false,
    )?;
    let after = resume("ssm-describe", i.next_token.as_deref())?;
    let items: Vec<(String, ParameterRecord)> = ctl::list(&st.ctl, &ctx.scope, "")
        .await?
        .into_iter()
        .filter(|r| matches(r, &filters))
        .map(|r| (key_of(&r.name).to_string(), r))
        .collect();
    let (page, next) = berth_domain::paging::page("ssm-describe", items, after.as_deref(), limit);
    Ok(w::DescribeParametersResult {
        next_token: next,
        parameters: Some(page.iter().map(|r| metadata(ctx, r)).collect()),
    })
}

async fn get_parameter_history(
    st: &AppState,
    ctx: &RequestContext,
    i: w::GetParameterHistoryRequest,
) -> Out<w::GetParameterHistoryResult> {
    let given = required(&i.name, "name")?;
    let limit = max_results(i.max_results, 50, 50)?;
    let name = local_name(ctx, given).ok_or_else(|| SsmError::not_found(given))?;
    let Some(record) = ctl::get(&st.ctl, &ctx.scope, name).await? else {
        return Err(SsmError::not_found(name).into());
    };
    let record = record.value;
    let listing = format!("ssm-history:{}", key_of(name));
    let after = resume(&listing, i.next_token.as_deref())?;
    let items: Vec<(String, &ParameterVersion)> = record
        .versions
        .iter()
        .map(|v| (format!("{:020}", v.version), v))
        .collect();
    let (page, next) = berth_domain::paging::page(&listing, items, after.as_deref(), limit);
    let decrypt = i.with_decryption.unwrap_or(false);
    let parameters = page
        .into_iter()
        .map(|v| {
            Ok(w::ParameterHistory {
                allowed_pattern: v.allowed_pattern.clone(),
                data_type: Some(v.data_type.clone()),
                description: v.description.clone(),
                key_id: v.key_id.clone(),
                labels: Some(v.labels.clone()),
                last_modified_date: Some(v.modified),
                last_modified_user: Some(v.modified_by.clone()),
                name: Some(record.name.clone()),
                policies: Some(vec![]),
                tier: Some(v.tier.clone()),
                r#type: Some(v.kind.clone()),
                value: Some(ctl::value(&st.ctl, &ctx.scope, &record, v, decrypt)?),
                version: Some(v.version),
            })
        })
        .collect::<Out<Vec<_>>>()?;
    Ok(w::GetParameterHistoryResult {
        next_token: next,
        parameters: Some(parameters),
    })
}

async fn delete_parameter(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DeleteParameterRequest,
) -> Out<w::DeleteParameterResult> {
    let given = required(&i.name, "name")?;
    let name = local_name(ctx, given).ok_or_else(|| SsmError::not_found(given))?;
    ctl::delete(&st.ctl, &ctx.scope, name).await?;
    Ok(w::DeleteParameterResult {})
}

async fn delete_parameters(
    st: &AppState,
    ctx: &RequestContext,
    i: w::DeleteParametersRequest,
) -> Out<w::DeleteParametersResult> {
    let names = i.names.ok_or_else(|| SsmError::required("names"))?;
    if names.is_empty() || names.len() > 10 {
        return Err(SsmError::validation(
            "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and 10",
        )
        .into());
    }
    let (mut deleted, mut invalid) = (vec![], vec![]);
    for given in names {
        let Some(name) = local_name(ctx, &given) else {
            invalid.push(given);
            continue;
        };
        match ctl::delete(&st.ctl, &ctx.scope, name).await {
            Ok(()) => deleted.push(given),
            Err(SsmFailure::Ssm(_)) => invalid.push(given),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(w::DeleteParametersResult {
        deleted_parameters: Some(deleted),
        invalid_parameters: Some(invalid),
    })
}

fn labels_of(v: Option<Vec<String>>) -> Result<Vec<String>, SsmError> {
    let labels = v.ok_or_else(|| SsmError::required("labels"))?;
    if labels.is_empty() || labels.len() > 10 {
        return Err(SsmError::validation(
            "1 validation error detected: Value at 'labels' failed to satisfy constraint: Member must have length between 1 and 10",
        ));
    }
    Ok(labels)
}

async fn label_parameter_version(
    st: &AppState,
    ctx: &RequestContext,
    i: w::LabelParameterVersionRequest,
) -> Out<w::LabelParameterVersionResult> {
    let given = required(&i.name, "name")?;
    let name = local_name(ctx, given).ok_or_else(|| SsmError::not_found(given))?;
    let labels = labels_of(i.labels)?;
    let (invalid, version) = ctl::change(
        &st.ctl,
        &ctx.scope,
        name,
        || SsmError::not_found(name),
        |r| ctl::label(r, i.parameter_version, &labels),
    )
    .await?;
    Ok(w::LabelParameterVersionResult {
        invalid_labels: Some(invalid),
        parameter_version: Some(version),
    })
}

async fn unlabel_parameter_version(
    st: &AppState,
    ctx: &RequestContext,
    i: w::UnlabelParameterVersionRequest,
) -> Out<w::UnlabelParameterVersionResult> {
    let given = required(&i.name, "name")?;
    let name = local_name(ctx, given).ok_or_else(|| SsmError::not_found(given))?;
    let version = i
        .parameter_version
        .ok_or_else(|| SsmError::required("parameterVersion"))?;
    let labels = labels_of(i.labels)?;
    let (removed, invalid) = ctl::change(
        &st.ctl,
        &ctx.scope,
        name,
        || SsmError::not_found(name),
        |r| ctl::unlabel(r, version, &labels),
    )
    .await?;
    Ok(w::UnlabelParameterVersionResult {
        invalid_labels: Some(invalid),
        removed_labels: Some(removed),
    })
}

/// The parameter a tagging request names: Parameter is the only resource
/// type Berth serves.
fn tagged<'a>(
    ctx: &RequestContext,
    kind: &Option<String>,
    id: &'a Option<String>,
) -> Result<&'a str, SsmError> {
    let kind = required(kind, "resourceType")?;
    ssm::one_of(kind, w::enums::RESOURCE_TYPE_FOR_TAGGING, "resourceType")?;
    if kind != "Parameter" {
        return Err(SsmError::new(
            "InvalidResourceType",
            format!("Berth serves tags of parameters only, not of {kind}."),
        ));
    }
    let given = required(id, "resourceId")?;
    local_name(ctx, given).ok_or_else(|| invalid_resource(given))
}

fn invalid_resource(id: &str) -> SsmError {
    SsmError::new(
        "InvalidResourceId",
        format!("Invalid Resource Id: no parameter {id}."),
    )
}

async fn add_tags_to_resource(
    st: &AppState,
    ctx: &RequestContext,
    i: w::AddTagsToResourceRequest,
) -> Out<w::AddTagsToResourceResult> {
    let name = tagged(ctx, &i.resource_type, &i.resource_id)?;
    let tags = tags_of(Some(i.tags.ok_or_else(|| SsmError::required("tags"))?))?;
    ctl::change(
        &st.ctl,
        &ctx.scope,
        name,
        || invalid_resource(name),
        |r| ctl::add_tags(r, &tags),
    )
    .await?;
    Ok(w::AddTagsToResourceResult {})
}

async fn remove_tags_from_resource(
    st: &AppState,
    ctx: &RequestContext,
    i: w::RemoveTagsFromResourceRequest,
) -> Out<w::RemoveTagsFromResourceResult> {
    let name = tagged(ctx, &i.resource_type, &i.resource_id)?;
    let keys = i.tag_keys.ok_or_else(|| SsmError::required("tagKeys"))?;
    ctl::change(
        &st.ctl,
        &ctx.scope,
        name,
        || invalid_resource(name),
        |r| {
            r.tags.retain(|k, _| !keys.contains(k));
            Ok(())
        },
    )
    .await?;
    Ok(w::RemoveTagsFromResourceResult {})
}

async fn list_tags_for_resource(
    st: &AppState,
    ctx: &RequestContext,
    i: w::ListTagsForResourceRequest,
) -> Out<w::ListTagsForResourceResult> {
    let name = tagged(ctx, &i.resource_type, &i.resource_id)?;
    let Some(record) = ctl::get(&st.ctl, &ctx.scope, name).await? else {
        return Err(invalid_resource(name).into());
    };
    Ok(w::ListTagsForResourceResult {
        tag_list: Some(
            record
                .value
                .tags
                .into_iter()
                .map(|(k, v)| w::Tag {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
        ),
    })
}
