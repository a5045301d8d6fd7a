//! The pure half of the protocol: what is said on the wire and how content is
//! verified. Nothing in here performs I/O.

pub mod birthday;
pub mod bitfield;
pub mod budget;
pub mod content;
pub mod credence;
pub mod dynamic;
pub mod election;
pub mod frame;
pub mod id;
pub mod keywords;
pub mod lan;
pub mod link;
pub mod nat;
pub mod nearest;
pub mod network;
pub mod portmap;
pub mod possession;
pub mod qrp;
pub mod relay;
pub mod resume;
pub mod routing;
pub mod search;
pub mod wire;

pub use bitfield::{Bitfield, WireBitfield};
pub use content::{BlockHashes, BlockLayout, ContentError};
pub use frame::{FrameError, MAX_CONTROL_FRAME};
pub use id::{ContentHash, IdError, PeerAddr, PeerId};
pub use link::{Link, LinkError};
pub use search::{FileEntry, FileKind, Hello, Hit, LeafUpdate, Query, SessionNotice};
pub use wire::{Request, Response};

/// Protocol version carried in the QUIC ALPN. A peer speaking another version
/// fails the handshake instead of misreading our frames.
pub const ALPN: &[u8] = b"canopy/0";
