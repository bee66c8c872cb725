//! The pure layer: data in, data out. Nothing here does I/O, talks to the API server or reads a
//! clock (callers pass `now`). Every rule mandate enforces lives here once, and every caller
//! (the reconcilers, the webhook, `mandate check`, `mandate inventory`) calls the same
//! functions.
//!
//! - [`api`]: the three CRD types, labels, annotations and condition types;
//! - [`authority`]: the authority snapshot (identities, live tools, the delegation graph) and
//!   the one validator of mandate's resources, with the one closed set of reason codes;
//! - [`project`]: the desired ServiceAccount and NetworkPolicy of an identity;
//! - [`assess`]: one assessment per kind: conditions, status, events and the next change;
//! - [`admission`]: one review per resource kind: a verdict with reason codes;
//! - [`decide`]: one decision per tool call: allowed, or the reason code that refused it.

pub mod admission;
pub mod api;
pub mod assess;
pub mod authority;
pub mod decide;
pub mod project;
