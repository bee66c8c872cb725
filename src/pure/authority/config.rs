//! The knobs the authority rules read: plain values in, nothing out. No I/O.

use k8s_openapi::jiff::SignedDuration;

use super::risk::RiskFloor;

/// Settings of the validation rules. The trust domain is a projection setting and lives in
/// `project`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How far ahead of now a High-risk tool's `validUntil` may lie (default 24h).
    pub max_high_risk_validity: SignedDuration,
    /// What makes a tool High whatever it declares.
    pub risk_floor: RiskFloor,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_high_risk_validity: SignedDuration::from_hours(24),
            risk_floor: RiskFloor::default(),
        }
    }
}
