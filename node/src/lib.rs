//! The Canopy node: the program people run.
//!
//! * [`share`] — shared folders, hashing and the hash cache.
//! * [`serve`] — answering peers' requests for content.
//! * [`fetch`] — downloading content by hash, verified block by block.
//! * [`node`] — a running node: identity, endpoint, shares, accept loop.
//! * [`demo`] — the self-contained loopback demo behind `canopy demo`.

pub mod demo;
pub mod fetch;
pub mod fileio;
pub mod node;
pub mod serve;
pub mod share;

pub use node::{Node, NodeConfig};
