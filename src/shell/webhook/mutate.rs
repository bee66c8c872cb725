//! The mutating webhook's answer on the wire: the AdmissionReview the validating path answers
//! with (`server::respond`) and the pure patch (`admission::credentials`) in; the same review
//! with the patch as `admission.k8s.io/v1` wants it out: `patchType: JSONPatch` and `patch` the
//! base64 of the JSON Patch document. Holds no rule: what to patch is decided in the pure core.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde_json::Value;

use crate::admission::credentials::PatchOperation;

/// The path of the mutating webhook (pods only).
pub const MUTATE_PODS_PATH: &str = "/mutate/pods";

/// `review` as JSON, with `patch` in its response when there is one (an empty patch is left
/// out: nothing to change).
pub fn with_patch(
    review: &AdmissionReview<DynamicObject>,
    patch: &[PatchOperation],
) -> serde_json::Result<Value> {
    let mut review = serde_json::to_value(review)?;
    if !patch.is_empty()
        && let Some(response) = review.get_mut("response").and_then(Value::as_object_mut)
    {
        // AdmissionReview v1 carries the patch as bytes, which JSON spells in base64.
        let document = serde_json::to_vec(patch)?;
        response.insert("patchType".to_owned(), Value::from("JSONPatch"));
        response.insert("patch".to_owned(), Value::from(STANDARD.encode(document)));
    }
    Ok(review)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::verdict::Verdict;
    use crate::admission::{Mode, parse_review};
    use crate::webhook::server::respond;

    fn request() -> crate::admission::Request {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "3f1c",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "p", "namespace": "agents", "operation": "CREATE",
                "userInfo": {"username": "dev"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                           "spec": {"containers": [{"name": "main"}]}},
            }
        });
        parse_review(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_patch_travels_as_base64_json_patch_in_an_allowing_answer() -> serde_json::Result<()> {
        let request = request();
        let verdict = Verdict::reviewed("Pod agents/p", Mode::Enforce).agent("researcher");
        let patch = [PatchOperation::Add {
            path: "/metadata/annotations".to_owned(),
            value: json!({"mandate.dev/tool-credentials": "docs"}),
        }];
        let review = with_patch(&respond(&request, &verdict), &patch)?;
        let response = &review["response"];
        assert_eq!(response["uid"], "3f1c");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = STANDARD
            .decode(response["patch"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let document: Value = serde_json::from_slice(&bytes)?;
        assert_eq!(
            document,
            json!([{"op": "add", "path": "/metadata/annotations",
                    "value": {"mandate.dev/tool-credentials": "docs"}}])
        );
        Ok(())
    }

    #[test]
    fn nothing_to_change_answers_without_a_patch() -> serde_json::Result<()> {
        let request = request();
        let review = with_patch(&respond(&request, &Verdict::skipped("Pod agents/p")), &[])?;
        assert!(review["response"].get("patch").is_none());
        assert!(review["response"].get("patchType").is_none());
        Ok(())
    }
}
