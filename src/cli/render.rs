//! Renders an inventory [`Report`]: a report in; a table that fits a terminal width (SPIFFE IDs
//! always whole, other long cells cut), a Graphviz dot graph or a Mermaid flowchart out (JSON
//! and YAML are serde's). Graphs draw agents, the tools they hold and delegation edges; edges
//! of unsafe chains and escalated tools are red. Pure: never does I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::report::{DangerousApiRight, Report, human_duration};
use crate::assess::service_account_guard;

/// The widest line the table output may print.
pub const TABLE_WIDTH: usize = 120;

/// A cut cell keeps at least this many characters (or its header's), so it still says what
/// it is: below that, a line runs past the width instead.
const READABLE: usize = 12;

/// Columns of text, shrunk to fit a width by truncating the widest cells with `…`, except
/// columns kept whole.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Headers of the columns never cut: identifiers a reader must be able to copy.
    whole: Vec<&'static str>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            whole: Vec::new(),
        }
    }

    /// The table with the column headed `header` never cut: the other columns shrink to make
    /// room, and when they cannot, the line runs past the width rather than cut it.
    #[must_use]
    pub fn keep_whole(mut self, header: &'static str) -> Self {
        self.whole.push(header);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table without the column headed `header` (unchanged when there is none).
    #[must_use]
    pub fn without_column(mut self, header: &str) -> Self {
        if let Some(i) = self.headers.iter().position(|h| *h == header) {
            self.headers.remove(i);
            for row in &mut self.rows {
                if i < row.len() {
                    row.remove(i);
                }
            }
        }
        self
    }

    /// The table, its lines at most `width` characters where cutting cells can get them there
    /// (columns are separated by two spaces; the widest shrinks first, none below its header or
    /// [`READABLE`] characters, and a column kept whole not at all).
    pub fn render(&self, width: usize) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let floor: Vec<usize> = self
            .headers
            .iter()
            .zip(&widths)
            .map(|(h, w)| {
                if self.whole.contains(h) {
                    *w
                } else {
                    (*w).min(h.chars().count().max(READABLE))
                }
            })
            .collect();
        let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
        while total(&widths) > width {
            let Some((widest, _)) = widths
                .iter()
                .enumerate()
                .filter(|(i, w)| **w > floor[*i])
                .max_by_key(|(i, w)| (**w, usize::MAX - *i))
            else {
                break;
            };
            widths[widest] -= 1;
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| fit(row.get(i).map_or("", String::as_str), *w))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` truncated to `width` characters (ending in `…` when cut) and padded to it.
fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return format!("{text}{}", " ".repeat(width - count));
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The report as tables, one section per kind of finding, each line at most `width` wide.
pub fn table(report: &Report, width: usize) -> String {
    let mut out = String::new();
    // A report of one namespace says so once instead of in a column of every table.
    let namespaces: std::collections::BTreeSet<&str> = report
        .agents
        .iter()
        .map(|a| a.namespace.as_str())
        .chain(report.edges.iter().map(|e| e.namespace.as_str()))
        .chain(report.unmanaged.pods.iter().map(|p| p.namespace.as_str()))
        .chain(
            report
                .unmanaged
                .service_accounts
                .iter()
                .map(|s| s.namespace.as_str()),
        )
        .chain(
            report
                .unmanaged
                .token_secrets
                .iter()
                .map(|t| t.namespace.as_str()),
        )
        .collect();
    let single = (namespaces.len() == 1).then(|| namespaces.iter().next().copied());
    if let Some(Some(ns)) = single {
        let _ = writeln!(out, "NAMESPACE {ns}\n");
    }
    let one_namespace = single.is_some();
    let mut section = |title: String, table: Table, empty: &str| {
        let table = if one_namespace {
            table.without_column("NAMESPACE")
        } else {
            table
        };
        let _ = writeln!(out, "{title}");
        if table.is_empty() {
            let _ = writeln!(out, "  {empty}");
        } else {
            out.push_str(&table.render(width));
        }
        out.push('\n');
    };

    // The SPIFFE ID is the one identifier a reader copies into a mesh or SPIRE policy: whole.
    let mut agents = Table::new(&[
        "NAMESPACE",
        "AGENT",
        "OWNER",
        "CLASS",
        "READY",
        "TOOLS",
        "SPIFFE ID",
    ])
    .keep_whole("SPIFFE ID");
    for a in &report.agents {
        agents.row(vec![
            a.namespace.clone(),
            a.name.clone(),
            a.owner.clone(),
            a.class.clone(),
            if a.ready { "True" } else { "False" }.to_owned(),
            a.tools.len().to_string(),
            a.spiffe_id.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    section(
        format!("AGENTS ({})", report.agents.len()),
        agents,
        "no AgentIdentity found",
    );

    let mut tools = Table::new(&[
        "NAMESPACE",
        "AGENT",
        "TOOL",
        "RISK",
        "ACTIONS",
        "BINDING",
        "TIME LEFT",
    ]);
    for a in &report.agents {
        for t in &a.tools {
            tools.row(vec![
                a.namespace.clone(),
                a.name.clone(),
                t.name.clone(),
                t.risk.clone(),
                t.actions.join(","),
                t.binding.clone(),
                t.expires_in_seconds
                    .map_or_else(|| "no expiry".to_owned(), human_duration),
            ]);
        }
    }
    section("LIVE TOOLS".to_owned(), tools, "no agent holds a tool now");

    let mut edges = Table::new(&[
        "NAMESPACE",
        "POLICY",
        "DELEGATOR",
        "DELEGATE",
        "TOOLS",
        "MAX DEPTH",
        "SAFE",
    ]);
    for e in &report.edges {
        edges.row(vec![
            e.namespace.clone(),
            e.policy.clone(),
            e.delegator.clone(),
            e.delegate.clone(),
            dash(e.tools.join(",")),
            e.max_depth.to_string(),
            if e.withdrawn { "NO (withdrawn)" } else { "yes" }.to_owned(),
        ]);
    }
    section("DELEGATION".to_owned(), edges, "no delegation");

    let mut paths = Table::new(&["NAMESPACE", "KIND", "CHAIN"]);
    for p in &report.escalation_paths {
        paths.row(vec![p.namespace.clone(), p.kind.clone(), p.message.clone()]);
    }
    section(
        format!("ESCALATION PATHS ({})", report.escalation_paths.len()),
        paths,
        "none: every delegation chain is safe",
    );

    let mut foreign = Table::new(&["NAMESPACE", "AGENT", "NETWORKPOLICIES"]);
    let mut widened = 0;
    for a in report
        .agents
        .iter()
        .filter(|a| !a.foreign_network_policies.is_empty())
    {
        widened += 1;
        foreign.row(vec![
            a.namespace.clone(),
            a.name.clone(),
            a.foreign_network_policies.join(","),
        ]);
    }
    section(
        format!("FOREIGN NETWORK POLICIES ({widened})"),
        foreign,
        "none: only mandate's NetworkPolicies select agent pods",
    );

    let mut stale = Table::new(&["NAMESPACE", "AGENT", "POD", "LACKS TOKENS FOR"]);
    let mut stale_count = 0;
    for a in &report.agents {
        for p in &a.stale_credentials {
            stale_count += 1;
            stale.row(vec![
                a.namespace.clone(),
                a.name.clone(),
                p.pod.clone(),
                p.missing.join(","),
            ]);
        }
    }
    section(
        format!("STALE CREDENTIALS ({stale_count})"),
        stale,
        "none: every agent pod holds a token for each live tool",
    );

    let mut unguarded = Table::new(&["NAMESPACE", "AGENT", "DETAIL"]);
    let mut count = 0;
    for a in report.agents.iter().filter(|a| !a.service_account_guarded) {
        count += 1;
        unguarded.row(vec![
            a.namespace.clone(),
            a.name.clone(),
            service_account_guard(&a.namespace, &a.service_account, false).message,
        ]);
    }
    section(
        format!("UNGUARDED SERVICE ACCOUNTS ({count})"),
        unguarded,
        "none: every agent lives in an opted-in namespace, where every pod is reviewed",
    );

    let mut dangerous = Table::new(&["NAMESPACE", "AGENT", "WHERE", "VIA", "RIGHTS"]);
    let mut holding = 0;
    for a in report
        .agents
        .iter()
        .filter(|a| !a.dangerous_api_rights.is_empty())
    {
        holding += 1;
        for row in api_right_rows(&a.dangerous_api_rights) {
            dangerous.row(
                [a.namespace.clone(), a.name.clone()]
                    .into_iter()
                    .chain(row)
                    .collect(),
            );
        }
    }
    section(
        format!("DANGEROUS API RIGHTS ({holding})"),
        dangerous,
        "none: no agent's ServiceAccount holds a dangerous Kubernetes API right",
    );

    let mut unmanaged = Table::new(&["KIND", "NAMESPACE", "NAME", "DETAIL"]);
    for p in &report.unmanaged.pods {
        unmanaged.row(vec![
            "Pod".to_owned(),
            p.namespace.clone(),
            p.name.clone(),
            format!("runs as {}; {}", p.service_account, p.reason),
        ]);
    }
    for s in &report.unmanaged.service_accounts {
        let used = if s.used_by.is_empty() {
            String::new()
        } else {
            format!("used by {}; ", s.used_by.join(","))
        };
        unmanaged.row(vec![
            "ServiceAccount".to_owned(),
            s.namespace.clone(),
            s.name.clone(),
            format!("{used}{}", s.reason),
        ]);
    }
    for t in &report.unmanaged.token_secrets {
        let agent = t
            .agent
            .as_ref()
            .map(|a| format!(" of agent {a}"))
            .unwrap_or_default();
        unmanaged.row(vec![
            "Secret".to_owned(),
            t.namespace.clone(),
            t.name.clone(),
            format!(
                "legacy never-expiring token of ServiceAccount {}{agent}",
                t.service_account
            ),
        ]);
    }
    let count = report.unmanaged.pods.len()
        + report.unmanaged.service_accounts.len()
        + report.unmanaged.token_secrets.len();
    section(
        format!("UNMANAGED ({count})"),
        unmanaged,
        "nothing unmanaged in mandate namespaces",
    );

    let mut expiring = Table::new(&[
        "NAMESPACE",
        "AGENT",
        "TOOL",
        "RISK",
        "BINDING",
        "EXPIRES AT",
        "TIME LEFT",
    ]);
    for t in &report.expiring {
        expiring.row(vec![
            t.namespace.clone(),
            t.agent.clone(),
            t.tool.clone(),
            t.risk.clone(),
            t.binding.clone(),
            t.expires_at.clone(),
            human_duration(t.expires_in_seconds),
        ]);
    }
    section(
        format!(
            "EXPIRING WITHIN {}",
            human_duration(report.expiring_within_seconds)
        ),
        expiring,
        "no tool expires within the horizon",
    );
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

/// One row (WHERE, VIA, RIGHTS) per resource an agent holds rights on through one binding, its
/// verbs together: `get,list,watch secrets`.
fn api_right_rows(rights: &[DangerousApiRight]) -> Vec<[String; 3]> {
    /// The rights on one resource through one binding.
    struct Row<'a> {
        place: String,
        via: String,
        resource: &'a str,
        names: Option<&'a [String]>,
        verbs: Vec<&'a str>,
    }
    let mut rows: Vec<Row<'_>> = Vec::new();
    for right in rights {
        let place = right
            .namespace
            .clone()
            .unwrap_or_else(|| "cluster-wide".to_owned());
        let via = format!("{} -> {}", right.binding, right.role);
        let names = right.resource_names.as_deref();
        match rows.iter_mut().find(|row| {
            row.place == place
                && row.via == via
                && row.resource == right.resource
                && row.names == names
        }) {
            Some(row) => row.verbs.push(&right.verb),
            None => rows.push(Row {
                place,
                via,
                resource: &right.resource,
                names,
                verbs: vec![&right.verb],
            }),
        }
    }
    rows.into_iter()
        .map(|row| {
            let only = row
                .names
                .map(|n| format!(" (only {})", n.join(", ")))
                .unwrap_or_default();
            [
                row.place,
                row.via,
                format!("{} {}{only}", row.verbs.join(","), row.resource),
            ]
        })
        .collect()
}

fn dash(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// An agent node: name, label lines, ready.
type AgentNode<'a> = (&'a str, Vec<String>, bool);

/// What a graph draws, shared by dot and mermaid.
struct Graph<'a> {
    /// Namespace -> agents.
    agents: BTreeMap<&'a str, Vec<AgentNode<'a>>>,
    /// Namespace -> tool name -> (risk, whether some escalation reaches it).
    tools: BTreeMap<&'a str, BTreeMap<&'a str, (&'a str, bool)>>,
    /// (namespace, agent, tool).
    holds: Vec<(&'a str, &'a str, &'a str)>,
    /// (namespace, delegator, delegate, label, unsafe).
    delegations: Vec<(&'a str, &'a str, &'a str, String, bool)>,
    /// (namespace, first agent of the chain, tool it reaches without holding it).
    escalations: Vec<(&'a str, &'a str, &'a str)>,
}

impl<'a> Graph<'a> {
    fn of(report: &'a Report) -> Self {
        let mut graph = Graph {
            agents: BTreeMap::new(),
            tools: BTreeMap::new(),
            holds: Vec::new(),
            delegations: Vec::new(),
            escalations: Vec::new(),
        };
        for a in &report.agents {
            let mut lines = vec![a.name.clone(), a.owner.clone(), a.class.clone()];
            if !a.ready {
                lines.push("not Ready".to_owned());
            }
            graph
                .agents
                .entry(&a.namespace)
                .or_default()
                .push((&a.name, lines, a.ready));
            for t in &a.tools {
                graph
                    .tools
                    .entry(&a.namespace)
                    .or_default()
                    .entry(&t.name)
                    .and_modify(|(risk, _)| {
                        if t.risk == "High" {
                            *risk = "High";
                        }
                    })
                    .or_insert((&t.risk, false));
                graph.holds.push((&a.namespace, &a.name, &t.name));
            }
        }
        for e in &report.edges {
            graph.delegations.push((
                &e.namespace,
                &e.delegator,
                &e.delegate,
                e.tools.join(", "),
                e.withdrawn,
            ));
        }
        for p in &report.escalation_paths {
            if let (Some(tool), Some(first)) = (&p.tool, p.chain.first()) {
                graph
                    .tools
                    .entry(&p.namespace)
                    .or_default()
                    .entry(tool)
                    .and_modify(|(_, escalated)| *escalated = true)
                    .or_insert(("Low", true));
                graph.escalations.push((&p.namespace, first, tool));
            }
        }
        graph.holds.sort_unstable();
        graph.holds.dedup();
        graph.escalations.sort_unstable();
        graph.escalations.dedup();
        graph
    }

    fn namespaces(&self) -> Vec<&'a str> {
        let mut names: Vec<&str> = self
            .agents
            .keys()
            .chain(self.tools.keys())
            .copied()
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A Graphviz digraph: one cluster per namespace, agents as boxes, tools as ellipses (High
/// risk orange), `holds` edges grey, delegation edges labelled with their tools, unsafe
/// delegation edges and escalations red and bold.
pub fn dot(report: &Report) -> String {
    let graph = Graph::of(report);
    let mut out = String::from(
        "digraph mandate {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n  \
         edge [fontname=\"Helvetica\", fontsize=9];\n",
    );
    for (i, ns) in graph.namespaces().into_iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{i} {{");
        let _ = writeln!(out, "    label={};", quote(&format!("namespace {ns}")));
        let _ = writeln!(out, "    style=rounded; color=grey60;");
        for (name, lines, ready) in graph.agents.get(ns).into_iter().flatten() {
            let style = if *ready {
                "style=filled, fillcolor=\"#dbe9ff\""
            } else {
                "style=\"filled,dashed\", fillcolor=\"#eeeeee\""
            };
            let _ = writeln!(
                out,
                "    {} [shape=box, {style}, label={}];",
                quote(&agent_id(ns, name)),
                quote(&lines.join("\n"))
            );
        }
        for (tool, (risk, escalated)) in graph.tools.get(ns).into_iter().flatten() {
            let fill = if *risk == "High" {
                "#ffd8a8"
            } else {
                "#e6f4ea"
            };
            let border = if *escalated {
                ", color=red, penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [shape=ellipse, style=filled, fillcolor=\"{fill}\"{border}, label={}];",
                quote(&tool_id(ns, tool)),
                quote(&format!("{tool}\n{risk} risk"))
            );
        }
        out.push_str("  }\n");
    }
    for (ns, agent, tool) in &graph.holds {
        let _ = writeln!(
            out,
            "  {} -> {} [color=grey50, arrowhead=none, style=dashed];",
            quote(&agent_id(ns, agent)),
            quote(&tool_id(ns, tool))
        );
    }
    for (ns, from, to, tools, unsafe_) in &graph.delegations {
        let style = if *unsafe_ {
            "color=red, fontcolor=red, penwidth=2.5"
        } else {
            "color=\"#1f4e9e\", penwidth=1.5"
        };
        let label = if *unsafe_ {
            format!("delegates {tools} (UNSAFE)")
        } else {
            format!("delegates {tools}")
        };
        let _ = writeln!(
            out,
            "  {} -> {} [{style}, label={}];",
            quote(&agent_id(ns, from)),
            quote(&agent_id(ns, to)),
            quote(&label)
        );
    }
    for (ns, agent, tool) in &graph.escalations {
        let _ = writeln!(
            out,
            "  {} -> {} [color=red, fontcolor=red, style=bold, penwidth=2.5, \
             label=\"escalation\"];",
            quote(&agent_id(ns, agent)),
            quote(&tool_id(ns, tool))
        );
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart with the same content as [`dot`]; unsafe edges are styled red through
/// `linkStyle`.
pub fn mermaid(report: &Report) -> String {
    let graph = Graph::of(report);
    let mut out = String::from("flowchart LR\n");
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut id = |key: String| {
        let next = format!("n{}", ids.len());
        ids.entry(key).or_insert(next).clone()
    };
    let mut styles = Vec::new();
    for (i, ns) in graph.namespaces().into_iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph ns{i}[{}]",
            mermaid_text(&format!("namespace {ns}"))
        );
        for (name, lines, ready) in graph.agents.get(ns).into_iter().flatten() {
            let node = id(agent_id(ns, name));
            let _ = writeln!(out, "    {node}[{}]", mermaid_text(&lines.join("<br/>")));
            styles.push(format!(
                "  style {node} fill:{}",
                if *ready { "#dbe9ff" } else { "#eeeeee" }
            ));
        }
        for (tool, (risk, escalated)) in graph.tools.get(ns).into_iter().flatten() {
            let node = id(tool_id(ns, tool));
            let _ = writeln!(
                out,
                "    {node}([{}])",
                mermaid_text(&format!("{tool}<br/>{risk} risk"))
            );
            let fill = if *risk == "High" {
                "#ffd8a8"
            } else {
                "#e6f4ea"
            };
            let border = if *escalated {
                ",stroke:red,stroke-width:3px"
            } else {
                ""
            };
            styles.push(format!("  style {node} fill:{fill}{border}"));
        }
        out.push_str("  end\n");
    }
    let mut link = 0usize;
    let mut red = Vec::new();
    for (ns, agent, tool) in &graph.holds {
        let (a, t) = (id(agent_id(ns, agent)), id(tool_id(ns, tool)));
        let _ = writeln!(out, "  {a} -.- {t}");
        link += 1;
    }
    for (ns, from, to, tools, unsafe_) in &graph.delegations {
        let (a, b) = (id(agent_id(ns, from)), id(agent_id(ns, to)));
        let label = if *unsafe_ {
            format!("delegates {tools} (UNSAFE)")
        } else {
            format!("delegates {tools}")
        };
        let _ = writeln!(out, "  {a} ==>|{}| {b}", mermaid_text(&label));
        if *unsafe_ {
            red.push(link);
        }
        link += 1;
    }
    for (ns, agent, tool) in &graph.escalations {
        let (a, t) = (id(agent_id(ns, agent)), id(tool_id(ns, tool)));
        let _ = writeln!(out, "  {a} ==>|escalation| {t}");
        red.push(link);
        link += 1;
    }
    for style in styles {
        let _ = writeln!(out, "{style}");
    }
    if !red.is_empty() {
        let indices: Vec<String> = red.iter().map(usize::to_string).collect();
        let _ = writeln!(
            out,
            "  linkStyle {} stroke:red,stroke-width:3px,color:red",
            indices.join(",")
        );
    }
    out
}

fn agent_id(namespace: &str, agent: &str) -> String {
    format!("agent/{namespace}/{agent}")
}

fn tool_id(namespace: &str, tool: &str) -> String {
    format!("tool/{namespace}/{tool}")
}

/// A dot string literal.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A quoted Mermaid label (`"` becomes `#quot;`).
fn mermaid_text(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "#quot;"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::report::{
        Agent, DelegationEdge, EscalationPath, ExpiringTool, Tool, Unmanaged, UnmanagedPod,
    };

    fn agent(name: &str, tools: &[(&str, &str)]) -> Agent {
        Agent {
            namespace: "team-with-a-rather-long-namespace-name".into(),
            name: name.into(),
            owner: "Group:finance-automation-and-reconciliation".into(),
            contact: None,
            class: "TransactionExecutor".into(),
            purpose: "p".into(),
            service_account: name.into(),
            spiffe_id: Some(format!(
                "spiffe://cluster.local/ns/team-with-a-rather-long-namespace-name/sa/{name}"
            )),
            ready: true,
            tools: tools
                .iter()
                .map(|(t, risk)| Tool {
                    name: (*t).into(),
                    binding: format!("{name}-tools"),
                    risk: (*risk).into(),
                    actions: vec!["read".into(), "write".into()],
                    expires_at: None,
                    expires_in_seconds: None,
                })
                .collect(),
            delegates_to: vec![],
            delegated_from: vec![],
            escalation_paths: vec![],
            foreign_network_policies: vec![],
            stale_credentials: vec![],
            service_account_guarded: true,
            dangerous_api_rights: vec![],
        }
    }

    fn report() -> Report {
        let ns = "team-with-a-rather-long-namespace-name".to_owned();
        Report {
            generated_at: "2027-01-15T08:00:00Z".into(),
            expiring_within_seconds: 86_400,
            mandate_namespaces: vec![],
            agents: vec![
                agent("planner", &[("ledger", "Low")]),
                agent("executor", &[("ledger", "Low"), ("payments", "High")]),
            ],
            edges: vec![DelegationEdge {
                namespace: ns.clone(),
                policy: "p".into(),
                delegator: "planner".into(),
                delegate: "executor".into(),
                tools: vec!["ledger".into(), "payments".into()],
                max_depth: 1,
                withdrawn: true,
            }],
            escalation_paths: vec![EscalationPath {
                namespace: ns.clone(),
                kind: "escalation".into(),
                chain: vec!["planner".into(), "executor".into()],
                tool: Some("payments".into()),
                policies: vec!["p".into()],
                message: "planner -> executor hands on payments, which planner does not hold, \
                          and this message goes on and on well past any terminal's width"
                    .into(),
            }],
            unmanaged: Unmanaged {
                pods: vec![UnmanagedPod {
                    namespace: ns.clone(),
                    name: "stray".into(),
                    service_account: "default".into(),
                    reason: "no mandate.dev/agent label in a mandate namespace: give it an \
                             AgentIdentity"
                        .into(),
                }],
                ..Unmanaged::default()
            },
            expiring: vec![ExpiringTool {
                namespace: ns,
                agent: "executor".into(),
                tool: "payments".into(),
                binding: "executor-tools".into(),
                risk: "High".into(),
                expires_at: "2027-01-15T12:00:00Z".into(),
                expires_in_seconds: 14_400,
            }],
        }
    }

    /// The report with everything in `namespace` (SPIFFE IDs to match).
    fn report_in(namespace: &str) -> Report {
        let mut report = report();
        for a in &mut report.agents {
            a.namespace = namespace.to_owned();
            a.spiffe_id = Some(format!(
                "spiffe://cluster.local/ns/{namespace}/sa/{}",
                a.name
            ));
        }
        let namespaces = report
            .edges
            .iter_mut()
            .map(|e| &mut e.namespace)
            .chain(report.escalation_paths.iter_mut().map(|p| &mut p.namespace))
            .chain(report.unmanaged.pods.iter_mut().map(|p| &mut p.namespace))
            .chain(report.expiring.iter_mut().map(|t| &mut t.namespace));
        for ns in namespaces {
            *ns = namespace.to_owned();
        }
        report
    }

    #[test]
    fn every_line_a_spiffe_id_does_not_widen_fits_and_cut_cells_end_in_an_ellipsis() {
        let out = table(&report(), TABLE_WIDTH);
        for line in out.lines() {
            assert!(
                line.chars().count() <= TABLE_WIDTH || line.contains("spiffe://"),
                "too wide: {line}"
            );
        }
        assert!(out.contains("AGENTS (2)"));
        assert!(out.contains("NO (withdrawn)"));
        assert!(out.contains('…'), "{out}");
        assert!(out.contains("EXPIRING WITHIN 1d0h"));
    }

    #[test]
    fn spiffe_ids_are_printed_whole_while_the_other_columns_shrink_to_fit() {
        let out = table(&report_in("finance"), TABLE_WIDTH);
        for agent in ["planner", "executor"] {
            let row = out
                .lines()
                .find(|line| line.starts_with(&format!("{agent} ")))
                .unwrap_or_else(|| panic!("a row for {agent}:\n{out}"));
            assert!(
                row.ends_with(&format!("  spiffe://cluster.local/ns/finance/sa/{agent}")),
                "the whole SPIFFE ID of {agent}: {row}"
            );
            assert!(row.chars().count() <= TABLE_WIDTH, "too wide: {row}");
            assert!(
                row.contains("Group:finance-automation-an…"),
                "the owner gave way: {row}"
            );
        }
    }

    #[test]
    fn a_spiffe_id_too_long_to_fit_runs_past_the_width_and_the_rest_stays_readable() {
        let long = "n".repeat(63);
        let mut report = report_in(&long);
        report.agents.truncate(1);
        report.agents[0].name = "a".repeat(63);
        let id = format!("spiffe://cluster.local/ns/{long}/sa/{}", "a".repeat(63));
        report.agents[0].spiffe_id = Some(id.clone());
        let out = table(&report, TABLE_WIDTH);
        let too_wide: Vec<&str> = out
            .lines()
            .filter(|line| line.chars().count() > TABLE_WIDTH)
            .collect();
        assert_eq!(too_wide.len(), 1, "only the long agent's row: {out}");
        assert!(too_wide[0].ends_with(&id), "{out}");
        assert!(
            too_wide[0].starts_with("aaaaaaaaaaa…  Group:finan…  Transaction…  True"),
            "cut cells keep 12 characters: {out}"
        );
    }

    #[test]
    fn a_column_kept_whole_is_never_cut_while_the_others_are() {
        let mut t = Table::new(&["NAME", "ID"]).keep_whole("ID");
        t.row(vec![
            "a-rather-long-name-indeed".into(),
            "id-that-must-stay-whole".into(),
        ]);
        assert_eq!(
            t.render(40),
            "NAME             ID\na-rather-long-…  id-that-must-stay-whole\n"
        );
        assert_eq!(
            t.render(20),
            "NAME          ID\na-rather-lo…  id-that-must-stay-whole\n",
            "below 12 characters a line runs past the width instead"
        );
        assert_eq!(
            t.without_column("NAME").render(10),
            "ID\nid-that-must-stay-whole\n"
        );
    }

    #[test]
    fn tables_keep_short_cells_whole() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x".into(), "yy".into()]);
        assert_eq!(t.render(120), "A  B\nx  yy\n");
    }

    #[test]
    fn dot_draws_agents_tools_and_unsafe_delegation_in_red() {
        let out = dot(&report());
        assert!(out.starts_with("digraph mandate {"));
        assert!(out.contains("\"agent/team-with-a-rather-long-namespace-name/planner\" -> \"agent/team-with-a-rather-long-namespace-name/executor\" [color=red"));
        assert!(out.contains("label=\"escalation\""));
        assert!(out.contains("fillcolor=\"#ffd8a8\""));
        assert_eq!(out.matches('{').count(), out.matches('}').count());
    }

    #[test]
    fn mermaid_styles_unsafe_links_red_by_index() {
        let out = mermaid(&report());
        assert!(out.starts_with("flowchart LR\n"));
        // Three holds edges (0..=2), then the unsafe delegation (3) and the escalation (4).
        assert!(out.contains("linkStyle 3,4 stroke:red"), "{out}");
    }
}
