//! virtio-vsock with a Firecracker-compatible *hybrid vsock* host side.
//!
//! The guest talks virtio-vsock; the host side is a Unix socket:
//!
//! * **Host to guest.** The device listens on `uds_path`. A host client
//!   connects and writes `CONNECT <port>\n`; the device opens a connection to
//!   the guest's listener on `<port>` and, once the guest accepts, answers the
//!   client `OK <host port>\n`. From then on bytes flow both ways. If the guest
//!   refuses (RST), or the line is malformed or longer than 32 bytes, the
//!   client's socket is closed.
//! * **Guest to host.** A guest connection to host CID 2, port `P`, is
//!   forwarded to the Unix socket `<uds_path>_P` if something listens there;
//!   otherwise the guest gets RST.
//!
//! Module layout: [`device`] is the [`VirtioDevice`](crate::VirtioDevice)
//! face, `event_handler` the worker thread running the queues, `packet` the
//! header and descriptor-chain parsing, `unix_backend` the connection
//! multiplexer (host sockets and epoll), `connection` the per-connection state
//! machine with credit-based flow control, `tx_buf` the bounded guest-to-host
//! buffer and `uds` the non-blocking Unix socket connect.

mod connection;
pub mod device;
mod event_handler;
pub mod packet;
mod tx_buf;
mod uds;
mod unix_backend;

#[cfg(test)]
mod test_guest;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use device::VsockDevice;

/// The host's CID.
pub const VSOCK_HOST_CID: u64 = 2;
/// Number of queues: RX, TX, event.
pub const NUM_QUEUES: usize = 3;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest packet payload accepted from or sent to the guest.
pub const MAX_PKT_BUF_SIZE: u32 = 64 * 1024;
/// Per-connection buffer for guest data the host reader has not taken yet;
/// also the `buf_alloc` advertised to the guest.
pub const CONN_TX_BUF_SIZE: u32 = 256 * 1024;
/// Once this many forwarded bytes have not been reported to the guest, a
/// credit update is sent.
pub const CONN_CREDIT_UPDATE_THRESHOLD: u32 = CONN_TX_BUF_SIZE / 2;
/// Maximum number of connections (including host clients that have not sent
/// their `CONNECT` line yet).
pub const MAX_CONNECTIONS: usize = 1024;
/// Maximum length of the `CONNECT <port>\n` line, newline included.
pub const MAX_CONNECT_LINE: usize = 32;
/// How long the guest has to answer a connection request, and to answer a
/// full shutdown with RST, before the device resets the connection itself.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(2);
/// Maximum number of queued RST replies to packets for unknown connections;
/// while it is full the device stops taking packets from the TX queue.
pub const MAX_PENDING_RST: usize = 256;

/// Socket type: stream.
pub const TYPE_STREAM: u16 = 1;
/// Packet operations.
pub const OP_REQUEST: u16 = 1;
/// Packet operations.
pub const OP_RESPONSE: u16 = 2;
/// Packet operations.
pub const OP_RST: u16 = 3;
/// Packet operations.
pub const OP_SHUTDOWN: u16 = 4;
/// Packet operations.
pub const OP_RW: u16 = 5;
/// Packet operations.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Packet operations.
pub const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Errors of the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved or does not fit the 32-bit address space.
    #[error("invalid guest CID {0}: must be in 3..=0xfffffffe")]
    InvalidCid(u64),
    /// Binding the host Unix socket failed (for instance because the path
    /// already exists: stale sockets must be removed by the caller).
    #[error("failed to listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating the multiplexer's epoll instance or registering the listener
    /// failed.
    #[error("failed to set up the vsock event loop: {0}")]
    Epoll(#[source] io::Error),
}
