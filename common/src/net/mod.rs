//! The QUIC layer: the only code in Canopy that opens sockets.
//!
//! * [`identity`] — the node's long-term Ed25519 key on disk; its public half
//!   is the node's [`PeerId`].
//! * [`tls`] — rustls configs for mutual authentication with the node key,
//!   as an RFC 7250 raw public key or in a self-signed X.509 certificate for
//!   stacks without raw keys: no authorities, the key *is* the identity.
//! * [`endpoint`] — one quinn endpoint per node, for dialing and accepting.
//! * [`membership`] — private networks: who may connect, proven on every
//!   connection, changeable while the node runs.
//! * [`stream`] — control frames over QUIC streams.

pub mod endpoint;
pub mod identity;
pub mod membership;
pub mod stream;
pub mod tls;

pub use endpoint::{
    canonical, local_ip, remote_addr, remote_peer_id, Endpoint, EndpointConfig, Nearest, PUNCH_PAYLOAD,
};
pub use identity::NodeKey;
pub use membership::{Membership, Network, NOT_A_MEMBER};
pub use stream::{ask, read_frame, write_frame};
pub use tls::CertType;

use std::path::PathBuf;

use crate::proto::{FrameError, PeerId};

/// Everything that can go wrong below the application protocol.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot read or write the node key {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the node key {path} is damaged ({reason}); move it aside to create a new identity")]
    KeyInvalid { path: PathBuf, reason: String },
    #[error("cannot open a UDP socket on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot dial {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the peer at {addr} is not {expected}: the handshake could not prove it holds that key")]
    NotThatPeer {
        expected: PeerId,
        addr: std::net::SocketAddr,
    },
    #[error("peer presented no usable identity")]
    NoPeerIdentity,
    #[error("expected peer {expected} but reached {actual}")]
    WrongPeer { expected: PeerId, actual: PeerId },
    #[error("{peer} is not a member of network {network}: connection closed")]
    NotAMember { peer: PeerId, network: String },
    #[error("refused by {peer}: not a member of {network}")]
    RefusedBy { peer: PeerId, network: String },
    #[error(
        "refused by {peer} at the handshake: we are in {network} and it is not (a private \
         network admits only holders of its key)"
    )]
    NoCommonNetwork { peer: PeerId, network: String },
    #[error("{peer} did not prove its network membership in time")]
    ProofTimeout { peer: PeerId },
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream ended before the message was complete")]
    Truncated,
    #[error("bad frame from peer: {0}")]
    Frame(#[from] FrameError),
    #[error("stream already closed")]
    ClosedStream(#[from] quinn::ClosedStream),
}

impl From<quinn::ReadExactError> for NetError {
    fn from(error: quinn::ReadExactError) -> Self {
        match error {
            quinn::ReadExactError::FinishedEarly(_) => NetError::Truncated,
            quinn::ReadExactError::ReadError(error) => NetError::Read(error),
        }
    }
}

/// Fresh random bytes from the operating system (query ids, nonces).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source works");
    bytes
}
