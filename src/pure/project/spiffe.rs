//! SPIFFE IDs: a trust domain, a namespace and a ServiceAccount in; the ID string out, in the
//! form Istio and SPIRE use by default (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`). Pure, no I/O.

use std::fmt;
use std::str::FromStr;

/// A trust domain name valid per the SPIFFE ID specification: 1 to 255 characters, each a
/// lowercase letter, digit, `.`, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

/// Why a string is not a trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustDomainError {
    #[error("parsing the trust domain: it is empty")]
    Empty,
    #[error("parsing the trust domain: it has {0} characters, at most 255 are allowed")]
    TooLong(usize),
    #[error(
        "parsing the trust domain: {0:?} is not allowed (only lowercase letters, digits, '.', '-' and '_')"
    )]
    InvalidCharacter(char),
}

impl TrustDomain {
    /// The longest trust domain the SPIFFE specification allows.
    pub const MAX_LEN: usize = 255;

    pub fn parse(name: &str) -> Result<TrustDomain, TrustDomainError> {
        if name.is_empty() {
            return Err(TrustDomainError::Empty);
        }
        if let Some(bad) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(TrustDomainError::InvalidCharacter(bad));
        }
        if name.len() > Self::MAX_LEN {
            return Err(TrustDomainError::TooLong(name.len()));
        }
        Ok(TrustDomain(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `cluster.local`, the Kubernetes and Istio default.
impl Default for TrustDomain {
    fn default() -> Self {
        TrustDomain("cluster.local".to_owned())
    }
}

impl FromStr for TrustDomain {
    type Err = TrustDomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::parse(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
pub fn spiffe_id(trust_domain: &TrustDomain, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spiffe_id_follows_the_istio_and_spire_form() {
        let td = TrustDomain::parse("prod.example.org").unwrap_or_default();
        assert_eq!(
            spiffe_id(&td, "agents", "researcher"),
            "spiffe://prod.example.org/ns/agents/sa/researcher"
        );
    }

    #[test]
    fn the_default_trust_domain_is_cluster_local() {
        assert_eq!(TrustDomain::default().as_str(), "cluster.local");
        assert_eq!("cluster.local".parse(), Ok(TrustDomain::default()));
    }

    #[test]
    fn a_trust_domain_allows_lowercase_letters_digits_dots_dashes_and_underscores() {
        assert!(TrustDomain::parse("my_td-1.example.com").is_ok());
    }

    #[test]
    fn a_trust_domain_is_refused_when_empty_too_long_or_with_other_characters() {
        assert_eq!(TrustDomain::parse(""), Err(TrustDomainError::Empty));
        assert_eq!(
            TrustDomain::parse(&"a".repeat(256)),
            Err(TrustDomainError::TooLong(256))
        );
        assert!(TrustDomain::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            TrustDomain::parse("Example.org"),
            Err(TrustDomainError::InvalidCharacter('E'))
        );
        assert_eq!(
            TrustDomain::parse("example.org:8080"),
            Err(TrustDomainError::InvalidCharacter(':'))
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org"),
            Err(TrustDomainError::InvalidCharacter(':'))
        );
    }
}
