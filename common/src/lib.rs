//! Canopy's shared core.
//!
//! * [`proto`] is pure: identifiers, wire messages and their framing, content
//!   hashing and block verification. It never touches a socket, a runtime or
//!   the clock, so the network simulator can run exactly the code the real
//!   nodes run.
//! * [`net`] (cargo feature `net`, on by default) is the one place that opens
//!   QUIC: node identity on disk, mutually authenticated rustls configs, the
//!   quinn endpoint and frame I/O over streams.
//! * [`sync`]: locks that outlive a panic elsewhere.

pub mod proto;
pub mod sync;

#[cfg(feature = "net")]
pub mod net;
