//! A task's role (`taskRoleArn`): temporary credentials of the role for
//! the task's containers. Each ask (the agent asks when the task starts and
//! again before they expire) is a new role session named after the task,
//! as ECS names them; all of a task's sessions live under one store lease,
//! so revoking it when the task stops ends every one of them at once.

use crate::task_secrets::assumable;
use crate::{Control, ControlError};
use berth_domain::Scope;
use berth_iam::SessionOwner;
use berth_store::keys::Keys;
use berth_store::{typed, LeaseId, Op, StoreError, Txn};
use std::time::Duration;

/// Credentials of a task's role, as the credentials endpoint hands them out.
pub struct Issued {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Seconds since the epoch.
    pub expires: f64,
}

fn failure(why: impl std::fmt::Display) -> String {
    format!("ResourceInitializationError: unable to get credentials of the task role: {why}")
}

/// New credentials of `role_arn` for task `task_id` of `cluster`, lasting
/// `seconds`, while the key `placed` (the task's place on its host) is at
/// `placed_revision`: a task recorded STOPPED in the meantime gets none.
pub async fn issue(
    ctl: &Control,
    scope: &Scope,
    cluster: &str,
    task_id: &str,
    role_arn: &str,
    seconds: u32,
    placed: (&str, i64),
) -> Result<Issued, String> {
    let (role, owner) = session_of(ctl, scope, role_arn, "task role", task_id).await?;
    let lease = task_lease(ctl, scope, cluster, task_id, seconds, placed)
        .await
        .map_err(failure)?;
    let made = crate::iam::create_session_under(ctl, owner, seconds, Default::default(), lease)
        .await
        .map_err(|e| match e {
            crate::iam::IamFailure::Control(ControlError::Store(StoreError::LeaseNotFound(_))) => {
                failure("the task has stopped")
            }
            other => failure(other),
        })?;
    Ok(issued(scope, &role, made))
}

/// The role, once ECS's tasks may assume it, and the session of it a
/// task gets (named after the task, as ECS names them).
async fn session_of(
    ctl: &Control,
    scope: &Scope,
    role_arn: &str,
    what: &str,
    task_id: &str,
) -> Result<(berth_iam::records::Role, SessionOwner), String> {
    let role = assumable(ctl, scope, role_arn, what)
        .await
        .map_err(failure)?;
    let owner = SessionOwner::Role {
        role: role.name.clone(),
        session: task_id.to_string(),
    };
    Ok((role, owner))
}

fn issued(
    scope: &Scope,
    role: &berth_iam::records::Role,
    (record, secret, token): (berth_iam::Session, String, String),
) -> Issued {
    Issued {
        role_arn: role.arn(&scope.account),
        access_key_id: record.access_key_id,
        secret_access_key: secret,
        session_token: token,
        expires: record.expires,
    }
}

/// New credentials of the execution role `role_arn` for task `task_id`
/// (its awslogs output is shipped with them), lasting `seconds`. They are
/// not ended with the task, whose last lines may still be on their way:
/// they run out by themselves.
pub async fn issue_execution(
    ctl: &Control,
    scope: &Scope,
    task_id: &str,
    role_arn: &str,
    seconds: u32,
) -> Result<Issued, String> {
    let (role, owner) = session_of(ctl, scope, role_arn, "execution role", task_id).await?;
    let made = crate::iam::create_session(ctl, owner, seconds, Default::default())
        .await
        .map_err(failure)?;
    Ok(issued(scope, &role, made))
}

/// The task's lease, kept alive for another `seconds` (and a minute), or
/// a new one recorded while the task is still placed.
async fn task_lease(
    ctl: &Control,
    scope: &Scope,
    cluster: &str,
    task_id: &str,
    seconds: u32,
    (placed, placed_revision): (&str, i64),
) -> Result<LeaseId, String> {
    let key = scope.task_credentials(cluster, task_id);
    let ttl = Duration::from_secs(u64::from(seconds) + 60);
    for _ in 0..5 {
        let current = ctl.store.get(&key).await.map_err(|e| e.to_string())?;
        if let Some(kv) = &current {
            if let Some(lease) = kv.lease {
                match ctl.store.lease_keep_alive(lease).await {
                    Ok(_) => return Ok(lease),
                    Err(StoreError::LeaseNotFound(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        let lease = ctl
            .store
            .lease_grant(ttl)
            .await
            .map_err(|e| e.to_string())?;
        let txn = Txn::when(
            vec![
                typed::unchanged(&key, current.as_ref().map_or(0, |kv| kv.mod_revision)),
                typed::unchanged(placed, placed_revision),
            ],
            vec![Op::Put {
                key: key.clone(),
                value: lease.id.to_string().into_bytes(),
                lease: Some(lease.id),
            }],
        );
        let done = ctl.store.txn(txn).await.map_err(|e| e.to_string())?;
        if done.succeeded {
            return Ok(lease.id);
        }
        let _ = ctl.store.lease_revoke(lease.id).await;
        if ctl
            .store
            .get(placed)
            .await
            .map_err(|e| e.to_string())?
            .is_none_or(|kv| kv.mod_revision != placed_revision)
        {
            return Err("the task has stopped".into());
        }
    }
    Err("the task's credentials keep changing; try again".into())
}

/// Ends every session task `task_id` of `cluster` was given; true if it
/// had any.
pub async fn revoke(
    ctl: &Control,
    scope: &Scope,
    cluster: &str,
    task_id: &str,
) -> Result<bool, ControlError> {
    let key = scope.task_credentials(cluster, task_id);
    let Some(kv) = ctl.store.get(&key).await? else {
        return Ok(false);
    };
    match kv.lease {
        Some(lease) => match ctl.store.lease_revoke(lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        },
        None => {
            ctl.store
                .txn(Txn::when(vec![], vec![Op::delete(key)]))
                .await?;
        }
    }
    tracing::info!(cluster, task = task_id, "task role credentials revoked");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn control() -> Control {
        Control::new(
            std::sync::Arc::new(berth_store::MemStore::new()),
            crate::ControlConfig::default(),
        )
    }

    #[tokio::test]
    async fn sessions_end_together_when_the_task_stops_and_none_come_after() {
        let ctl = control().await;
        let scope = Scope::new(&ctl.config.account, "us-east-1");
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        crate::iam::create_role(&ctl, "app", "/", trust, None, 3600, vec![])
            .await
            .expect("role");
        let arn = format!("arn:aws:iam::{}:role/app", scope.account);
        let placed = "/placed";
        let rev = ctl
            .store
            .txn(Txn::when(
                vec![],
                vec![Op::put(placed, b"RUNNING".to_vec())],
            ))
            .await
            .expect("put")
            .revision;
        let first = issue(&ctl, &scope, "c", "t1", &arn, 900, (placed, rev))
            .await
            .expect("first");
        let second = issue(&ctl, &scope, "c", "t1", &arn, 900, (placed, rev))
            .await
            .expect("refreshed");
        assert_ne!(first.access_key_id, second.access_key_id);
        assert_eq!(first.role_arn, arn);
        let account = &ctl.config.account;
        for id in [&first.access_key_id, &second.access_key_id] {
            let key = berth_store::keys::iam::session(account, id);
            assert!(ctl.store.get(&key).await.expect("get").is_some());
        }
        assert!(revoke(&ctl, &scope, "c", "t1").await.expect("revoke"));
        for id in [&first.access_key_id, &second.access_key_id] {
            let key = berth_store::keys::iam::session(account, id);
            assert!(ctl.store.get(&key).await.expect("get").is_none(), "{id}");
        }
        assert!(!revoke(&ctl, &scope, "c", "t1").await.expect("again"));
        // Recorded STOPPED: the task's place is gone, and no session is made.
        ctl.store
            .txn(Txn::when(vec![], vec![Op::delete(placed)]))
            .await
            .expect("delete");
        let late = issue(&ctl, &scope, "c", "t1", &arn, 900, (placed, rev)).await;
        assert!(late.err().expect("refused").contains("stopped"));
    }

    #[tokio::test]
    async fn a_role_ecs_tasks_may_not_assume_gives_nothing() {
        let ctl = control().await;
        let scope = Scope::new(&ctl.config.account, "us-east-1");
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        crate::iam::create_role(&ctl, "fn", "/", trust, None, 3600, vec![])
            .await
            .expect("role");
        let arn = format!("arn:aws:iam::{}:role/fn", scope.account);
        let e = issue(&ctl, &scope, "c", "t", &arn, 900, ("/p", 0))
            .await
            .err()
            .expect("refused");
        assert!(e.contains("does not let ecs-tasks.amazonaws.com"), "{e}");
        let e = issue(&ctl, &scope, "c", "t", &format!("{arn}x"), 900, ("/p", 0))
            .await
            .err()
            .expect("refused");
        assert!(e.contains("does not exist"), "{e}");
    }
}
