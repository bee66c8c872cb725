//! What an admission review reads: an [`Authority`] snapshot, the namespaces' modes and the
//! legacy service-account-token Secrets known in the cluster, built once from plain objects
//! (metadata only: mandate never reads a Secret's data) and then only read; plus the
//! installation's [`AdmissionConfig`]. Out: lookups for the reviews, and [`Snapshot::unmanaged`],
//! what the snapshot knows of the unmanaged (the one rulebook of `mandate inventory` and the
//! `mandate_unmanaged_workloads` gauge). Pure: never does I/O.
//!
//! Lookups are hash-map or B-tree lookups by namespace and name, so the webhook's hot path stays
//! cheap; a [`Snapshot`] is `Send + Sync` and meant to be published behind
//! `arc_swap::ArcSwapOption`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::verdict::Mode;
use crate::api::AgentIdentity;
use crate::authority::Authority;

/// The annotation the API server's token controller sets on a legacy service-account-token
/// Secret: the ServiceAccount the token belongs to.
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The type of a legacy service-account-token Secret.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// The group whose members may approve High-risk grants, unless configured otherwise.
pub const DEFAULT_APPROVER_GROUP: &str = "mandate:approvers";
/// The namespace mandate runs in, unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "mandate-system";
/// The API server's own token audience unless configured otherwise: its `--api-audiences`
/// default, the `--service-account-issuer` most clusters use.
pub const DEFAULT_API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// Who may delete mandate's projections besides mandate, unless configured otherwise: the
/// garbage collector and the namespace controller as kube-controller-manager runs them with
/// `--use-service-account-credentials` (each controller its own ServiceAccount), and
/// kube-controller-manager's own user for clusters that run it without.
pub const DEFAULT_PROJECTION_DELETERS: [&str; 3] = [
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:kube-controller-manager",
];

/// Installation settings of admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// The mode for agent pods (labelled `mandate.dev/agent`) in namespaces without a
    /// `mandate.dev/mode` label, and for pods anywhere that run as an agent's ServiceAccount.
    /// Default enforce.
    pub default_mode: Mode,
    /// Members of this group may approve High-risk ToolBindings (four eyes). Default
    /// `mandate:approvers`.
    pub approver_group: String,
    /// mandate's own namespace: never reviewed, so mandate can always be repaired.
    pub own_namespace: String,
    /// The API server's audiences (its `--api-audiences`): it fills them into a TokenRequest
    /// that names none before admission, so a TokenRequest for them is a token for the API
    /// server, which every identity allows. Default [`DEFAULT_API_AUDIENCE`].
    pub api_audiences: Vec<String>,
    /// The usernames mandate itself authenticates as (`mandate run` asks the API server who it
    /// is, or is told): their NetworkPolicy writes are mandate's own, and they may delete its
    /// projections. Empty (`mandate check`): nobody's writes are mandate's.
    pub operator_users: Vec<String>,
    /// Who besides mandate may delete its projections (`ProtectedProjection`): Kubernetes'
    /// garbage collector and namespace controller. Default [`DEFAULT_PROJECTION_DELETERS`].
    pub projection_deleters: Vec<String>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            default_mode: Mode::Enforce,
            approver_group: DEFAULT_APPROVER_GROUP.to_owned(),
            own_namespace: DEFAULT_NAMESPACE.to_owned(),
            api_audiences: vec![DEFAULT_API_AUDIENCE.to_owned()],
            operator_users: Vec::new(),
            projection_deleters: DEFAULT_PROJECTION_DELETERS.map(str::to_owned).to_vec(),
        }
    }
}

/// Everything a review reads besides the request and the time. Immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    authority: Arc<Authority>,
    /// Namespace -> the mode its `mandate.dev/mode` label asks for.
    modes: HashMap<String, Mode>,
    /// Namespace -> legacy token Secret name -> the ServiceAccount it belongs to.
    token_secrets: HashMap<String, BTreeMap<String, String>>,
}

/// What a snapshot knows of the unmanaged, from [`Snapshot::unmanaged`]. Every list is sorted by
/// (namespace, name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unmanaged<'a> {
    /// (namespace, name) of the ServiceAccounts in mandate namespaces that no AgentIdentity
    /// claims.
    pub service_accounts: Vec<(&'a str, &'a str)>,
    /// Legacy service-account-token Secrets in mandate namespaces, or of an agent's
    /// ServiceAccount anywhere.
    pub token_secrets: Vec<UnmanagedTokenSecret<'a>>,
}

/// A legacy service-account-token Secret [`Snapshot::unmanaged`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmanagedTokenSecret<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub service_account: &'a str,
    /// The agent the ServiceAccount belongs to, if any.
    pub agent: Option<&'a str>,
}

/// Collects namespaces and Secret metadata around an authority snapshot.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    snapshot: Snapshot,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Snapshot>();
};

impl Snapshot {
    pub fn builder(authority: impl Into<Arc<Authority>>) -> SnapshotBuilder {
        SnapshotBuilder {
            snapshot: Snapshot {
                authority: authority.into(),
                ..Snapshot::default()
            },
        }
    }

    /// Builds a snapshot from the metadata of Namespaces and Secrets (a metadata-only watch is
    /// enough; Secrets that are not legacy service-account tokens are left out).
    pub fn from_objects<N, S>(
        authority: impl Into<Arc<Authority>>,
        namespaces: N,
        secrets: S,
    ) -> Snapshot
    where
        N: IntoIterator,
        N::Item: Borrow<ObjectMeta>,
        S: IntoIterator,
        S::Item: Borrow<ObjectMeta>,
    {
        let mut builder = Snapshot::builder(authority);
        namespaces
            .into_iter()
            .for_each(|n| builder.add_namespace(n.borrow()));
        secrets
            .into_iter()
            .for_each(|s| builder.add_secret(s.borrow()));
        builder.build()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The shared authority snapshot, for callers that keep it beyond this snapshot.
    pub fn authority_arc(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The mode a namespace's `mandate.dev/mode` label asks for; `None` when unlabelled.
    pub fn namespace_mode(&self, namespace: &str) -> Option<Mode> {
        self.modes.get(namespace).copied()
    }

    /// The ServiceAccount a known legacy token Secret belongs to.
    pub fn token_secret(&self, namespace: &str, secret: &str) -> Option<&str> {
        self.token_secrets
            .get(namespace)?
            .get(secret)
            .map(String::as_str)
    }

    /// Whether `namespace` holds an AgentIdentity.
    pub fn holds_identity(&self, namespace: &str) -> bool {
        self.authority.identities_in(namespace).next().is_some()
    }

    /// The agent a ServiceAccount belongs to: an identity claiming it (the first by name), or
    /// the agent a mandate-managed ServiceAccount is labelled for.
    pub fn agent_of_service_account(&self, namespace: &str, service_account: &str) -> Option<&str> {
        if let Some(identity) = self
            .authority
            .identity_for_service_account(namespace, service_account)
        {
            return identity.metadata.name.as_deref();
        }
        self.authority
            .managed_service_account_agent(namespace, service_account)
    }

    /// The unmanaged this snapshot knows of, by one rule for everyone who counts them
    /// (`mandate inventory`'s unmanaged section, the operator's `mandate_unmanaged_workloads`
    /// gauge):
    /// - a ServiceAccount in a mandate namespace (one labelled `mandate.dev/mode`) that no
    ///   AgentIdentity claims; the `default` ServiceAccount exists in every namespace, so it
    ///   counts only when `in_use(namespace, name)` says a pod runs as it (the operator watches
    ///   no pods and passes `|_, _| false`);
    /// - a legacy service-account-token Secret in a mandate namespace, or for an agent's
    ///   ServiceAccount anywhere.
    ///
    /// Pods are not in a snapshot: `mandate inventory` adds the unmanaged pods itself.
    pub fn unmanaged(&self, in_use: impl Fn(&str, &str) -> bool) -> Unmanaged<'_> {
        let mut service_accounts: Vec<(&str, &str)> = self
            .modes
            .keys()
            .flat_map(|namespace| {
                self.authority
                    .service_accounts_in(namespace)
                    .map(move |name| (namespace.as_str(), name))
            })
            .filter(|&(namespace, name)| {
                self.claimants(namespace, name).next().is_none()
                    && (name != "default" || in_use(namespace, name))
            })
            .collect();
        service_accounts.sort_unstable();
        let mut token_secrets: Vec<UnmanagedTokenSecret<'_>> = self
            .token_secrets
            .iter()
            .flat_map(|(namespace, secrets)| {
                secrets
                    .iter()
                    .map(move |(name, service_account)| UnmanagedTokenSecret {
                        namespace,
                        name,
                        service_account,
                        agent: self.agent_of_service_account(namespace, service_account),
                    })
            })
            .filter(|secret| secret.agent.is_some() || self.modes.contains_key(secret.namespace))
            .collect();
        token_secrets.sort_unstable_by_key(|secret| (secret.namespace, secret.name));
        Unmanaged {
            service_accounts,
            token_secrets,
        }
    }

    /// Every identity claiming `service_account`, sorted by name.
    pub fn claimants(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> impl Iterator<Item = &AgentIdentity> {
        self.authority
            .identities_for_service_account(namespace, service_account)
    }
}

impl Unmanaged<'_> {
    /// How many there are: the value of `mandate_unmanaged_workloads`.
    pub fn count(&self) -> u64 {
        (self.service_accounts.len() + self.token_secrets.len()) as u64
    }
}

impl SnapshotBuilder {
    /// Records the namespace's mode from its `mandate.dev/mode` label. A label value that names
    /// no mode counts as enforce: a namespace that asked for admission gets the strictest.
    pub fn add_namespace(&mut self, namespace: &ObjectMeta) {
        let Some(name) = namespace.name.as_deref() else {
            return;
        };
        match super::namespace::namespace_mode(namespace.labels.as_ref()) {
            Some(mode) => {
                self.snapshot.modes.insert(name.to_owned(), mode);
            }
            None => {
                self.snapshot.modes.remove(name);
            }
        }
    }

    /// Records a Secret when its annotations mark it as a legacy service-account token
    /// ([`SERVICE_ACCOUNT_NAME_ANNOTATION`]); other Secrets are ignored.
    pub fn add_secret(&mut self, secret: &ObjectMeta) {
        let (Some(namespace), Some(name)) = (secret.namespace.as_deref(), secret.name.as_deref())
        else {
            return;
        };
        let Some(service_account) = secret
            .annotations
            .as_ref()
            .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
        else {
            return;
        };
        self.snapshot
            .token_secrets
            .entry(namespace.to_owned())
            .or_default()
            .insert(name.to_owned(), service_account.clone());
    }

    #[must_use]
    pub fn namespace(mut self, namespace: &ObjectMeta) -> Self {
        self.add_namespace(namespace);
        self
    }

    /// Sets a namespace's mode directly (as its label would).
    #[must_use]
    pub fn namespace_mode(mut self, namespace: &str, mode: Mode) -> Self {
        self.snapshot.modes.insert(namespace.to_owned(), mode);
        self
    }

    #[must_use]
    pub fn secret(mut self, secret: &ObjectMeta) -> Self {
        self.add_secret(secret);
        self
    }

    /// Records a legacy token Secret directly.
    #[must_use]
    pub fn token_secret(mut self, namespace: &str, secret: &str, service_account: &str) -> Self {
        self.snapshot
            .token_secrets
            .entry(namespace.to_owned())
            .or_default()
            .insert(secret.to_owned(), service_account.to_owned());
        self
    }

    pub fn build(self) -> Snapshot {
        self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MODE_LABEL;
    use crate::authority::fixtures::*;

    fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: Some(map(labels)),
            annotations: Some(map(labels)),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn namespaces_get_the_mode_their_label_names_and_unknown_values_enforce() {
        let snapshot = Snapshot::from_objects(
            Authority::default(),
            [
                meta(None, "a", &[(MODE_LABEL, "warn")]),
                meta(None, "b", &[(MODE_LABEL, "audit")]),
                meta(None, "c", &[(MODE_LABEL, "strict")]),
                meta(None, "d", &[]),
            ],
            Vec::<ObjectMeta>::new(),
        );
        assert_eq!(snapshot.namespace_mode("a"), Some(Mode::Warn));
        assert_eq!(snapshot.namespace_mode("b"), Some(Mode::Audit));
        assert_eq!(snapshot.namespace_mode("c"), Some(Mode::Enforce));
        assert_eq!(snapshot.namespace_mode("d"), None);
        assert_eq!(snapshot.namespace_mode("e"), None);
    }

    #[test]
    fn legacy_token_secrets_are_recognised_by_their_annotation_alone() {
        let snapshot = Snapshot::from_objects(
            Authority::default(),
            Vec::<ObjectMeta>::new(),
            [
                meta(
                    Some(NS),
                    "researcher-token",
                    &[(SERVICE_ACCOUNT_NAME_ANNOTATION, "researcher")],
                ),
                meta(Some(NS), "tls", &[]),
            ],
        );
        assert_eq!(
            snapshot.token_secret(NS, "researcher-token"),
            Some("researcher")
        );
        assert_eq!(snapshot.token_secret(NS, "tls"), None);
        assert_eq!(snapshot.token_secret("elsewhere", "researcher-token"), None);
    }

    #[test]
    fn a_service_account_belongs_to_the_identity_claiming_it_or_the_agent_it_is_managed_for() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .service_account(
                service_account("old-agent")
                    .managed_for("old-agent")
                    .build(),
            )
            .service_account(service_account("legacy").build())
            .build();
        let snapshot = Snapshot::builder(authority).build();
        assert_eq!(
            snapshot.agent_of_service_account(NS, "researcher"),
            Some("researcher")
        );
        assert_eq!(
            snapshot.agent_of_service_account(NS, "old-agent"),
            Some("old-agent")
        );
        assert_eq!(snapshot.agent_of_service_account(NS, "legacy"), None);
        assert_eq!(snapshot.agent_of_service_account(NS, "default"), None);
    }

    #[test]
    fn the_unmanaged_are_unclaimed_service_accounts_of_mandate_namespaces_and_legacy_tokens() {
        let authority = Authority::builder()
            .identity(identity("researcher").build())
            .identity(identity("scraper").namespace("team-b").build())
            .service_account(
                service_account("researcher")
                    .managed_for("researcher")
                    .build(),
            )
            .service_account(service_account("legacy").build())
            .service_account(service_account("default").build())
            .service_account(
                service_account("old-agent")
                    .managed_for("old-agent")
                    .build(),
            )
            .service_account(service_account("scraper").namespace("team-b").build())
            .service_account(service_account("stray").namespace("team-b").build())
            .build();
        let token = |namespace: &str, name: &str, service_account: &str| {
            meta(
                Some(namespace),
                name,
                &[(SERVICE_ACCOUNT_NAME_ANNOTATION, service_account)],
            )
        };
        let snapshot = Snapshot::from_objects(
            authority,
            [
                meta(None, NS, &[(MODE_LABEL, "enforce")]),
                meta(None, "team-b", &[]),
            ],
            [
                token(NS, "legacy-token", "legacy"),
                token(NS, "researcher-token", "researcher"),
                token("team-b", "scraper-token", "scraper"),
                token("team-b", "stray-token", "stray"),
            ],
        );

        let unmanaged = snapshot.unmanaged(|_, _| false);
        assert_eq!(
            unmanaged.service_accounts,
            [(NS, "legacy"), (NS, "old-agent")],
            "claimed ones, unused default and other namespaces are left out"
        );
        let secrets: Vec<(&str, &str, Option<&str>)> = unmanaged
            .token_secrets
            .iter()
            .map(|s| (s.namespace, s.name, s.agent))
            .collect();
        assert_eq!(
            secrets,
            [
                (NS, "legacy-token", None),
                (NS, "researcher-token", Some("researcher")),
                ("team-b", "scraper-token", Some("scraper")),
            ]
        );
        assert_eq!(unmanaged.count(), 5);

        let with_pods = snapshot.unmanaged(|namespace, name| (namespace, name) == (NS, "default"));
        assert_eq!(
            with_pods.service_accounts,
            [(NS, "default"), (NS, "legacy"), (NS, "old-agent")]
        );
        assert_eq!(with_pods.count(), 6);
    }

    #[test]
    fn a_snapshot_without_mandate_namespaces_or_tokens_knows_nothing_unmanaged() {
        let authority = Authority::builder()
            .service_account(service_account("legacy").build())
            .build();
        let snapshot = Snapshot::builder(authority).build();
        assert_eq!(snapshot.unmanaged(|_, _| true), Unmanaged::default());
        assert_eq!(snapshot.unmanaged(|_, _| true).count(), 0);
    }
}
