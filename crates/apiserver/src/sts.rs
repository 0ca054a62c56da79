//! STS (awsQuery): GetCallerIdentity (who signed the call), AssumeRole
//! (temporary credentials of a role whose trust policy allows the caller)
//! and GetSessionToken (temporary credentials of the caller itself).
//! Temporary credentials are verified like any key (`berth-control`'s
//! identity) until they expire.

use crate::{context::RequestContext, error::ApiError, AppState};
use berth_domain::elb::iso8601;
use berth_iam::policy::{evaluate, Caller, Decision, PolicyKind, Request};
use berth_iam::records::{check_document, IamError};
use berth_iam::{KeyOwner, Principal, SessionOwner};
use berth_wire::query::{self, QueryParams};

pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// Actions served here; an unsigned form request with one of these is STS.
pub const ACTIONS: &[&str] = &["GetCallerIdentity", "AssumeRole", "GetSessionToken"];

/// A session policy's limit, packed.
const SESSION_POLICY_SIZE: usize = 2048;

fn validation(m: String) -> ApiError {
    ApiError::Iam(IamError::Validation(m))
}

/// `DurationSeconds`: from `min` to `max`; `limit` is the API's own
/// bound, beyond which the message names the member rather than the role.
fn duration(
    params: &QueryParams,
    min: u32,
    max: u32,
    limit: u32,
    default: u32,
) -> Result<u32, ApiError> {
    let Some(text) = params.get("DurationSeconds") else {
        return Ok(default.min(max));
    };
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) if n >= min && n <= limit => Err(validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.".into(),
        )),
        Ok(n) if n >= min => Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to {limit}"
        ))),
        _ => Err(validation(format!(
            "1 validation error detected: Value '{text}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {min}"
        ))),
    }
}

fn credentials_xml(id: &str, secret: &str, token: &str, expires: f64) -> String {
    format!(
        "<Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>",
        query::escape(id),
        query::escape(secret),
        query::escape(token),
        iso8601(expires)
    )
}

/// Parameters Berth does not support yet: refused, never ignored.
fn refuse_unsupported(params: &QueryParams, names: &[&str]) -> Result<(), ApiError> {
    for name in names {
        let given = params.get(name).is_some()
            || params.get(&format!("{name}.member.1")).is_some()
            || params.get(&format!("{name}.member.1.arn")).is_some()
            || params.get(&format!("{name}.member.1.Key")).is_some();
        if given {
            return Err(validation(format!(
                "Berth does not support {name} yet; leave it out (see docs/api-coverage.md)."
            )));
        }
    }
    Ok(())
}

/// Who is asking: the signer, or the root with authentication off.
fn caller_principal(ctx: &RequestContext) -> Principal {
    ctx.caller.as_ref().map_or_else(
        || Principal::Root {
            account: ctx.scope.account.clone(),
        },
        |c| c.principal.clone(),
    )
}

/// AssumeRole's session policies (inline and managed) and session tags,
/// checked, with the caller's transitive tags carried on when it is a role
/// session itself.
async fn session_terms(
    st: &AppState,
    ctx: &RequestContext,
    params: &QueryParams,
) -> Result<berth_iam::SessionTerms, ApiError> {
    let mut terms = berth_iam::SessionTerms {
        policy: params.get("Policy").map(str::to_string),
        ..Default::default()
    };
    if let Some(p) = &terms.policy {
        check_document(p, PolicyKind::Identity, usize::MAX).map_err(ApiError::Iam)?;
    }
    let arns: Vec<String> = (1..)
        .map_while(|i| {
            params
                .get(&format!("PolicyArns.member.{i}.arn"))
                .map(str::to_string)
        })
        .collect();
    if arns.len() > 10 {
        return Err(validation(format!(
            "1 validation error detected: Value '{}' at 'policyArns' failed to satisfy constraint: Member must have length less than or equal to 10",
            arns.len()
        )));
    }
    for arn in &arns {
        let doc = berth_control::iam::managed_document(st, arn)
            .await
            .map_err(|_| {
                validation(format!(
                    "The policy {arn} does not exist or is not attachable."
                ))
            })?;
        terms.managed_policies.push(doc);
    }
    for i in 1.. {
        let Some(key) = params.get(&format!("Tags.member.{i}.Key")) else {
            break;
        };
        let value = params
            .get(&format!("Tags.member.{i}.Value"))
            .unwrap_or_default();
        if !(1..=128).contains(&key.len()) || value.len() > 256 {
            return Err(validation(format!(
                "1 validation error detected: Value at 'tags.{i}.member' failed to satisfy constraint: keys are 1 to 128 characters, values at most 256"
            )));
        }
        if terms.tags.iter().any(|t| t.key.eq_ignore_ascii_case(key)) {
            return Err(validation(format!(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive: {key}"
            )));
        }
        terms.tags.push(berth_iam::records::Tag {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    if terms.tags.len() > 50 {
        return Err(validation(format!(
            "1 validation error detected: Value '{}' at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50",
            terms.tags.len()
        )));
    }
    terms.transitive_tag_keys = (1..)
        .map_while(|i| {
            params
                .get(&format!("TransitiveTagKeys.member.{i}"))
                .map(str::to_string)
        })
        .collect();
    if let Some(k) = terms
        .transitive_tag_keys
        .iter()
        .find(|k| !terms.tags.iter().any(|t| t.key.eq_ignore_ascii_case(k)))
    {
        return Err(validation(format!(
            "The specified transitive tag key must be included in the requested tags: {k}"
        )));
    }
    // Chaining: the calling session's transitive tags go along, and stay
    // transitive; a request cannot change them.
    if let Some(c) = &ctx.caller {
        for key in c.transitive_tag_keys.iter() {
            let Some(t) = c.tags.iter().find(|t| t.key.eq_ignore_ascii_case(key)) else {
                continue;
            };
            if terms.tags.iter().any(|x| x.key.eq_ignore_ascii_case(key)) {
                return Err(validation(format!(
                    "One or more of the specified transitive tag keys can't be set because it conflicts with a transitive tag inherited from the calling session: {key}"
                )));
            }
            terms.tags.push(t.clone());
            terms.transitive_tag_keys.push(t.key.clone());
        }
    }
    Ok(terms)
}

async fn assume_role(
    st: &AppState,
    ctx: &RequestContext,
    params: &QueryParams,
) -> Result<String, ApiError> {
    refuse_unsupported(
        params,
        &[
            "SerialNumber",
            "TokenCode",
            "SourceIdentity",
            "ProvidedContexts",
        ],
    )?;
    let role_arn = params
        .get("RoleArn")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::Iam(IamError::missing("roleArn")))?;
    let session = params
        .get("RoleSessionName")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::Iam(IamError::missing("roleSessionName")))?;
    let session_ok = (2..=64).contains(&session.len())
        && session
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@-".contains(c));
    if !session_ok {
        return Err(validation(format!(
            "1 validation error detected: Value '{session}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    let principal = caller_principal(ctx);
    let denied = || {
        ApiError::Denied(crate::authz::Denied(format!(
            "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
            principal.arn()
        )))
    };
    let own = format!("arn:aws:iam::{}:role/", ctx.scope.account);
    let Some(rest) = role_arn.strip_prefix(&own) else {
        return Err(denied());
    };
    let role_name = rest.rsplit('/').next().unwrap_or(rest);
    let role = match berth_control::iam::role(st, role_name).await {
        Ok(r) => r.value,
        Err(_) => return Err(denied()),
    };
    if role.arn(&ctx.scope.account) != role_arn {
        return Err(denied());
    }
    let terms = session_terms(st, ctx, params).await?;
    let trust =
        berth_iam::policy::Policy::parse(&role.trust, PolicyKind::Trust).map_err(|_| denied())?;
    let arn = principal.arn();
    let mut context = crate::authz::base_context(ctx, &principal, st.now());
    if let Some(external) = params.get("ExternalId") {
        if !(2..=1224).contains(&external.len()) {
            return Err(validation(format!(
                "1 validation error detected: Value '{external}' at 'externalId' failed to satisfy constraint: Member must have length between 2 and 1224"
            )));
        }
        context.set("sts:ExternalId", external);
    }
    for t in &terms.tags {
        context.set(&format!("aws:RequestTag/{}", t.key), t.value.clone());
    }
    context.set_many(
        "aws:TagKeys",
        terms.tags.iter().map(|t| t.key.clone()).collect(),
    );
    context.set_many("sts:TransitiveTagKeys", terms.transitive_tag_keys.clone());
    let caller = Caller::Aws {
        arn: &arn,
        account: principal.account(),
    };
    // Passing session tags takes sts:TagSession as well, as in AWS.
    let actions: &[&str] = if terms.tags.is_empty() {
        &["sts:AssumeRole"]
    } else {
        &["sts:AssumeRole", "sts:TagSession"]
    };
    for action in actions {
        let allowed = evaluate(
            &[&trust],
            &[],
            &Request {
                action,
                resource: role_arn,
                caller: Some(caller.clone()),
                context: &context,
            },
        );
        if allowed != Decision::Allow {
            return Err(ApiError::Denied(crate::authz::Denied(format!(
                "User: {arn} is not authorized to perform: {action} on resource: {role_arn}"
            ))));
        }
    }
    // Role chaining: a role's session may assume another for an hour.
    let chained = matches!(principal, Principal::AssumedRole { .. });
    let max = if chained {
        3600
    } else {
        u32::try_from(role.max_session).unwrap_or(3600)
    };
    let seconds = duration(params, 900, max, 43_200, 3600)?;
    let mut packed = String::new();
    let mut size = terms
        .policy
        .as_deref()
        .map_or(0, berth_iam::policy::packed_size);
    size += terms
        .tags
        .iter()
        .map(|t| t.key.len() + t.value.len())
        .sum::<usize>();
    if size > SESSION_POLICY_SIZE {
        return Err(ApiError::Iam(IamError::PackedPolicyTooLarge(format!(
            "Packed size of consumed policies exceeds 100% of limit for this session ({} %)",
            size * 100 / SESSION_POLICY_SIZE
        ))));
    }
    if terms.policy.is_some() || !terms.tags.is_empty() {
        packed = format!(
            "<PackedPolicySize>{}</PackedPolicySize>",
            size * 100 / SESSION_POLICY_SIZE
        );
    }
    let owner = SessionOwner::Role {
        role: role.name.clone(),
        session: session.to_string(),
    };
    let (record, secret, token) = berth_control::iam::create_session(st, owner, seconds, terms)
        .await
        .map_err(ApiError::from)?;
    Ok(format!(
        "{}<AssumedRoleUser><AssumedRoleId>{}:{}</AssumedRoleId><Arn>arn:aws:sts::{}:assumed-role/{}/{}</Arn></AssumedRoleUser>{packed}",
        credentials_xml(&record.access_key_id, &secret, &token, record.expires),
        query::escape(&role.id),
        query::escape(session),
        ctx.scope.account,
        query::escape(&role.name),
        query::escape(session)
    ))
}

async fn get_session_token(
    st: &AppState,
    ctx: &RequestContext,
    params: &QueryParams,
) -> Result<String, ApiError> {
    refuse_unsupported(params, &["SerialNumber", "TokenCode"])?;
    let owner = match ctx.caller.as_ref() {
        None => KeyOwner::Root,
        Some(c) => match &c.key_owner {
            Some(o) => o.clone(),
            None => {
                return Err(ApiError::Denied(crate::authz::Denied(
                    "Cannot call GetSessionToken with session credentials".into(),
                )))
            }
        },
    };
    let max = if owner == KeyOwner::Root {
        3600
    } else {
        129_600
    };
    let seconds = duration(params, 900, max, 129_600, 43_200)?;
    let (record, secret, token) = berth_control::iam::create_session(
        st,
        SessionOwner::Same(owner),
        seconds,
        Default::default(),
    )
    .await
    .map_err(ApiError::from)?;
    Ok(credentials_xml(
        &record.access_key_id,
        &secret,
        &token,
        record.expires,
    ))
}

pub async fn dispatch(
    st: &AppState,
    ctx: &RequestContext,
    action: &str,
    params: &QueryParams,
) -> Result<Vec<u8>, ApiError> {
    match action {
        "AssumeRole" => {
            let result = assume_role(st, ctx, params).await?;
            Ok(query::success(action, NAMESPACE, &result, &ctx.request_id).into_bytes())
        }
        "GetSessionToken" => {
            let result = get_session_token(st, ctx, params).await?;
            Ok(query::success(action, NAMESPACE, &result, &ctx.request_id).into_bytes())
        }
        "GetCallerIdentity" => {
            // The signer, or (authentication off) the account root.
            let user_id = ctx
                .caller
                .as_ref()
                .map_or(ctx.scope.account.clone(), |c| c.principal.user_id());
            let result = format!(
                "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
                query::escape(&ctx.principal),
                query::escape(&user_id),
                query::escape(&ctx.scope.account)
            );
            Ok(query::success(action, NAMESPACE, &result, &ctx.request_id).into_bytes())
        }
        other => Err(ApiError::UnknownOperation(format!(
            "The action {other} is not valid for this web service."
        ))),
    }
}
