//! A minimal STS (awsQuery): GetCallerIdentity, which SDKs and Terraform
//! call at start-up to learn the account; it answers who signed the call.

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
            // The signer, or (authentication off) the account root.
            let user_id = ctx
                .caller
                .as_ref()
                .map_or(ctx.scope.account.as_str(), |c| c.principal.user_id());
            let result = format!(
                "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
                query::escape(&ctx.principal),
                query::escape(user_id),
                query::escape(&ctx.scope.account)
            );
            Ok(query::success(action, NAMESPACE, &result, &ctx.request_id).into_bytes())
        }
        other => Err(ApiError::UnknownOperation(format!(
            "The action {other} is not valid for this web service."
        ))),
    }
}
