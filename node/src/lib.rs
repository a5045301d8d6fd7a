//! The Canopy node: the program people run.
//!
//! * [`share`] — shared folders, hashing and the hash cache.
//! * [`state`] — what one node's connections, downloads and services share.
//! * [`serve`] — answering peers: one dispatch over every request family.
//! * [`download`] — multi-source, verified, resumable downloads by hash.
//! * [`node`] — a running node: identity, endpoint, shares, accept loop.
//! * [`role`] — playing a role and re-deciding it (the election at run time).
//! * [`network`] — a private network's key and allow-list, re-read live.
//! * [`searcher`] — asking the network: searches and sources by hash.
//! * [`download_manager`] — the desktop app's downloads (list, pause, resume).
//! * [`measure`] — the election's measurements: machine, bandwidth, reachability.
//! * [`folders`] — shared folders, changeable while the node runs.
//! * [`datalock`] — one running node per data folder.
//! * [`groups`] — private groups on disk (key, allow-list, settings).
//! * [`web`] — the local web UI, its API, metrics and the HTTP gateway.
//! * [`demo`] — the self-contained loopback demo behind `canopy demo`.

pub mod admission;
pub mod birthday;
pub mod cli;
pub mod datalock;
pub mod demo;
pub mod download;
pub mod download_manager;
pub mod fileio;
pub mod folders;
pub mod groups;
pub mod hostcache;
pub mod lan;
pub mod leaf;
pub mod measure;
pub mod network;
pub mod node;
pub mod portmap;
pub mod ratelimit;
pub mod reach;
pub mod role;
pub mod searcher;
pub mod serve;
pub mod share;
pub mod state;
pub mod swarm;
pub mod tags;
pub mod units;
pub mod votes;
pub mod web;

pub use node::{Node, NodeConfig};
