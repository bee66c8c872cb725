//! Workload admission: a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob (its
//! pod template and namespace), a [`Snapshot`] and the time in; a warn-only [`Verdict`] out.
//! The pod rules run on the template so `kubectl apply` shows a problem at once instead of a
//! silent FailedCreate later; they never deny. Pure: never does I/O.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::Timestamp;

use super::pod::{PodView, review_pod_view};
use super::snapshot::{AdmissionConfig, Snapshot};
use super::verdict::Verdict;

/// The workload kinds whose pod templates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// The API group the kind is served in (version `v1`).
    pub fn group(self) -> &'static str {
        match self {
            WorkloadKind::Job | WorkloadKind::CronJob => "batch",
            _ => "apps",
        }
    }

    /// The kind of `apps/v1` or `batch/v1` `kind`; `None` for anything else.
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Self> {
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.group() == group && version == "v1" && k.as_str() == kind)
    }
}

/// A workload's pod template, whatever its kind.
pub trait PodTemplate {
    const WORKLOAD: WorkloadKind;
    /// The template; `None` when the object has none (the API server refuses such objects).
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
}

impl PodTemplate for Deployment {
    const WORKLOAD: WorkloadKind = WorkloadKind::Deployment;
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        Some(&self.spec.template)
    }
}

impl PodTemplate for StatefulSet {
    const WORKLOAD: WorkloadKind = WorkloadKind::StatefulSet;
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        Some(&self.spec.template)
    }
}

impl PodTemplate for DaemonSet {
    const WORKLOAD: WorkloadKind = WorkloadKind::DaemonSet;
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        Some(&self.spec.template)
    }
}

impl PodTemplate for ReplicaSet {
    const WORKLOAD: WorkloadKind = WorkloadKind::ReplicaSet;
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.template.as_ref()
    }
}

impl PodTemplate for Job {
    const WORKLOAD: WorkloadKind = WorkloadKind::Job;
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl PodTemplate for CronJob {
    const WORKLOAD: WorkloadKind = WorkloadKind::CronJob;
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        let job = self.spec.job_template.spec.as_ref()?;
        Some(&job.template)
    }
}

/// Reviews a workload's pod template as a pod of the workload's namespace: findings become
/// warnings (or are only recorded in audit mode), never a denial. A workload without a template
/// is skipped.
pub fn review_workload<W>(
    workload: &W,
    snapshot: &Snapshot,
    config: &AdmissionConfig,
    now: Timestamp,
) -> Verdict
where
    W: PodTemplate
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let meta = workload.metadata();
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta
        .name
        .as_deref()
        .or(meta.generate_name.as_deref())
        .unwrap_or_default();
    let subject = format!("{} {namespace}/{name}", W::WORKLOAD.as_str());
    let Some(template) = workload.pod_template() else {
        return Verdict::skipped(subject);
    };
    let Some(spec) = template.spec.as_ref() else {
        return Verdict::skipped(subject);
    };
    let view = PodView {
        namespace,
        labels: template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
        annotations: template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
        spec,
    };
    review_pod_view(&view, subject, snapshot, config, now).warn_only()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobSpec, JobTemplateSpec};
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    use super::*;
    use crate::admission::verdict::{Decision, Mode};
    use crate::authority::Authority;
    use crate::authority::fixtures::*;

    fn template(pod: Pod) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: pod.metadata.labels,
                ..ObjectMeta::default()
            }),
            spec: pod.spec,
        }
    }

    fn deployment(namespace: &str, pod: Pod) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: DeploymentSpec {
                selector: LabelSelector::default(),
                template: template(pod),
                ..DeploymentSpec::default()
            },
            status: None,
        }
    }

    fn snapshot() -> Snapshot {
        let authority = Authority::builder()
            .identity(identity("researcher").ready().build())
            .binding(binding("b").agent("researcher").tool(tool("t")).build())
            .build();
        Snapshot::builder(authority)
            .namespace_mode(NS, Mode::Enforce)
            .namespace_mode("quiet", Mode::Audit)
            .build()
    }

    #[test]
    fn a_deployment_whose_template_breaks_pod_rules_is_admitted_with_warnings() {
        let verdict = review_workload(
            &deployment(NS, pod("x").host_network().build()),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
        assert_eq!(verdict.codes(), ["NoIdentity", "HostNetwork"]);
        assert_eq!(verdict.subject(), "Deployment agents/web");
        assert!(verdict.warnings()[0].starts_with("NoIdentity: "));
        assert_eq!(verdict.message(), None);
    }

    #[test]
    fn a_deployment_with_a_privileged_template_is_admitted_with_a_baseline_warning() {
        let verdict = review_workload(
            &deployment(NS, pod("x").runs_as("researcher").privileged().build()),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Warned));
        assert_eq!(verdict.codes(), ["PodSecurityBaseline"]);
        assert!(
            verdict.warnings()[0].starts_with(
                "PodSecurityBaseline: spec.containers[0].securityContext.privileged is true"
            ),
            "{:?}",
            verdict.warnings()
        );
    }

    #[test]
    fn a_deployment_with_a_good_template_is_allowed() {
        let verdict = review_workload(
            &deployment(NS, pod("x").runs_as("researcher").build()),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Allowed));
        assert_eq!(verdict.agent_name(), Some("researcher"));
    }

    #[test]
    fn a_workload_in_an_audit_namespace_is_recorded_without_warnings() {
        let verdict = review_workload(
            &deployment("quiet", pod("x").build()),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Audited));
        assert!(verdict.warnings().is_empty());
    }

    #[test]
    fn a_workload_of_non_agent_pods_in_an_unlabelled_namespace_is_skipped() {
        let verdict = review_workload(
            &deployment("web", pod("x").build()),
            &snapshot(),
            &AdmissionConfig::default(),
            NOW,
        );
        assert_eq!(verdict.decision(), Some(Decision::Skipped));
    }

    #[test]
    fn a_cron_jobs_template_is_found_inside_its_job_template() {
        let cron = CronJob {
            metadata: ObjectMeta {
                name: Some("nightly".into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            spec: CronJobSpec {
                schedule: "@daily".into(),
                job_template: JobTemplateSpec {
                    metadata: None,
                    spec: Some(JobSpec {
                        template: template(pod("x").agent("researcher").build()),
                        ..JobSpec::default()
                    }),
                },
                ..CronJobSpec::default()
            },
            status: None,
        };
        let verdict = review_workload(&cron, &snapshot(), &AdmissionConfig::default(), NOW);
        assert_eq!(verdict.codes(), ["ServiceAccountMismatch"]);
        assert_eq!(verdict.decision(), Some(Decision::Warned));
    }

    #[test]
    fn only_the_v1_workload_kinds_are_recognised() {
        assert_eq!(
            WorkloadKind::from_gvk("apps", "v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::from_gvk("batch", "v1", "CronJob"),
            Some(WorkloadKind::CronJob)
        );
        assert_eq!(WorkloadKind::from_gvk("batch", "v1", "Deployment"), None);
        assert_eq!(
            WorkloadKind::from_gvk("apps", "v1beta1", "Deployment"),
            None
        );
    }
}
