//! The dangerous Kubernetes API rights: a closed, documented list in; out, each right as the
//! request attributes the API server's authorizer checks for it (verb, API group, resource,
//! subresource) and where a RoleBinding can grant it. Pure data: never does I/O.
//!
//! A right is dangerous when it lets an agent act outside its mandate: act as someone else,
//! mint credentials, run code in other pods, read secrets, rewrite mandate's own objects, RBAC,
//! NetworkPolicies or admission, or start workloads (which can run as any ServiceAccount of
//! their namespace). README's "Kubernetes API rights" lists the same families.

use std::fmt;

/// Where a RoleBinding can grant a right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The request names a namespace: a RoleBinding grants it in its own namespace, a
    /// ClusterRoleBinding everywhere. (`namespaces` count too: the API server files a request
    /// for namespace `x` under namespace `x`. So does `bind clusterroles`: the check is made in
    /// the namespace of the RoleBinding being written.)
    Namespaced,
    /// The request names no namespace: only a ClusterRoleBinding grants it.
    Cluster,
}

/// The subresource part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// None: the resource itself.
    None,
    /// Exactly this subresource.
    Named(&'static str),
    /// Any subresource (impersonating a user's extra field `k` checks `userextras/k`).
    Any,
}

/// One resource a family's verbs apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub group: &'static str,
    pub resource: &'static str,
    pub sub: Sub,
    pub reach: Reach,
}

/// Verbs on resources that are dangerous for the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// What holding the right lets an agent do, for documentation.
    pub why: &'static str,
    pub verbs: &'static [&'static str],
    pub targets: &'static [Target],
}

const fn ns(group: &'static str, resource: &'static str) -> Target {
    Target {
        group,
        resource,
        sub: Sub::None,
        reach: Reach::Namespaced,
    }
}

const fn ns_sub(group: &'static str, resource: &'static str, sub: &'static str) -> Target {
    Target {
        group,
        resource,
        sub: Sub::Named(sub),
        reach: Reach::Namespaced,
    }
}

const fn cluster(group: &'static str, resource: &'static str) -> Target {
    Target {
        group,
        resource,
        sub: Sub::None,
        reach: Reach::Cluster,
    }
}

const fn cluster_sub(group: &'static str, resource: &'static str, sub: Sub) -> Target {
    Target {
        group,
        resource,
        sub,
        reach: Reach::Cluster,
    }
}

const CORE: &str = "";
const AUTHN: &str = "authentication.k8s.io";
const RBAC: &str = "rbac.authorization.k8s.io";
const MANDATE: &str = crate::api::GROUP;
const ADMISSION: &str = "admissionregistration.k8s.io";
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// The closed list. Order is the order of messages; a family's index is part of [`Right`], so
/// new families are appended.
pub const FAMILIES: &[Family] = &[
    Family {
        why: "act as another user, group or ServiceAccount (impersonation)",
        verbs: &["impersonate"],
        targets: &[
            cluster(CORE, "users"),
            cluster(CORE, "groups"),
            ns(CORE, "serviceaccounts"),
            cluster(AUTHN, "uids"),
            cluster_sub(AUTHN, "userextras", Sub::Any),
        ],
    },
    Family {
        why: "act as another user or group (constrained impersonation; the impersonate-on \
              rights that go with it only narrow it)",
        verbs: &["impersonate:user-info"],
        targets: &[
            cluster(AUTHN, "users"),
            cluster(AUTHN, "groups"),
            cluster(AUTHN, "uids"),
            cluster_sub(AUTHN, "userextras", Sub::Any),
        ],
    },
    Family {
        why: "act as another ServiceAccount (constrained impersonation)",
        verbs: &["impersonate:serviceaccount"],
        targets: &[ns(AUTHN, "serviceaccounts")],
    },
    Family {
        why: "act as a node (constrained impersonation)",
        verbs: &["impersonate:arbitrary-node", "impersonate:associated-node"],
        targets: &[cluster(AUTHN, "nodes")],
    },
    Family {
        why: "mint tokens of any ServiceAccount of the namespace",
        verbs: &["create"],
        targets: &[ns_sub(CORE, "serviceaccounts", "token")],
    },
    Family {
        why: "mint a never-expiring token of any ServiceAccount of the namespace (a legacy \
              service-account-token Secret)",
        verbs: &["create"],
        targets: &[ns(CORE, "secrets")],
    },
    Family {
        why: "read every Secret of the namespace",
        verbs: &["get", "list", "watch"],
        targets: &[ns(CORE, "secrets")],
    },
    Family {
        why: "grant roles it does not hold (bind)",
        verbs: &["bind"],
        targets: &[ns(RBAC, "roles"), ns(RBAC, "clusterroles")],
    },
    Family {
        why: "widen roles beyond what it holds (escalate)",
        verbs: &["escalate"],
        targets: &[ns(RBAC, "roles"), cluster(RBAC, "clusterroles")],
    },
    Family {
        why: "rewrite RBAC",
        verbs: WRITE,
        targets: &[
            ns(RBAC, "roles"),
            ns(RBAC, "rolebindings"),
            cluster(RBAC, "clusterroles"),
            cluster(RBAC, "clusterrolebindings"),
        ],
    },
    Family {
        why: "run commands in, or connect to, other pods",
        verbs: &["create"],
        targets: &[
            ns_sub(CORE, "pods", "exec"),
            ns_sub(CORE, "pods", "attach"),
            ns_sub(CORE, "pods", "portforward"),
        ],
    },
    Family {
        why: "add a container to a running pod",
        verbs: &["update", "patch"],
        targets: &[ns_sub(CORE, "pods", "ephemeralcontainers")],
    },
    Family {
        why: "reach pods, Services and kubelets through the API server, past NetworkPolicies",
        verbs: &["get", "create", "update", "patch", "delete"],
        targets: &[
            ns_sub(CORE, "pods", "proxy"),
            ns_sub(CORE, "services", "proxy"),
            cluster_sub(CORE, "nodes", Sub::Named("proxy")),
        ],
    },
    Family {
        why: "start or change workloads, which may run as any ServiceAccount of the namespace",
        verbs: &["create", "update", "patch"],
        targets: &[
            ns(CORE, "pods"),
            ns(CORE, "replicationcontrollers"),
            ns("apps", "deployments"),
            ns("apps", "replicasets"),
            ns("apps", "statefulsets"),
            ns("apps", "daemonsets"),
            ns("batch", "jobs"),
            ns("batch", "cronjobs"),
        ],
    },
    Family {
        why: "write mandate's own resources (self-escalation)",
        verbs: WRITE,
        targets: &[
            ns(MANDATE, "agentidentities"),
            ns_sub(MANDATE, "agentidentities", "status"),
            ns(MANDATE, "toolbindings"),
            ns_sub(MANDATE, "toolbindings", "status"),
            ns(MANDATE, "delegationpolicies"),
            ns_sub(MANDATE, "delegationpolicies", "status"),
        ],
    },
    Family {
        why: "widen or remove network isolation",
        verbs: WRITE,
        targets: &[ns("networking.k8s.io", "networkpolicies")],
    },
    Family {
        why: "relabel its namespace (mandate's mode, Pod Security levels)",
        verbs: &["update", "patch"],
        targets: &[ns(CORE, "namespaces")],
    },
    Family {
        why: "change or remove admission control",
        verbs: WRITE,
        targets: &[
            cluster(ADMISSION, "mutatingwebhookconfigurations"),
            cluster(ADMISSION, "validatingwebhookconfigurations"),
            cluster(ADMISSION, "validatingadmissionpolicies"),
            cluster(ADMISSION, "validatingadmissionpolicybindings"),
            cluster(ADMISSION, "mutatingadmissionpolicies"),
            cluster(ADMISSION, "mutatingadmissionpolicybindings"),
        ],
    },
    Family {
        why: "change or delete API schemas (mandate's CRDs among them)",
        verbs: WRITE,
        targets: &[cluster("apiextensions.k8s.io", "customresourcedefinitions")],
    },
    Family {
        why: "approve certificate requests (client certificates for any user)",
        verbs: &["update", "patch"],
        targets: &[cluster_sub(
            "certificates.k8s.io",
            "certificatesigningrequests",
            Sub::Named("approval"),
        )],
    },
];

/// One dangerous right: a verb of a family on one of its targets. Small and ordered, so sets of
/// them compare cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Right {
    family: u8,
    verb: u8,
    target: u8,
}

impl Right {
    /// Every right of the list, family by family.
    pub fn all() -> impl Iterator<Item = Right> {
        FAMILIES.iter().enumerate().flat_map(|(f, family)| {
            (0..family.verbs.len()).flat_map(move |v| {
                (0..family.targets.len()).map(move |t| Right {
                    family: index(f),
                    verb: index(v),
                    target: index(t),
                })
            })
        })
    }

    pub fn family(self) -> &'static Family {
        &FAMILIES[usize::from(self.family)]
    }

    pub fn verb(self) -> &'static str {
        self.family().verbs[usize::from(self.verb)]
    }

    pub fn target(self) -> &'static Target {
        &self.family().targets[usize::from(self.target)]
    }

    /// Whether a rule limited to resource names can grant it. It cannot for requests without a
    /// name: creating an object (its name is not known when the request is authorized) and
    /// deleting a collection. A subresource request always names its object.
    pub fn can_be_limited_to_names(self) -> bool {
        self.target().sub != Sub::None || !matches!(self.verb(), "create" | "deletecollection")
    }
}

/// Indexes of the list are tiny; a list that outgrew `u8` is a programming error the tests
/// catch (`every_right_of_the_list_round_trips_through_its_index`).
fn index(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(u8::MAX)
}

impl Right {
    /// `resource[.group][/subresource]`.
    pub fn resource_text(self) -> String {
        let target = self.target();
        let mut text = target.resource.to_owned();
        if !target.group.is_empty() {
            text.push('.');
            text.push_str(target.group);
        }
        match target.sub {
            Sub::None => {}
            Sub::Named(sub) => {
                text.push('/');
                text.push_str(sub);
            }
            Sub::Any => text.push_str("/*"),
        }
        text
    }
}

impl fmt::Display for Right {
    /// `verb resource[.group][/subresource]`, as `kubectl auth can-i` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb(), self.resource_text())
    }
}
