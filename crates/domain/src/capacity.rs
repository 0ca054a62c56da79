//! Capacity providers: the built-in Fargate ones, custom ones over Auto
//! Scaling groups, and strategy rules.

use crate::{EcsError, Scope};
use berth_wire::ecs as w;

/// Capacity providers every account has without creating them.
pub const BUILT_IN: &[&str] = &["FARGATE", "FARGATE_SPOT"];

pub fn built_in(scope: &Scope, name: &str) -> Option<w::CapacityProvider> {
    BUILT_IN.contains(&name).then(|| w::CapacityProvider {
        capacity_provider_arn: Some(scope.capacity_provider_arn(name)),
        name: Some(name.into()),
        status: Some("ACTIVE".into()),
        r#type: Some(name.into()),
        tags: Some(vec![]),
        ..Default::default()
    })
}

/// A custom capacity provider over an Auto Scaling group (ECS's
/// CreateCapacityProvider writes it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProviderRecord {
    pub name: String,
    /// The Auto Scaling group's name (its ARN is in `provider`).
    pub group: String,
    /// As ECS shows it: every default spelt out.
    pub provider: w::AutoScalingGroupProvider,
    #[serde(default)]
    pub tags: Vec<w::Tag>,
    #[serde(default)]
    pub update_status: Option<String>,
    pub created: f64,
}

impl ProviderRecord {
    pub fn view(&self, scope: &Scope, include_tags: bool) -> w::CapacityProvider {
        w::CapacityProvider {
            capacity_provider_arn: Some(scope.capacity_provider_arn(&self.name)),
            name: Some(self.name.clone()),
            status: Some("ACTIVE".into()),
            r#type: Some("EC2_AUTOSCALING".into()),
            auto_scaling_group_provider: Some(self.provider.clone()),
            update_status: self.update_status.clone(),
            tags: include_tags.then(|| self.tags.clone()),
            ..Default::default()
        }
    }

    pub fn managed_scaling(&self) -> bool {
        self.provider
            .managed_scaling
            .as_ref()
            .is_some_and(|m| m.status.as_deref() == Some("ENABLED"))
    }

    pub fn managed_termination_protection(&self) -> bool {
        self.provider.managed_termination_protection.as_deref() == Some("ENABLED")
    }

    pub fn managed_draining(&self) -> bool {
        self.provider.managed_draining.as_deref() != Some("DISABLED")
    }
}

/// What a task waiting in PROVISIONING for its capacity provider's
/// capacity needs to be placed later: the placement it was asked with
/// (constraints and strategies as given, parsed again when it is placed)
/// and its awsvpc interface's subnets and security groups.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Waiting {
    pub provider: String,
    /// (type, expression) pairs, the task definition's included.
    #[serde(default)]
    pub constraints: Vec<(String, Option<String>)>,
    /// (type, field) pairs.
    #[serde(default)]
    pub strategies: Vec<(String, Option<String>)>,
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub awsvpc: bool,
    pub since: f64,
}

/// CapacityProviderReservation as ECS defines it: M needed instances over
/// N running ones, as a percentage; 200 when scaling out from none, 100
/// when there is nothing at all.
pub fn reservation(needed: usize, running: usize) -> f64 {
    match (needed, running) {
        (0, 0) => 100.0,
        (_, 0) => 200.0,
        (m, n) => m as f64 * 100.0 / n as f64,
    }
}

/// The group's desired capacity that managed scaling asks for: enough
/// instances for `needed` at `target`% utilisation, a scale-out clamped to
/// the provider's step sizes, within the group's bounds. Scale-in goes
/// straight to the target (ECS lets the group's policy remove spare
/// instances one alarm at a time; the caller decides when).
pub fn managed_desired(
    needed: usize,
    running: usize,
    target: i32,
    min_step: i32,
    max_step: i32,
    group_min: i32,
    group_max: i32,
) -> i32 {
    let target = i64::from(target.clamp(1, 100));
    let want = (needed as u64 * 100).div_ceil(target as u64) as i64;
    let running = running as i64;
    let desired = if want > running {
        running + (want - running).clamp(i64::from(min_step.max(1)), i64::from(max_step.max(1)))
    } else {
        want
    };
    desired.clamp(i64::from(group_min), i64::from(group_max.max(group_min))) as i32
}

/// The Auto Scaling group provider a CreateCapacityProvider or
/// UpdateCapacityProvider gives (`given`): Berth has no ECS Managed
/// Instances, whose fields (`managedInstancesProvider`, `cluster`) are
/// refused by name.
pub fn asg_provider<T>(
    managed_instances: bool,
    cluster: bool,
    given: Option<T>,
) -> Result<T, EcsError> {
    if managed_instances {
        return Err(EcsError::UnsupportedFeature(
            "managedInstancesProvider: Berth has no ECS Managed Instances; use autoScalingGroupProvider.".into(),
        ));
    }
    if cluster {
        return Err(EcsError::invalid(
            "cluster is only for capacity providers of ECS Managed Instances; an Auto Scaling group provider is associated with clusters by PutClusterCapacityProviders.",
        ));
    }
    given.ok_or_else(|| EcsError::invalid("autoScalingGroupProvider is required."))
}

/// A custom provider's name: 1 to 255 letters, digits, hyphens and
/// underscores, not beginning with `aws`, `ecs` or `fargate`.
pub fn check_provider_name(name: Option<&str>) -> Result<&str, EcsError> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| EcsError::invalid("name is required."))?;
    if name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(EcsError::invalid(
            "The capacity provider name is invalid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    let lower = name.to_ascii_lowercase();
    if ["aws", "ecs", "fargate"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(EcsError::invalid(
            "The capacity provider name cannot start with 'aws', 'ecs', or 'fargate'. Specify a different name and try again.",
        ));
    }
    Ok(name)
}

/// An autoScalingGroupProvider (or its update over `current`) with ECS's
/// defaults filled in and its ranges checked. `protected_group` says
/// whether the group protects new instances from scale-in, which managed
/// termination protection requires.
pub fn normalize_asg_provider(
    given_scaling: Option<&w::ManagedScaling>,
    given_protection: Option<&str>,
    given_draining: Option<&str>,
    current: Option<&w::AutoScalingGroupProvider>,
    protected_group: bool,
) -> Result<w::AutoScalingGroupProvider, EcsError> {
    let base = current
        .and_then(|c| c.managed_scaling.clone())
        .unwrap_or(w::ManagedScaling {
            status: Some("ENABLED".into()),
            target_capacity: Some(100),
            minimum_scaling_step_size: Some(1),
            maximum_scaling_step_size: Some(10_000),
            instance_warmup_period: Some(300),
        });
    let mut m = base;
    if let Some(g) = given_scaling {
        if let Some(s) = &g.status {
            crate::one_of(s, &["ENABLED", "DISABLED"], "managedScaling.status")?;
            m.status = Some(s.clone());
        }
        m.target_capacity = g.target_capacity.or(m.target_capacity);
        m.minimum_scaling_step_size = g.minimum_scaling_step_size.or(m.minimum_scaling_step_size);
        m.maximum_scaling_step_size = g.maximum_scaling_step_size.or(m.maximum_scaling_step_size);
        m.instance_warmup_period = g.instance_warmup_period.or(m.instance_warmup_period);
    }
    let range = |v: Option<i32>, lo: i32, hi: i32, field: &str| -> Result<(), EcsError> {
        match v {
            Some(v) if v < lo || v > hi => Err(EcsError::invalid(format!(
                "managedScaling.{field} must be between {lo} and {hi}."
            ))),
            _ => Ok(()),
        }
    };
    range(m.target_capacity, 1, 100, "targetCapacity")?;
    range(
        m.minimum_scaling_step_size,
        1,
        10_000,
        "minimumScalingStepSize",
    )?;
    range(
        m.maximum_scaling_step_size,
        1,
        10_000,
        "maximumScalingStepSize",
    )?;
    range(m.instance_warmup_period, 0, 10_000, "instanceWarmupPeriod")?;
    if m.minimum_scaling_step_size > m.maximum_scaling_step_size {
        return Err(EcsError::invalid(
            "managedScaling.minimumScalingStepSize cannot be greater than managedScaling.maximumScalingStepSize.",
        ));
    }
    let protection = given_protection
        .map(str::to_string)
        .or_else(|| current.and_then(|c| c.managed_termination_protection.clone()))
        .unwrap_or_else(|| "DISABLED".into());
    crate::one_of(
        &protection,
        &["ENABLED", "DISABLED"],
        "managedTerminationProtection",
    )?;
    let draining = given_draining
        .map(str::to_string)
        .or_else(|| current.and_then(|c| c.managed_draining.clone()))
        .unwrap_or_else(|| "ENABLED".into());
    crate::one_of(&draining, &["ENABLED", "DISABLED"], "managedDraining")?;
    if protection == "ENABLED" {
        if m.status.as_deref() != Some("ENABLED") {
            return Err(EcsError::invalid(
                "The managed termination protection setting for the capacity provider is invalid. To enable managed termination protection for a capacity provider, the capacity provider must have managed scaling enabled.",
            ));
        }
        if !protected_group {
            return Err(EcsError::invalid(
                "The managed termination protection setting for the capacity provider is invalid. To enable managed termination protection for a capacity provider, the Auto Scaling group must have instance protection from scale in enabled.",
            ));
        }
    }
    Ok(w::AutoScalingGroupProvider {
        auto_scaling_group_arn: current.and_then(|c| c.auto_scaling_group_arn.clone()),
        managed_scaling: Some(m),
        managed_termination_protection: Some(protection),
        managed_draining: Some(draining),
    })
}

/// Checks a cluster's provider list and default strategy (PutClusterCapacityProviders).
/// `exists` tells whether a provider name is known to the account.
pub fn validate_cluster_providers(
    providers: &[String],
    strategy: &[w::CapacityProviderStrategyItem],
    exists: impl Fn(&str) -> bool,
) -> Result<(), EcsError> {
    for p in providers {
        if !exists(p) {
            return Err(EcsError::invalid(format!(
                "The specified capacity provider '{p}' does not exist. Specify a valid capacity provider and try again."
            )));
        }
    }
    let mut dedup = providers.to_vec();
    dedup.sort();
    dedup.dedup();
    if dedup.len() != providers.len() {
        return Err(EcsError::invalid(
            "The capacityProviders list contains duplicates.",
        ));
    }
    validate_strategy(strategy, "defaultCapacityProviderStrategy")?;
    for item in strategy {
        let name = item.capacity_provider.as_deref().unwrap_or_default();
        if !providers.iter().any(|p| p == name) {
            return Err(EcsError::invalid(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated \
                 with the cluster. Associate the capacity provider with the cluster or specify a valid capacity \
                 provider and try again.",
            ));
        }
    }
    Ok(())
}

/// Strategy rules: at most 20 items, names set and distinct, weight 0-1000,
/// base 0-100000, only one item with a base, and some weight above zero.
pub fn validate_strategy(
    strategy: &[w::CapacityProviderStrategyItem],
    field: &str,
) -> Result<(), EcsError> {
    if strategy.is_empty() {
        return Ok(());
    }
    if strategy.len() > 20 {
        return Err(EcsError::invalid(format!(
            "{field} can contain at most 20 capacity providers."
        )));
    }
    let mut names = std::collections::HashSet::new();
    let mut with_base = 0;
    for item in strategy {
        let name = item.capacity_provider.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(EcsError::invalid(format!(
                "{field}: capacityProvider must not be empty."
            )));
        }
        if !names.insert(name) {
            return Err(EcsError::invalid(format!(
                "{field}: capacity provider '{name}' is listed more than once."
            )));
        }
        let weight = item.weight.unwrap_or(0);
        if !(0..=1000).contains(&weight) {
            return Err(EcsError::invalid(format!(
                "{field}: weight must be between 0 and 1000."
            )));
        }
        let base = item.base.unwrap_or(0);
        if !(0..=100_000).contains(&base) {
            return Err(EcsError::invalid(format!(
                "{field}: base must be between 0 and 100000."
            )));
        }
        if base > 0 {
            with_base += 1;
        }
    }
    if with_base > 1 {
        return Err(EcsError::invalid(format!(
            "{field}: only one capacity provider in a strategy can have a base defined."
        )));
    }
    if strategy.iter().all(|i| i.weight.unwrap_or(0) == 0) {
        return Err(EcsError::invalid(format!(
            "{field}: at least one capacity provider must have a weight greater than zero."
        )));
    }
    Ok(())
}

/// The provider of each of `count` new tasks under `strategy`, given how
/// many tasks each provider already holds (a service's running tasks, or
/// nothing for RunTask): bases are filled first, in strategy order, then
/// every task goes where it keeps the split closest to the weights (the
/// provider whose tasks beyond its base are fewest per unit of weight;
/// ties in strategy order). A pure function, so a service's split is the
/// same whoever reconciles it.
pub fn assign(
    strategy: &[w::CapacityProviderStrategyItem],
    existing: &std::collections::HashMap<String, usize>,
    count: usize,
) -> Vec<String> {
    let mut held: Vec<(String, usize, usize, usize)> = strategy
        .iter()
        .map(|i| {
            let name = i.capacity_provider.clone().unwrap_or_default();
            let n = existing.get(&name).copied().unwrap_or(0);
            (
                name,
                n,
                usize::try_from(i.base.unwrap_or(0)).unwrap_or(0),
                usize::try_from(i.weight.unwrap_or(0)).unwrap_or(0),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let pick = held
            .iter()
            .position(|(_, n, base, _)| n < base)
            .or_else(|| {
                // Compare (n - base + 1) / weight across providers without
                // dividing: a/b < c/d when a*d < c*b.
                held.iter()
                    .enumerate()
                    .filter(|(_, h)| h.3 > 0)
                    .min_by(|(_, a), (_, b)| {
                        let ea = (a.1.saturating_sub(a.2) + 1) * b.3;
                        let eb = (b.1.saturating_sub(b.2) + 1) * a.3;
                        ea.cmp(&eb)
                    })
                    .map(|(i, _)| i)
            });
        let Some(i) = pick else { break };
        held[i].1 += 1;
        out.push(held[i].0.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asg_provider_is_the_only_kind() {
        assert_eq!(asg_provider(false, false, Some(7)), Ok(7));
        let e = asg_provider(false, false, None::<u8>).expect_err("missing");
        assert!(e.to_string().contains("autoScalingGroupProvider"), "{e}");
        let e = asg_provider(true, false, Some(7)).expect_err("managed instances");
        assert_eq!(e.code(), "UnsupportedFeatureException");
        assert!(e.to_string().contains("managedInstancesProvider"), "{e}");
        let e = asg_provider(false, true, Some(7)).expect_err("cluster");
        assert_eq!(e.code(), "InvalidParameterException");
        assert!(e.to_string().starts_with("cluster "), "{e}");
    }

    #[test]
    fn custom_provider_names_and_settings_follow_ecs() {
        assert!(check_provider_name(Some("hosts_1")).is_ok());
        for bad in ["ecs-hosts", "AWSx", "Fargate2", "a b"] {
            assert!(check_provider_name(Some(bad)).is_err(), "{bad}");
        }
        let p = normalize_asg_provider(None, None, None, None, false).expect("defaults");
        let m = p.managed_scaling.expect("scaling");
        assert_eq!(
            (
                m.status.as_deref(),
                m.target_capacity,
                m.instance_warmup_period
            ),
            (Some("ENABLED"), Some(100), Some(300))
        );
        assert_eq!(p.managed_draining.as_deref(), Some("ENABLED"));
        let off = w::ManagedScaling {
            status: Some("DISABLED".into()),
            ..Default::default()
        };
        assert!(normalize_asg_provider(Some(&off), Some("ENABLED"), None, None, true).is_err());
        assert!(normalize_asg_provider(None, Some("ENABLED"), None, None, false).is_err());
        assert!(normalize_asg_provider(None, Some("ENABLED"), None, None, true).is_ok());
        let big = w::ManagedScaling {
            target_capacity: Some(101),
            ..Default::default()
        };
        assert!(normalize_asg_provider(Some(&big), None, None, None, false).is_err());
    }

    fn split(
        strategy: &[w::CapacityProviderStrategyItem],
        existing: &[(&str, usize)],
        count: usize,
    ) -> Vec<(String, usize)> {
        let existing = existing.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        let mut tally: Vec<(String, usize)> = vec![];
        for p in assign(strategy, &existing, count) {
            match tally.iter_mut().find(|(n, _)| *n == p) {
                Some(t) => t.1 += 1,
                None => tally.push((p, 1)),
            }
        }
        tally.sort();
        tally
    }

    #[test]
    fn base_first_then_by_weight() {
        let s = [item("FARGATE", 1, 2), item("FARGATE_SPOT", 3, 0)];
        assert_eq!(
            split(&s, &[], 10),
            vec![("FARGATE".into(), 4), ("FARGATE_SPOT".into(), 6)]
        );
        assert_eq!(split(&s, &[], 2), vec![("FARGATE".into(), 2)]);
        // A weight of zero gets its base and nothing more.
        let s = [item("FARGATE", 0, 1), item("FARGATE_SPOT", 1, 0)];
        assert_eq!(
            split(&s, &[], 5),
            vec![("FARGATE".into(), 1), ("FARGATE_SPOT".into(), 4)]
        );
    }

    #[test]
    fn existing_tasks_count_towards_the_split() {
        let s = [item("FARGATE", 1, 0), item("FARGATE_SPOT", 1, 0)];
        assert_eq!(
            split(&s, &[("FARGATE", 3)], 3),
            vec![("FARGATE_SPOT".into(), 3)]
        );
        assert_eq!(split(&s, &[], 1), vec![("FARGATE".into(), 1)]);
    }

    fn item(name: &str, weight: i32, base: i32) -> w::CapacityProviderStrategyItem {
        w::CapacityProviderStrategyItem {
            capacity_provider: Some(name.into()),
            weight: Some(weight),
            base: Some(base),
        }
    }

    #[test]
    fn strategy_rules() {
        assert!(
            validate_strategy(&[item("FARGATE", 1, 2), item("FARGATE_SPOT", 3, 0)], "s").is_ok()
        );
        assert!(
            validate_strategy(&[item("FARGATE", 1, 2), item("FARGATE_SPOT", 3, 1)], "s").is_err()
        );
        assert!(validate_strategy(&[item("FARGATE", 0, 0)], "s").is_err());
        assert!(validate_strategy(&[item("FARGATE", 1001, 0)], "s").is_err());
        assert!(validate_strategy(&[item("FARGATE", 1, 0), item("FARGATE", 1, 0)], "s").is_err());
    }

    #[test]
    fn cluster_strategy_must_use_associated_providers() {
        let known = |n: &str| BUILT_IN.contains(&n);
        let providers = vec!["FARGATE".to_string()];
        assert!(validate_cluster_providers(&providers, &[item("FARGATE", 1, 0)], known).is_ok());
        assert!(
            validate_cluster_providers(&providers, &[item("FARGATE_SPOT", 1, 0)], known).is_err()
        );
        assert!(validate_cluster_providers(&["nope".into()], &[], known).is_err());
    }

    #[test]
    fn reservation_and_managed_desired_follow_ecs() {
        assert_eq!(reservation(0, 0), 100.0);
        assert_eq!(reservation(3, 0), 200.0);
        assert_eq!(reservation(1, 2), 50.0);
        assert_eq!(reservation(4, 2), 200.0);
        // From zero: at least the minimum step, at most the maximum.
        assert_eq!(managed_desired(1, 0, 100, 1, 10000, 0, 5), 1);
        assert_eq!(managed_desired(1, 0, 100, 2, 10000, 0, 5), 2);
        assert_eq!(managed_desired(9, 1, 100, 1, 3, 0, 10), 4);
        // Target 50%: twice the instances needed; the group's max holds.
        assert_eq!(managed_desired(2, 2, 50, 1, 10000, 0, 10), 4);
        assert_eq!(managed_desired(4, 0, 50, 1, 10000, 0, 5), 5);
        // Spare instances: down to what is needed, not below the group's min.
        assert_eq!(managed_desired(1, 3, 100, 1, 10000, 0, 5), 1);
        assert_eq!(managed_desired(0, 3, 100, 1, 10000, 1, 5), 1);
        assert_eq!(managed_desired(0, 0, 100, 1, 10000, 0, 5), 0);
    }
}
