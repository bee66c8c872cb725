//! Reading the cluster for the CLI: a kubeconfig (and an optional context) in; a client, and
//! the objects `inventory` and `check --cluster` need (mandate's three kinds, ServiceAccounts,
//! Pods, Secrets and Namespaces as metadata only, and RBAC cluster-wide: a RoleBinding in any
//! namespace can grant an agent's ServiceAccount a right) out. Lists only: never writes, never
//! reads a Secret's data. Failures say which list failed and what to do about it.

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::config::KubeConfigOptions;
use kube::core::PartialObjectMeta;
use kube::{Api, Client, Config};
use serde::de::DeserializeOwned;

use super::report::Objects;
use crate::api::{AgentIdentity, DelegationPolicy, GROUP, ToolBinding};

/// Which namespaces to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (`-A`).
    All,
    /// These namespaces only.
    Only(Vec<String>),
}

/// Why reading the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("loading the kubeconfig: {0} (set KUBECONFIG or --context)")]
    Kubeconfig(String),
    #[error("making a client for {server}: {source}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the mandate CRDs are not installed ({what} answered 404 for group {GROUP}): kubectl \
         apply -f crds/"
    )]
    MissingCrds { what: String },
    #[error(
        "forbidden to {what}: {message}; ask for RBAC that allows it (kubectl auth can-i \
         {verb} {resource})"
    )]
    Forbidden {
        what: String,
        verb: &'static str,
        resource: &'static str,
        message: String,
    },
    #[error("cannot reach the cluster at {server} (while trying to {what}): {source}")]
    Unreachable {
        server: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: the API server answered {code}: {message}")]
    Api {
        what: String,
        code: u16,
        message: String,
    },
}

/// A client for the kubeconfig's current (or the given) context, and the API server's URL
/// for messages.
pub async fn connect(context: Option<&str>) -> Result<(Client, String), FetchError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match context {
        Some(_) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| FetchError::Kubeconfig(e.to_string()))?,
        None => Config::infer()
            .await
            .map_err(|e| FetchError::Kubeconfig(e.to_string()))?,
    };
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| FetchError::Client {
        server: server.clone(),
        source,
    })?;
    Ok((client, server))
}

/// Everything [`Objects`] holds, for the namespaces of `scope`. A namespace that does not
/// exist is simply empty.
pub async fn fetch(
    client: &Client,
    server: &str,
    scope: &Namespaces,
) -> Result<Objects, FetchError> {
    let mut objects = Objects::default();
    let namespaces: Vec<Option<&str>> = match scope {
        Namespaces::All => vec![None],
        Namespaces::Only(names) => names.iter().map(|n| Some(n.as_str())).collect(),
    };
    for ns in namespaces {
        let fetcher = Fetcher { client, server, ns };
        objects
            .identities
            .extend(fetcher.list::<AgentIdentity>("agentidentities").await?);
        objects
            .bindings
            .extend(fetcher.list::<ToolBinding>("toolbindings").await?);
        objects.policies.extend(
            fetcher
                .list::<DelegationPolicy>("delegationpolicies")
                .await?,
        );
        objects
            .service_accounts
            .extend(fetcher.list::<ServiceAccount>("serviceaccounts").await?);
        objects.pods.extend(fetcher.list::<Pod>("pods").await?);
        objects
            .network_policies
            .extend(fetcher.list::<NetworkPolicy>("networkpolicies").await?);
        objects.secrets.extend(fetcher.secrets().await?);
        match ns {
            None => objects.namespaces.extend(fetcher.all_namespaces().await?),
            Some(name) => objects.namespaces.extend(fetcher.namespace(name).await?),
        }
    }
    // Whatever the scope: the API rights of an agent's ServiceAccount come from bindings in
    // every namespace and from ClusterRoleBindings.
    let everywhere = Fetcher {
        client,
        server,
        ns: None,
    };
    objects.roles = everywhere.list_everywhere::<Role>("roles").await?;
    objects.cluster_roles = everywhere
        .list_everywhere::<ClusterRole>("clusterroles")
        .await?;
    objects.role_bindings = everywhere
        .list_everywhere::<RoleBinding>("rolebindings")
        .await?;
    objects.cluster_role_bindings = everywhere
        .list_everywhere::<ClusterRoleBinding>("clusterrolebindings")
        .await?;
    Ok(objects)
}

struct Fetcher<'a> {
    client: &'a Client,
    server: &'a str,
    ns: Option<&'a str>,
}

impl Fetcher<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self.ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    fn what(&self, resource: &str) -> String {
        match self.ns {
            Some(ns) => format!("list {resource} in namespace {ns}"),
            None => format!("list {resource} in all namespaces"),
        }
    }

    async fn list<K>(&self, resource: &'static str) -> Result<Vec<K>, FetchError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let mandate = matches!(
            resource,
            "agentidentities" | "toolbindings" | "delegationpolicies"
        );
        self.api::<K>()
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .map_err(|e| self.error(e, "list", resource, mandate))
    }

    /// Every object of a kind, namespaced or cluster-scoped, in the whole cluster.
    async fn list_everywhere<K>(&self, resource: &'static str) -> Result<Vec<K>, FetchError>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::<K>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .map_err(|e| {
                classify(
                    e,
                    format!("list {resource} in the whole cluster"),
                    self.server,
                    "list",
                    resource,
                    false,
                )
            })
    }

    async fn secrets(&self) -> Result<Vec<ObjectMeta>, FetchError> {
        self.api::<Secret>()
            .list_metadata(&ListParams::default())
            .await
            .map(|list| list.items.into_iter().map(meta_of).collect())
            .map_err(|e| self.error(e, "list", "secrets", false))
    }

    async fn all_namespaces(&self) -> Result<Vec<ObjectMeta>, FetchError> {
        Api::<Namespace>::all(self.client.clone())
            .list_metadata(&ListParams::default())
            .await
            .map(|list| list.items.into_iter().map(meta_of).collect())
            .map_err(|e| self.error(e, "list", "namespaces", false))
    }

    async fn namespace(&self, name: &str) -> Result<Option<ObjectMeta>, FetchError> {
        Api::<Namespace>::all(self.client.clone())
            .get_metadata_opt(name)
            .await
            .map(|ns| ns.map(meta_of))
            .map_err(|source| {
                classify(
                    source,
                    format!("get namespace {name}"),
                    self.server,
                    "get",
                    "namespaces",
                    false,
                )
            })
    }

    fn error(
        &self,
        source: kube::Error,
        verb: &'static str,
        resource: &'static str,
        mandate: bool,
    ) -> FetchError {
        classify(
            source,
            self.what(resource),
            self.server,
            verb,
            resource,
            mandate,
        )
    }
}

fn classify(
    source: kube::Error,
    what: String,
    server: &str,
    verb: &'static str,
    resource: &'static str,
    mandate: bool,
) -> FetchError {
    match source {
        kube::Error::Api(status) if status.code == 404 && mandate => {
            FetchError::MissingCrds { what }
        }
        kube::Error::Api(status) if status.code == 403 => FetchError::Forbidden {
            what,
            verb,
            resource,
            message: status.message,
        },
        kube::Error::Api(status) => FetchError::Api {
            what,
            code: status.code,
            message: status.message,
        },
        source => FetchError::Unreachable {
            server: server.to_owned(),
            what,
            source,
        },
    }
}

fn meta_of<K>(object: PartialObjectMeta<K>) -> ObjectMeta {
    object.metadata
}
