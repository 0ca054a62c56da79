//! The layering the architecture promises, checked on the source: protocol
//! adapters never import each other (they share only berth-control and the
//! domain), and the control layer imports no adapter and no HTTP stack.

use std::path::{Path, PathBuf};

/// The adapter folders and files of the API crate, by module name.
const ADAPTERS: &[&str] = &[
    "ecs",
    "elbv2",
    "sts",
    "iam",
    "ssm",
    "secretsmanager",
    "cwlogs",
    "cloudwatch",
    "autoscaling",
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The adapter a source file of the API crate belongs to, if any.
fn adapter_of(src: &Path, file: &Path) -> Option<&'static str> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    ADAPTERS.iter().copied().find(|a| *a == module)
}

#[test]
fn adapters_never_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = vec![];
    for file in sources(&src) {
        let Some(own) = adapter_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        for other in ADAPTERS.iter().filter(|a| **a != own) {
            if text.contains(&format!("crate::{other}")) {
                found.push(format!("{} uses crate::{other}", file.display()));
            }
        }
        if text.contains("super::super") {
            found.push(format!("{} reaches out with super::super", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "adapters importing each other: {found:#?}"
    );
}

#[test]
fn the_control_layer_knows_no_adapter_and_no_http_stack() {
    let control = Path::new(env!("CARGO_MANIFEST_DIR")).join("../control");
    let manifest = std::fs::read_to_string(control.join("Cargo.toml")).expect("manifest");
    for dep in [
        "axum",
        "hyper",
        "berth-apiserver",
        "berth-lb",
        "berth-agent",
    ] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(dep)),
            "berth-control depends on {dep}"
        );
    }
    for file in sources(&control.join("src")) {
        let text = std::fs::read_to_string(&file).expect("read");
        for name in ["axum::", "hyper::", "berth_apiserver", "ApiError"] {
            assert!(!text.contains(name), "{} mentions {name}", file.display());
        }
    }
}
