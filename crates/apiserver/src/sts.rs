//! A minimal STS (awsQuery): GetCallerIdentity, which SDKs and Terraform
//! call at start-up to learn the account.

use crate::{context::RequestContext, error::ApiError};
use berth_wire::query::{self, QueryParams};

pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// Actions served here; an unsigned form request with one of these is STS.
pub const ACTIONS: &[&str] = &["GetCallerIdentity"];

pub async fn dispatch(
    ctx: &RequestContext,
    action: &str,
    _params: &QueryParams,
) -> Result<Vec<u8>, ApiError> {
    match action {
        "GetCallerIdentity" => {
            let user_id = ctx
                .access_key
                .clone()
                .unwrap_or_else(|| ctx.scope.account.clone());
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
