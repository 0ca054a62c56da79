//! Capacity providers: the built-in Fargate ones and strategy rules.

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
}
