//! The authorizer around the decision: readiness, how the caller is identified (mTLS peer,
//! token, both), the called Service, the answer's id. A fake TokenReview; no network.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::tokens::{Reviewed, TokenReviewer, TokenVerifier};
use super::*;
use crate::admission::Snapshot;
use crate::api::Action;
use crate::authority::Authority;
use crate::authority::fixtures::{binding, identity, tool};

const READER: &str = "spiffe://cluster.local/ns/agents/sa/reader";

/// Every token belongs to `agents/<token>`, bound to a pod, for the docs tool's audience.
struct ByName;

impl TokenReviewer for ByName {
    fn review(&self, token: &str, _: Vec<String>) -> BoxFuture<'_, Result<Reviewed, String>> {
        let account = token.split('.').next().unwrap_or_default().to_owned();
        Box::pin(async move {
            Ok(Reviewed::Authenticated {
                username: format!("system:serviceaccount:agents:{account}"),
                audiences: vec!["mandate.dev/agents/docs".into()],
                pod: Some(format!("{account}-0")),
                pod_uid: Some(format!("uid-{account}-0")),
            })
        })
    }
}

/// A JWT-shaped token whose first segment names the ServiceAccount [`ByName`] answers with.
fn token(account: &str) -> String {
    use base64::Engine as _;
    let exp = Timestamp::now().as_second() + 600;
    let claims = serde_json::json!({"aud": ["mandate.dev/agents/docs"], "exp": exp});
    format!(
        "{account}.{}.sig",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn authorizer(synced: bool) -> Arc<Authorizer> {
    let authority = Authority::builder()
        .identity(identity("reader").build())
        .binding(
            binding("reader-tools").agent("reader").tool(
                tool("docs")
                    .service("docs-mcp", None, [])
                    .mcp("read_doc", Some(Action::Read)),
            ),
        )
        .build();
    let snapshots = SnapshotSource::default();
    if synced {
        snapshots.store(Some(Arc::new(Snapshot::from_objects(
            authority,
            std::iter::empty::<ObjectMeta>(),
            std::iter::empty::<ObjectMeta>(),
        ))));
    }
    Authorizer::new(
        snapshots,
        TokenVerifier::new(Arc::new(ByName)),
        TrustDomain::default(),
        Metrics::new(),
    )
}

fn asked(principal: Option<&str>, bearer: Option<&str>, tool: &str) -> Asked {
    Asked {
        principal: principal.map(str::to_owned),
        gateway_verified: true,
        bearer: bearer.map(str::to_owned),
        delegators: Vec::new(),
        service: None,
        host: "docs-mcp".into(),
        operation: Ok(Operation::Mcp {
            method: "tools/call".into(),
            tool: Some(tool.into()),
        }),
        mcp: true,
        rpc_id: None,
    }
}

#[tokio::test]
async fn before_the_first_snapshot_every_call_is_refused_as_not_ready() {
    let answer = authorizer(false)
        .judge(&asked(Some(READER), None, "read_doc"), "grpc")
        .await;
    assert_eq!(answer.decision.code(), "NotReady");
}

#[tokio::test]
async fn an_mtls_peer_or_a_token_identifies_the_agent_and_each_decision_has_its_own_id() {
    let authorizer = authorizer(true);
    let by_peer = authorizer
        .judge(&asked(Some(READER), None, "read_doc"), "grpc")
        .await;
    assert_eq!(by_peer.decision.code(), "Allowed");
    let by_token = authorizer
        .judge(&asked(None, Some(&token("reader")), "read_doc"), "grpc")
        .await;
    assert_eq!(by_token.decision.code(), "Allowed");
    assert_ne!(by_peer.id, by_token.id);
    let both = authorizer
        .judge(
            &asked(Some(READER), Some(&token("reader")), "read_doc"),
            "grpc",
        )
        .await;
    assert_eq!(both.decision.code(), "Allowed");
    let refused = authorizer
        .judge(&asked(None, Some(&token("reader")), "write_doc"), "grpc")
        .await;
    assert_eq!(refused.decision.code(), "OperationNotDeclared");
    assert!(refused.message().contains("tools/call write_doc"));
}

#[tokio::test]
async fn a_token_presented_by_another_mtls_peer_or_no_credential_is_unauthenticated() {
    let authorizer = authorizer(true);
    let stolen = authorizer
        .judge(
            &asked(
                Some("spiffe://cluster.local/ns/agents/sa/intruder"),
                Some(&token("reader")),
                "read_doc",
            ),
            "grpc",
        )
        .await;
    assert_eq!(stolen.decision.code(), "Unauthenticated");
    let foreign = authorizer
        .judge(
            &asked(
                Some("spiffe://example.org/ns/agents/sa/reader"),
                None,
                "read_doc",
            ),
            "grpc",
        )
        .await;
    assert_eq!(foreign.decision.code(), "Unauthenticated");
    let nobody = authorizer
        .judge(&asked(None, None, "read_doc"), "grpc")
        .await;
    assert_eq!(nobody.decision.code(), "Unauthenticated");
}

#[tokio::test]
async fn a_spiffe_id_asserted_by_an_unverified_gateway_names_nobody_but_its_token_still_counts() {
    let authorizer = authorizer(true);
    let mut forged = asked(Some(READER), None, "read_doc");
    forged.gateway_verified = false;
    let answer = authorizer.judge(&forged, "grpc").await;
    assert_eq!(answer.decision.code(), "Unauthenticated");
    assert!(
        answer.decision.detail.contains("--authz-client-ca"),
        "the refusal says how to make the peer identity count: {}",
        answer.decision.detail
    );
    let mut with_token = asked(None, Some(&token("reader")), "read_doc");
    with_token.gateway_verified = false;
    assert_eq!(
        authorizer.judge(&with_token, "grpc").await.decision.code(),
        "Allowed",
        "a token is verified by TokenReview, whoever relays it"
    );
}

#[tokio::test]
async fn the_gateway_may_name_the_service_instead_of_the_host() {
    let authorizer = authorizer(true);
    let mut named = asked(Some(READER), None, "read_doc");
    named.host = "gateway.example.com".into();
    named.service = Some("agents/docs-mcp".into());
    assert_eq!(
        authorizer.judge(&named, "grpc").await.decision.code(),
        "Allowed"
    );
    named.service = Some("docs-mcp".into());
    assert_eq!(
        authorizer.judge(&named, "grpc").await.decision.code(),
        "UnreadableCall"
    );
}

/// A check request through Envoy's HTTP variant (or forward-auth), as the gateway sends it.
fn http_check(path: &str, headers: &[(&str, &str)], body: &str) -> hyper::Request<Full<Bytes>> {
    let mut request = hyper::Request::post(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request")
}

fn tools_call(tool: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": tool}})
        .to_string()
}

#[tokio::test]
async fn envoys_http_variant_reads_the_call_from_the_forwarded_body_and_answers_200_or_403() {
    let authorizer = authorizer(true);
    let bearer = format!("Bearer {}", token("reader"));
    let common = [
        ("authorization", bearer.as_str()),
        (envoy::SERVICE_HEADER, "agents/docs-mcp"),
    ];
    let allowed = http::check(
        &authorizer,
        http_check("/ext-authz/mcp", &common, &tools_call("read_doc")),
    )
    .await;
    assert_eq!(allowed.status(), 200);
    assert!(allowed.headers().contains_key(envoy::DECISION_HEADER));

    let refused = http::check(
        &authorizer,
        http_check("/ext-authz/mcp", &common, &tools_call("write_doc")),
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.headers()[envoy::REASON_HEADER],
        "OperationNotDeclared"
    );
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["id"], 9,
        "the refusal answers the JSON-RPC request: {body}"
    );

    // The headers name one tool, the body another: the body is what the server runs.
    let mut lying = common.to_vec();
    lying.extend([("mcp-method", "tools/call"), ("mcp-name", "read_doc")]);
    let refused = http::check(
        &authorizer,
        http_check("/ext-authz/mcp", &lying, &tools_call("delete_doc")),
    )
    .await;
    assert_eq!(refused.headers()[envoy::REASON_HEADER], "UnreadableCall");
    let text = authorizer.metrics.encode().unwrap();
    for series in [
        r#"mandate_authz_decisions_total{protocol="http",decision="allowed",reason="Allowed"} 1"#,
        r#"mandate_authz_decisions_total{protocol="http",decision="denied",reason="UnreadableCall"} 1"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}

#[tokio::test]
async fn a_forward_auth_proxy_names_the_call_in_x_forwarded_headers() {
    let authorizer = authorizer(true);
    let bearer = format!("Bearer {}", token("reader"));
    let forwarded = |method: &'static str, uri: &'static str| {
        vec![
            ("authorization", bearer.clone()),
            ("x-forwarded-method", method.to_owned()),
            ("x-forwarded-uri", uri.to_owned()),
            ("x-forwarded-host", "docs-mcp.agents.svc".to_owned()),
        ]
    };
    let ask = |headers: Vec<(&'static str, String)>| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_check(http::FORWARD_AUTH_PATH, &headers, "")
    };
    let mut mcp = forwarded("POST", "/mcp");
    mcp.extend([
        ("mcp-method", "tools/call".to_owned()),
        ("mcp-name", "read_doc".to_owned()),
    ]);
    assert_eq!(http::check(&authorizer, ask(mcp)).await.status(), 200);
    // The tool declares no HTTP operations.
    let plain = http::check(&authorizer, ask(forwarded("GET", "/v1/docs"))).await;
    assert_eq!(plain.status(), 403);
    assert_eq!(
        plain.headers()[envoy::REASON_HEADER],
        "OperationNotDeclared"
    );
    // A forward-auth proxy passes every client header: a client's x-mandate-service is no
    // gateway's word, the forwarded Host is.
    let mut steered = forwarded("POST", "/mcp");
    steered.extend([
        ("mcp-method", "tools/call".to_owned()),
        ("mcp-name", "read_doc".to_owned()),
        (envoy::SERVICE_HEADER, "agents/elsewhere".to_owned()),
    ]);
    assert_eq!(http::check(&authorizer, ask(steered)).await.status(), 200);
    // Nothing forwarded: nothing to judge.
    let empty = http::check(&authorizer, ask(vec![("authorization", bearer.clone())])).await;
    assert_eq!(empty.headers()[envoy::REASON_HEADER], "UnreadableCall");
}
