//! The learner's tools. Each looks at a cluster from the outside (files, `/proc`, the API) and
//! writes through the writer it is given, so every output can be snapshot-tested in-process.

pub mod bench;
pub mod certs;
pub mod cluster_info;
pub mod output;
pub mod probe;
pub mod ps;
