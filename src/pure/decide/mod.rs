//! Tool-call decisions: an authority snapshot, a verified caller, the called server, the
//! operation, an optional delegation chain and `now` in; a [`Decision`] out (allowed or the
//! reason code that refused it, with the ToolBinding and generation that allowed it). Every
//! protocol the decision service speaks (Envoy ext_authz over gRPC and HTTP, AuthZEN) and every
//! test call this one function. Pure: no I/O, no clock, no token verification (the shell
//! verifies credentials and hands over what they proved).

mod names;
mod operation;
mod reading;

#[cfg(test)]
mod tests;

pub use names::{parse_host, parse_service_account_username, parse_spiffe_id};
pub use operation::{Match, Operation, Unreadable};
pub use reading::{Body, Forwarded, MAX_BODY, McpRequest, ReadCall, read_call};

use k8s_openapi::jiff::Timestamp;

use crate::admission::verdict::owner_label;
use crate::api::{Action, Tool, ToolBinding};
use crate::authority::{Authority, HeldTool, Reason};

/// An agent (or any workload) as its credential proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    /// The audiences a verified bearer token carries; `None` when the caller was identified by
    /// its mTLS peer certificate (a SPIFFE ID), which has no audience.
    pub audiences: Option<Vec<String>>,
}

/// How the caller was (not) identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Verified(Caller),
    /// No credential, or one that did not verify: why, in one sentence.
    Refused(String),
}

/// The server a call goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Service { namespace: String, name: String },
}

/// One call to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub caller: Authentication,
    /// The called server, or why the request does not name one.
    pub server: Result<Server, String>,
    /// What the call does, or why it cannot be read safely (see [`read_call`]).
    pub operation: Result<Operation, Unreadable>,
    /// The agents this call works for, outermost first (the delegator that started the work,
    /// then each delegate that handed it on); empty for an agent acting on its own.
    pub delegators: Vec<Authentication>,
}

/// The answer, with everything the decision log records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// Why it was refused; `None` when allowed.
    pub reason: Option<Reason>,
    /// What is wrong and what to change (refusals), or what allowed it.
    pub detail: String,
    pub namespace: Option<String>,
    /// The caller's ServiceAccount (its SPIFFE ID names it).
    pub service_account: Option<String>,
    pub agent: Option<String>,
    /// `Kind:name` of the agent's accountable owner.
    pub owner: Option<String>,
    pub tool: Option<String>,
    pub binding: Option<String>,
    pub generation: Option<i64>,
    pub action: Option<Action>,
    /// The agents the work passed through, outermost delegator first, the caller last; empty
    /// without delegation.
    pub chain: Vec<String>,
}

impl Decision {
    /// A refusal before anything about the caller is known.
    pub fn refused(reason: Reason, detail: impl Into<String>) -> Decision {
        Decision {
            reason: Some(reason),
            detail: detail.into(),
            ..Decision::default()
        }
    }

    /// mandate has not synced its caches: it cannot decide, so it refuses.
    pub fn not_ready() -> Decision {
        Decision::refused(
            Reason::NotReady,
            "mandate has not synced its caches yet and refuses every call until it has",
        )
    }

    /// The reason's code, `"Allowed"` when allowed: a metric label.
    pub fn code(&self) -> &'static str {
        self.reason.map_or("Allowed", Reason::code)
    }

    fn refuse(mut self, reason: Reason, detail: impl Into<String>) -> Decision {
        self.allowed = false;
        self.reason = Some(reason);
        self.detail = detail.into();
        self
    }
}

/// How far one held tool got in judging the call; the furthest explains a refusal best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    OperationNotDeclared,
    ActionNotDeclared,
    WrongAudience,
    Allowed,
}

/// Judges one call at `now`. Allowed only when the caller is an agent that holds, at `now`, a
/// live tool whose destination is the called server, which declares the operation, whose
/// actions include the operation's action, and (for a token) whose audience the token carries;
/// a High-risk tool only while its approval is in force (a binding that breaks a rule grants
/// nothing). Delegated work also needs every hop of the chain covered, for that tool and
/// depth, by a safe DelegationPolicy.
pub fn decide(authority: &Authority, call: &Call, now: Timestamp) -> Decision {
    let caller = match &call.caller {
        Authentication::Verified(caller) => caller,
        Authentication::Refused(why) => return Decision::refused(Reason::Unauthenticated, why),
    };
    let mut decision = Decision {
        namespace: Some(caller.namespace.clone()),
        service_account: Some(caller.service_account.clone()),
        ..Decision::default()
    };
    let Some(identity) =
        authority.identity_for_service_account(&caller.namespace, &caller.service_account)
    else {
        return decision.refuse(
            Reason::NotAnAgent,
            format!(
                "ServiceAccount {}/{} belongs to no AgentIdentity: only agents call tools through mandate",
                caller.namespace, caller.service_account
            ),
        );
    };
    let agent = identity.metadata.name.clone().unwrap_or_default();
    decision.agent = Some(agent.clone());
    decision.owner = Some(owner_label(&identity.spec.owner));
    let server = match &call.server {
        Ok(server) => server,
        Err(why) => return decision.refuse(Reason::UnreadableCall, why.clone()),
    };
    let readable = match &call.operation {
        Ok(operation) => operation.check_readable().map(|()| operation),
        Err(unreadable) => Err(unreadable.clone()),
    };
    let operation = match readable {
        Ok(operation) => operation,
        Err(Unreadable(why)) => return decision.refuse(Reason::UnreadableCall, why),
    };
    let held = authority.held_tools(&caller.namespace, &agent, now);
    let at_server: Vec<&HeldTool<'_>> = held
        .iter()
        .filter(|h| reaches(h.tool, h.binding, server))
        .collect();
    if at_server.is_empty() {
        return decision.refuse(
            Reason::ToolNotHeld,
            not_held_detail(authority, &caller.namespace, &agent, server, now),
        );
    }
    let judged = at_server.iter().map(|h| {
        let (stage, action) = judge(h, operation, caller);
        (stage, action, *h)
    });
    // The first tool that allows it; else the one that got furthest (first by tool name).
    let (stage, action, best) = judged
        .fold(
            None,
            |best: Option<(Stage, Option<Action>, &HeldTool)>, next| match best {
                Some(b) if b.0 >= next.0 => Some(b),
                _ => Some(next),
            },
        )
        .expect("at least one tool reaches the server");
    decision.tool = Some(best.tool.name.clone());
    decision.action = action;
    let described = operation.describe();
    let tool = &best.tool.name;
    match stage {
        Stage::OperationNotDeclared => {
            return decision.refuse(
                Reason::OperationNotDeclared,
                format!(
                    "no tool {agent} holds on {} declares {described}: add it to the tool's {}",
                    server.describe(),
                    match operation {
                        Operation::Mcp { .. } => "mcp.tools",
                        Operation::Http { .. } => "http operations",
                    }
                ),
            );
        }
        Stage::ActionNotDeclared => {
            return decision.refuse(
                Reason::ActionNotDeclared,
                format!(
                    "{described} performs {} but tool {tool} of {agent} declares only {}",
                    action.map_or("nothing", Action::as_str),
                    actions_list(best.tool)
                ),
            );
        }
        Stage::WrongAudience => {
            return decision.refuse(
                Reason::WrongAudience,
                format!(
                    "the token is not for tool {tool}: request one with audience {}",
                    best.audience()
                ),
            );
        }
        Stage::Allowed => {}
    }
    if !call.delegators.is_empty() {
        match delegation_chain(authority, caller, &agent, best, &call.delegators, now) {
            Ok(chain) => decision.chain = chain,
            Err((chain, why)) => {
                decision.chain = chain;
                return decision.refuse(Reason::DelegationNotAllowed, why);
            }
        }
    }
    // Named only when it allowed the call: a refusal is explained by its reason code.
    decision.binding = Some(best.binding_name().to_owned());
    decision.generation = best.binding.metadata.generation;
    decision.allowed = true;
    decision.detail = format!(
        "{described} on tool {tool} granted by ToolBinding {}",
        best.binding_name()
    );
    decision
}

/// How far `held` gets with the call, and the operation's action under it.
fn judge(held: &HeldTool<'_>, operation: &Operation, caller: &Caller) -> (Stage, Option<Action>) {
    let action = match operation.match_tool(held.tool) {
        Match::NotDeclared => return (Stage::OperationNotDeclared, None),
        Match::Declared(action) => action,
    };
    if action.is_some_and(|a| !held.tool.actions.contains(&a)) {
        return (Stage::ActionNotDeclared, action);
    }
    if !audience_fits(held, caller) {
        return (Stage::WrongAudience, action);
    }
    (Stage::Allowed, action)
}

/// A token must carry the tool's audience; an mTLS identity has none to check.
fn audience_fits(held: &HeldTool<'_>, caller: &Caller) -> bool {
    caller
        .audiences
        .as_ref()
        .is_none_or(|audiences| audiences.contains(&held.audience()))
}

fn binding_namespace(binding: &ToolBinding) -> &str {
    binding.metadata.namespace.as_deref().unwrap_or_default()
}

/// Whether `tool` (of `binding`) lives at `server`.
fn reaches(tool: &Tool, binding: &ToolBinding, server: &Server) -> bool {
    match server {
        Server::Service { namespace, name } => {
            tool.destination.service.as_ref().is_some_and(|service| {
                service.name == *name
                    && service
                        .namespace
                        .as_deref()
                        .unwrap_or(binding_namespace(binding))
                        == namespace
            })
        }
    }
}

impl Server {
    fn describe(&self) -> String {
        match self {
            Server::Service { namespace, name } => format!("Service {namespace}/{name}"),
        }
    }
}

fn actions_list(tool: &Tool) -> String {
    tool.actions
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `agent` holds no live tool at `server`: a binding naming one that is not live (and its
/// phase), or none at all.
fn not_held_detail(
    authority: &Authority,
    namespace: &str,
    agent: &str,
    server: &Server,
    now: Timestamp,
) -> String {
    let dormant: Vec<String> = authority
        .bindings_for(namespace, agent)
        .flat_map(|b| {
            b.spec
                .tools
                .iter()
                .filter(move |t| reaches(t, b, server))
                .map(move |t| {
                    let findings = authority.validate_binding(b, now);
                    let phase = Authority::phase_given(b, &findings, now);
                    let why: Vec<&str> = findings.iter().map(|f| f.reason.code()).collect();
                    let name = b.metadata.name.as_deref().unwrap_or_default();
                    if why.is_empty() {
                        format!("tool {} of ToolBinding {name} is {phase:?}", t.name)
                    } else {
                        format!(
                            "tool {} of ToolBinding {name} is {phase:?} ({})",
                            t.name,
                            why.join(", ")
                        )
                    }
                })
        })
        .collect();
    if dormant.is_empty() {
        format!(
            "{agent} holds no tool whose destination is {}: bind one",
            server.describe()
        )
    } else {
        format!(
            "{agent} holds no live tool at {}: {}",
            server.describe(),
            dormant.join("; ")
        )
    }
}

/// The chain `delegators.. -> agent`, checked hop by hop: every delegator is a verified agent
/// of the caller's namespace holding the tool now (with a token, for the tool's audience), and
/// every hop is a safe DelegationPolicy edge naming the tool whose maxDepth allows the whole
/// chain. The chain's names, and on refusal why.
fn delegation_chain(
    authority: &Authority,
    caller: &Caller,
    agent: &str,
    held: &HeldTool<'_>,
    delegators: &[Authentication],
    now: Timestamp,
) -> Result<Vec<String>, (Vec<String>, String)> {
    let tool = held.tool.name.as_str();
    let mut chain = Vec::with_capacity(delegators.len() + 1);
    for delegator in delegators {
        let delegator = match delegator {
            Authentication::Verified(d) => d,
            Authentication::Refused(why) => {
                return Err((chain, format!("a delegator's credential is refused: {why}")));
            }
        };
        let named = (delegator.namespace == caller.namespace)
            .then(|| {
                authority
                    .identity_for_service_account(&delegator.namespace, &delegator.service_account)
            })
            .flatten()
            .and_then(|i| i.metadata.name.clone());
        let Some(name) = named else {
            return Err((
                chain,
                format!(
                    "delegator {}/{} is no agent of namespace {} (delegation stays within a namespace)",
                    delegator.namespace, delegator.service_account, caller.namespace
                ),
            ));
        };
        if !audience_fits(held, delegator) {
            return Err((
                chain,
                format!("delegator {name}'s token is not for tool {tool}"),
            ));
        }
        if !authority
            .held_tool_names(&caller.namespace, &name, now)
            .contains(tool)
        {
            chain.push(name.clone());
            return Err((chain, format!("delegator {name} does not hold tool {tool}")));
        }
        chain.push(name);
    }
    chain.push(agent.to_owned());
    let hops = u32::try_from(chain.len() - 1).unwrap_or(u32::MAX);
    let graph = authority.delegation_graph(&caller.namespace, now);
    for pair in chain.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let covered = graph.safe_edges().any(|edge| {
            edge.delegator == *from
                && edge.delegate == *to
                && edge.tools.contains(tool)
                && edge.max_depth >= hops
        });
        if !covered {
            let detail = format!(
                "no safe DelegationPolicy lets {from} hand tool {tool} to {to} over a chain of {hops} hop(s): {}",
                chain.join(" -> ")
            );
            return Err((chain, detail));
        }
    }
    Ok(chain)
}
