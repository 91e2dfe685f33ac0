//! The processes the agent started, by exec id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::error::ProcessError;
use super::managed::ManagedProcess;
use super::spawn::SpawnedProcess;

/// How long a process stays known after its exit was first reported, if
/// some of its output streams were never read to the end. Readers attached
/// by then keep reading; only new ones are refused.
pub const FORGET_AFTER_WAIT: Duration = Duration::from_secs(30);

/// Exec id → process. A process stays here until its exit was waited for
/// and its output read to the end (or [`FORGET_AFTER_WAIT`] after the
/// wait), so readers that attach late still get its output.
#[derive(Debug, Default)]
pub struct ProcessTable {
    next_id: AtomicU64,
    processes: Mutex<HashMap<String, Arc<ManagedProcess>>>,
}

impl ProcessTable {
    /// Starts tracking a freshly spawned process under a new exec id.
    pub fn insert(&self, spawned: SpawnedProcess) -> Result<Arc<ManagedProcess>, ProcessError> {
        let exec_id = format!("exec-{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let process = ManagedProcess::start(exec_id.clone(), spawned)?;
        self.lock().insert(exec_id, Arc::clone(&process));
        Ok(process)
    }

    pub fn get(&self, exec_id: &str) -> Result<Arc<ManagedProcess>, ProcessError> {
        self.lock()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ProcessError::UnknownExec {
                exec_id: exec_id.to_owned(),
            })
    }

    /// Forgets the process if nothing about it is left to ask for.
    pub fn forget_if_finished(&self, exec_id: &str) {
        let mut processes = self.lock();
        if processes.get(exec_id).is_some_and(|p| p.is_finished()) {
            processes.remove(exec_id);
            tracing::debug!(exec_id, "process forgotten");
        }
    }

    /// Forgets the process [`FORGET_AFTER_WAIT`] from now, whatever is
    /// left unread, so clients that never read a stream cannot pile up
    /// finished processes. Exec ids are never reused, so a late removal
    /// cannot hit another process.
    pub fn forget_later(self: &Arc<Self>, exec_id: &str) {
        let table = Arc::downgrade(self);
        let exec_id = exec_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(FORGET_AFTER_WAIT).await;
            if let Some(table) = table.upgrade() {
                if table.lock().remove(&exec_id).is_some() {
                    tracing::debug!(exec_id, "unread process forgotten");
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<ManagedProcess>>> {
        // Inserts and removes are single calls; a panic cannot leave the map
        // half-updated.
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
