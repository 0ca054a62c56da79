//! Listener rules: checking and normalising actions and conditions as ALB
//! does, and the compiled form the data path routes requests with.

use super::{ElbCode, ElbError};
use berth_wire::elbv2 as w;

const FIXED_CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];
const CONDITION_FIELDS: &[&str] = &[
    "path-pattern",
    "host-header",
    "http-header",
    "http-request-method",
];
/// ALB counts the values of every condition of a rule against this.
const MAX_CONDITION_VALUES: usize = 5;

fn invalid_action(message: impl Into<String>) -> ElbError {
    ElbError::new(ElbCode::InvalidLoadBalancerAction, message)
}

/// The target groups an action forwards to.
pub fn forwarded_groups(action: &w::Action) -> Vec<String> {
    let mut out: Vec<String> = action
        .forward_config
        .as_ref()
        .and_then(|f| f.target_groups.as_ref())
        .map(|g| {
            g.iter()
                .filter_map(|t| t.target_group_arn.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(arn) = &action.target_group_arn {
        if !out.contains(arn) {
            out.push(arn.clone());
        }
    }
    out
}

/// Checks a rule's (or a listener's default) actions and returns them as
/// ALB describes them: forward actions carry both `TargetGroupArn` (one
/// group) and `ForwardConfig` with weights, redirects their defaults.
/// Whether the target groups exist is for the caller, which has the store.
pub fn normalize_actions(actions: &[w::Action]) -> Result<Vec<w::Action>, ElbError> {
    if actions.is_empty() {
        return Err(ElbError::validation(
            "At least one action must be specified",
        ));
    }
    if actions.len() > 1 {
        return Err(ElbError::new(
            ElbCode::TooManyActions,
            "A rule or listener can have only one forward, fixed-response or redirect action",
        ));
    }
    let a = &actions[0];
    let kind = a.r#type.as_deref().unwrap_or_default();
    if let Some(order) = a.order {
        if !(1..=50000).contains(&order) {
            return Err(ElbError::validation(format!(
                "Action order '{order}' must be between 1 and 50000"
            )));
        }
    }
    let mut out = w::Action {
        r#type: Some(kind.to_string()),
        order: Some(a.order.unwrap_or(1)),
        ..Default::default()
    };
    match kind {
        "forward" => {
            let mut groups: Vec<w::TargetGroupTuple> = a
                .forward_config
                .as_ref()
                .and_then(|f| f.target_groups.clone())
                .unwrap_or_default();
            if let Some(arn) = &a.target_group_arn {
                if groups.is_empty() {
                    groups.push(w::TargetGroupTuple {
                        target_group_arn: Some(arn.clone()),
                        weight: None,
                    });
                } else if groups.len() != 1 || groups[0].target_group_arn.as_ref() != Some(arn) {
                    return Err(invalid_action(
                        "You cannot specify both a target group ARN and a forward config with other target groups",
                    ));
                }
            }
            if groups.is_empty() {
                return Err(invalid_action(
                    "A forward action must specify a target group ARN or a forward config with target groups",
                ));
            }
            if groups.len() > 5 {
                return Err(invalid_action(
                    "A forward action can have at most 5 target groups",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for g in &mut groups {
                let arn = g.target_group_arn.clone().unwrap_or_default();
                if arn.is_empty() {
                    return Err(ElbError::validation(
                        "Each target group of a forward config must have a TargetGroupArn",
                    ));
                }
                if !seen.insert(arn.clone()) {
                    return Err(invalid_action(format!(
                        "Target group '{arn}' is specified more than once in the forward config"
                    )));
                }
                let weight = g.weight.unwrap_or(1);
                if !(0..=999).contains(&weight) {
                    return Err(ElbError::validation(format!(
                        "Target group weight '{weight}' must be between 0 and 999"
                    )));
                }
                g.weight = Some(weight);
            }
            if groups.len() == 1 {
                out.target_group_arn = groups[0].target_group_arn.clone();
            }
            out.forward_config = Some(w::ForwardActionConfig {
                target_groups: Some(groups),
                target_group_stickiness_config: Some(w::TargetGroupStickinessConfig {
                    enabled: Some(false),
                    duration_seconds: None,
                }),
            });
        }
        "fixed-response" => {
            let c = a.fixed_response_config.clone().ok_or_else(|| {
                invalid_action("A fixed-response action must have a FixedResponseConfig")
            })?;
            let status = c.status_code.clone().unwrap_or_default();
            if status.len() != 3
                || !status.bytes().all(|b| b.is_ascii_digit())
                || !matches!(status.as_bytes()[0], b'2' | b'4' | b'5')
            {
                return Err(ElbError::validation(format!(
                    "Fixed-response status code '{status}' must be 2XX, 4XX or 5XX"
                )));
            }
            if let Some(ct) = &c.content_type {
                if !FIXED_CONTENT_TYPES.contains(&ct.as_str()) {
                    return Err(ElbError::validation(format!(
                        "Fixed-response content type '{ct}' must be one of {}",
                        FIXED_CONTENT_TYPES.join(", ")
                    )));
                }
            }
            if c.message_body.as_deref().unwrap_or_default().len() > 1024 {
                return Err(ElbError::validation(
                    "Fixed-response message body must be at most 1024 characters",
                ));
            }
            out.fixed_response_config = Some(c);
        }
        "redirect" => {
            let c = a
                .redirect_config
                .clone()
                .ok_or_else(|| invalid_action("A redirect action must have a RedirectConfig"))?;
            let status = c.status_code.clone().unwrap_or_default();
            if status != "HTTP_301" && status != "HTTP_302" {
                return Err(ElbError::validation(format!(
                    "Redirect status code '{status}' must be HTTP_301 or HTTP_302"
                )));
            }
            let filled = w::RedirectActionConfig {
                protocol: Some(c.protocol.unwrap_or_else(|| "#{protocol}".into())),
                port: Some(c.port.unwrap_or_else(|| "#{port}".into())),
                host: Some(c.host.unwrap_or_else(|| "#{host}".into())),
                path: Some(c.path.unwrap_or_else(|| "/#{path}".into())),
                query: Some(c.query.unwrap_or_else(|| "#{query}".into())),
                status_code: Some(status),
            };
            let protocol = filled.protocol.as_deref().unwrap_or_default();
            if !["HTTP", "HTTPS", "#{protocol}"].contains(&protocol) {
                return Err(ElbError::validation(format!(
                    "Redirect protocol '{protocol}' must be HTTP, HTTPS or #{{protocol}}"
                )));
            }
            if !filled.path.as_deref().unwrap_or_default().starts_with('/') {
                return Err(ElbError::validation("Redirect path must start with '/'"));
            }
            let unchanged = filled.protocol.as_deref() == Some("#{protocol}")
                && filled.port.as_deref() == Some("#{port}")
                && filled.host.as_deref() == Some("#{host}")
                && filled.path.as_deref() == Some("/#{path}")
                && filled.query.as_deref() == Some("#{query}");
            if unchanged {
                return Err(invalid_action(
                    "A redirect must change at least one of protocol, port, host, path or query, or it would loop",
                ));
            }
            out.redirect_config = Some(filled);
        }
        "" => return Err(ElbError::validation("An action must have a Type")),
        other => {
            return Err(invalid_action(format!(
                "Action type '{other}' is not supported; Berth supports forward, fixed-response and redirect"
            )))
        }
    }
    Ok(vec![out])
}

fn condition_values(c: &w::RuleCondition) -> Vec<String> {
    let from_config = match c.field.as_deref().unwrap_or_default() {
        "path-pattern" => c
            .path_pattern_config
            .as_ref()
            .and_then(|p| p.values.clone()),
        "host-header" => c.host_header_config.as_ref().and_then(|p| p.values.clone()),
        "http-header" => c.http_header_config.as_ref().and_then(|p| p.values.clone()),
        "http-request-method" => c
            .http_request_method_config
            .as_ref()
            .and_then(|p| p.values.clone()),
        _ => None,
    };
    from_config.or_else(|| c.values.clone()).unwrap_or_default()
}

/// Checks a rule's conditions and returns them as ALB describes them.
pub fn normalize_conditions(
    conditions: &[w::RuleCondition],
) -> Result<Vec<w::RuleCondition>, ElbError> {
    if conditions.is_empty() {
        return Err(ElbError::validation(
            "A rule must have at least one condition",
        ));
    }
    let mut out = vec![];
    let mut total = 0;
    let mut fields = std::collections::BTreeSet::new();
    for c in conditions {
        let field = c.field.clone().unwrap_or_default();
        if !CONDITION_FIELDS.contains(&field.as_str()) {
            return Err(ElbError::validation(format!(
                "Condition field '{field}' is not supported; Berth supports {}",
                CONDITION_FIELDS.join(", ")
            )));
        }
        let values = condition_values(c);
        if values.is_empty() {
            return Err(ElbError::validation(format!(
                "A '{field}' condition must have at least one value"
            )));
        }
        for v in &values {
            if v.is_empty() || v.len() > 128 {
                return Err(ElbError::validation(format!(
                    "Condition value '{v}' must be between 1 and 128 characters long"
                )));
            }
        }
        total += values.len();
        let mut n = w::RuleCondition {
            field: Some(field.clone()),
            ..Default::default()
        };
        match field.as_str() {
            "path-pattern" => {
                n.values = Some(values.clone());
                n.path_pattern_config = Some(w::PathPatternConditionConfig {
                    values: Some(values),
                    regex_values: None,
                });
            }
            "host-header" => {
                n.values = Some(values.clone());
                n.host_header_config = Some(w::HostHeaderConditionConfig {
                    values: Some(values),
                    regex_values: None,
                });
            }
            "http-header" => {
                let name = c
                    .http_header_config
                    .as_ref()
                    .and_then(|h| h.http_header_name.clone())
                    .unwrap_or_default();
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if name.is_empty() || name.len() > 40 || !name.bytes().all(token) {
                    return Err(ElbError::validation(format!(
                        "HTTP header name '{name}' must be 1 to 40 characters of a valid header name"
                    )));
                }
                n.http_header_config = Some(w::HttpHeaderConditionConfig {
                    http_header_name: Some(name),
                    values: Some(values),
                    regex_values: None,
                });
            }
            _ => {
                if let Some(bad) = values.iter().find(|v| {
                    !v.bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
                }) {
                    return Err(ElbError::validation(format!(
                        "HTTP request method '{bad}' may contain only A-Z, hyphens and underscores"
                    )));
                }
                n.http_request_method_config = Some(w::HttpRequestMethodConditionConfig {
                    values: Some(values),
                });
            }
        }
        if field != "http-header" && !fields.insert(field.clone()) {
            return Err(ElbError::validation(format!(
                "A rule can have only one '{field}' condition"
            )));
        }
        out.push(n);
    }
    if total > MAX_CONDITION_VALUES {
        return Err(ElbError::validation(format!(
            "A rule can only have '{MAX_CONDITION_VALUES}' condition values"
        )));
    }
    Ok(out)
}

/// One condition, ready to match.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    Path(Vec<String>),
    /// Patterns lowercased: host names compare without case.
    Host(Vec<String>),
    /// The header name and value patterns, both lowercased.
    Header(String, Vec<String>),
    Method(Vec<String>),
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Target group ARNs and their weights.
    Forward(Vec<(String, u32)>),
    Fixed {
        status: u16,
        content_type: Option<String>,
        body: String,
    },
    Redirect {
        config: w::RedirectActionConfig,
        status: u16,
    },
}

/// A rule as the data path evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub conditions: Vec<Match>,
    pub action: RouteAction,
}

/// The parts of a request that rules look at.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the port.
    pub host: &'a str,
    /// Lowercased name, value.
    pub headers: &'a [(String, String)],
}

impl Route {
    /// Compiles stored (normalised) conditions and actions.
    pub fn compile(conditions: &[w::RuleCondition], actions: &[w::Action]) -> Route {
        let conditions = conditions
            .iter()
            .map(|c| {
                let values = condition_values(c);
                let lower = || values.iter().map(|v| v.to_ascii_lowercase()).collect();
                match c.field.as_deref().unwrap_or_default() {
                    "path-pattern" => Match::Path(values.clone()),
                    "host-header" => Match::Host(lower()),
                    "http-header" => Match::Header(
                        c.http_header_config
                            .as_ref()
                            .and_then(|h| h.http_header_name.clone())
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                        lower(),
                    ),
                    _ => Match::Method(values.clone()),
                }
            })
            .collect();
        let action = actions
            .first()
            .map(|a| match a.r#type.as_deref().unwrap_or_default() {
                "fixed-response" => {
                    let c = a.fixed_response_config.clone().unwrap_or_default();
                    RouteAction::Fixed {
                        status: c
                            .status_code
                            .as_deref()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(503),
                        content_type: c.content_type,
                        body: c.message_body.unwrap_or_default(),
                    }
                }
                "redirect" => {
                    let config = a.redirect_config.clone().unwrap_or_default();
                    let status = if config.status_code.as_deref() == Some("HTTP_301") {
                        301
                    } else {
                        302
                    };
                    RouteAction::Redirect { config, status }
                }
                _ => RouteAction::Forward(
                    a.forward_config
                        .as_ref()
                        .and_then(|f| f.target_groups.as_ref())
                        .map(|g| {
                            g.iter()
                                .filter_map(|t| {
                                    Some((
                                        t.target_group_arn.clone()?,
                                        t.weight.unwrap_or(1).max(0) as u32,
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
            })
            .unwrap_or(RouteAction::Fixed {
                status: 503,
                content_type: None,
                body: String::new(),
            });
        Route { conditions, action }
    }

    /// Every condition must hold; within one, any value may match.
    pub fn matches(&self, req: &RequestView) -> bool {
        self.conditions.iter().all(|c| match c {
            Match::Path(p) => p.iter().any(|p| wildcard(p, req.path)),
            Match::Host(p) => {
                let host = req.host.to_ascii_lowercase();
                p.iter().any(|p| wildcard(p, &host))
            }
            Match::Header(name, p) => {
                req.headers.iter().filter(|(n, _)| n == name).any(|(_, v)| {
                    let v = v.to_ascii_lowercase();
                    p.iter().any(|p| wildcard(p, &v))
                })
            }
            Match::Method(m) => m.iter().any(|m| m == req.method),
        })
    }
}

/// ALB's patterns: `*` matches any run of characters, `?` exactly one.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The Location of a redirect: `#{protocol}`, `#{host}`, `#{port}`,
/// `#{path}` and `#{query}` stand for the request's own parts.
pub fn redirect_location(
    config: &w::RedirectActionConfig,
    protocol: &str,
    host: &str,
    port: u16,
    path: &str,
    query: &str,
) -> String {
    let fill = |s: &str| {
        s.replace("#{protocol}", protocol)
            .replace("#{host}", host)
            .replace("#{port}", &port.to_string())
            .replace("#{path}", path.trim_start_matches('/'))
            .replace("#{query}", query)
    };
    let scheme = fill(config.protocol.as_deref().unwrap_or("#{protocol}")).to_ascii_lowercase();
    let host = fill(config.host.as_deref().unwrap_or("#{host}"));
    let port = fill(config.port.as_deref().unwrap_or("#{port}"));
    let path = fill(config.path.as_deref().unwrap_or("/#{path}"));
    let query = fill(config.query.as_deref().unwrap_or("#{query}"));
    let default_port = (scheme == "http" && port == "80") || (scheme == "https" && port == "443");
    let mut out = format!("{scheme}://{host}");
    if !default_port {
        out.push(':');
        out.push_str(&port);
    }
    out.push_str(&path);
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(arn: &str) -> w::Action {
        w::Action {
            r#type: Some("forward".into()),
            target_group_arn: Some(arn.into()),
            ..Default::default()
        }
    }

    fn path(values: &[&str]) -> w::RuleCondition {
        w::RuleCondition {
            field: Some("path-pattern".into()),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn wildcards_match_like_alb() {
        assert!(wildcard("/api/*", "/api/v1/users"));
        assert!(wildcard("/api/*", "/api/"));
        assert!(!wildcard("/api/*", "/api"));
        assert!(wildcard("*.example.com", "www.example.com"));
        assert!(wildcard("/img/?.png", "/img/a.png"));
        assert!(!wildcard("/img/?.png", "/img/ab.png"));
        assert!(wildcard("*a*b*", "xxaxxbxx"));
        assert!(!wildcard("*a*b", "xxbxxa"));
    }

    #[test]
    fn forward_is_normalised_with_weights() {
        let out = normalize_actions(&[forward("tg1")]).expect("present");
        let groups = out[0]
            .forward_config
            .as_ref()
            .expect("present")
            .target_groups
            .clone()
            .expect("present");
        assert_eq!(groups[0].weight, Some(1));
        assert_eq!(out[0].target_group_arn.as_deref(), Some("tg1"));
        assert_eq!(forwarded_groups(&out[0]), vec!["tg1".to_string()]);
        let mut both = forward("tg1");
        both.forward_config = Some(w::ForwardActionConfig {
            target_groups: Some(vec![w::TargetGroupTuple {
                target_group_arn: Some("tg2".into()),
                weight: Some(3),
            }]),
            ..Default::default()
        });
        assert_eq!(
            normalize_actions(&[both]).expect_err("refused").code,
            ElbCode::InvalidLoadBalancerAction
        );
        assert!(normalize_actions(&[]).is_err());
        assert!(normalize_actions(&[forward("a"), forward("b")]).is_err());
    }

    #[test]
    fn fixed_response_and_redirect_are_checked() {
        let fixed = |code: &str| w::Action {
            r#type: Some("fixed-response".into()),
            fixed_response_config: Some(w::FixedResponseActionConfig {
                status_code: Some(code.into()),
                content_type: Some("text/plain".into()),
                message_body: Some("hi".into()),
            }),
            ..Default::default()
        };
        assert!(normalize_actions(&[fixed("404")]).is_ok());
        assert!(normalize_actions(&[fixed("302")]).is_err());
        let redirect = |path: Option<&str>| w::Action {
            r#type: Some("redirect".into()),
            redirect_config: Some(w::RedirectActionConfig {
                path: path.map(str::to_string),
                status_code: Some("HTTP_301".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            normalize_actions(&[redirect(None)])
                .expect_err("refused")
                .code,
            ElbCode::InvalidLoadBalancerAction
        );
        let ok = normalize_actions(&[redirect(Some("/new/#{path}"))]).expect("present");
        let config = ok[0].redirect_config.clone().expect("present");
        assert_eq!(
            redirect_location(&config, "http", "lb.local", 8080, "/old", "a=1"),
            "http://lb.local:8080/new/old?a=1"
        );
    }

    #[test]
    fn conditions_route_requests() {
        let header = w::RuleCondition {
            field: Some("http-header".into()),
            http_header_config: Some(w::HttpHeaderConditionConfig {
                http_header_name: Some("X-Canary".into()),
                values: Some(vec!["Yes".into()]),
                regex_values: None,
            }),
            ..Default::default()
        };
        let host = w::RuleCondition {
            field: Some("host-header".into()),
            values: Some(vec!["API.example.com".into()]),
            ..Default::default()
        };
        let conditions = normalize_conditions(&[path(&["/v2/*"]), header, host]).expect("present");
        let route = Route::compile(
            &conditions,
            &normalize_actions(&[forward("tg")]).expect("present"),
        );
        let headers = vec![("x-canary".to_string(), "yes".to_string())];
        let req = |path, host, headers| RequestView {
            method: "GET",
            path,
            host,
            headers,
        };
        assert!(route.matches(&req("/v2/x", "api.EXAMPLE.com", &headers)));
        assert!(!route.matches(&req("/v1/x", "api.example.com", &headers)));
        assert!(!route.matches(&req("/v2/x", "api.example.com", &[])));
        assert_eq!(route.action, RouteAction::Forward(vec![("tg".into(), 1)]));
    }

    #[test]
    fn conditions_are_refused_as_alb_refuses_them() {
        assert!(normalize_conditions(&[]).is_err());
        assert!(normalize_conditions(&[path(&["/a", "/b", "/c", "/d", "/e", "/f"])]).is_err());
        assert!(normalize_conditions(&[path(&["/a"]), path(&["/b"])]).is_err());
        let source_ip = w::RuleCondition {
            field: Some("source-ip".into()),
            values: Some(vec!["10.0.0.0/8".into()]),
            ..Default::default()
        };
        assert!(normalize_conditions(&[source_ip]).is_err());
        assert!(normalize_conditions(&[path(&[&"x".repeat(129)])]).is_err());
    }
}
