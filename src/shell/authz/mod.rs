//! The decision service: gateways ask, mandate decides each tool call. A protocol's request in
//! (Envoy ext_authz over gRPC or HTTP, forward-auth, the AuthZEN evaluation API), read into
//! [`Asked`]; the caller's credential verified (mTLS SPIFFE ID, or a bearer token through
//! TokenReview); `decide::decide` on the latest authority snapshot at the current instant; an
//! [`Answer`] out with a decision id, one JSON log line and the metrics. Holds no rule: when the snapshot is not synced or a credential cannot
//! be verified, the pure decision refuses.

pub mod authzen;
pub mod envoy;
pub mod grpc;
pub mod http;
pub mod pods;
pub mod server;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::admission::SnapshotSource;
use crate::decide::{
    Authentication, Call, Decision, Operation, Server, Unreadable, decide, parse_host,
    parse_spiffe_id,
};
use crate::project::{TrustDomain, spiffe_id};
use crate::telemetry::Metrics;
use tokens::TokenVerifier;

/// What a gateway asks, whatever the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The mTLS peer's identity (Envoy's `source.principal`), when there is one. An assertion
    /// of the gateway's: believed only when `gateway_verified`.
    pub principal: Option<String>,
    /// Whether the gateway asking presented a client certificate the decision service verified
    /// (`--authz-client-ca`). Set by the connection, never read from the request.
    pub gateway_verified: bool,
    /// The caller's bearer token.
    pub bearer: Option<String>,
    /// The delegators' tokens, outermost first.
    pub delegators: Vec<String>,
    /// The called Service as `<namespace>/<name>`, when the gateway names it explicitly.
    pub service: Option<String>,
    /// The request's Host (`:authority`).
    pub host: String,
    /// What the call does, or why it cannot be read safely.
    pub operation: Result<Operation, Unreadable>,
    /// Whether the call is (or claims to be) an MCP one: a refusal then reads as a JSON-RPC
    /// error.
    pub mcp: bool,
    /// The JSON-RPC id of an MCP request, when the gateway passes it: a refusal answers it.
    pub rpc_id: Option<serde_json::Value>,
}

impl Asked {
    /// The operation as a log field; `unreadable call` when it could not be read.
    pub fn describe_operation(&self) -> String {
        self.operation
            .as_ref()
            .map_or_else(|_| "unreadable call".to_owned(), Operation::describe)
    }
}

/// A decision with its id, as the gateway gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Unique per decision: returned to the gateway (for its access log) and in the log line.
    pub id: String,
    pub decision: Decision,
    /// The operation, described (`tools/call search`, `GET /v1/docs`).
    pub operation: String,
    /// Whether the call was an MCP one (a refusal then reads as a JSON-RPC error).
    pub mcp: bool,
    /// The JSON-RPC id the refusal answers (`null` when the gateway did not pass it).
    pub rpc_id: serde_json::Value,
}

impl Answer {
    /// One line for a refusal: `mandate refused tools/call x: ActionNotDeclared: ...`.
    pub fn message(&self) -> String {
        format!(
            "mandate refused {}: {}: {}",
            self.operation,
            self.decision.code(),
            self.decision.detail
        )
    }

    /// The body of a refusal: a JSON-RPC error (code -32001, as the draft MCP profile of
    /// AuthZEN has it) for an MCP call, a plain JSON object otherwise; both carry the reason
    /// code and the decision id.
    pub fn refusal_body(&self) -> String {
        let data = serde_json::json!({
            "reason": self.decision.code(),
            "detail": self.decision.detail,
            "decisionId": self.id,
        });
        let body = if self.mcp {
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": self.rpc_id,
                "error": { "code": -32001, "message": self.message(), "data": data },
            })
        } else {
            data
        };
        body.to_string()
    }
}

/// Judges calls for every protocol the decision service speaks.
pub struct Authorizer {
    snapshots: SnapshotSource,
    tokens: TokenVerifier,
    trust_domain: TrustDomain,
    metrics: Metrics,
    ids: DecisionIds,
}

impl Authorizer {
    pub fn new(
        snapshots: SnapshotSource,
        tokens: TokenVerifier,
        trust_domain: TrustDomain,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Authorizer {
            snapshots,
            tokens,
            trust_domain,
            metrics,
            ids: DecisionIds::new(),
        })
    }

    /// Decides `asked` now, logs the decision and counts it under `protocol`.
    pub async fn judge(&self, asked: &Asked, protocol: &'static str) -> Answer {
        let started = Instant::now();
        let decision = self.decision(asked).await;
        let answer = Answer {
            id: self.ids.next(),
            decision,
            operation: asked.describe_operation(),
            mcp: asked.mcp,
            rpc_id: asked.rpc_id.clone().unwrap_or(serde_json::Value::Null),
        };
        self.record(protocol, asked.gateway_verified, &answer, started.elapsed());
        answer
    }

    async fn decision(&self, asked: &Asked) -> Decision {
        let Some(snapshot) = self.snapshots.load_full() else {
            return Decision::not_ready();
        };
        let caller = self.authenticate(asked).await;
        let caller_namespace = match &caller {
            Authentication::Verified(c) => c.namespace.as_str(),
            Authentication::Refused(_) => "",
        };
        let server = match &asked.service {
            Some(reference) => parse_service_reference(reference),
            None => parse_host(&asked.host, caller_namespace),
        };
        let mut delegators = Vec::with_capacity(asked.delegators.len());
        for token in &asked.delegators {
            delegators.push(self.tokens.verify(token).await);
        }
        let call = Call {
            caller,
            server,
            operation: asked.operation.clone(),
            delegators,
        };
        decide(snapshot.authority(), &call, Timestamp::now())
    }

    /// The caller: a bearer token when there is one (it names the tool's audience), else the
    /// mTLS peer, which only a verified gateway may assert: without a client certificate anyone
    /// who reaches the port could name any agent. A token presented by an mTLS peer of another
    /// ServiceAccount of this trust domain is someone else's token: refused.
    async fn authenticate(&self, asked: &Asked) -> Authentication {
        let peer = asked
            .principal
            .as_deref()
            .map(|p| parse_spiffe_id(self.trust_domain.as_str(), p));
        match (&asked.bearer, peer) {
            (Some(token), peer) => {
                let verified = self.tokens.verify(token).await;
                match (&verified, peer) {
                    (Authentication::Verified(caller), Some(Ok((namespace, account))))
                        if caller.namespace != namespace || caller.service_account != account =>
                    {
                        Authentication::Refused(format!(
                            "the token belongs to {}/{} but the mTLS peer is {namespace}/{account}",
                            caller.namespace, caller.service_account
                        ))
                    }
                    _ => verified,
                }
            }
            (None, Some(Ok(_))) if !asked.gateway_verified => Authentication::Refused(
                "an mTLS peer identity (source.principal) is believed only from a gateway with a \
                 client certificate mandate verified (--authz-client-ca); this one presented \
                 none: configure its client certificate, or send the agent's token"
                    .into(),
            ),
            (None, Some(Ok((namespace, service_account)))) => {
                Authentication::Verified(crate::decide::Caller {
                    namespace,
                    service_account,
                    audiences: None,
                })
            }
            (None, Some(Err(why))) => Authentication::Refused(why),
            (None, None) => Authentication::Refused(
                "the call carries neither an mTLS peer identity (source.principal) nor a bearer token"
                    .into(),
            ),
        }
    }

    /// One JSON line (target `mandate::authz`) and the metrics per decision.
    fn record(
        &self,
        protocol: &'static str,
        gateway_verified: bool,
        answer: &Answer,
        elapsed: Duration,
    ) {
        let d = &answer.decision;
        let spiffe = d
            .namespace
            .as_deref()
            .zip(d.service_account.as_deref())
            .map(|(ns, account)| spiffe_id(&self.trust_domain, ns, account));
        tracing::info!(
            target: "mandate::authz",
            decision_id = %answer.id,
            time = %Timestamp::now(),
            protocol,
            gateway_verified,
            allowed = d.allowed,
            reason = d.code(),
            namespace = d.namespace.as_deref(),
            agent = d.agent.as_deref(),
            owner = d.owner.as_deref(),
            spiffe_id = spiffe.as_deref(),
            tool = d.tool.as_deref(),
            operation = %answer.operation,
            action = d.action.map(|a| a.as_str()),
            chain = %d.chain.join(" -> "),
            binding = d.binding.as_deref(),
            generation = d.generation,
            detail = %d.detail,
            "tool call decided"
        );
        self.metrics
            .record_authz(protocol, d.allowed, d.code(), elapsed);
    }
}

/// `<namespace>/<name>` of a Service, as a gateway names it in a context extension.
fn parse_service_reference(reference: &str) -> Result<Server, String> {
    match reference.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok(Server::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!(
            "{reference:?} is not <namespace>/<name> of a Service"
        )),
    }
}

/// Decision ids: this process's start instant (hex) and a counter, unique across replicas and
/// restarts in practice without a random source.
struct DecisionIds {
    process: String,
    next: AtomicU64,
}

impl DecisionIds {
    fn new() -> Self {
        let started = Timestamp::now();
        DecisionIds {
            process: format!(
                "{:x}{:05x}",
                started.as_second(),
                (started.subsec_nanosecond() as u32 ^ std::process::id()) & 0xfffff
            ),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{}",
            self.process,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}
