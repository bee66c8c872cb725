//! The OpenID AuthZEN Authorization API 1.0 over HTTP: an evaluation (or a batch of them) in,
//! read into [`Asked`] and judged by the [`Authorizer`]; `{decision, context}` out, with the
//! decision id and reason code in the context; the discovery document at
//! `/.well-known/authzen-configuration`. Translation only: no rule.
//!
//! Mapping: `subject.properties.token` is the caller's bearer token (verified by TokenReview),
//! else `subject.id` its SPIFFE ID (asserted by the enforcement point, as a mesh's
//! `source.principal` is, and believed only from one with a verified client certificate);
//! `resource.properties.service` (`<namespace>/<name>`) the called Service; an MCP call is `resource.type` `mcp_tool` (or `tool`) with the tool's name as
//! `resource.id` and the MCP method as `action.name` (`tools/call`); an HTTP call is
//! `resource.type` `http` with the path as `resource.id` and the method as `action.name`;
//! `context.delegators` the delegators' tokens, outermost first.

use std::sync::Arc;

use serde_json::{Value, json};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::{Answer, Asked, Authorizer};
use crate::decide::Operation;
use crate::webhook::server::CallerAuthenticated;

/// Largest evaluation request read, in bytes.
const MAX_BODY: u64 = 1 << 20;
/// Most evaluations in one batch.
const MAX_BATCH: usize = 256;

/// The AuthZEN routes.
pub fn routes(authorizer: Arc<Authorizer>) -> BoxedFilter<(Response,)> {
    let discovery = warp::get()
        .and(warp::path!(".well-known" / "authzen-configuration"))
        .and(warp::header::optional::<String>("host"))
        .map(|host: Option<String>| {
            let base = format!("https://{}", host.unwrap_or_default());
            warp::reply::json(&json!({
                "policy_decision_point": base,
                "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
                "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
            }))
            .into_response()
        });
    let body = warp::body::content_length_limit(MAX_BODY).and(warp::body::json::<Value>());
    let request_id = warp::header::optional::<String>("x-request-id");
    let one = {
        let authorizer = authorizer.clone();
        warp::post()
            .and(warp::path!("access" / "v1" / "evaluation"))
            .and(body)
            .and(request_id)
            .and(gateway_verified())
            .then(move |body: Value, id: Option<String>, verified: bool| {
                let authorizer = authorizer.clone();
                async move {
                    let reply = match read_evaluation_from(&body, &Value::Null, verified) {
                        Ok(asked) => answer_json(&authorizer.judge(&asked, "authzen").await),
                        Err(why) => return bad_request(&why, id),
                    };
                    with_request_id(warp::reply::json(&reply).into_response(), id)
                }
            })
    };
    let batch = warp::post()
        .and(warp::path!("access" / "v1" / "evaluations"))
        .and(warp::body::content_length_limit(MAX_BODY).and(warp::body::json::<Value>()))
        .and(warp::header::optional::<String>("x-request-id"))
        .and(gateway_verified())
        .then(move |body: Value, id: Option<String>, verified: bool| {
            let authorizer = authorizer.clone();
            async move {
                match evaluate_batch(&authorizer, &body, verified).await {
                    Ok(reply) => with_request_id(warp::reply::json(&reply).into_response(), id),
                    Err(why) => bad_request(&why, id),
                }
            }
        });
    discovery.or(one).unify().or(batch).unify().boxed()
}

/// Whether the connection's client certificate was verified (`--authz-client-ca`); `false`
/// when served without [`super::server::serve`] (in-process tests).
fn gateway_verified() -> impl Filter<Extract = (bool,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<CallerAuthenticated>()
        .map(|c: Option<CallerAuthenticated>| c.is_some_and(|c| c.0))
}

/// [`read_evaluation`], asked by a gateway that was (or was not) verified.
fn read_evaluation_from(
    evaluation: &Value,
    defaults: &Value,
    gateway_verified: bool,
) -> Result<Asked, String> {
    read_evaluation(evaluation, defaults).map(|asked| Asked {
        gateway_verified,
        ..asked
    })
}

/// A batch: each evaluation inherits the request's top-level subject, action, resource and
/// context; `options.evaluations_semantic` may stop at the first deny or permit.
async fn evaluate_batch(
    authorizer: &Authorizer,
    body: &Value,
    gateway_verified: bool,
) -> Result<Value, String> {
    let Some(evaluations) = body["evaluations"].as_array() else {
        // No list: one evaluation of the top-level fields, answered as a batch of one.
        let asked = read_evaluation_from(body, &Value::Null, gateway_verified)?;
        let answer = authorizer.judge(&asked, "authzen").await;
        return Ok(json!({ "evaluations": [answer_json(&answer)] }));
    };
    if evaluations.len() > MAX_BATCH {
        return Err(format!("at most {MAX_BATCH} evaluations per request"));
    }
    let semantic = body["options"]["evaluations_semantic"]
        .as_str()
        .unwrap_or("execute_all");
    let stop_on = match semantic {
        "execute_all" => None,
        "deny_on_first_deny" => Some(false),
        "permit_on_first_permit" => Some(true),
        other => return Err(format!("unknown evaluations_semantic {other:?}")),
    };
    let mut answers = Vec::with_capacity(evaluations.len());
    for evaluation in evaluations {
        let asked = read_evaluation_from(evaluation, body, gateway_verified)?;
        let answer = authorizer.judge(&asked, "authzen").await;
        let allowed = answer.decision.allowed;
        answers.push(answer_json(&answer));
        if stop_on == Some(allowed) {
            break;
        }
    }
    Ok(json!({ "evaluations": answers }))
}

/// One evaluation, its missing fields taken from `defaults` (a batch's top level).
pub fn read_evaluation(evaluation: &Value, defaults: &Value) -> Result<Asked, String> {
    let field = |name: &str| match &evaluation[name] {
        Value::Null => &defaults[name],
        value => value,
    };
    let (subject, action, resource, context) = (
        field("subject"),
        field("action"),
        field("resource"),
        field("context"),
    );
    let text = |value: &Value, what: &str| -> Result<String, String> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{what} is required and must be a string"))
    };
    let action_name = text(&action["name"], "action.name")?;
    let resource_id = text(&resource["id"], "resource.id")?;
    let operation = match resource["type"].as_str() {
        Some("mcp_tool" | "tool") => Operation::Mcp {
            method: action_name,
            tool: Some(resource_id),
        },
        Some("http") => Operation::Http {
            method: action_name,
            path: resource_id,
        },
        other => {
            return Err(format!(
                "resource.type {other:?} is not mcp_tool, tool or http"
            ));
        }
    };
    let token = subject["properties"]["token"].as_str().map(str::to_owned);
    let principal = subject["id"]
        .as_str()
        .filter(|id| id.starts_with("spiffe://"))
        .map(str::to_owned);
    Ok(Asked {
        principal,
        gateway_verified: false,
        bearer: token,
        delegators: context["delegators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        service: resource["properties"]["service"]
            .as_str()
            .map(str::to_owned),
        host: resource["properties"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        mcp: matches!(operation, Operation::Mcp { .. }),
        operation: Ok(operation),
        rpc_id: None,
    })
}

/// `{decision, context}` with the decision id, the reason code and, for a refusal, what to
/// change.
pub fn answer_json(answer: &Answer) -> Value {
    let decision = &answer.decision;
    let mut context = json!({ "id": answer.id, "reason": decision.code() });
    if !decision.allowed {
        context["reason_admin"] = json!({ "en": answer.message() });
    }
    json!({ "decision": decision.allowed, "context": context })
}

fn bad_request(why: &str, id: Option<String>) -> Response {
    let reply = warp::reply::with_status(
        warp::reply::json(&json!({ "error": why })),
        StatusCode::BAD_REQUEST,
    );
    with_request_id(reply.into_response(), id)
}

/// AuthZEN asks the decision point to echo `X-Request-ID`.
fn with_request_id(mut response: Response, id: Option<String>) -> Response {
    if let Some(value) = id.and_then(|id| warp::http::HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mcp_evaluation_names_the_token_service_method_and_tool() {
        let asked = read_evaluation(
            &json!({
                "subject": {"type": "agent", "id": "reader", "properties": {"token": "t"}},
                "action": {"name": "tools/call"},
                "resource": {"type": "mcp_tool", "id": "read_doc", "properties": {"service": "agents/docs-mcp"}},
                "context": {"delegators": ["d"]}
            }),
            &Value::Null,
        )
        .unwrap();
        assert_eq!(asked.bearer.as_deref(), Some("t"));
        assert_eq!(asked.principal, None);
        assert_eq!(asked.service.as_deref(), Some("agents/docs-mcp"));
        assert_eq!(asked.delegators, ["d"]);
        assert_eq!(
            asked.operation,
            Ok(Operation::Mcp {
                method: "tools/call".into(),
                tool: Some("read_doc".into())
            })
        );
    }

    #[test]
    fn a_batch_evaluation_inherits_the_top_level_fields_and_http_is_method_and_path() {
        let defaults = json!({
            "subject": {"type": "workload", "id": "spiffe://cluster.local/ns/agents/sa/reader"},
            "resource": {"type": "http", "id": "/v1/docs/1", "properties": {"host": "docs-mcp"}}
        });
        let asked = read_evaluation(&json!({"action": {"name": "GET"}}), &defaults).unwrap();
        assert_eq!(
            asked.principal.as_deref(),
            Some("spiffe://cluster.local/ns/agents/sa/reader")
        );
        assert_eq!(asked.host, "docs-mcp");
        assert_eq!(
            asked.operation,
            Ok(Operation::Http {
                method: "GET".into(),
                path: "/v1/docs/1".into()
            })
        );
    }

    #[test]
    fn an_evaluation_without_action_resource_or_a_known_type_is_a_bad_request() {
        for bad in [
            json!({"resource": {"type": "http", "id": "/"}}),
            json!({"action": {"name": "GET"}, "resource": {"type": "http"}}),
            json!({"action": {"name": "GET"}, "resource": {"type": "file", "id": "/"}}),
        ] {
            assert!(read_evaluation(&bad, &Value::Null).is_err(), "{bad}");
        }
    }
}
