//! Envoy's HTTP authorization service and forward-auth proxies, on the decision service's port:
//! a copy of the original request in (Envoy's HTTP variant sends its method, its path after the
//! `path_prefix` [`EXT_AUTHZ_PREFIX`], its headers and, with `with_request_body`, its body; a
//! forward-auth proxy sends `X-Forwarded-Method`, `-Uri` and `-Host` to [`FORWARD_AUTH_PATH`]),
//! read into [`Asked`] by the same reader as the gRPC variant and judged by the [`Authorizer`];
//! 200 to allow or 403 with the reason out. Translation only: no rule.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Response, StatusCode};

use super::envoy::{
    DECISION_HEADER, DELEGATOR_HEADER, REASON_HEADER, Request, SERVICE_HEADER, read_request,
};
use super::{Answer, Asked, Authorizer};
use crate::decide::MAX_BODY;
use crate::webhook::server::CallerAuthenticated;

/// The `path_prefix` Envoy's HTTP variant is configured with: `POST /ext-authz/mcp` asks about
/// `POST /mcp`.
pub const EXT_AUTHZ_PREFIX: &str = "/ext-authz";
/// Where forward-auth proxies (Traefik `forwardAuth`, Caddy `forward_auth`, NGINX
/// `auth_request`) ask.
pub const FORWARD_AUTH_PATH: &str = "/forward-auth";
/// The header by which Envoy's HTTP variant lets the authorizer remove request headers before
/// the call goes on to the tool.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Whether `path` is one of this module's.
pub fn handles(path: &str) -> bool {
    path == FORWARD_AUTH_PATH
        || path
            .strip_prefix(EXT_AUTHZ_PREFIX)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Judges one check request; never fails (an unreadable request is refused with a reason).
pub async fn check<B>(authorizer: &Authorizer, request: hyper::Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    // A body over the limit, or one that breaks off, is not read (and says so).
    let (body, cut) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    let headers = joined(&parts.headers);
    let header = |name: &str| headers.get(name).map(String::as_str);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let forward_auth = parts.uri.path() == FORWARD_AUTH_PATH;
    let (method, path, host) = if forward_auth {
        (
            header("x-forwarded-method").unwrap_or_default().to_owned(),
            header("x-forwarded-uri").unwrap_or_default().to_owned(),
            header("x-forwarded-host").unwrap_or_default().to_owned(),
        )
    } else {
        let rest = path_and_query
            .strip_prefix(EXT_AUTHZ_PREFIX)
            .unwrap_or(path_and_query);
        let path = if rest.is_empty() || rest.starts_with('?') {
            format!("/{rest}")
        } else {
            rest.to_owned()
        };
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| header(HOST.as_str()).map(str::to_owned))
            .unwrap_or_default();
        (parts.method.as_str().to_owned(), path, host)
    };
    let mut asked: Asked = read_request(Request {
        header: &header,
        method: &method,
        path: &path,
        host: &host,
        body: (!body.is_empty() || cut).then_some(&body[..]),
        cut,
        metadata: None,
        // Plain HTTP carries no peer identity mandate could trust: the caller is its token.
        principal: None,
        // Envoy sends only the headers it is told to, and sets this one itself
        // (`authorization_request.headers_to_add`, which overrides a client's); forward-auth
        // proxies pass every client header, so there the Service is the forwarded Host, which
        // the proxy routed by.
        service: (!forward_auth)
            .then(|| header(SERVICE_HEADER).map(str::to_owned))
            .flatten(),
    });
    asked.gateway_verified = CallerAuthenticated::of_request(&parts.extensions);
    respond(&authorizer.judge(&asked, "http").await)
}

/// 200 with the decision id (and the delegators' tokens removed before the call goes on), or
/// 403 with the decision id, the reason code and a body saying what to change.
pub fn respond(answer: &Answer) -> Response<Full<Bytes>> {
    let builder = Response::builder().header(DECISION_HEADER, &answer.id);
    let response = if answer.decision.allowed {
        builder
            .status(StatusCode::OK)
            .header(HEADERS_TO_REMOVE, DELEGATOR_HEADER)
            .body(Full::default())
    } else {
        builder
            .status(StatusCode::FORBIDDEN)
            .header(REASON_HEADER, answer.decision.code())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(answer.refusal_body())))
    };
    response.unwrap_or_else(|_| {
        // Only a decision id that is no header value could fail here; refuse all the same.
        let mut refused = Response::new(Full::default());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        refused
    })
}

/// Headers by lowercase name, repeated ones joined with `,` as Envoy joins them: a second
/// `Mcp-Name` is seen, never silently dropped.
fn joined(headers: &HeaderMap) -> HashMap<String, String> {
    let mut joined: HashMap<String, String> = HashMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Reason;
    use crate::decide::Decision;

    #[test]
    fn the_prefix_and_the_forward_auth_path_are_this_modules_and_nothing_else() {
        for path in [
            "/ext-authz",
            "/ext-authz/",
            "/ext-authz/mcp",
            FORWARD_AUTH_PATH,
        ] {
            assert!(handles(path), "{path}");
        }
        for path in [
            "/ext-authzx",
            "/access/v1/evaluation",
            "/forward-auth/x",
            "/envoy.service.auth.v3.Authorization/Check",
        ] {
            assert!(!handles(path), "{path}");
        }
    }

    #[test]
    fn repeated_headers_are_joined_as_envoy_joins_them() {
        let mut headers = HeaderMap::new();
        headers.append("mcp-name", "read_doc".parse().unwrap());
        headers.append("mcp-name", "delete_doc".parse().unwrap());
        assert_eq!(joined(&headers)["mcp-name"], "read_doc,delete_doc");
    }

    fn answer(decision: Decision) -> Answer {
        Answer {
            id: "d-9".into(),
            decision,
            operation: "tools/call write_doc".into(),
            mcp: true,
            rpc_id: serde_json::json!(2),
        }
    }

    #[test]
    fn allowed_is_200_without_the_delegators_and_refused_is_403_with_the_reason() {
        let ok = respond(&answer(Decision {
            allowed: true,
            ..Decision::default()
        }));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[DECISION_HEADER], "d-9");
        assert_eq!(ok.headers()[HEADERS_TO_REMOVE], DELEGATOR_HEADER);
        let refused = respond(&answer(Decision::refused(
            Reason::OperationNotDeclared,
            "declare it",
        )));
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.headers()[REASON_HEADER], "OperationNotDeclared");
        assert_eq!(refused.headers()[DECISION_HEADER], "d-9");
    }
}
