//! FireLens: a task's log router (the container with a
//! `firelensConfiguration`, Fluent Bit or Fluentd) and the containers
//! that log to it (`logDriver: awsfirelens`), wired as ECS's agent wires
//! them. The agent writes the router's configuration (inputs on a unix
//! socket and on TCP 24224, the task's metadata added to each record, one
//! output per container from its awsfirelens options, and the user's own
//! file included), mounts it and the socket's directory into the router,
//! gives the other containers the engine's `fluentd` log driver pointed at
//! that socket with the tag `<container>-firelens-<task id>`, and starts
//! the router before them.

use berth_runtime::{MountSource, MountSpec};
use berth_wire::agent::DesiredTask;
use berth_wire::ecs as w;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The router's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    FluentBit,
    Fluentd,
}

impl Kind {
    /// Where the router image reads its configuration.
    fn config_path(self) -> &'static str {
        match self {
            Kind::FluentBit => "/fluent-bit/etc/fluent-bit.conf",
            Kind::Fluentd => "/fluentd/etc/fluent.conf",
        }
    }
}

/// The task's router: its container name, kind and options.
pub fn router(task: &DesiredTask) -> Option<(String, Kind, BTreeMap<String, String>)> {
    task.definition
        .container_definitions
        .iter()
        .flatten()
        .find_map(|c| {
            let f = c.firelens_configuration.as_ref()?;
            let kind = match f.r#type.as_deref()? {
                "fluentbit" => Kind::FluentBit,
                "fluentd" => Kind::Fluentd,
                _ => return None,
            };
            let options = f.options.clone().unwrap_or_default().into_iter().collect();
            Some((c.name.clone()?, kind, options))
        })
}

/// Whether `c` logs through the router.
pub fn routed(c: &w::ContainerDefinition) -> bool {
    c.log_configuration
        .as_ref()
        .and_then(|l| l.log_driver.as_deref())
        == Some("awsfirelens")
}

/// What FireLens asks for that the agent cannot give, as a stopped reason.
pub fn unsupported(task: &DesiredTask) -> Option<String> {
    let routed_any = task
        .definition
        .container_definitions
        .iter()
        .flatten()
        .any(routed);
    let r = router(task);
    if routed_any && r.is_none() {
        return Some(
            "ResourceInitializationError: containers log with awsfirelens but the task has no container with a firelensConfiguration of type fluentbit or fluentd".into(),
        );
    }
    if let Some((_, _, options)) = &r {
        let known = [
            "enable-ecs-log-metadata",
            "config-file-type",
            "config-file-value",
        ];
        if let Some(k) = options.keys().find(|k| !known.contains(&k.as_str())) {
            return Some(format!(
                "ResourceInitializationError: unknown firelensConfiguration option {k} (known: {})",
                known.join(", ")
            ));
        }
        if options.get("config-file-type").map(String::as_str) == Some("s3") {
            return Some(
                "ResourceInitializationError: this host cannot provide a FireLens configuration file from S3 (config-file-type s3), which the task definition asks for".into(),
            );
        }
    }
    for c in task.definition.container_definitions.iter().flatten() {
        let secret = c
            .log_configuration
            .as_ref()
            .is_some_and(|l| routed(c) && l.secret_options.as_ref().is_some_and(|s| !s.is_empty()));
        if secret {
            return Some(format!(
                "ResourceInitializationError: this host cannot provide secretOptions to the awsfirelens log driver (container {}), which the task definition asks for",
                c.name.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

/// The tag a container's records carry, which its output matches.
pub fn tag(container: &str, task_id: &str) -> String {
    format!("{container}-firelens-{task_id}")
}

/// The router's configuration.
pub fn config(task: &DesiredTask, kind: Kind, options: &BTreeMap<String, String>) -> String {
    let cluster = crate::spec::task_cluster(&task.task_arn);
    let def = &task.definition;
    let family = format!(
        "{}:{}",
        def.family.as_deref().unwrap_or_default(),
        def.revision.unwrap_or_default()
    );
    let metadata = options
        .get("enable-ecs-log-metadata")
        .is_none_or(|v| v != "false");
    let include = options
        .get("config-file-type")
        .filter(|t| *t == "file")
        .and_then(|_| options.get("config-file-value"));
    let outputs: Vec<(String, BTreeMap<String, String>)> = def
        .container_definitions
        .iter()
        .flatten()
        .filter(|c| routed(c))
        .filter_map(|c| {
            let o: BTreeMap<String, String> = c
                .log_configuration
                .as_ref()?
                .options
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            // Without a Name the user's own file says where it goes.
            o.contains_key("Name")
                .then(|| (c.name.clone().unwrap_or_default(), o))
        })
        .collect();
    let mut out = String::new();
    match kind {
        Kind::FluentBit => {
            out.push_str("[INPUT]\n    Name forward\n    unix_path /var/run/fluent.sock\n\n");
            out.push_str("[INPUT]\n    Name forward\n    Listen 0.0.0.0\n    Port 24224\n\n");
            if metadata {
                out.push_str(&format!(
                    "[FILTER]\n    Name record_modifier\n    Match *\n    Record ecs_cluster {cluster}\n    Record ecs_task_arn {}\n    Record ecs_task_definition {family}\n\n",
                    task.task_arn
                ));
            }
            if let Some(file) = include {
                out.push_str(&format!("@INCLUDE {file}\n\n"));
            }
            for (name, o) in &outputs {
                out.push_str(&format!(
                    "[OUTPUT]\n    Name {}\n    Match {name}-firelens*\n",
                    o["Name"]
                ));
                for (k, v) in o.iter().filter(|(k, _)| *k != "Name") {
                    out.push_str(&format!("    {k} {v}\n"));
                }
                out.push('\n');
            }
        }
        Kind::Fluentd => {
            out.push_str("<source>\n  @type unix\n  path /var/run/fluent.sock\n</source>\n\n");
            out.push_str("<source>\n  @type forward\n  bind 0.0.0.0\n  port 24224\n</source>\n\n");
            if metadata {
                out.push_str(&format!(
                    "<filter *>\n  @type record_transformer\n  <record>\n    ecs_cluster {cluster}\n    ecs_task_arn {}\n    ecs_task_definition {family}\n  </record>\n</filter>\n\n",
                    task.task_arn
                ));
            }
            if let Some(file) = include {
                out.push_str(&format!("@include {file}\n\n"));
            }
            for (name, o) in &outputs {
                out.push_str(&format!(
                    "<match {name}-firelens**>\n  @type {}\n",
                    o["Name"]
                ));
                for (k, v) in o.iter().filter(|(k, _)| *k != "Name") {
                    out.push_str(&format!("  {k} {v}\n"));
                }
                out.push_str("</match>\n\n");
            }
        }
    }
    out
}

/// The task's FireLens directory on the host: the configuration file and
/// the socket's directory.
pub fn dir(data_dir: &Path, task_id: &str) -> PathBuf {
    data_dir.join("firelens").join(task_id)
}

/// Writes the router's configuration under `dir`; the mounts the router
/// gets.
pub fn prepare(
    dir: &Path,
    task: &DesiredTask,
    kind: Kind,
    options: &BTreeMap<String, String>,
) -> std::io::Result<Vec<MountSpec>> {
    let socket = dir.join("socket");
    std::fs::create_dir_all(&socket)?;
    let file = dir.join("fluent.conf");
    std::fs::write(&file, config(task, kind, options))?;
    Ok(vec![
        MountSpec {
            source: MountSource::HostPath(file.to_string_lossy().into_owned()),
            target: kind.config_path().into(),
            read_only: true,
        },
        MountSpec {
            source: MountSource::HostPath(socket.to_string_lossy().into_owned()),
            target: "/var/run".into(),
            read_only: false,
        },
    ])
}

/// The engine log driver of a container that logs through the router.
pub fn driver(dir: &Path, container: &str, task_id: &str) -> (String, BTreeMap<String, String>) {
    let socket = dir.join("socket").join("fluent.sock");
    (
        "fluentd".into(),
        BTreeMap::from([
            (
                "fluentd-address".into(),
                format!("unix://{}", socket.to_string_lossy()),
            ),
            ("tag".into(), tag(container, task_id)),
            // The router may still be opening its socket.
            ("fluentd-async".into(), "true".into()),
        ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> DesiredTask {
        let router = w::ContainerDefinition {
            name: Some("log_router".into()),
            firelens_configuration: Some(w::FirelensConfiguration {
                r#type: Some("fluentbit".into()),
                options: Some(
                    [
                        ("config-file-type".to_string(), "file".to_string()),
                        ("config-file-value".into(), "/extra.conf".into()),
                    ]
                    .into_iter()
                    .collect(),
                ),
            }),
            ..Default::default()
        };
        let app = w::ContainerDefinition {
            name: Some("app".into()),
            log_configuration: Some(w::LogConfiguration {
                log_driver: Some("awsfirelens".into()),
                options: Some(
                    [
                        ("Name".to_string(), "cloudwatch".to_string()),
                        ("region".into(), "us-east-1".into()),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::spec::tests::task(vec![router, app])
    }

    #[test]
    fn the_router_gets_inputs_metadata_the_users_file_and_one_output_per_container() {
        let t = task();
        let (name, kind, options) = router(&t).expect("router");
        assert_eq!((name.as_str(), kind), ("log_router", Kind::FluentBit));
        let c = config(&t, kind, &options);
        assert!(c.contains("unix_path /var/run/fluent.sock"), "{c}");
        assert!(
            c.contains("Record ecs_task_arn arn:aws:ecs:us-east-1:0:task/c/abc123"),
            "{c}"
        );
        assert!(c.contains("Record ecs_task_definition web:3"), "{c}");
        assert!(c.contains("@INCLUDE /extra.conf"), "{c}");
        assert!(
            c.contains(
                "[OUTPUT]\n    Name cloudwatch\n    Match app-firelens*\n    region us-east-1\n"
            ),
            "{c}"
        );
        assert_eq!(unsupported(&t), None);
        let (driver, opts) = driver(Path::new("/d"), "app", "abc123");
        assert_eq!(driver, "fluentd");
        assert_eq!(opts["tag"], "app-firelens-abc123");
        assert_eq!(opts["fluentd-address"], "unix:///d/socket/fluent.sock");
    }

    #[test]
    fn routed_containers_need_a_router_and_s3_configs_are_refused() {
        let mut t = task();
        let defs = t.definition.container_definitions.as_mut().expect("defs");
        defs[0].firelens_configuration = None;
        assert!(unsupported(&t)
            .expect("no router")
            .contains("firelensConfiguration"));
        let mut t = task();
        let defs = t.definition.container_definitions.as_mut().expect("defs");
        defs[0].firelens_configuration = Some(w::FirelensConfiguration {
            r#type: Some("fluentd".into()),
            options: Some(
                [("config-file-type".to_string(), "s3".to_string())]
                    .into_iter()
                    .collect(),
            ),
        });
        assert!(unsupported(&t).expect("s3").contains("S3"));
        let mut t = task();
        let defs = t.definition.container_definitions.as_mut().expect("defs");
        defs[0].firelens_configuration = Some(w::FirelensConfiguration {
            r#type: Some("fluentbit".into()),
            options: Some(
                [("colour".to_string(), "x".to_string())]
                    .into_iter()
                    .collect(),
            ),
        });
        assert!(unsupported(&t).expect("unknown").contains("option colour"));
    }
}
