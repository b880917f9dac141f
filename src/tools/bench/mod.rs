//! Benchmarks as commands: each runs klab's component and its upstream counterpart in the same
//! run, with the same settings, and prints them side by side with the ratio.

pub mod api;
pub mod proxy;
pub mod scheduler;
pub mod store;
