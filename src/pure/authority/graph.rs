//! The delegation graph of one namespace: edges (delegator -> delegate, carrying tools) and
//! the tools each agent holds in; escalation paths, cycles, depth violations and the edges
//! that must be withdrawn (fail closed) out. Pure: no I/O, plain data only.
//!
//! The rules (DESIGN.md section 1):
//! - attenuation: every tool on an edge must be held by both its delegator and its delegate;
//! - a chain A -> B -> C lets A reach every tool on the chain's edges, so any reachable tool A
//!   does not hold is an escalation path;
//! - cycles are refused;
//! - a chain longer than the smallest maxDepth along it is a depth violation.
//!
//! Escalation is judged by reachability (the tools reachable from an edge are computed once
//! per strongly connected component), so the work stays polynomial however many chains a
//! graph has. Depth is judged on the acyclic part of the graph; the edges of a cycle are
//! withdrawn anyway.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// One delegation: `delegator` may hand `tools` to `delegate`, under `policy`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    pub delegator: String,
    pub delegate: String,
    /// The DelegationPolicy that declares the edge.
    pub policy: String,
    pub tools: BTreeSet<String>,
    /// The policy's maxDepth: how many hops its authority may travel.
    pub max_depth: u32,
}

/// What kind of unsafe chain a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// A chain hands on a tool its first agent (or the edge's delegate) does not hold.
    Escalation,
    /// Delegation comes back to where it started.
    Cycle,
    /// A chain is longer than the smallest maxDepth along it.
    Depth,
}

/// One unsafe chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The agents along the chain, in order (a cycle repeats its first agent at the end).
    pub chain: Vec<String>,
    /// The tool handed on without being held (escalations only).
    pub tool: Option<String>,
    /// The DelegationPolicies whose edges the chain uses.
    pub policies: BTreeSet<String>,
    /// The chain, readable: `planner -> executor -> erp-api: planner does not hold erp-api`.
    pub message: String,
}

/// A namespace's delegation graph, analysed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelegationGraph {
    /// Sorted by (delegator, delegate, policy).
    edges: Vec<Edge>,
    /// Parallel to `edges`: whether the edge is part of an unsafe chain and loses its network
    /// path.
    withdrawn: Vec<bool>,
    /// Sorted by message, one per distinct chain.
    violations: Vec<Violation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Violation {
    pub fn involves_agent(&self, agent: &str) -> bool {
        self.chain.iter().any(|a| a == agent)
    }

    pub fn involves_policy(&self, policy: &str) -> bool {
        self.policies.contains(policy)
    }
}

impl DelegationGraph {
    /// Analyses `edges` given the tools each agent holds now (an agent missing from `held`
    /// holds nothing).
    pub fn analyse(mut edges: Vec<Edge>, held: &BTreeMap<String, BTreeSet<String>>) -> Self {
        edges.sort();
        edges.dedup();
        let graph = Indexed::new(&edges, held);
        let mut found = Found {
            withdrawn: vec![false; edges.len()],
            violations: BTreeMap::new(),
        };
        graph.attenuation(&mut found);
        graph.escalation(&mut found);
        graph.cycles(&mut found);
        graph.depth(&mut found);
        DelegationGraph {
            edges,
            withdrawn: found.withdrawn,
            violations: found.violations.into_values().collect(),
        }
    }

    /// Every edge, sorted by (delegator, delegate, policy).
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Every unsafe chain, sorted by message.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// No escalation path, cycle or depth violation.
    pub fn is_safe(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether an edge keeps its network path.
    pub fn is_withdrawn(&self, edge: &Edge) -> bool {
        self.edges
            .binary_search(edge)
            .is_ok_and(|i| self.withdrawn[i])
    }

    /// The edges no unsafe chain uses.
    pub fn safe_edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges
            .iter()
            .zip(&self.withdrawn)
            .filter(|(_, withdrawn)| !**withdrawn)
            .map(|(edge, _)| edge)
    }

    /// Agents `agent` may delegate to, safe or not, sorted.
    pub fn delegates_to(&self, agent: &str) -> Vec<&str> {
        sorted_unique(
            self.edges
                .iter()
                .filter(|e| e.delegator == agent)
                .map(|e| e.delegate.as_str()),
        )
    }

    /// Agents that may delegate to `agent`, safe or not, sorted.
    pub fn delegated_from(&self, agent: &str) -> Vec<&str> {
        sorted_unique(
            self.edges
                .iter()
                .filter(|e| e.delegate == agent)
                .map(|e| e.delegator.as_str()),
        )
    }

    /// Delegates `agent` keeps a network path to: those none of whose edges from `agent` is
    /// withdrawn. Sorted.
    pub fn safe_delegates(&self, agent: &str) -> Vec<&str> {
        self.delegates_to(agent)
            .into_iter()
            .filter(|d| self.pair_is_safe(agent, d))
            .collect()
    }

    /// Delegators that keep a network path to `agent`. Sorted.
    pub fn safe_delegators(&self, agent: &str) -> Vec<&str> {
        self.delegated_from(agent)
            .into_iter()
            .filter(|d| self.pair_is_safe(d, agent))
            .collect()
    }

    /// Every unsafe chain through `agent` (escalations, cycles and depth violations), as
    /// readable strings: what `AgentIdentity.status.escalationPaths` shows.
    pub fn escalation_paths(&self, agent: &str) -> Vec<String> {
        self.violations
            .iter()
            .filter(|v| v.involves_agent(agent))
            .map(|v| v.message.clone())
            .collect()
    }

    /// The unsafe chains a policy's edges take part in.
    pub fn violations_of_policy<'a>(
        &'a self,
        policy: &'a str,
    ) -> impl Iterator<Item = &'a Violation> {
        self.violations
            .iter()
            .filter(move |v| v.involves_policy(policy))
    }

    /// [`DelegationGraph::violations_of_policy`] as readable strings: what
    /// `DelegationPolicy.status.violations` shows.
    pub fn policy_violations(&self, policy: &str) -> Vec<String> {
        self.violations_of_policy(policy)
            .map(|v| v.message.clone())
            .collect()
    }

    fn pair_is_safe(&self, delegator: &str, delegate: &str) -> bool {
        // Fail closed: one unsafe edge between two agents withdraws their network path.
        self.edges
            .iter()
            .zip(&self.withdrawn)
            .filter(|(e, _)| e.delegator == delegator && e.delegate == delegate)
            .all(|(_, withdrawn)| !*withdrawn)
    }
}

fn sorted_unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    items.collect::<BTreeSet<_>>().into_iter().collect()
}

/// What the passes found: withdrawn edges and violations keyed by message (so a chain found
/// twice is reported once, with the union of its policies).
struct Found {
    withdrawn: Vec<bool>,
    violations: BTreeMap<String, Violation>,
}

impl Found {
    fn report(&mut self, violation: Violation) {
        match self.violations.get_mut(&violation.message) {
            Some(existing) => existing.policies.extend(violation.policies),
            None => {
                self.violations.insert(violation.message.clone(), violation);
            }
        }
    }
}

const UNSET: usize = usize::MAX;

/// The graph with agents as indices.
struct Indexed<'a> {
    edges: &'a [Edge],
    names: Vec<&'a str>,
    held: Vec<Option<&'a BTreeSet<String>>>,
    from: Vec<usize>,
    to: Vec<usize>,
    /// Per node: outgoing and incoming edge indices, in edge order.
    out: Vec<Vec<usize>>,
    into: Vec<Vec<usize>>,
    /// Strongly connected component of each node; components are numbered sinks first, so an
    /// edge between two components always goes to a lower number.
    comp: Vec<usize>,
    comps: usize,
}

impl<'a> Indexed<'a> {
    fn new(edges: &'a [Edge], held: &'a BTreeMap<String, BTreeSet<String>>) -> Self {
        let names: Vec<&str> = edges
            .iter()
            .flat_map(|e| [e.delegator.as_str(), e.delegate.as_str()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let node = |name: &str| index.get(name).copied().unwrap_or(UNSET);
        let from: Vec<usize> = edges.iter().map(|e| node(&e.delegator)).collect();
        let to: Vec<usize> = edges.iter().map(|e| node(&e.delegate)).collect();
        let mut out = vec![Vec::new(); names.len()];
        let mut into = vec![Vec::new(); names.len()];
        for (e, (&u, &v)) in from.iter().zip(&to).enumerate() {
            out[u].push(e);
            into[v].push(e);
        }
        let held = names.iter().map(|n| held.get(*n)).collect();
        let mut graph = Indexed {
            edges,
            names,
            held,
            from,
            to,
            out,
            into,
            comp: Vec::new(),
            comps: 0,
        };
        graph.strongly_connected_components();
        graph
    }

    fn holds(&self, node: usize, tool: &str) -> bool {
        self.held[node].is_some_and(|h| h.contains(tool))
    }

    fn is_cyclic(&self, edge: usize) -> bool {
        self.comp[self.from[edge]] == self.comp[self.to[edge]]
    }

    fn chain_names(&self, nodes: &[usize]) -> Vec<String> {
        nodes.iter().map(|&n| self.names[n].to_owned()).collect()
    }

    fn policies(&self, edges: &[usize]) -> BTreeSet<String> {
        edges
            .iter()
            .map(|&e| self.edges[e].policy.clone())
            .collect()
    }

    /// Tarjan's algorithm without recursion (a long chain must not overflow the stack).
    fn strongly_connected_components(&mut self) {
        let n = self.names.len();
        let mut index = vec![UNSET; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut comp = vec![UNSET; n];
        let mut next = 0;
        let mut comps = 0;
        for start in 0..n {
            if index[start] != UNSET {
                continue;
            }
            index[start] = next;
            low[start] = next;
            next += 1;
            stack.push(start);
            on_stack[start] = true;
            let mut calls = vec![(start, 0usize)];
            while let Some(&mut (v, ref mut i)) = calls.last_mut() {
                if let Some(&e) = self.out[v].get(*i) {
                    *i += 1;
                    let w = self.to[e];
                    if index[w] == UNSET {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp[w] = comps;
                        if w == v {
                            break;
                        }
                    }
                    comps += 1;
                }
            }
        }
        self.comp = comp;
        self.comps = comps;
    }

    /// Every tool on an edge must be held by its delegate (the delegator side is the
    /// escalation pass's first hop).
    fn attenuation(&self, found: &mut Found) {
        for (e, edge) in self.edges.iter().enumerate() {
            for tool in edge.tools.iter().filter(|t| !self.holds(self.to[e], t)) {
                found.withdrawn[e] = true;
                let chain = vec![edge.delegator.clone(), edge.delegate.clone()];
                found.report(Violation {
                    kind: ViolationKind::Escalation,
                    message: format!(
                        "{} -> {tool}: {} does not hold {tool}",
                        chain.join(" -> "),
                        edge.delegate
                    ),
                    chain,
                    tool: Some(tool.clone()),
                    policies: BTreeSet::from([edge.policy.clone()]),
                });
            }
        }
    }

    /// Every tool reachable from an agent's edge must be held by that agent. An edge through
    /// which its delegator reaches a tool it does not hold is withdrawn; each such tool is
    /// reported once, with the shortest chain that reaches it.
    fn escalation(&self, found: &mut Found) {
        // Tools reachable from any node of each component (sinks first, so successors are
        // done before their predecessors).
        let mut members = vec![Vec::new(); self.comps];
        for (node, &c) in self.comp.iter().enumerate() {
            members[c].push(node);
        }
        let mut reach: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); self.comps];
        for c in 0..self.comps {
            let mut tools = BTreeSet::new();
            for &node in &members[c] {
                for &e in &self.out[node] {
                    tools.extend(self.edges[e].tools.iter().map(String::as_str));
                    let target = self.comp[self.to[e]];
                    if target != c {
                        tools.extend(reach[target].iter().copied());
                    }
                }
            }
            reach[c] = tools;
        }
        for (agent, edges) in self.out.iter().enumerate() {
            let mut missing: BTreeSet<&str> = BTreeSet::new();
            for &e in edges {
                let reachable = self.edges[e]
                    .tools
                    .iter()
                    .map(String::as_str)
                    .chain(reach[self.comp[self.to[e]]].iter().copied());
                let unheld: Vec<&str> = reachable.filter(|t| !self.holds(agent, t)).collect();
                if !unheld.is_empty() {
                    found.withdrawn[e] = true;
                    missing.extend(unheld);
                }
            }
            if !missing.is_empty() {
                self.witness_escalations(agent, missing, found);
            }
        }
    }

    /// Breadth-first from `agent`: the first edge (in BFS order) carrying each missing tool
    /// gives the shortest chain that reaches it.
    fn witness_escalations(&self, agent: usize, mut missing: BTreeSet<&str>, found: &mut Found) {
        let mut parent = vec![UNSET; self.names.len()];
        let mut seen = vec![false; self.names.len()];
        seen[agent] = true;
        let mut queue = VecDeque::from([agent]);
        while let Some(u) = queue.pop_front() {
            for &e in &self.out[u] {
                let carried: Vec<&str> = self.edges[e]
                    .tools
                    .iter()
                    .map(String::as_str)
                    .filter(|t| missing.contains(t))
                    .collect();
                for tool in carried {
                    missing.remove(tool);
                    let mut path = self.path_edges(&parent, agent, u);
                    path.push(e);
                    let mut nodes = vec![agent];
                    nodes.extend(path.iter().map(|&p| self.to[p]));
                    let chain = self.chain_names(&nodes);
                    found.report(Violation {
                        kind: ViolationKind::Escalation,
                        message: format!(
                            "{} -> {tool}: {} does not hold {tool}",
                            chain.join(" -> "),
                            self.names[agent]
                        ),
                        chain,
                        tool: Some(tool.to_owned()),
                        policies: self.policies(&path),
                    });
                }
                if missing.is_empty() {
                    return;
                }
                let v = self.to[e];
                if !seen[v] {
                    seen[v] = true;
                    parent[v] = e;
                    queue.push_back(v);
                }
            }
        }
    }

    /// The edges from `root` to `node` following BFS parents.
    fn path_edges(&self, parent: &[usize], root: usize, mut node: usize) -> Vec<usize> {
        let mut path = Vec::new();
        while node != root && parent[node] != UNSET {
            path.push(parent[node]);
            node = self.from[parent[node]];
        }
        path.reverse();
        path
    }

    /// Every edge inside a strongly connected component lies on a cycle: it is withdrawn and
    /// its shortest cycle reported (rotated to start at its smallest agent, so a cycle found
    /// from several edges is reported once).
    ///
    /// An edge that lies on a cycle already reported is not searched again, which keeps one
    /// long cycle linear rather than quadratic.
    fn cycles(&self, found: &mut Found) {
        let mut covered = vec![false; self.edges.len()];
        for e in 0..self.edges.len() {
            if !self.is_cyclic(e) {
                continue;
            }
            found.withdrawn[e] = true;
            if covered[e] {
                continue;
            }
            let (u, v) = (self.from[e], self.to[e]);
            // Shortest way back from v to u inside the component.
            let mut parent = vec![UNSET; self.names.len()];
            let mut seen = vec![false; self.names.len()];
            seen[v] = true;
            let mut queue = VecDeque::from([v]);
            while let Some(x) = queue.pop_front() {
                if x == u {
                    break;
                }
                for &next in &self.out[x] {
                    let y = self.to[next];
                    if self.comp[y] == self.comp[u] && !seen[y] {
                        seen[y] = true;
                        parent[y] = next;
                        queue.push_back(y);
                    }
                }
            }
            let mut edges = vec![e];
            edges.extend(self.path_edges(&parent, v, u));
            for &x in &edges {
                covered[x] = true;
            }
            // The ring of agents: u, v, ..., back before u.
            let mut ring: Vec<usize> = edges.iter().map(|&x| self.from[x]).collect();
            let start = (0..ring.len())
                .min_by_key(|&i| self.names[ring[i]])
                .unwrap_or(0);
            ring.rotate_left(start);
            if let Some(&first) = ring.first() {
                ring.push(first);
            }
            let chain = self.chain_names(&ring);
            found.report(Violation {
                kind: ViolationKind::Cycle,
                message: format!("{}: delegation cycle", chain.join(" -> ")),
                chain,
                tool: None,
                policies: self.policies(&edges),
            });
        }
    }

    /// On the acyclic edges: the longest chain through each edge (longest way in to its
    /// delegator + 1 + longest way on from its delegate). Longer than the edge's maxDepth:
    /// the edge is withdrawn and the chain reported. An edge on a chain already reported is
    /// withdrawn without a chain of its own (that chain names its policy), which keeps one
    /// long chain linear rather than quadratic.
    fn depth(&self, found: &mut Found) {
        let n = self.names.len();
        let mut order: Vec<usize> = (0..n).collect();
        // Components are numbered sinks first, and acyclic edges only join different
        // components: ascending component order is a reverse topological order.
        order.sort_by_key(|&node| self.comp[node]);
        let mut out_len = vec![0usize; n];
        let mut best_out = vec![UNSET; n];
        for &v in &order {
            for &e in &self.out[v] {
                if !self.is_cyclic(e) && out_len[self.to[e]] + 1 > out_len[v] {
                    out_len[v] = out_len[self.to[e]] + 1;
                    best_out[v] = e;
                }
            }
        }
        let mut in_len = vec![0usize; n];
        let mut best_in = vec![UNSET; n];
        for &v in order.iter().rev() {
            for &e in &self.into[v] {
                if !self.is_cyclic(e) && in_len[self.from[e]] + 1 > in_len[v] {
                    in_len[v] = in_len[self.from[e]] + 1;
                    best_in[v] = e;
                }
            }
        }
        let mut covered = vec![false; self.edges.len()];
        for e in 0..self.edges.len() {
            if self.is_cyclic(e) {
                continue;
            }
            let hops = in_len[self.from[e]] + 1 + out_len[self.to[e]];
            if hops <= usize::try_from(self.edges[e].max_depth).unwrap_or(usize::MAX) {
                continue;
            }
            found.withdrawn[e] = true;
            if covered[e] {
                continue;
            }
            let mut path = Vec::new();
            let mut start = self.from[e];
            while best_in[start] != UNSET {
                path.push(best_in[start]);
                start = self.from[best_in[start]];
            }
            path.reverse();
            path.push(e);
            let mut node = self.to[e];
            while best_out[node] != UNSET {
                path.push(best_out[node]);
                node = self.to[best_out[node]];
            }
            for &p in &path {
                covered[p] = true;
            }
            let mut nodes = vec![start];
            nodes.extend(path.iter().map(|&p| self.to[p]));
            let chain = self.chain_names(&nodes);
            let tightest = path
                .iter()
                .map(|&p| &self.edges[p])
                .min_by_key(|edge| edge.max_depth)
                .unwrap_or(&self.edges[e]);
            found.report(Violation {
                kind: ViolationKind::Depth,
                message: format!(
                    "{}: {hops} hops, more than maxDepth {} of DelegationPolicy {}",
                    chain.join(" -> "),
                    tightest.max_depth,
                    tightest.policy
                ),
                chain,
                tool: None,
                policies: self.policies(&path),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edge(policy: &str, from: &str, to: &str, tools: &[&str], max_depth: u32) -> Edge {
        Edge {
            delegator: from.into(),
            delegate: to.into(),
            policy: policy.into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            max_depth,
        }
    }

    fn held(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(a, tools)| {
                (
                    (*a).to_owned(),
                    tools.iter().map(|t| (*t).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn messages(graph: &DelegationGraph) -> Vec<&str> {
        graph
            .violations()
            .iter()
            .map(|v| v.message.as_str())
            .collect()
    }

    #[test]
    fn a_delegation_of_a_tool_both_agents_hold_is_safe() {
        let graph = DelegationGraph::analyse(
            vec![edge("p", "planner", "executor", &["erp-api"], 1)],
            &held(&[("planner", &["erp-api"]), ("executor", &["erp-api"])]),
        );
        assert!(graph.is_safe());
        assert_eq!(graph.safe_delegates("planner"), ["executor"]);
        assert_eq!(graph.safe_delegators("executor"), ["planner"]);
        assert_eq!(graph.delegates_to("planner"), ["executor"]);
        assert_eq!(graph.delegated_from("executor"), ["planner"]);
    }

    #[test]
    fn handing_on_a_tool_the_delegate_lacks_is_an_escalation_path() {
        let graph = DelegationGraph::analyse(
            vec![edge("p", "planner", "executor", &["erp-api"], 1)],
            &held(&[("planner", &["erp-api"])]),
        );
        assert_eq!(
            messages(&graph),
            ["planner -> executor -> erp-api: executor does not hold erp-api"]
        );
        assert!(graph.safe_delegates("planner").is_empty());
        assert_eq!(graph.delegates_to("planner"), ["executor"]);
    }

    #[test]
    fn a_chain_reaching_a_tool_its_first_agent_lacks_is_an_escalation_path_of_every_agent_on_it() {
        let graph = DelegationGraph::analyse(
            vec![
                edge("planner", "planner", "router", &["search"], 2),
                edge("router", "router", "executor", &["erp-api"], 2),
            ],
            &held(&[
                ("planner", &["search"]),
                ("router", &["search", "erp-api"]),
                ("executor", &["erp-api"]),
            ]),
        );
        let expected = "planner -> router -> executor -> erp-api: planner does not hold erp-api";
        assert_eq!(messages(&graph), [expected]);
        for agent in ["planner", "router", "executor"] {
            assert_eq!(graph.escalation_paths(agent), [expected]);
        }
        assert_eq!(graph.policy_violations("planner"), [expected]);
        assert_eq!(graph.policy_violations("router"), [expected]);
        // The planner's edge carries the escalation and is withdrawn; the router's own
        // delegation is fine on its own and keeps its path.
        assert!(graph.safe_delegates("planner").is_empty());
        assert_eq!(graph.safe_delegates("router"), ["executor"]);
    }

    #[test]
    fn a_cycle_is_reported_once_starting_at_its_smallest_agent() {
        let graph = DelegationGraph::analyse(
            vec![
                edge("b", "b", "c", &["t"], 8),
                edge("c", "c", "a", &["t"], 8),
                edge("a", "a", "b", &["t"], 8),
            ],
            &held(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]),
        );
        assert_eq!(messages(&graph), ["a -> b -> c -> a: delegation cycle"]);
        assert_eq!(graph.violations()[0].kind, ViolationKind::Cycle);
        assert_eq!(graph.violations()[0].policies.len(), 3);
        assert!(graph.safe_edges().next().is_none());
    }

    #[test]
    fn a_chain_longer_than_the_smallest_max_depth_is_a_depth_violation() {
        let graph = DelegationGraph::analyse(
            vec![
                edge("ab", "a", "b", &["t"], 3),
                edge("bc", "b", "c", &["t"], 1),
                edge("cd", "c", "d", &["t"], 3),
            ],
            &held(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"]), ("d", &["t"])]),
        );
        assert_eq!(
            messages(&graph),
            ["a -> b -> c -> d: 3 hops, more than maxDepth 1 of DelegationPolicy bc"]
        );
        assert_eq!(graph.violations()[0].kind, ViolationKind::Depth);
        let withdrawn: Vec<&str> = graph
            .edges()
            .iter()
            .filter(|e| graph.is_withdrawn(e))
            .map(|e| e.policy.as_str())
            .collect();
        assert_eq!(withdrawn, ["bc"]);
    }

    #[test]
    fn a_long_cycle_is_reported_once() {
        let names: Vec<String> = (0..20_000).map(|i| format!("a{i:05}")).collect();
        let edges = (0..names.len())
            .map(|i| {
                let next = &names[(i + 1) % names.len()];
                edge(&names[i], &names[i], next, &["t"], 8)
            })
            .collect();
        let held = names
            .iter()
            .map(|n| (n.clone(), BTreeSet::from(["t".to_owned()])))
            .collect();
        let graph = DelegationGraph::analyse(edges, &held);
        assert_eq!(graph.violations().len(), 1);
        assert_eq!(graph.violations()[0].chain.len(), 20_001);
    }

    #[test]
    fn a_long_chain_is_analysed_without_recursion() {
        let names: Vec<String> = (0..20_000).map(|i| format!("a{i:05}")).collect();
        let edges = names
            .windows(2)
            .map(|w| edge(&w[0], &w[0], &w[1], &["t"], 8))
            .collect();
        let held = names
            .iter()
            .map(|n| (n.clone(), BTreeSet::from(["t".to_owned()])))
            .collect();
        let graph = DelegationGraph::analyse(edges, &held);
        assert_eq!(graph.violations().len(), 1);
        assert_eq!(graph.violations()[0].kind, ViolationKind::Depth);
        assert_eq!(graph.safe_edges().count(), 0);
    }

    // Property tests: random small graphs, checked against brute force on every chain.

    const AGENTS: [&str; 5] = ["a", "b", "c", "d", "e"];
    const TOOLS: [&str; 3] = ["t0", "t1", "t2"];

    fn arb_graph() -> impl Strategy<Value = (Vec<Edge>, BTreeMap<String, BTreeSet<String>>)> {
        let tools = proptest::sample::subsequence(TOOLS.to_vec(), 0..=TOOLS.len());
        let held = proptest::collection::vec(tools.clone(), AGENTS.len()).prop_map(|sets| {
            AGENTS
                .iter()
                .zip(sets)
                .map(|(a, s)| ((*a).to_owned(), s.into_iter().map(str::to_owned).collect()))
                .collect()
        });
        let edge = (0..AGENTS.len(), 0..AGENTS.len(), tools, 1u32..4);
        let edges = proptest::collection::vec(edge, 0..8).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (from, to, tools, depth))| Edge {
                    delegator: AGENTS[from].to_owned(),
                    delegate: AGENTS[to].to_owned(),
                    policy: format!("p{i}"),
                    tools: tools.into_iter().map(str::to_owned).collect(),
                    max_depth: depth,
                })
                .collect()
        });
        (edges, held)
    }

    /// Every walk of at most `limit` edges from `agent` (brute force).
    fn walks<'a>(edges: &[&'a Edge], agent: &str, limit: usize) -> Vec<Vec<&'a Edge>> {
        let mut all = Vec::new();
        let mut stack: Vec<Vec<&Edge>> = edges
            .iter()
            .filter(|e| e.delegator == agent)
            .map(|e| vec![*e])
            .collect();
        while let Some(walk) = stack.pop() {
            if walk.len() < limit {
                let last = walk.last().map(|e| e.delegate.as_str()).unwrap_or_default();
                for next in edges.iter().filter(|e| e.delegator == last) {
                    let mut longer = walk.clone();
                    longer.push(*next);
                    stack.push(longer);
                }
            }
            all.push(walk);
        }
        all
    }

    fn has_cycle(edges: &[&Edge]) -> bool {
        AGENTS.iter().any(|a| {
            walks(edges, a, AGENTS.len())
                .iter()
                .any(|w| w.last().is_some_and(|e| e.delegate == *a))
        })
    }

    /// The safety the graph must guarantee, checked by brute force on `edges`: no agent
    /// reaches a tool it does not hold, every delegate holds what it is handed, no cycle, and
    /// no chain longer than the smallest maxDepth along it.
    fn brute_force_problems(
        edges: &[&Edge],
        held: &BTreeMap<String, BTreeSet<String>>,
    ) -> Vec<String> {
        let holds = |a: &str, t: &str| held.get(a).is_some_and(|h| h.contains(t));
        let mut problems = Vec::new();
        if has_cycle(edges) {
            problems.push("cycle".to_owned());
        }
        for e in edges {
            for t in e.tools.iter().filter(|t| !holds(&e.delegate, t)) {
                problems.push(format!("{} lacks {t}", e.delegate));
            }
        }
        for agent in AGENTS {
            for walk in walks(edges, agent, AGENTS.len() + 1) {
                for t in walk
                    .iter()
                    .flat_map(|e| &e.tools)
                    .filter(|t| !holds(agent, t))
                {
                    problems.push(format!("{agent} reaches {t}"));
                }
                let tightest = walk
                    .iter()
                    .map(|e| e.max_depth as usize)
                    .min()
                    .unwrap_or(usize::MAX);
                if walk.len() > tightest {
                    problems.push(format!("{agent}: {} hops > {tightest}", walk.len()));
                }
            }
        }
        problems
    }

    proptest! {
        #[test]
        fn no_graph_reported_safe_lets_an_agent_reach_a_tool_it_does_not_hold(
            (edges, held) in arb_graph()
        ) {
            let graph = DelegationGraph::analyse(edges.clone(), &held);
            let all: Vec<&Edge> = edges.iter().collect();
            let problems = brute_force_problems(&all, &held);
            prop_assert_eq!(
                graph.is_safe(),
                problems.is_empty(),
                "problems: {:?}, violations: {:?}",
                problems,
                graph.violations()
            );
        }

        #[test]
        fn the_edges_left_after_withdrawal_are_always_safe((edges, held) in arb_graph()) {
            let graph = DelegationGraph::analyse(edges, &held);
            let safe: Vec<&Edge> = graph.safe_edges().collect();
            let problems = brute_force_problems(&safe, &held);
            prop_assert!(problems.is_empty(), "problems: {:?}", problems);
        }

        #[test]
        fn cycles_are_always_reported((edges, held) in arb_graph()) {
            let graph = DelegationGraph::analyse(edges.clone(), &held);
            let all: Vec<&Edge> = edges.iter().collect();
            let reported = graph.violations().iter().any(|v| v.kind == ViolationKind::Cycle);
            prop_assert_eq!(reported, has_cycle(&all));
            for v in graph.violations().iter().filter(|v| v.kind == ViolationKind::Cycle) {
                prop_assert_eq!(v.chain.first(), v.chain.last());
            }
        }

        #[test]
        fn every_reported_chain_follows_edges_of_the_graph((edges, held) in arb_graph()) {
            let graph = DelegationGraph::analyse(edges.clone(), &held);
            for v in graph.violations() {
                for pair in v.chain.windows(2) {
                    let exists = edges
                        .iter()
                        .any(|e| e.delegator == pair[0] && e.delegate == pair[1]);
                    prop_assert!(exists, "{}", v.message);
                }
            }
        }
    }
}
