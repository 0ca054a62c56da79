//! When to go to the registry: the ECS agent's ECS_IMAGE_PULL_BEHAVIOR.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullBehavior {
    /// Pull; if the pull fails, use a cached copy if there is one.
    #[default]
    Default,
    /// Pull; if the pull fails, so does the task.
    Always,
    /// Pull only if this host has not pulled the image before or the copy
    /// is gone.
    Once,
    /// Pull only if there is no cached copy.
    PreferCached,
}

/// What to do about one image, given what is known locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    UseCache,
    /// Pull; on failure fall back to the cache when allowed.
    Pull {
        fallback_to_cache: bool,
    },
}

impl PullBehavior {
    pub(crate) fn plan(self, cached: bool, pulled_here_before: bool) -> Plan {
        match self {
            PullBehavior::Default => Plan::Pull {
                fallback_to_cache: cached,
            },
            PullBehavior::Always => Plan::Pull {
                fallback_to_cache: false,
            },
            PullBehavior::Once if cached && pulled_here_before => Plan::UseCache,
            PullBehavior::PreferCached if cached => Plan::UseCache,
            PullBehavior::Once | PullBehavior::PreferCached => Plan::Pull {
                fallback_to_cache: false,
            },
        }
    }
}

impl FromStr for PullBehavior {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(PullBehavior::Default),
            "always" => Ok(PullBehavior::Always),
            "once" => Ok(PullBehavior::Once),
            "prefer-cached" => Ok(PullBehavior::PreferCached),
            other => Err(format!(
                "unknown pull behavior '{other}': use default, always, once or prefer-cached"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_behavior_follows_the_ecs_agent() {
        use Plan::*;
        use PullBehavior::*;
        let cases = [
            // (behavior, cached, pulled here before) -> plan
            (
                Default,
                false,
                false,
                Pull {
                    fallback_to_cache: false,
                },
            ),
            (
                Default,
                true,
                true,
                Pull {
                    fallback_to_cache: true,
                },
            ),
            (
                Always,
                true,
                true,
                Pull {
                    fallback_to_cache: false,
                },
            ),
            (Once, true, true, UseCache),
            (
                Once,
                true,
                false,
                Pull {
                    fallback_to_cache: false,
                },
            ),
            (
                Once,
                false,
                true,
                Pull {
                    fallback_to_cache: false,
                },
            ),
            (PreferCached, true, false, UseCache),
            (
                PreferCached,
                false,
                false,
                Pull {
                    fallback_to_cache: false,
                },
            ),
        ];
        for (b, cached, before, want) in cases {
            assert_eq!(
                b.plan(cached, before),
                want,
                "{b:?} cached={cached} before={before}"
            );
        }
        assert_eq!("prefer-cached".parse(), Ok(PreferCached));
        assert!("sometimes".parse::<PullBehavior>().is_err());
    }
}
