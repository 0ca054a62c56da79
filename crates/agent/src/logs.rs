//! Task logs: each container's stdout and stderr copied from the runtime
//! into `<data dir>/logs/<task id>/<container>.log`, and read back (lines
//! prefixed with the container name) when the server asks for them on the
//! agent's connection, for `berth logs`. The agent listens on no port of
//! its own. The storage sits behind this module so that a Logs API can
//! read the same files later.

use berth_runtime::ContainerRuntime;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::BodyExt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Logs {
    dir: Arc<PathBuf>,
}

/// Task ids are hex; container names `[A-Za-z0-9_-]`: nothing that can
/// climb out of the logs directory.
fn safe(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Logs {
    pub fn new(dir: PathBuf) -> Logs {
        Logs { dir: Arc::new(dir) }
    }

    fn task_dir(&self, task_id: &str) -> PathBuf {
        self.dir.join(task_id)
    }

    /// Copies a container's output into its file, from the start (the
    /// file is rewritten, so following again after a restart does not
    /// duplicate lines), until the container's output ends: the copy,
    /// which ends then.
    pub fn follow(
        &self,
        runtime: &Arc<dyn ContainerRuntime>,
        task_id: &str,
        container: &str,
        id: &str,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !safe(task_id) || !safe(container) {
            return None;
        }
        let dir = self.task_dir(task_id);
        let path = dir.join(format!("{container}.log"));
        let mut stream = runtime.logs(id, true);
        Some(tokio::spawn(async move {
            let file = std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(&path));
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot write logs");
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        if file.write_all(&c.bytes).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "log stream ended");
                        return;
                    }
                }
            }
        }))
    }

    /// The file a container's output is copied to.
    pub fn file(&self, task_id: &str, container: &str) -> Option<PathBuf> {
        (safe(task_id) && safe(container))
            .then(|| self.task_dir(task_id).join(format!("{container}.log")))
    }

    /// The containers with logs for a task, sorted by name.
    fn files(&self, task_id: &str) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(self.task_dir(task_id))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")?
                    .to_string();
                Some((name, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// Removes a task's logs.
    pub fn remove(&self, task_id: &str) {
        if safe(task_id) {
            let _ = std::fs::remove_dir_all(self.task_dir(task_id));
        }
    }
}

/// Complete lines of `bytes` from `offset`, each prefixed with `name | `;
/// returns the new offset (after the last complete line).
fn lines(name: &str, bytes: &[u8], offset: usize, out: &mut Vec<u8>, flush: bool) -> usize {
    let rest = bytes.get(offset..).unwrap_or_default();
    let end = match rest.iter().rposition(|b| *b == b'\n') {
        Some(p) => p + 1,
        None if flush && !rest.is_empty() => rest.len(),
        None => return offset,
    };
    for line in rest[..end].split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b" | ");
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    offset + end
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// A task's logs as `berth logs` shows them: what there is and, when
/// `follow`ing, what each container's file gains after (polled), without
/// end. Sent on the agent's own connection to the server.
pub fn output(logs: Logs, task_id: String, follow: bool) -> BoxStream<'static, Vec<u8>> {
    if !safe(&task_id) {
        return futures::stream::empty().boxed();
    }
    if !follow {
        let mut out = vec![];
        for (name, p) in logs.files(&task_id) {
            lines(&name, &read(&p), 0, &mut out, true);
        }
        return futures::stream::once(async move { out }).boxed();
    }
    futures::stream::unfold(
        (
            logs,
            task_id,
            std::collections::HashMap::<String, usize>::new(),
        ),
        |(logs, task_id, mut offsets)| async move {
            loop {
                let mut out = vec![];
                for (name, p) in logs.files(&task_id) {
                    let at = offsets.get(&name).copied().unwrap_or(0);
                    let bytes = read(&p);
                    // A rewritten file (the agent followed again) starts over.
                    let at = if bytes.len() < at { 0 } else { at };
                    let next = lines(&name, &bytes, at, &mut out, false);
                    offsets.insert(name, next);
                }
                if !out.is_empty() {
                    return Some((out, (logs, task_id, offsets)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .boxed()
}

/// `berth logs`: asks the server for a task's logs and copies them to
/// stdout as they come.
pub async fn print(
    ecs: &crate::EcsClient,
    server: &str,
    cluster: &str,
    task: &str,
    follow: bool,
) -> Result<(), String> {
    let id = task.rsplit('/').next().unwrap_or(task);
    let path = format!(
        "/berth/v1/logs/{cluster}/{id}{}",
        if follow { "?follow=1" } else { "" }
    );
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut req = hyper::Request::get(&url);
    for (k, v) in ecs.auth_headers("GET", &path, &[], b"") {
        req = req.header(k, v);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::new()))
        .map_err(|e| format!("bad server URL {url}: {e}"))?;
    let resp = ecs
        .http()
        .request(req)
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut out = std::io::stdout();
    let mut failed = vec![];
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the log stream broke: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if status.is_success() {
                out.write_all(&data).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            } else {
                failed.extend_from_slice(&data);
            }
        }
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&failed).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn only_complete_lines_are_sent_unless_flushing() {
        let mut out = vec![];
        let at = lines("web", b"one\ntwo\nthr", 0, &mut out, false);
        assert_eq!(out, b"web | one\nweb | two\n");
        assert_eq!(at, 8);
        let mut out = vec![];
        assert_eq!(lines("web", b"one\ntwo\nthr", at, &mut out, true), 11);
        assert_eq!(out, b"web | thr\n");
    }
}
