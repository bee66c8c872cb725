//! mandate: accountable owners, workload identity, time-bounded tools and bounded delegation
//! for AI agents on Kubernetes.
//!
//! Pure modules (`api`, `authority`, `project`, `admission` decisions) take data and return
//! data; only `controller` and the servers talk to the network.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod assess;
pub mod authority;
pub mod cli;
pub mod controller;
pub mod index;
pub mod project;
pub mod telemetry;
