//! One tool-call decision with 10,000 identities in the snapshot: the pure decision alone, and
//! the whole in-process path of an Envoy ext_authz Check (read the CheckRequest, verify the
//! bearer token from the cache, decide, count, answer). Run with `cargo bench --bench authz`
//! (part of `make bench-authz`). The token is cached (TokenReview answered once, at warm-up),
//! as it is for every call but the first of a token in 10 seconds.

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use mandate::admission::{SnapshotSource, synthetic};
use mandate::authz::tokens::{Reviewed, TokenReviewer, TokenVerifier};
use mandate::authz::{Authorizer, envoy};
use mandate::decide::{Authentication, Call, Caller, Operation, Server, decide};
use mandate::project::TrustDomain;
use mandate::telemetry::Metrics;

const AUDIENCE: &str = "mandate.dev/agents/catalogue";

/// TokenReview as the API server answers for the synthetic agent `agents/researcher`.
struct Researcher;

impl TokenReviewer for Researcher {
    fn review(&self, _: &str, _: Vec<String>) -> BoxFuture<'_, Result<Reviewed, String>> {
        Box::pin(async {
            Ok(Reviewed::Authenticated {
                username: "system:serviceaccount:agents:researcher".into(),
                audiences: vec![AUDIENCE.into()],
                pod: Some("researcher-0".into()),
                pod_uid: Some("uid-researcher-0".into()),
            })
        })
    }
}

/// A JWT-shaped token (TokenReview, faked here, is what verifies it).
fn token() -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::json!({"aud": [AUDIENCE], "exp": Timestamp::now().as_second() + 3600});
    format!(
        "{}.{}.signature",
        engine.encode(br#"{"alg":"RS256"}"#),
        engine.encode(claims.to_string())
    )
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.into())),
    }
}

/// The Check request Envoy sends for `tools/call search` after its MCP filter.
fn check_request(token: &str) -> CheckRequest {
    let params = Struct {
        fields: [("name".to_owned(), string("search"))].into(),
    };
    let mcp = Struct {
        fields: [
            ("method".to_owned(), string("tools/call")),
            (
                "params".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(params)),
                },
            ),
        ]
        .into(),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/mcp".into(),
                    host: "catalogue.agents:8080".into(),
                    headers: HashMap::from([
                        ("authorization".to_owned(), format!("Bearer {token}")),
                        ("mcp-method".to_owned(), "tools/call".to_owned()),
                        ("mcp-name".to_owned(), "search".to_owned()),
                    ]),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            context_extensions: HashMap::from([(
                envoy::SERVICE_EXTENSION.to_owned(),
                "agents/catalogue".to_owned(),
            )]),
            metadata_context: Some(Metadata {
                filter_metadata: HashMap::from([(
                    envoy::MCP_METADATA_NAMESPACES[0].to_owned(),
                    mcp,
                )]),
                ..Metadata::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

fn authz(c: &mut Criterion) {
    let snapshot = Arc::new(synthetic::snapshot(10_000));
    let call = Call {
        caller: Authentication::Verified(Caller {
            namespace: "agents".into(),
            service_account: "researcher".into(),
            audiences: Some(vec![AUDIENCE.into()]),
        }),
        server: Ok(Server::Service {
            namespace: "agents".into(),
            name: "catalogue".into(),
        }),
        operation: Ok(Operation::Mcp {
            method: "tools/call".into(),
            tool: Some("search".into()),
        }),
        delegators: Vec::new(),
    };
    let now = Timestamp::now();
    assert!(
        decide(snapshot.authority(), &call, now).allowed,
        "the benchmark call must be allowed"
    );
    c.bench_function("decide a tools/call (10k identities)", |b| {
        b.iter(|| decide(snapshot.authority(), std::hint::black_box(&call), now))
    });

    let snapshots = SnapshotSource::default();
    snapshots.store(Some(snapshot));
    let authorizer = Authorizer::new(
        snapshots,
        TokenVerifier::new(Arc::new(Researcher)),
        TrustDomain::default(),
        Metrics::new(),
    );
    let request = check_request(&token());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let check = || async {
        let asked = envoy::read_check(std::hint::black_box(&request));
        envoy::respond(&authorizer.judge(&asked, "grpc").await)
    };
    let warm = runtime.block_on(check());
    assert_eq!(
        warm.status.map(|s| s.code),
        Some(0),
        "the benchmark Check must be allowed"
    );
    c.bench_function(
        "read a Check, verify the cached token, decide, count, answer (10k identities)",
        |b| b.iter(|| runtime.block_on(check())),
    );
}

criterion_group!(benches, authz);
criterion_main!(benches);
