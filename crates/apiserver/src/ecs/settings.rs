//! Account settings: per principal, an account-wide default, and AWS's defaults.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_domain::{paging, settings, EcsError};
use berth_store::keys::Keys;
use berth_store::{typed, Op, Txn};
use berth_wire::ecs as w;

/// The principal key of the account-wide default set by PutAccountSettingDefault.
const DEFAULT_PRINCIPAL: &str = "default";

fn principal_of(ctx: &RequestContext, given: Option<&str>) -> Result<String, EcsError> {
    match given.filter(|p| !p.is_empty()) {
        None => Ok(ctx.principal.clone()),
        Some(p) if p.starts_with("arn:aws:iam::") => Ok(p.to_string()),
        Some(p) => Err(EcsError::invalid(format!(
            "Invalid principalArn '{p}'. Specify the ARN of an IAM user, IAM role or the root user."
        ))),
    }
}

/// The value in effect for `principal`: its own, else the account default,
/// else AWS's default.
pub(crate) async fn effective(
    st: &AppState,
    ctx: &RequestContext,
    principal: &str,
    name: &str,
) -> Result<String, ApiError> {
    Ok(effective_setting(st, ctx, principal, name)
        .await?
        .value
        .unwrap_or_default())
}

async fn effective_setting(
    st: &AppState,
    ctx: &RequestContext,
    principal: &str,
    name: &str,
) -> Result<w::Setting, ApiError> {
    for p in [principal, DEFAULT_PRINCIPAL] {
        if let Some(s) =
            typed::get::<w::Setting>(&*st.store, &ctx.scope.account_setting(p, name)).await?
        {
            return Ok(s.value);
        }
    }
    Ok(w::Setting {
        name: Some(name.into()),
        value: settings::aws_default(name).map(str::to_string),
        principal_arn: Some(ctx.scope.root_principal()),
        r#type: Some("aws_managed".into()),
    })
}

async fn put(st: &AppState, key: String, setting: w::Setting) -> Result<w::Setting, ApiError> {
    st.store
        .txn(Txn {
            success: vec![typed::put(&key, &setting)],
            ..Default::default()
        })
        .await?;
    Ok(setting)
}

pub async fn put_account_setting(
    st: &AppState,
    ctx: &RequestContext,
    req: w::PutAccountSettingRequest,
) -> Result<w::PutAccountSettingResponse, ApiError> {
    let name = req.name.clone().unwrap_or_default();
    let value = req.value.clone().unwrap_or_default();
    settings::validate(&name, &value)?;
    let principal = principal_of(ctx, req.principal_arn.as_deref())?;
    let setting = w::Setting {
        name: Some(name.clone()),
        value: Some(value),
        principal_arn: Some(principal.clone()),
        r#type: Some("user".into()),
    };
    let setting = put(st, ctx.scope.account_setting(&principal, &name), setting).await?;
    Ok(w::PutAccountSettingResponse {
        setting: Some(setting),
    })
}

pub async fn put_account_setting_default(
    st: &AppState,
    ctx: &RequestContext,
    req: w::PutAccountSettingDefaultRequest,
) -> Result<w::PutAccountSettingDefaultResponse, ApiError> {
    let name = req.name.clone().unwrap_or_default();
    let value = req.value.clone().unwrap_or_default();
    settings::validate(&name, &value)?;
    let setting = w::Setting {
        name: Some(name.clone()),
        value: Some(value),
        principal_arn: Some(ctx.scope.root_principal()),
        r#type: Some("user".into()),
    };
    let setting = put(
        st,
        ctx.scope.account_setting(DEFAULT_PRINCIPAL, &name),
        setting,
    )
    .await?;
    Ok(w::PutAccountSettingDefaultResponse {
        setting: Some(setting),
    })
}

pub async fn delete_account_setting(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteAccountSettingRequest,
) -> Result<w::DeleteAccountSettingResponse, ApiError> {
    let name = req.name.clone().unwrap_or_default();
    settings::validate_name(&name)?;
    let principal = principal_of(ctx, req.principal_arn.as_deref())?;
    let key = ctx.scope.account_setting(&principal, &name);
    let Some(current) = typed::get::<w::Setting>(&*st.store, &key).await? else {
        return Err(EcsError::invalid(format!(
            "The account setting {name} is not set for principal {principal}."
        ))
        .into());
    };
    let txn = Txn::when(
        vec![typed::unchanged(&key, current.mod_revision)],
        vec![Op::delete(key.clone())],
    );
    st.store.txn(txn).await?;
    Ok(w::DeleteAccountSettingResponse {
        setting: Some(current.value),
    })
}

pub async fn list_account_settings(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListAccountSettingsRequest,
) -> Result<w::ListAccountSettingsResponse, ApiError> {
    let limit = paging::max_results(req.max_results, 10)?;
    let listing = "ListAccountSettings";
    let after = paging::resume(listing, req.next_token.as_deref())?;
    if let Some(n) = &req.name {
        settings::validate_name(n)?;
    }
    let principal = principal_of(ctx, req.principal_arn.as_deref())?;
    let names: Vec<&str> = match &req.name {
        Some(n) => vec![n.as_str()],
        None => w::enums::SETTING_NAME.to_vec(),
    };
    let mut found = vec![];
    for name in names {
        let setting = if req.effective_settings == Some(true) {
            Some(effective_setting(st, ctx, &principal, name).await?)
        } else {
            typed::get::<w::Setting>(&*st.store, &ctx.scope.account_setting(&principal, name))
                .await?
                .map(|s| s.value)
        };
        if let Some(s) = setting {
            if req
                .value
                .as_ref()
                .is_none_or(|v| s.value.as_ref() == Some(v))
            {
                found.push((name.to_string(), s));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let (settings, next) = paging::page(listing, found, after.as_deref(), limit);
    Ok(w::ListAccountSettingsResponse {
        settings: Some(settings),
        next_token: next,
    })
}
