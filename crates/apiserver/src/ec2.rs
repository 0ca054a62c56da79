//! The EC2 API (`ec2`, 2016-11-15, EC2's query dialect): launch templates
//! and their versions, as Auto Scaling groups need them, and the
//! networking operations (`ec2_vpc.rs`). Decode,
//! call `berth_control::groups`, encode; EC2's own error XML.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::groups::{self as ctl, GroupFailure};
use berth_domain::asg::{self as rules, Ec2Error, LaunchTemplate, TemplateVersion};
use berth_wire::ec2 as w;

query_operations! { "EC2", w::MODEL, Ec2Error::invalid;
    "CreateLaunchTemplate" => create_launch_template,
    "CreateLaunchTemplateVersion" => create_launch_template_version,
    "DescribeLaunchTemplates" => describe_launch_templates,
    "DescribeLaunchTemplateVersions" => describe_launch_template_versions,
    "ModifyLaunchTemplate" => modify_launch_template,
    "DeleteLaunchTemplate" => delete_launch_template,
    "CreateVpc" => crate::ec2_vpc::create_vpc,
    "DescribeVpcs" => crate::ec2_vpc::describe_vpcs,
    "DeleteVpc" => crate::ec2_vpc::delete_vpc,
    "CreateSubnet" => crate::ec2_vpc::create_subnet,
    "DescribeSubnets" => crate::ec2_vpc::describe_subnets,
    "DeleteSubnet" => crate::ec2_vpc::delete_subnet,
    "DescribeAvailabilityZones" => crate::ec2_vpc::describe_availability_zones,
    "CreateSecurityGroup" => crate::ec2_vpc::create_security_group,
    "DescribeSecurityGroups" => crate::ec2_vpc::describe_security_groups,
    "DeleteSecurityGroup" => crate::ec2_vpc::delete_security_group,
    "AuthorizeSecurityGroupIngress" => crate::ec2_vpc::authorize_security_group_ingress,
    "AuthorizeSecurityGroupEgress" => crate::ec2_vpc::authorize_security_group_egress,
    "RevokeSecurityGroupIngress" => crate::ec2_vpc::revoke_security_group_ingress,
    "RevokeSecurityGroupEgress" => crate::ec2_vpc::revoke_security_group_egress,
    "DescribeSecurityGroupRules" => crate::ec2_vpc::describe_security_group_rules,
    "DescribeNetworkInterfaces" => crate::ec2_vpc::describe_network_interfaces,
    "CreateTags" => crate::ec2_vpc::create_tags,
    "DeleteTags" => crate::ec2_vpc::delete_tags,
    "DescribeTags" => crate::ec2_vpc::describe_tags,
    "DescribeAccountAttributes" => crate::ec2_vpc::describe_account_attributes,
}

type Out<T> = Result<T, ApiError>;

impl From<GroupFailure> for ApiError {
    fn from(e: GroupFailure) -> Self {
        match e {
            GroupFailure::Asg(e) => ApiError::Asg(e),
            GroupFailure::Ec2(e) => ApiError::Ec2(e),
            GroupFailure::Control(e) => e.into(),
        }
    }
}

fn view(t: &LaunchTemplate) -> w::LaunchTemplate {
    w::LaunchTemplate {
        launch_template_id: Some(t.id.clone()),
        launch_template_name: Some(t.name.clone()),
        create_time: Some(rules::iso(t.create_time)),
        created_by: Some(t.created_by.clone()),
        default_version_number: Some(t.default_version),
        latest_version_number: Some(t.latest_version),
        tags: (!t.tags.is_empty()).then(|| {
            t.tags
                .iter()
                .map(|(k, v)| w::Tag {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect()
        }),
        ..Default::default()
    }
}

fn version_view(t: &LaunchTemplate, v: &TemplateVersion) -> w::LaunchTemplateVersion {
    w::LaunchTemplateVersion {
        create_time: Some(rules::iso(v.create_time)),
        created_by: Some(v.created_by.clone()),
        default_version: Some(v.number == t.default_version),
        // The request's members are the response's (EC2 names them alike).
        launch_template_data: serde_json::from_value(v.data.clone()).ok(),
        launch_template_id: Some(v.template_id.clone()),
        launch_template_name: Some(v.template_name.clone()),
        version_description: v.description.clone(),
        version_number: Some(v.number),
        ..Default::default()
    }
}

fn creator(ctx: &RequestContext) -> String {
    ctx.principal.clone()
}

fn data_of(d: Option<w::RequestLaunchTemplateData>) -> Result<serde_json::Value, Ec2Error> {
    let d = d.ok_or_else(|| Ec2Error::missing("LaunchTemplateData"))?;
    serde_json::to_value(d).map_err(|e| Ec2Error::invalid(e.to_string()))
}

async fn create_launch_template(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateLaunchTemplateRequest,
) -> Out<w::CreateLaunchTemplateResult> {
    let name = rules::check_template_name(input.launch_template_name.as_deref())?.to_string();
    let data = data_of(input.launch_template_data)?;
    let tags: Vec<(String, String)> = input
        .tag_specifications
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.resource_type
                .as_deref()
                .is_none_or(|r| r == "launch-template")
        })
        .flat_map(|s| s.tags.unwrap_or_default())
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    let (t, _) = ctl::create_template(
        st,
        &ctx.scope,
        &name,
        data,
        input.version_description,
        tags,
        &creator(ctx),
    )
    .await?;
    Ok(w::CreateLaunchTemplateResult {
        launch_template: Some(view(&t)),
        ..Default::default()
    })
}

async fn create_launch_template_version(
    st: &AppState,
    ctx: &RequestContext,
    input: w::CreateLaunchTemplateVersionRequest,
) -> Out<w::CreateLaunchTemplateVersionResult> {
    let data = data_of(input.launch_template_data)?;
    let (t, v) = ctl::create_version(
        st,
        &ctx.scope,
        input.launch_template_id.as_deref(),
        input.launch_template_name.as_deref(),
        input.source_version.as_deref(),
        data,
        input.version_description,
        &creator(ctx),
    )
    .await?;
    Ok(w::CreateLaunchTemplateVersionResult {
        launch_template_version: Some(version_view(&t, &v)),
        ..Default::default()
    })
}

async fn describe_launch_templates(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeLaunchTemplatesRequest,
) -> Out<w::DescribeLaunchTemplatesResult> {
    let ids = input.launch_template_ids.unwrap_or_default();
    let names = input.launch_template_names.unwrap_or_default();
    let all = ctl::templates(st, &ctx.scope).await?;
    for id in &ids {
        if !all.iter().any(|t| &t.id == id) {
            return Err(Ec2Error::template_id_not_found(id).into());
        }
    }
    for n in &names {
        if !all.iter().any(|t| &t.name == n) {
            return Err(Ec2Error::template_not_found().into());
        }
    }
    let filters = input.filters.unwrap_or_default();
    let kept = all
        .iter()
        .filter(|t| ids.is_empty() || ids.contains(&t.id))
        .filter(|t| names.is_empty() || names.contains(&t.name))
        .filter(|t| {
            filters.iter().all(|f| {
                let values = f.values.clone().unwrap_or_default();
                match f.name.as_deref() {
                    Some("launch-template-name") => values.contains(&t.name),
                    Some(k) if k.starts_with("tag:") => t
                        .tags
                        .iter()
                        .any(|(tk, tv)| tk == &k[4..] && values.contains(tv)),
                    Some("tag-key") => t.tags.iter().any(|(tk, _)| values.contains(tk)),
                    _ => true,
                }
            })
        })
        .map(view)
        .collect();
    Ok(w::DescribeLaunchTemplatesResult {
        launch_templates: Some(kept),
        next_token: None,
    })
}

async fn describe_launch_template_versions(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DescribeLaunchTemplateVersionsRequest,
) -> Out<w::DescribeLaunchTemplateVersionsResult> {
    let t = ctl::template(
        st,
        &ctx.scope,
        input.launch_template_id.as_deref(),
        input.launch_template_name.as_deref(),
    )
    .await?
    .value;
    let asked = input.versions.unwrap_or_default();
    let list = ctl::versions(st, &ctx.scope, &t, &asked).await?;
    let min = input.min_version.and_then(|v| v.parse::<i64>().ok());
    let max = input.max_version.and_then(|v| v.parse::<i64>().ok());
    Ok(w::DescribeLaunchTemplateVersionsResult {
        launch_template_versions: Some(
            list.iter()
                .filter(|v| min.is_none_or(|m| v.number >= m) && max.is_none_or(|m| v.number <= m))
                .map(|v| version_view(&t, v))
                .collect(),
        ),
        next_token: None,
    })
}

async fn modify_launch_template(
    st: &AppState,
    ctx: &RequestContext,
    input: w::ModifyLaunchTemplateRequest,
) -> Out<w::ModifyLaunchTemplateResult> {
    let version = input
        .default_version
        .ok_or_else(|| Ec2Error::missing("SetDefaultVersion"))?;
    let t = ctl::set_default_version(
        st,
        &ctx.scope,
        input.launch_template_id.as_deref(),
        input.launch_template_name.as_deref(),
        &version,
    )
    .await?;
    Ok(w::ModifyLaunchTemplateResult {
        launch_template: Some(view(&t)),
    })
}

async fn delete_launch_template(
    st: &AppState,
    ctx: &RequestContext,
    input: w::DeleteLaunchTemplateRequest,
) -> Out<w::DeleteLaunchTemplateResult> {
    let t = ctl::delete_template(
        st,
        &ctx.scope,
        input.launch_template_id.as_deref(),
        input.launch_template_name.as_deref(),
    )
    .await?;
    Ok(w::DeleteLaunchTemplateResult {
        launch_template: Some(view(&t)),
    })
}
