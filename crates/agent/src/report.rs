//! The latest report of every task this agent runs, kept in memory for
//! the connection to send (again, after a reconnect) and on disk so that a
//! restarted agent knows where each task was.

use berth_wire::agent::TaskReport;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct Reporter {
    reports: Arc<Mutex<BTreeMap<String, TaskReport>>>,
    changed: mpsc::UnboundedSender<String>,
    path: Arc<PathBuf>,
}

impl Reporter {
    /// Loads the reports saved in `path`; the receiver yields the ARN of
    /// each task whose report changed.
    pub fn open(path: PathBuf) -> Result<(Reporter, mpsc::UnboundedReceiver<String>), String> {
        let saved: BTreeMap<String, TaskReport> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            Reporter {
                reports: Arc::new(Mutex::new(saved)),
                changed: tx,
                path: Arc::new(path),
            },
            rx,
        ))
    }

    pub fn get(&self, arn: &str) -> Option<TaskReport> {
        self.reports.lock().get(arn).cloned()
    }

    pub fn all(&self) -> Vec<TaskReport> {
        self.reports.lock().values().cloned().collect()
    }

    pub fn publish(&self, report: TaskReport) {
        let arn = report.task_arn.clone();
        {
            let mut all = self.reports.lock();
            if all.get(&arn) == Some(&report) {
                return;
            }
            all.insert(arn.clone(), report);
            self.save(&all);
        }
        let _ = self.changed.send(arn);
    }

    pub fn forget(&self, arn: &str) {
        let mut all = self.reports.lock();
        if all.remove(arn).is_some() {
            self.save(&all);
        }
    }

    /// Written to a temporary file and renamed: a crash leaves the old
    /// file or the new one. Not synced: the file has to survive the agent
    /// being killed, which the page cache does, not the host losing power
    /// (the containers would not survive that either).
    fn save(&self, all: &BTreeMap<String, TaskReport>) {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(all).unwrap_or_default();
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &*self.path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "could not save task states");
        }
    }
}
