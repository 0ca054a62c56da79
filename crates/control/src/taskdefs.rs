//! Which stored task definition revision a `taskDefinition` parameter
//! names: a family's latest ACTIVE revision (from the status index, keys
//! only), a family:revision, or an ARN of this scope.

use crate::{Control, ControlError};
use berth_domain::taskdef::StoredTaskDefinition;
use berth_domain::{arn::Arn, valid_name, EcsError, Scope};
use berth_store::keys::{parse_family_revision, Keys};
use berth_store::{typed, KeyValue, RangeRequest};

/// (index key, family, revision) of the revisions with `status`, in key
/// order, optionally of one family, after `start_after` and at most `limit`
/// of them; and whether more follow. Keys only: no record is decoded.
pub async fn indexed(
    st: &Control,
    scope: &Scope,
    status: &str,
    family: Option<&str>,
    start_after: Option<String>,
    limit: Option<usize>,
) -> Result<(Vec<(String, String, i64)>, bool), ControlError> {
    let base = scope.taskdef_status_index(status);
    let prefix = match family {
        Some(f) => scope.taskdef_status_of(status, f),
        None => base.clone(),
    };
    let found = st
        .store
        .range(RangeRequest {
            prefix,
            start_after,
            limit,
        })
        .await?;
    let entries = found
        .kvs
        .into_iter()
        .filter_map(|kv| {
            let (f, r) = parse_family_revision(kv.key.strip_prefix(&base)?)?;
            let f = f.to_string();
            Some((kv.key, f, r))
        })
        .collect();
    Ok((entries, found.more))
}

/// What a `taskDefinition` parameter names.
pub enum Reference {
    /// A family: its latest ACTIVE revision.
    Latest(String),
    Revision(String, i64),
}

pub fn parse_reference(scope: &Scope, s: &str, field: &str) -> Result<Reference, EcsError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(EcsError::client(format!("{field} must not be empty.")));
    }
    if s.starts_with("arn:") {
        return match Arn::parse(s) {
            Some(Arn::TaskDefinition {
                scope: sc,
                family,
                revision,
            }) if &sc == scope => Ok(Reference::Revision(family, revision)),
            Some(Arn::TaskDefinition { .. }) => Err(EcsError::TaskDefinitionNotFound),
            _ => Err(EcsError::client(format!(
                "Invalid {field}: '{s}' is not a task definition ARN."
            ))),
        };
    }
    match s.rsplit_once(':') {
        Some((family, rev)) => {
            let revision: i64 = rev.parse().ok().filter(|r| *r > 0).ok_or_else(|| {
                EcsError::client(format!("Invalid revision number. Number: {rev}"))
            })?;
            if !valid_name(family) {
                return Err(EcsError::client(format!(
                    "Invalid family '{family}' in {field}."
                )));
            }
            Ok(Reference::Revision(family.to_string(), revision))
        }
        None if valid_name(s) => Ok(Reference::Latest(s.to_string())),
        None => Err(EcsError::client(format!(
            "Invalid family '{s}' in {field}."
        ))),
    }
}

/// Resolves a reference to a stored revision and its mod revision.
pub async fn resolve(
    st: &Control,
    scope: &Scope,
    reference: &Reference,
) -> Result<typed::Versioned<StoredTaskDefinition>, ControlError> {
    Ok(typed::decode(&resolve_record(st, scope, reference).await?)?)
}

/// The stored record a reference names, undecoded.
pub async fn resolve_record(
    st: &Control,
    scope: &Scope,
    reference: &Reference,
) -> Result<KeyValue, ControlError> {
    let key = match reference {
        Reference::Revision(family, revision) => scope.taskdef(family, *revision),
        Reference::Latest(family) => {
            // Revisions are indexed zero-padded: the last key is the latest.
            let base = scope.taskdef_status_index("ACTIVE");
            let last = st
                .store
                .last(&scope.taskdef_status_of("ACTIVE", family))
                .await?
                .ok_or(EcsError::TaskDefinitionNotFound)?;
            let (family, revision) = last
                .key
                .strip_prefix(&base)
                .and_then(parse_family_revision)
                .ok_or(EcsError::TaskDefinitionNotFound)?;
            scope.taskdef(family, revision)
        }
    };
    st.store
        .get(&key)
        .await?
        .ok_or_else(|| EcsError::TaskDefinitionNotFound.into())
}
