//! The network simulator. It will drive the sans-IO routing and election
//! state machines from `canopy_common::proto` with a virtual clock, so a
//! change to routing is measured at 10^5 nodes before it ships.
//!
//! Nothing lives here yet: the state machines it runs arrive with the
//! overlay and election work. The crate already depends on `canopy-common`
//! without its `net` feature, so the build proves `proto` stays pure.
