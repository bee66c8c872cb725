//! `kubectl get agent`, `kubectl get tb` and `kubectl get dp` on the real control plane with the
//! operator running: the default tables (the CRDs' printer columns, printed by the API server
//! and the suite's kubectl) tell one story. A binding valid four more hours shows its expiry
//! instant; TOOLS counts distinct live tool names; READY means projections applied and at least
//! one live tool, so it turns False when the last binding goes; SAFE follows the delegation.
//!
//! No webhook is registered: every row is what the reconciler wrote. Every test name holds
//! `tables`, so `bash e2e/run.sh tables` runs just these. Tests here run one at a time (each
//! starts its own operator), serialised by `SERIAL`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kube::Api;
use mandate::api::AgentIdentity;
use mandate::api::conditions::READY;
use mandate_e2e::operator::{Operator, OperatorOptions};
use mandate_e2e::resources::{install_crds, rfc3339_from_now};
use mandate_e2e::{TestNamespace, client, eventually, kubectl_ok};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// fixtures
// ---------------------------------------------------------------------------------------------

/// A namespace of its own, the CRDs and an operator of its own.
async fn setup(prefix: &str) -> anyhow::Result<(TestNamespace, Operator)> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix, &[]).await?;
    let operator = Operator::start(OperatorOptions::unique()).await?;
    Ok((ns, operator))
}

fn apply(ns: &str, object: &Value) -> anyhow::Result<()> {
    kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&object.to_string()))?;
    Ok(())
}

fn identity(name: &str) -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "Group", "name": "research-team"}, "purpose": "e2e: tables"}
    })
}

/// A ToolBinding of `agent` granting read on each of `tools` (external, Low risk).
fn binding(name: &str, agent: &str, tools: &[&str]) -> Value {
    let tools: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "name": tool, "actions": ["read"],
                "destination": {"external": {"cidrs": ["203.0.113.0/24"], "ports": [443]}}
            })
        })
        .collect();
    json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "ToolBinding",
        "metadata": {"name": name},
        "spec": {"agent": agent, "tools": tools}
    })
}

fn policy(name: &str, delegator: &str, delegate: &str, tools: &[&str]) -> Value {
    json!({
        "apiVersion": "mandate.dev/v1alpha1", "kind": "DelegationPolicy",
        "metadata": {"name": name},
        "spec": {"delegator": delegator, "delegates": [{"agent": delegate, "tools": tools}]}
    })
}

// ---------------------------------------------------------------------------------------------
// reading kubectl's tables
// ---------------------------------------------------------------------------------------------

/// One `kubectl get` table: its text, and each row as column header -> cell.
struct Table {
    text: String,
    rows: Vec<BTreeMap<String, String>>,
}

impl Table {
    /// `kubectl get <resource> -n <ns>`, the default table as a reader sees it.
    fn get(resource: &str, ns: &str) -> anyhow::Result<Self> {
        let text = kubectl_ok(&["get", resource, "-n", ns], None)?;
        Ok(Table {
            rows: parse_table(&text)?,
            text,
        })
    }

    /// The cell of column `column` in the row named `name`.
    fn cell(&self, name: &str, column: &str) -> anyhow::Result<&str> {
        let row = self
            .rows
            .iter()
            .find(|row| row.get("NAME").is_some_and(|n| n == name))
            .with_context(|| format!("no row {name} in:\n{}", self.text))?;
        row.get(column)
            .map(String::as_str)
            .with_context(|| format!("no column {column} in:\n{}", self.text))
    }
}

/// Splits a kubectl table by the header's column positions: kubectl pads columns with at least
/// three spaces, and a header holds single spaces only (`SPIFFE ID`, `MAX DEPTH`).
fn parse_table(text: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("kubectl printed no header")?;
    let mut starts = Vec::new();
    let mut previous_blank = 2;
    for (i, c) in header.char_indices() {
        if c != ' ' && previous_blank >= 2 {
            starts.push(i);
        }
        previous_blank = if c == ' ' { previous_blank + 1 } else { 0 };
    }
    let columns: Vec<(usize, Option<usize>, String)> = starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            let end = starts.get(i + 1).copied();
            let name = header[*start..end.unwrap_or(header.len())]
                .trim()
                .to_owned();
            (*start, end, name)
        })
        .collect();
    Ok(lines
        .map(|line| {
            columns
                .iter()
                .map(|(start, end, name)| {
                    let end = end.unwrap_or(line.len()).min(line.len());
                    let cell = line.get((*start).min(end)..end).unwrap_or_default();
                    (name.clone(), cell.trim().to_owned())
                })
                .collect()
        })
        .collect())
}

/// Polls `kubectl get <resource>` until `check` passes on its table; on timeout the error shows
/// the last table and what was wrong with it.
async fn table_until<F>(resource: &str, ns: &str, what: &str, check: F) -> anyhow::Result<Table>
where
    F: Fn(&Table) -> anyhow::Result<()>,
{
    eventually(what, TIMEOUT, || async {
        let table = Table::get(resource, ns)?;
        check(&table).map_err(|e| anyhow!("{e:#}\n{}", table.text))?;
        Ok(Some(table))
    })
    .await
}

/// Fails unless every `(row, column, cell)` reads as expected.
fn expect(table: &Table, cells: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    for (name, column, expected) in cells {
        let cell = table.cell(name, column)?;
        if cell != *expected {
            anyhow::bail!("{name} {column} is {cell:?}, expected {expected:?}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tables_show_a_binding_expiry_instant_and_its_agent_ready_with_two_tools()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (ns, _operator) = setup("tables-expiry").await?;
    let n = ns.name.as_str();
    let until = rfc3339_from_now(4 * 3600)?;
    apply(n, &identity("researcher"))?;
    let mut tools = binding(
        "researcher-tools",
        "researcher",
        &["catalogue", "web-search"],
    );
    tools["spec"]["validUntil"] = json!(until);
    apply(n, &tools)?;

    let bindings = table_until("tb", n, "the binding to be Active with an expiry", |t| {
        expect(t, &[("researcher-tools", "PHASE", "Active")])?;
        // kubectl leaves the cell blank while the status has no expiry.
        if t.cell("researcher-tools", "EXPIRES")?.is_empty() {
            anyhow::bail!("no expiry yet");
        }
        Ok(())
    })
    .await?;
    println!("{}", bindings.text);
    assert_eq!(
        bindings.cell("researcher-tools", "EXPIRES")?,
        until,
        "EXPIRES is the instant the tools expire (never `<invalid>`):\n{}",
        bindings.text
    );
    expect(
        &bindings,
        &[
            ("researcher-tools", "AGENT", "researcher"),
            ("researcher-tools", "RISK", "Low"),
        ],
    )?;

    let agents = table_until("agent", n, "the researcher Ready with two tools", |t| {
        expect(
            t,
            &[
                ("researcher", "TOOLS", "2"),
                ("researcher", "READY", "True"),
            ],
        )
    })
    .await?;
    println!("{}", agents.text);
    expect(
        &agents,
        &[
            ("researcher", "OWNER", "research-team"),
            ("researcher", "CLASS", "ReadOnly"),
            (
                "researcher",
                "SPIFFE ID",
                &format!("spiffe://cluster.local/ns/{n}/sa/researcher"),
            ),
        ],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tables_count_a_tool_granted_by_two_bindings_once() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (ns, _operator) = setup("tables-distinct").await?;
    let n = ns.name.as_str();
    apply(n, &identity("analyst"))?;
    apply(n, &binding("analyst-search", "analyst", &["search"]))?;
    apply(n, &binding("analyst-search-too", "analyst", &["search"]))?;

    // Both bindings are Active: the tool is live twice over, yet it is one tool.
    table_until("tb", n, "both bindings Active", |t| {
        expect(
            t,
            &[
                ("analyst-search", "PHASE", "Active"),
                ("analyst-search-too", "PHASE", "Active"),
            ],
        )
    })
    .await?;
    let agents = table_until("agent", n, "the analyst Ready with one tool", |t| {
        expect(
            t,
            &[("analyst", "TOOLS", "1"), ("analyst", "READY", "True")],
        )
    })
    .await?;
    println!("{}", agents.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tables_show_an_identity_with_no_live_tool_not_ready() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (ns, _operator) = setup("tables-no-tools").await?;
    let n = ns.name.as_str();
    // One identity with no binding at all, one whose only binding starts in an hour.
    apply(n, &identity("intern"))?;
    apply(n, &identity("trainee"))?;
    let mut later = binding("trainee-tools", "trainee", &["search"]);
    later["spec"]["validFrom"] = json!(rfc3339_from_now(3600)?);
    apply(n, &later)?;

    let bindings = table_until("tb", n, "the trainee's binding Pending", |t| {
        expect(t, &[("trainee-tools", "PHASE", "Pending")])
    })
    .await?;
    println!("{}", bindings.text);
    // The projections are applied (the ServiceAccount shows in SPIFFE ID) and still not Ready.
    let agents = table_until("agent", n, "intern and trainee not Ready", |t| {
        for name in ["intern", "trainee"] {
            expect(t, &[(name, "TOOLS", "0"), (name, "READY", "False")])?;
            let spiffe = format!("spiffe://cluster.local/ns/{n}/sa/{name}");
            expect(t, &[(name, "SPIFFE ID", spiffe.as_str())])?;
        }
        Ok(())
    })
    .await?;
    println!("{}", agents.text);

    let identities: Api<AgentIdentity> = Api::namespaced(client().await?, n);
    for name in ["intern", "trainee"] {
        let identity = identities.get(name).await?;
        let ready = identity
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == READY)
            .with_context(|| format!("{name} reports Ready"))?;
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NoLiveTools"),
            "{name}: {ready:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tables_show_an_identity_not_ready_and_its_delegation_unsafe_once_its_binding_goes()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (ns, _operator) = setup("tables-unbound").await?;
    let n = ns.name.as_str();
    apply(n, &identity("researcher"))?;
    apply(n, &identity("analyst"))?;
    apply(n, &binding("researcher-tools", "researcher", &["search"]))?;
    apply(n, &binding("analyst-tools", "analyst", &["search"]))?;
    apply(
        n,
        &policy(
            "researcher-to-analyst",
            "researcher",
            "analyst",
            &["search"],
        ),
    )?;

    let agents = table_until("agent", n, "both agents Ready with their tool", |t| {
        for name in ["researcher", "analyst"] {
            expect(t, &[(name, "TOOLS", "1"), (name, "READY", "True")])?;
        }
        Ok(())
    })
    .await?;
    println!("{}", agents.text);
    let policies = table_until("dp", n, "the delegation safe", |t| {
        expect(
            t,
            &[
                ("researcher-to-analyst", "DELEGATOR", "researcher"),
                ("researcher-to-analyst", "MAX DEPTH", "1"),
                ("researcher-to-analyst", "SAFE", "True"),
            ],
        )
    })
    .await?;
    println!("{}", policies.text);

    kubectl_ok(&["delete", "tb", "researcher-tools", "-n", n], None)?;

    // The researcher now hands on a tool it does not hold.
    let policies = table_until("dp", n, "the delegation unsafe", |t| {
        expect(t, &[("researcher-to-analyst", "SAFE", "False")])
    })
    .await?;
    println!("{}", policies.text);
    let agents = table_until("agent", n, "the researcher without tools", |t| {
        expect(
            t,
            &[("researcher", "TOOLS", "0"), ("analyst", "TOOLS", "1")],
        )
    })
    .await?;
    println!("{}", agents.text);
    table_until(
        "agent",
        n,
        "the researcher not Ready, the analyst Ready",
        |t| {
            expect(
                t,
                &[
                    ("researcher", "READY", "False"),
                    ("analyst", "READY", "True"),
                ],
            )
        },
    )
    .await?;
    Ok(())
}

#[test]
fn tables_are_read_by_the_header_positions_even_with_spaces_inside_a_header() {
    let text = "NAME        DELEGATOR   MAX DEPTH   SAFE   AGE\n\
                a-to-b      a           1           True   5s\n\
                c           <none>      2                  6s\n";
    let rows = parse_table(text).unwrap();
    assert_eq!(rows[0]["MAX DEPTH"], "1");
    assert_eq!(rows[0]["SAFE"], "True");
    assert_eq!(rows[1]["DELEGATOR"], "<none>");
    assert_eq!(rows[1]["SAFE"], "");
    assert_eq!(rows[1]["AGE"], "6s");
}
