//! A namespace's opt-in at admission: the labels of a Namespace before and after an UPDATE, who
//! asks, the [`Snapshot`] (or none before the caches synced) and the installation's
//! [`AdmissionConfig`] in; a [`Verdict`] out, and [`let_through`], the weakening a verdict let
//! through for the shell to record (an Event and a metric). Pure: never does I/O.
//!
//! A namespace opts in with `mandate.dev/mode`; every pod there is then reviewed, labelled or
//! not. Weakening that label (enforce to warn or audit, warn to audit, or removing it) turns
//! refusals into warnings or lets unlabelled pods run as an agent's ServiceAccount unreviewed,
//! so while AgentIdentities live in the namespace only the approver group may do it
//! (`ModeWeakened`, always enforced, like mandate's own kinds). Every weakening that is let
//! through (by an approver, or where no identity lives) is admitted as `audited` with the
//! `ModeWeakened` code, so it is in the API server's audit log, and recorded by the shell.
//! Strengthening a mode, or any other change of a namespace, is not reviewed. A label value
//! that names no mode counts as `enforce`, as it does for pods.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::Operation;

use super::mandate_resources::Requester;
use super::request::{Object, Request};
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::{Decision, Mode, Verdict};
use crate::api::MODE_LABEL;
use crate::authority::{Finding, Reason};

/// What admission reads of a Namespace: its metadata (labels) only.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct NamespaceHead {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A change of a namespace's mode that weakens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weakening {
    pub namespace: String,
    pub from: Mode,
    /// `None`: the label was removed (the namespace opted out).
    pub to: Option<Mode>,
    /// Who made the change.
    pub by: String,
    /// Whether they are in the approver group.
    pub by_approver: bool,
}

/// The mode a namespace's labels ask for: `None` when it has no `mandate.dev/mode` label; a
/// value that names no mode enforces.
pub fn namespace_mode(labels: Option<&BTreeMap<String, String>>) -> Option<Mode> {
    labels
        .and_then(|labels| labels.get(MODE_LABEL))
        .map(|value| Mode::parse(value).unwrap_or(Mode::Enforce))
}

/// How much a mode holds back: no mode reviews no unlabelled pod; audit records; warn tells the
/// requester; enforce refuses.
fn strength(mode: Option<Mode>) -> u8 {
    match mode {
        None => 0,
        Some(Mode::Audit) => 1,
        Some(Mode::Warn) => 2,
        Some(Mode::Enforce) => 3,
    }
}

/// `(from, to)` when going from `old` to `new` weakens the namespace's mode.
pub fn weakened(old: &ObjectMeta, new: &ObjectMeta) -> Option<(Mode, Option<Mode>)> {
    let from = namespace_mode(old.labels.as_ref())?;
    let to = namespace_mode(new.labels.as_ref());
    (strength(to) < strength(Some(from))).then_some((from, to))
}

/// How a mode reads in messages: `enforce`, or `none` for no label.
fn mode_name(mode: Option<Mode>) -> &'static str {
    mode.map_or("none (label removed)", Mode::as_str)
}

/// Reviews an UPDATE of namespace `name` from `old` to `new` by `requester`. A weakening is
/// refused (`ModeWeakened`) while identities live in the namespace and the requester is not in
/// the approver group; before the caches synced, mandate cannot tell whether identities live
/// there, so a weakening by anyone but an approver is refused (`NotReady`). Let through, it is
/// `audited` with `ModeWeakened`.
pub fn review_namespace_update(
    name: &str,
    old: Option<&ObjectMeta>,
    new: &ObjectMeta,
    requester: Requester<'_>,
    snapshot: Option<&Snapshot>,
    config: &AdmissionConfig,
) -> Verdict {
    let subject = format!("Namespace {name}");
    // An old object that could not be read: nothing tells what the mode was, so nothing to
    // compare. The API server always sends it on UPDATE.
    let Some((from, to)) = old.and_then(|old| weakened(old, new)) else {
        return Verdict::skipped(subject);
    };
    let change = format!("{MODE_LABEL} from {} to {}", from.as_str(), mode_name(to));
    let approvers = config.approver_group.as_str();
    if requester.in_group(approvers) {
        return Verdict::reviewed(subject, Mode::Audit).finding(Finding::new(
            Reason::ModeWeakened,
            format!(
                "{change} by {} of the approver group {approvers}: recorded",
                requester.username
            ),
        ));
    }
    let Some(snapshot) = snapshot else {
        return Verdict::reviewed(subject, Mode::Enforce).finding(Finding::new(
            Reason::NotReady,
            format!(
                "mandate is starting and cannot tell yet whether AgentIdentities live in {name}: \
                 retry in a few seconds, or ask a member of {approvers} to change {change}"
            ),
        ));
    };
    let identities: Vec<&str> = snapshot
        .authority()
        .identities_in(name)
        .filter_map(|identity| identity.metadata.name.as_deref())
        .collect();
    if identities.is_empty() {
        return Verdict::reviewed(subject, Mode::Audit).finding(Finding::new(
            Reason::ModeWeakened,
            format!(
                "{change} by {}, no AgentIdentity lives there: recorded",
                requester.username
            ),
        ));
    }
    const NAMED: usize = 5;
    let mut named = identities
        .iter()
        .take(NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if identities.len() > NAMED {
        named.push_str(&format!(" and {} more", identities.len() - NAMED));
    }
    Verdict::reviewed(subject, Mode::Enforce).finding(Finding::new(
        Reason::ModeWeakened,
        format!(
            "{} AgentIdentit{} live in {name} ({named}): weakening {change} would let their \
             ServiceAccounts' pods run less reviewed, so only a member of {approvers} may do it; \
             ask one, or delete the identities first",
            identities.len(),
            if identities.len() == 1 { "y" } else { "ies" },
        ),
    ))
}

/// The weakening `verdict` let through for `request`, when it did: what the shell records (an
/// Event on the namespace and `mandate_namespace_mode_weakened_total`). `None` for anything
/// else, a refused weakening included.
pub fn let_through(
    request: &Request,
    verdict: &Verdict,
    config: &AdmissionConfig,
) -> Option<Weakening> {
    let Object::Namespace(namespaces) = &request.object else {
        return None;
    };
    if request.operation != Operation::Update
        || verdict.decision() == Some(Decision::Denied)
        || !verdict.codes().contains(&Reason::ModeWeakened.code())
    {
        return None;
    }
    let new = namespaces.object.get().ok()?;
    let (from, to) = weakened(&namespaces.old.as_ref()?.metadata, &new.metadata)?;
    let requester = Requester::from_user_info(&request.user_info);
    Some(Weakening {
        namespace: request.name.clone(),
        from,
        to,
        by: requester.username.to_owned(),
        by_approver: requester.in_group(&config.approver_group),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    fn labelled(mode: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(NS.to_owned()),
            labels: mode.map(|m| [(MODE_LABEL.to_owned(), m.to_owned())].into()),
            ..ObjectMeta::default()
        }
    }

    fn with_identity() -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").ready().build())
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .build()
    }

    fn empty() -> Snapshot {
        Snapshot::builder(Authority::builder().build()).build()
    }

    const APPROVERS: [&str; 1] = ["mandate:approvers"];

    fn review(
        from: Option<&str>,
        to: Option<&str>,
        groups: &[String],
        snapshot: Option<&Snapshot>,
    ) -> Verdict {
        review_namespace_update(
            NS,
            Some(&labelled(from)),
            &labelled(to),
            Requester::new("dev", groups),
            snapshot,
            &AdmissionConfig::default(),
        )
    }

    #[test]
    fn enforce_to_warn_audit_or_none_and_warn_to_audit_weaken_the_mode() {
        let weakens = |from: Option<&str>, to: Option<&str>| {
            weakened(&labelled(from), &labelled(to)).is_some()
        };
        assert!(weakens(Some("enforce"), Some("warn")));
        assert!(weakens(Some("enforce"), Some("audit")));
        assert!(weakens(Some("enforce"), None));
        assert!(weakens(Some("warn"), Some("audit")));
        assert!(weakens(Some("audit"), None));
        // A value naming no mode enforces, so leaving it for warn weakens too.
        assert!(weakens(Some("strict"), Some("warn")));
        assert!(!weakens(Some("warn"), Some("enforce")));
        assert!(!weakens(None, Some("audit")));
        assert!(!weakens(Some("enforce"), Some("enforce")));
        assert!(!weakens(Some("enforce"), Some("strict")));
        assert!(!weakens(None, None));
    }

    #[test]
    fn removing_the_mode_label_where_an_identity_lives_is_refused_with_mode_weakened() {
        let verdict = review(Some("enforce"), None, &[], Some(&with_identity()));
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.codes(), ["ModeWeakened"]);
        let message = verdict.message().unwrap_or_default();
        assert!(message.contains("researcher"), "{message}");
        assert!(message.contains("mandate:approvers"), "{message}");
    }

    #[test]
    fn an_approver_may_weaken_the_mode_and_it_is_recorded_as_audited() {
        let groups = APPROVERS.map(str::to_owned);
        let verdict = review(
            Some("enforce"),
            Some("warn"),
            &groups,
            Some(&with_identity()),
        );
        assert_eq!(verdict.decision(), Some(Decision::Audited));
        assert_eq!(verdict.codes(), ["ModeWeakened"]);
    }

    #[test]
    fn weakening_where_no_identity_lives_is_let_through_and_recorded() {
        let verdict = review(Some("enforce"), None, &[], Some(&empty()));
        assert_eq!(verdict.decision(), Some(Decision::Audited));
        assert_eq!(verdict.codes(), ["ModeWeakened"]);
    }

    #[test]
    fn strengthening_or_other_changes_are_skipped() {
        let verdict = review(Some("audit"), Some("enforce"), &[], Some(&with_identity()));
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
        let verdict = review(
            Some("enforce"),
            Some("enforce"),
            &[],
            Some(&with_identity()),
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }

    #[test]
    fn before_the_caches_synced_a_weakening_is_refused_except_to_an_approver() {
        let verdict = review(Some("enforce"), Some("audit"), &[], None);
        assert_eq!(verdict.decision(), Some(Decision::Denied));
        assert_eq!(verdict.codes(), ["NotReady"]);
        let groups = APPROVERS.map(str::to_owned);
        let verdict = review(Some("enforce"), Some("audit"), &groups, None);
        assert_eq!(verdict.decision(), Some(Decision::Audited));
    }
}
