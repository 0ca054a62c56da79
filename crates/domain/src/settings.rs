//! Account settings: names, allowed values and AWS defaults.

use crate::EcsError;

/// The value an account has when nobody set one.
pub fn aws_default(name: &str) -> Option<&'static str> {
    Some(match name {
        "serviceLongArnFormat" | "taskLongArnFormat" | "containerInstanceLongArnFormat" => {
            "enabled"
        }
        "awsvpcTrunking" | "containerInsights" | "fargateFIPSMode" => "disabled",
        "tagResourceAuthorization" => "on",
        "fargateTaskRetirementWaitPeriod" => "7",
        "guardDutyActivate" => "off",
        "defaultLogDriverMode" => "non-blocking",
        "fargateEventWindows" => "disabled",
        _ => return None,
    })
}

fn allowed(name: &str) -> &'static [&'static str] {
    match name {
        "containerInsights" => &["enabled", "disabled", "enhanced"],
        "fargateTaskRetirementWaitPeriod" => &["0", "7", "14"],
        "tagResourceAuthorization" | "guardDutyActivate" => &["on", "off"],
        "defaultLogDriverMode" => &["blocking", "non-blocking"],
        _ => &["enabled", "disabled"],
    }
}

/// Checks a setting name.
pub fn validate_name(name: &str) -> Result<(), EcsError> {
    if berth_wire::ecs::enums::SETTING_NAME.contains(&name) {
        Ok(())
    } else {
        Err(EcsError::invalid(format!(
            "Invalid setting name '{name}'. Valid values: {}",
            berth_wire::ecs::enums::SETTING_NAME.join(", ")
        )))
    }
}

/// Checks a name/value pair as PutAccountSetting(Default) gets it.
pub fn validate(name: &str, value: &str) -> Result<(), EcsError> {
    validate_name(name)?;
    let ok = allowed(name);
    if ok.contains(&value) {
        Ok(())
    } else {
        Err(EcsError::invalid(format!(
            "Invalid value '{value}' for setting {name}. Valid values: {}",
            ok.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_modeled_setting_has_a_default_and_accepts_it() {
        for name in berth_wire::ecs::enums::SETTING_NAME {
            let d = aws_default(name).expect("default");
            validate(name, d).expect("default is valid");
        }
        assert!(validate("containerInsights", "maybe").is_err());
        assert!(validate("bogus", "enabled").is_err());
    }
}
