//! Windows at an instant: a ToolBinding or DelegationPolicy and a timestamp in; whether it is
//! live, a binding's phase by window, the next edge of a window, and the tools a binding grants
//! out. Pure: no I/O, no clock (callers pass `now`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{DelegationPolicy, LiveTool, Risk, Tool, ToolBinding, ToolBindingPhase};

/// One tool an agent holds now, with the binding that grants it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldTool<'a> {
    pub binding: &'a ToolBinding,
    pub tool: &'a Tool,
    /// The tool's effective risk: declared, or High by the installation's risk floor.
    pub risk: Risk,
    /// The binding's validUntil; `None` when the grant does not expire.
    pub expires_at: Option<Timestamp>,
}

impl HeldTool<'_> {
    pub fn binding_name(&self) -> &str {
        self.binding.metadata.name.as_deref().unwrap_or_default()
    }

    /// The audience a token for this tool carries (`Tool::audience_in` the binding's
    /// namespace): what the decision service requires and the pod's credential projects.
    pub fn audience(&self) -> String {
        self.tool.audience_in(
            self.binding
                .metadata
                .namespace
                .as_deref()
                .unwrap_or_default(),
        )
    }

    /// The entry of `AgentIdentity.status.tools` for this tool.
    pub fn to_live_tool(&self) -> LiveTool {
        LiveTool {
            name: self.tool.name.clone(),
            binding: self.binding_name().to_owned(),
            risk: self.risk,
            actions: self.tool.actions.clone(),
            expires_at: self.expires_at.map(Time),
        }
    }
}

/// The validity window of a ToolBinding: `[validFrom, validUntil)`, either end optional.
pub trait BindingWindow {
    /// Whether `now` lies inside the window.
    fn is_live_at(&self, now: Timestamp) -> bool;
    /// Pending, Active or Expired by the window alone (Invalid is the validator's call; see
    /// `Authority::binding_phase`).
    fn window_phase(&self, now: Timestamp) -> ToolBindingPhase;
    /// The next edge of the window strictly after `now`, where its phase changes.
    fn next_window_edge(&self, now: Timestamp) -> Option<Timestamp>;
}

impl BindingWindow for ToolBinding {
    fn is_live_at(&self, now: Timestamp) -> bool {
        self.window_phase(now) == ToolBindingPhase::Active
    }

    fn window_phase(&self, now: Timestamp) -> ToolBindingPhase {
        if self
            .spec
            .valid_until
            .as_ref()
            .is_some_and(|until| now >= until.0)
        {
            ToolBindingPhase::Expired
        } else if self
            .spec
            .valid_from
            .as_ref()
            .is_some_and(|from| now < from.0)
        {
            ToolBindingPhase::Pending
        } else {
            ToolBindingPhase::Active
        }
    }

    fn next_window_edge(&self, now: Timestamp) -> Option<Timestamp> {
        [
            self.spec.valid_from.as_ref(),
            self.spec.valid_until.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.0)
        .filter(|t| *t > now)
        .min()
    }
}

/// The validity of a DelegationPolicy: until its optional validUntil.
pub trait PolicyWindow {
    /// Whether the policy still grants anything at `now`.
    fn is_live_at(&self, now: Timestamp) -> bool;
    /// Its validUntil when that lies strictly after `now`.
    fn next_window_edge(&self, now: Timestamp) -> Option<Timestamp>;
}

impl PolicyWindow for DelegationPolicy {
    fn is_live_at(&self, now: Timestamp) -> bool {
        self.spec
            .valid_until
            .as_ref()
            .is_none_or(|until| now < until.0)
    }

    fn next_window_edge(&self, now: Timestamp) -> Option<Timestamp> {
        self.spec
            .valid_until
            .as_ref()
            .map(|t| t.0)
            .filter(|t| *t > now)
    }
}
