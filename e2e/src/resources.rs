//! mandate's own resources on the control plane: installing the generated CRDs from `crds/`,
//! dynamic clients for the three kinds (raw JSON in, so tests can send what the typed structs
//! cannot express), the sample manifests in `config/samples/`, and the API server's words when
//! it refuses an object.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use crate::{eventually, kubectl_ok, repo_root};

/// Field manager of everything the e2e suite applies.
pub const FIELD_MANAGER: &str = "mandate-e2e";

/// The three mandate kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    AgentIdentity,
    ToolBinding,
    DelegationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [
        Kind::AgentIdentity,
        Kind::ToolBinding,
        Kind::DelegationPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::AgentIdentity => "AgentIdentity",
            Kind::ToolBinding => "ToolBinding",
            Kind::DelegationPolicy => "DelegationPolicy",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::AgentIdentity => "agentidentities",
            Kind::ToolBinding => "toolbindings",
            Kind::DelegationPolicy => "delegationpolicies",
        }
    }

    /// `<plural>.mandate.dev`, the CRD's name.
    pub fn crd_name(self) -> String {
        format!("{}.mandate.dev", self.plural())
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("mandate.dev", "v1alpha1", self.name()),
            self.plural(),
        )
    }

    /// A client for this kind in `namespace` that sends and receives raw JSON.
    pub fn api(self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.api_resource())
    }

    /// The kind named by an object's `kind` field.
    pub fn of(object: &serde_json::Value) -> anyhow::Result<Kind> {
        let kind = object["kind"].as_str().unwrap_or_default();
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind)
            .with_context(|| format!("{kind:?} is not a mandate kind"))
    }
}

/// The generated CRD files in `crds/`, sorted.
pub fn crd_files() -> anyhow::Result<Vec<PathBuf>> {
    let dir = repo_root().join("crds");
    let mut files = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| Ok(entry?.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

/// Server-side applies every CRD in `crds/` and waits until each is Established. Safe to call
/// from every test: applying unchanged CRDs again changes nothing.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let dir = repo_root().join("crds");
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            dir.to_str().context("crds/ path is not UTF-8")?,
        ],
        None,
    )?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in Kind::ALL {
        let name = kind.crd_name();
        eventually(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(60),
            || async {
                let crd = crds.get(&name).await?;
                Ok(is_established(&crd).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Whether the CRD's `Established` condition is `True`.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// The directory of the sample manifests.
pub fn samples_dir() -> PathBuf {
    repo_root().join("config/samples")
}

/// Every YAML manifest under `config/samples/` (not `kustomization.yaml`), relative to it,
/// sorted.
pub fn sample_files() -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let root = samples_dir();
    let mut files = Vec::new();
    walk(&root, &mut files)?;
    let mut files = files
        .into_iter()
        .map(|p| Ok(p.strip_prefix(&root)?.to_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    files.sort();
    Ok(files)
}

/// The documents of a multi-document YAML stream, as JSON values (empty documents dropped).
pub fn yaml_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Ok(serde_json::Value::deserialize(doc)?))
        .filter(|doc: &anyhow::Result<serde_json::Value>| {
            !matches!(doc, Ok(serde_json::Value::Null))
        })
        .collect()
}

/// Replaces the value of every top-level-of-spec `validUntil:` line (two-space indent) with
/// `until`, as the sample comments tell users to do at apply time.
pub fn with_valid_until(yaml: &str, until: &str) -> String {
    yaml.lines()
        .map(|line| match line.strip_prefix("  validUntil:") {
            Some(_) => format!("  validUntil: \"{until}\""),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// An RFC 3339 UTC timestamp `seconds` from now, without fractional seconds.
pub fn rfc3339_from_now(seconds: i64) -> anyhow::Result<String> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    Ok(k8s_openapi::jiff::Timestamp::from_second(now + seconds)?.to_string())
}

/// The message of a refusal from the API server (`kube::Error::Api`); any other error is
/// returned as an error, since it is not the server's verdict.
pub fn refusal_message(error: kube::Error) -> anyhow::Result<String> {
    match error {
        kube::Error::Api(status) => Ok(status.message),
        other => bail!("expected the API server to refuse the object, got: {other:#}"),
    }
}
