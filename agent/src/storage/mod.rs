//! Storage the host shares or attaches: virtio-fs tags (e.g. a container's
//! rootfs) and block devices, mounted where the host asks.

mod error;
mod manager;
pub(crate) mod request;

pub use error::StorageError;
pub use manager::StorageManager;
pub use request::{parse_options, MountSpec};
