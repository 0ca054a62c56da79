//! Task definition operations.
//!
//! Revisions of a family are strictly increasing with no gaps or reuse: the
//! family record holds the last revision issued, and a registration writes
//! the family record and the new revision in one transaction that compares
//! the family record's mod revision. Registrations of one family are also
//! queued behind a per-family lock inside this server so they do not burn
//! retries against each other; the compare keeps it correct across servers.

use super::{compare_and_swap, Attempt};
use crate::{context::RequestContext, error::ApiError, AppState};
use berth_control::taskdefs::{indexed, parse_reference, resolve, resolve_record, Reference};
use berth_domain::taskdef::{self, Family, StoredTaskDefinition};
use berth_domain::{one_of, paging, EcsError, Scope};
use berth_store::keys::Keys;
use berth_store::{typed, KeyValue, Op, Revision, StoreError, Txn};
use berth_wire::ecs as w;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// Encoded DescribeTaskDefinition answers, by record key and the record's
/// mod revision (which fixes its content). A revision's record changes
/// rarely after registration, and decoding it and encoding the answer was
/// most of this handler's time (docs/benchmarks.md).
#[derive(Default)]
pub struct DescribeCache {
    entries: Mutex<HashMap<String, Described>>,
}

/// Answers kept at most; past that the cache starts over.
const DESCRIBE_CACHE_ENTRIES: usize = 4096;

#[derive(Default)]
struct Described {
    revision: Revision,
    with_tags: Option<Box<RawValue>>,
    without_tags: Option<Box<RawValue>>,
}

impl DescribeCache {
    fn get(&self, kv: &KeyValue, with_tags: bool) -> Option<Box<RawValue>> {
        let entries = self.entries.lock();
        let hit = entries.get(&kv.key)?;
        if hit.revision != kv.mod_revision {
            return None;
        }
        if with_tags {
            hit.with_tags.clone()
        } else {
            hit.without_tags.clone()
        }
    }

    fn put(&self, kv: &KeyValue, with_tags: bool, answer: Box<RawValue>) {
        let mut entries = self.entries.lock();
        if entries.len() >= DESCRIBE_CACHE_ENTRIES && !entries.contains_key(&kv.key) {
            entries.clear();
        }
        let entry = entries.entry(kv.key.clone()).or_default();
        if entry.revision != kv.mod_revision {
            *entry = Described {
                revision: kv.mod_revision,
                ..Described::default()
            };
        }
        if with_tags {
            entry.with_tags = Some(answer);
        } else {
            entry.without_tags = Some(answer);
        }
    }
}

/// One async lock per family name, dropped when nobody holds it.
#[derive(Default)]
pub struct FamilyLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl FamilyLocks {
    async fn lock(&self, family: &str) -> FamilyGuard<'_> {
        let lock = self
            .locks
            .lock()
            .entry(family.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        FamilyGuard {
            locks: self,
            family: family.to_string(),
            lock,
            _guard: guard,
        }
    }
}

struct FamilyGuard<'a> {
    locks: &'a FamilyLocks,
    family: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FamilyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.locks.lock();
        // Ours, the map's and the guard's: nobody else waits for it.
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.family);
        }
    }
}

pub async fn register_task_definition(
    st: &AppState,
    ctx: &RequestContext,
    req: w::RegisterTaskDefinitionRequest,
) -> Result<w::RegisterTaskDefinitionResponse, ApiError> {
    let prepared = taskdef::prepare(&req, st.config.fargate_max_stop_timeout)?;
    let family = prepared.family.clone();
    let family_key = ctx.scope.taskdef_family(&family);
    let _guard = st.locks.lock(&family).await;
    let (family, family_key, prepared) = (&family, &family_key, &prepared);
    let stored = compare_and_swap(
        st,
        || {
            format!(
                "Task definition family {family} is being registered by other requests; try again."
            )
        },
        move || async move {
            let current = typed::get::<Family>(&*st.store, family_key).await?;
            let (last, family_rev) = current
                .as_ref()
                .map_or((0, 0), |f| (f.value.last_revision, f.mod_revision));
            let revision = last + 1;
            let stored = prepared.finish(&ctx.scope, revision, st.now(), &ctx.principal);
            let def_key = ctx.scope.taskdef(family, revision);
            let txn = Txn::when(
                vec![
                    typed::unchanged(family_key, family_rev),
                    typed::unchanged(&def_key, 0),
                ],
                vec![
                    typed::put(
                        family_key,
                        &Family {
                            name: family.clone(),
                            last_revision: revision,
                        },
                    ),
                    typed::put(&def_key, &stored),
                    Op::put(ctx.scope.taskdef_status("ACTIVE", family, revision), vec![]),
                ],
            );
            Ok(Attempt::Write(txn, stored))
        },
    )
    .await?;
    tracing::info!(family = %family, revision = stored.def.revision, "task definition registered");
    let tags = (!stored.tags.is_empty()).then(|| stored.tags.clone());
    Ok(w::RegisterTaskDefinitionResponse {
        task_definition: Some(stored.def),
        tags,
    })
}

/// Moves a revision from one status index to another (same transaction as the record).
fn move_status(scope: &Scope, family: &str, revision: i64, from: &str, to: &str) -> [Op; 2] {
    [
        Op::delete(scope.taskdef_status(from, family, revision)),
        Op::put(scope.taskdef_status(to, family, revision), vec![]),
    ]
}

fn wants_tags(include: &Option<Vec<String>>) -> Result<bool, EcsError> {
    let mut tags = false;
    for i in include.iter().flatten() {
        match i.as_str() {
            "TAGS" => tags = true,
            other => {
                return Err(EcsError::invalid(format!(
                    "Invalid value '{other}' for include. Valid values: TAGS"
                )))
            }
        }
    }
    Ok(tags)
}

pub async fn describe_task_definition(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DescribeTaskDefinitionRequest,
) -> Result<Box<RawValue>, ApiError> {
    let with_tags = wants_tags(&req.include)?;
    let reference = parse_reference(
        &ctx.scope,
        req.task_definition.as_deref().unwrap_or_default(),
        "taskDefinition",
    )?;
    let record = resolve_record(st, &ctx.scope, &reference).await?;
    if let Some(answer) = st.described.get(&record, with_tags) {
        return Ok(answer);
    }
    let found: StoredTaskDefinition = typed::decode(&record)?.value;
    let answer = w::DescribeTaskDefinitionResponse {
        task_definition: Some(found.def),
        tags: with_tags.then_some(found.tags),
    };
    // Only a record holding something JSON cannot carry (a non-finite
    // number) fails to encode.
    let answer = serde_json::value::to_raw_value(&answer).map_err(|e| StoreError::Corrupt {
        key: record.key.clone(),
        reason: e.to_string(),
    })?;
    st.described.put(&record, with_tags, answer.clone());
    Ok(answer)
}

pub async fn list_task_definitions(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListTaskDefinitionsRequest,
) -> Result<w::ListTaskDefinitionsResponse, ApiError> {
    let limit = paging::max_results(req.max_results, 100)?;
    let status = req.status.clone().unwrap_or_else(|| "ACTIVE".into());
    one_of(&status, w::enums::TASK_DEFINITION_STATUS, "status")?;
    let sort = req.sort.clone().unwrap_or_else(|| "ASC".into());
    one_of(&sort, &["ASC", "DESC"], "sort")?;
    let listing = format!("ListTaskDefinitions/{status}/{sort}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    // familyPrefix is the full family name (as ECS documents it), not a prefix.
    let family = req.family_prefix.as_deref().filter(|f| !f.is_empty());
    let (page, next) = if sort == "ASC" {
        // Key order is the answer's order: the store pages, and only the
        // page is copied out.
        let (entries, more) = indexed(st, &ctx.scope, &status, family, after, Some(limit)).await?;
        let next = match entries.last() {
            Some((key, _, _)) if more => Some(paging::token(&listing, key)),
            _ => None,
        };
        (entries.into_iter().map(|(_, f, r)| (f, r)).collect(), next)
    } else {
        let (mut entries, _) = indexed(st, &ctx.scope, &status, family, None, None).await?;
        entries.reverse();
        // Paging compares keys; in DESC order "after" means "smaller", so
        // page over inverted keys.
        let inverted = entries
            .into_iter()
            .map(|(k, f, r)| (invert(&k), (f, r)))
            .collect();
        paging::page(&listing, inverted, after.as_deref(), limit)
    };
    // ARNs are built for the page only.
    let arns = page
        .into_iter()
        .map(|(f, r): (String, i64)| ctx.scope.task_definition_arn(&f, r))
        .collect();
    Ok(w::ListTaskDefinitionsResponse {
        task_definition_arns: Some(arns),
        next_token: next,
    })
}

/// Maps a key to one that sorts in the opposite order (keys are ASCII).
fn invert(key: &str) -> String {
    key.chars()
        .map(|c| char::from_u32(0x7f - (c as u32).min(0x7f)).unwrap_or('\0'))
        .chain(['\u{7f}'])
        .collect()
}

pub async fn list_task_definition_families(
    st: &AppState,
    ctx: &RequestContext,
    req: w::ListTaskDefinitionFamiliesRequest,
) -> Result<w::ListTaskDefinitionFamiliesResponse, ApiError> {
    let limit = paging::max_results(req.max_results, 100)?;
    let status = req.status.clone().unwrap_or_else(|| "ALL".into());
    one_of(&status, w::enums::TASK_DEFINITION_FAMILY_STATUS, "status")?;
    let listing = format!("ListTaskDefinitionFamilies/{status}");
    let after = paging::resume(&listing, req.next_token.as_deref())?;
    let prefix = req.family_prefix.clone().unwrap_or_default();
    let families = typed::list::<Family>(
        &*st.store,
        &format!("{}{prefix}", ctx.scope.taskdef_families()),
    )
    .await?;
    let mut out = vec![];
    let active: std::collections::HashSet<String> = if status == "ALL" {
        Default::default()
    } else {
        indexed(st, &ctx.scope, "ACTIVE", None, None, None)
            .await?
            .0
            .into_iter()
            .map(|(_, f, _)| f)
            .collect()
    };
    for (key, f) in families {
        let keep = match status.as_str() {
            "ALL" => true,
            "ACTIVE" => active.contains(&f.value.name),
            _ => !active.contains(&f.value.name),
        };
        if keep {
            out.push((key, f.value.name));
        }
    }
    let (families, next) = paging::page(&listing, out, after.as_deref(), limit);
    Ok(w::ListTaskDefinitionFamiliesResponse {
        families: Some(families),
        next_token: next,
    })
}

pub async fn deregister_task_definition(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeregisterTaskDefinitionRequest,
) -> Result<w::DeregisterTaskDefinitionResponse, ApiError> {
    let reference = parse_reference(
        &ctx.scope,
        req.task_definition.as_deref().unwrap_or_default(),
        "taskDefinition",
    )?;
    let Reference::Revision(family, revision) = reference else {
        return Err(EcsError::client("Revision is missing.").into());
    };
    let key = ctx.scope.taskdef(&family, revision);
    let (family, key) = (&family, &key);
    let (def, changed) = compare_and_swap(
        st,
        || "The task definition is being changed by another request; try again.".into(),
        move || async move {
            let current = resolve(
                st,
                &ctx.scope,
                &Reference::Revision(family.clone(), revision),
            )
            .await?;
            if current.value.def.status.as_deref() != Some("ACTIVE") {
                return Ok(Attempt::Done((current.value.def, false)));
            }
            let mut updated = current.value.clone();
            updated.def.status = Some("INACTIVE".into());
            updated.def.deregistered_at = Some(st.now());
            let mut ops = vec![typed::put(key, &updated)];
            ops.extend(move_status(
                &ctx.scope, family, revision, "ACTIVE", "INACTIVE",
            ));
            let txn = Txn::when(vec![typed::unchanged(key, current.mod_revision)], ops);
            Ok(Attempt::Write(txn, (updated.def, true)))
        },
    )
    .await?;
    if changed {
        tracing::info!(family = %family, revision, "task definition deregistered");
    }
    Ok(w::DeregisterTaskDefinitionResponse {
        task_definition: Some(def),
    })
}

pub async fn delete_task_definitions(
    st: &AppState,
    ctx: &RequestContext,
    req: w::DeleteTaskDefinitionsRequest,
) -> Result<w::DeleteTaskDefinitionsResponse, ApiError> {
    let wanted = req.task_definitions.clone().unwrap_or_default();
    if wanted.is_empty() {
        return Err(EcsError::invalid(
            "taskDefinitions must contain at least one task definition.",
        )
        .into());
    }
    if wanted.len() > 10 {
        return Err(
            EcsError::invalid("taskDefinitions can contain at most 10 task definitions.").into(),
        );
    }
    let mut deleted = vec![];
    let mut failures = vec![];
    for given in wanted {
        let fail = |reason: &str| w::Failure {
            arn: Some(given.clone()),
            reason: Some(reason.into()),
            detail: None,
        };
        let (family, revision) = match parse_reference(&ctx.scope, &given, "taskDefinitions") {
            Ok(Reference::Revision(f, r)) => (f, r),
            Ok(Reference::Latest(_)) => {
                failures.push(fail("The specified task definition must include a revision: family:revision or a full ARN."));
                continue;
            }
            Err(e) => {
                failures.push(fail(&e.to_string()));
                continue;
            }
        };
        let key = ctx.scope.taskdef(&family, revision);
        let (family, key) = (&family, &key);
        let outcome = compare_and_swap(
            st,
            || "The task definition is being changed by another request; try again.".into(),
            move || async move {
                let Some(current) = typed::get::<StoredTaskDefinition>(&*st.store, key).await?
                else {
                    return Ok(Attempt::Done(Err("The specified task definition does not exist.")));
                };
                match current.value.def.status.as_deref() {
                    Some("ACTIVE") => return Ok(Attempt::Done(Err(
                        "The specified task definition is still in ACTIVE status. Please deregister the target and try again.",
                    ))),
                    Some("DELETE_IN_PROGRESS") => return Ok(Attempt::Done(Ok(current.value.def))),
                    _ => {}
                }
                let mut updated = current.value.clone();
                updated.def.status = Some("DELETE_IN_PROGRESS".into());
                updated.def.delete_requested_at = Some(st.now());
                let mut ops = vec![typed::put(key, &updated)];
                ops.extend(move_status(
                    &ctx.scope,
                    family,
                    revision,
                    "INACTIVE",
                    "DELETE_IN_PROGRESS",
                ));
                let txn = Txn::when(vec![typed::unchanged(key, current.mod_revision)], ops);
                Ok(Attempt::Write(txn, Ok(updated.def)))
            },
        )
        .await;
        match outcome {
            Ok(Ok(def)) => deleted.push(def),
            Ok(Err(reason)) => failures.push(fail(reason)),
            // Losing every race fails this one item, not the request.
            Err(ApiError::Ecs(EcsError::UpdateInProgress(reason))) => failures.push(fail(&reason)),
            Err(e) => return Err(e),
        }
    }
    Ok(w::DeleteTaskDefinitionsResponse {
        task_definitions: Some(deleted),
        failures: Some(failures),
    })
}

/// Reads a revision for tagging.
pub(crate) async fn stored(
    st: &AppState,
    scope: &Scope,
    family: &str,
    revision: i64,
) -> Result<Option<typed::Versioned<StoredTaskDefinition>>, ApiError> {
    Ok(typed::get(&*st.store, &scope.taskdef(family, revision)).await?)
}

#[cfg(test)]
mod tests {
    use super::{invert, DescribeCache, DESCRIBE_CACHE_ENTRIES};
    use berth_store::KeyValue;
    use serde_json::value::{to_raw_value, RawValue};

    fn record(key: &str, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: vec![],
            create_revision: 1,
            mod_revision,
            version: 1,
            lease: None,
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        to_raw_value(&s).expect("raw")
    }

    #[test]
    fn describe_cache_answers_only_for_the_same_revision_and_tags_choice() {
        let cache = DescribeCache::default();
        cache.put(&record("/k", 5), false, raw("five"));
        assert_eq!(
            cache.get(&record("/k", 5), false).expect("hit").get(),
            "\"five\""
        );
        assert!(
            cache.get(&record("/k", 5), true).is_none(),
            "with TAGS is another answer"
        );
        assert!(
            cache.get(&record("/k", 6), false).is_none(),
            "a newer record"
        );
        cache.put(&record("/k", 6), true, raw("six"));
        assert!(
            cache.get(&record("/k", 5), false).is_none(),
            "the older answer is gone"
        );
        assert_eq!(
            cache.get(&record("/k", 6), true).expect("hit").get(),
            "\"six\""
        );
    }

    #[test]
    fn describe_cache_stays_bounded() {
        let cache = DescribeCache::default();
        for i in 0..DESCRIBE_CACHE_ENTRIES + 10 {
            cache.put(&record(&format!("/k/{i}"), 1), false, raw("x"));
        }
        assert!(cache.entries.lock().len() <= DESCRIBE_CACHE_ENTRIES);
    }

    #[test]
    fn invert_reverses_order() {
        let mut keys = [
            "/a/web/0000000002",
            "/a/web/0000000010",
            "/a/api/0000000001",
            "/a/web",
        ];
        let mut inv: Vec<String> = keys.iter().map(|k| invert(k)).collect();
        keys.sort();
        inv.sort();
        let back: Vec<String> = keys.iter().rev().map(|k| invert(k)).collect();
        assert_eq!(inv, back);
    }
}
