//! mandate: accountable owners, workload identity, time-bounded tools and bounded delegation
//! for AI agents on Kubernetes.
//!
//! Three layers, one folder each:
//! - [`pure`] (`src/pure/`): data in, data out; no I/O, no clock. The API types, the authority
//!   and its one validator, the projections, one assessment per kind and one admission review
//!   per resource kind. Every rule lives here once.
//! - [`shell`] (`src/shell/`): the only code that talks to the network (the watches and their
//!   index, the reconcilers, the webhook and admin servers, the `mandate run` wiring). It feeds
//!   the pure layer and applies what comes out; it holds no rule.
//! - [`cli`] (`src/cli/`): the command line on top (`run`, `check`, `inventory`, `crds`).
//!
//! The modules of both lower layers are re-exported here, so `crate::api` or
//! `mandate::admission` name them without their layer.
#![forbid(unsafe_code)]

pub mod cli;
pub mod pure;
pub mod shell;

pub use pure::{admission, api, assess, authority, decide, project};
pub use shell::{authz, controller, index, operator, telemetry, webhook};
