//! The containers the agent knows, by id, with a reservation while one is
//! being created so that ids and cgroups are never claimed twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncMutexGuard};

use super::error::ContainerError;
use super::layout::BundleLayout;
use crate::process::ManagedProcess;

/// A created container.
#[derive(Debug)]
pub struct ContainerRecord {
    pub id: String,
    pub bundle: BundleLayout,
    /// `linux.cgroupsPath`, absolute below the cgroup v2 root.
    pub cgroup_path: String,
    /// The init process, as the `Process` service knows it.
    pub init: Arc<ManagedProcess>,
    /// `memory.events` oom_kill right after creation.
    pub oom_kills_at_create: u64,
    /// Serializes operations that change the container; `true` once
    /// removed (a waiter that gets the lock then finds nothing).
    ops: AsyncMutex<bool>,
}

impl ContainerRecord {
    pub fn new(
        id: String,
        bundle: BundleLayout,
        cgroup_path: String,
        init: Arc<ManagedProcess>,
        oom_kills_at_create: u64,
    ) -> Self {
        Self {
            id,
            bundle,
            cgroup_path,
            init,
            oom_kills_at_create,
            ops: AsyncMutex::new(false),
        }
    }

    /// Waits for other operations on this container to finish.
    pub async fn lock(&self) -> Result<OpsGuard<'_>, ContainerError> {
        let guard = self.ops.lock().await;
        if *guard {
            return Err(ContainerError::NotFound {
                id: self.id.clone(),
            });
        }
        Ok(OpsGuard(guard))
    }
}

/// Exclusive right to change one container.
#[derive(Debug)]
pub struct OpsGuard<'a>(AsyncMutexGuard<'a, bool>);

impl OpsGuard<'_> {
    /// Marks the container removed for operations waiting on it.
    pub fn mark_removed(&mut self) {
        *self.0 = true;
    }
}

#[derive(Debug)]
enum Slot {
    Creating { cgroup_path: Option<String> },
    Ready(Arc<ContainerRecord>),
}

/// What a lookup finds.
#[derive(Debug, Clone)]
pub enum Lookup {
    Creating,
    Ready(Arc<ContainerRecord>),
}

/// Id → container.
#[derive(Debug, Default)]
pub struct ContainerTable {
    slots: Mutex<HashMap<String, Slot>>,
}

impl ContainerTable {
    /// Claims `id` for a creation; ALREADY_EXISTS if it is taken.
    pub fn reserve(&self, id: &str) -> Result<Reservation<'_>, ContainerError> {
        let mut slots = self.lock();
        if slots.contains_key(id) {
            return Err(ContainerError::AlreadyExists { id: id.to_owned() });
        }
        slots.insert(id.to_owned(), Slot::Creating { cgroup_path: None });
        Ok(Reservation {
            table: self,
            id: id.to_owned(),
            committed: false,
        })
    }

    pub fn get(&self, id: &str) -> Result<Lookup, ContainerError> {
        match self.lock().get(id) {
            Some(Slot::Creating { .. }) => Ok(Lookup::Creating),
            Some(Slot::Ready(record)) => Ok(Lookup::Ready(Arc::clone(record))),
            None => Err(ContainerError::NotFound { id: id.to_owned() }),
        }
    }

    /// A created container, or why there is none to work on.
    pub fn get_ready(
        &self,
        op: &'static str,
        id: &str,
    ) -> Result<Arc<ContainerRecord>, ContainerError> {
        match self.get(id)? {
            Lookup::Ready(record) => Ok(record),
            Lookup::Creating => Err(ContainerError::WrongState {
                op,
                id: id.to_owned(),
                status: super::status::ContainerStatus::Creating,
                hint: "",
            }),
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // Single inserts and removes; a panic cannot leave the map torn.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An id being created. Dropped without [`commit`](Self::commit), the id is
/// free again.
#[derive(Debug)]
pub struct Reservation<'a> {
    table: &'a ContainerTable,
    id: String,
    committed: bool,
}

impl Reservation<'_> {
    /// Claims the cgroup; ALREADY_EXISTS-like if another container has it.
    pub fn claim_cgroup(&self, cgroup_path: &str) -> Result<(), ContainerError> {
        let mut slots = self.table.lock();
        let user = slots.iter().find_map(|(id, slot)| {
            let taken = match slot {
                Slot::Creating { cgroup_path: path } => path.as_deref() == Some(cgroup_path),
                Slot::Ready(record) => record.cgroup_path == cgroup_path,
            };
            (taken && *id != self.id).then(|| id.clone())
        });
        if let Some(other) = user {
            return Err(ContainerError::CgroupInUse {
                id: self.id.clone(),
                cgroup: cgroup_path.to_owned(),
                other,
            });
        }
        slots.insert(
            self.id.clone(),
            Slot::Creating {
                cgroup_path: Some(cgroup_path.to_owned()),
            },
        );
        Ok(())
    }

    pub fn commit(mut self, record: Arc<ContainerRecord>) {
        self.table
            .lock()
            .insert(self.id.clone(), Slot::Ready(record));
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.table.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reserved_until_dropped() {
        let table = ContainerTable::default();
        let reservation = table.reserve("web").unwrap();
        assert!(matches!(table.get("web"), Ok(Lookup::Creating)));
        assert!(matches!(
            table.reserve("web"),
            Err(ContainerError::AlreadyExists { .. })
        ));
        drop(reservation);
        assert!(matches!(
            table.get("web"),
            Err(ContainerError::NotFound { .. })
        ));
        table.reserve("web").unwrap();
    }

    #[test]
    fn a_cgroup_is_claimed_once() {
        let table = ContainerTable::default();
        let first = table.reserve("a").unwrap();
        first.claim_cgroup("/vmrun/shared").unwrap();
        let second = table.reserve("b").unwrap();
        let error = second.claim_cgroup("/vmrun/shared").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"create container "b": cgroup /vmrun/shared is already used by container "a""#
        );
        second.claim_cgroup("/vmrun/b").unwrap();
    }
}
