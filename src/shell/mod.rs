//! The shell: everything that talks to the network, and no rule of its own. It feeds the pure
//! layer (`crate::pure`) with what the cluster holds and applies what comes out.
//!
//! - [`authz`]: the decision service gateways ask about each tool call (`decide::decide`);
//! - [`index`]: the watches, their stores and the live authority snapshot;
//! - [`controller`]: the reconcilers: fetch, assess, apply projections, write status, publish
//!   events, requeue;
//! - [`webhook`]: the HTTPS admission webhook around `admission::review`;
//! - [`telemetry`]: logs, Prometheus metrics and the plain-HTTP admin port;
//! - [`operator`]: `mandate run`, which wires all of them into one process.

pub mod authz;
pub mod controller;
pub mod index;
pub mod operator;
pub mod telemetry;
pub mod webhook;
