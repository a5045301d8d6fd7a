//! The supernode role. A node that the election (or `--role supernode`)
//! makes a supernode runs this in-process: it keeps sessions with its
//! leaves, indexes what they share, answers and floods queries.
//!
//! Nothing lives here yet: leaf sessions and the index arrive with the
//! index-and-search work. The crate exists now so the dependency direction
//! `node → supernode → common` is fixed from the start.
