//! A real gateway in front of a real MCP server, for the authorizer's tests: the MCP test server
//! of `e2e/mcp` (Go MCP SDK) as a local process, Envoy (the official build `e2e/deps.sh` takes
//! from PyPI) with its MCP filter, ext_authz over gRPC+TLS to an operator's decision service and
//! a router to that server, and the MCP test client that calls through it. Each process is
//! killed when its handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::operator::free_ports;
use crate::{bin_dir, pinned, state_dir};

/// The e2e cache (`MANDATE_E2E_CACHE`), found from the control plane's binaries inside it.
fn cache_dir() -> anyhow::Result<PathBuf> {
    let bin = bin_dir()?;
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .context("the control plane's bin directory has no cache above it")
}

/// The Envoy binary `e2e/deps.sh` installed.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let path = cache_dir()?
        .join(format!("envoy-{}", pinned("ENVOY_VERSION")?))
        .join("envoy");
    if !path.exists() {
        bail!("{} is missing: run e2e/deps.sh", path.display());
    }
    Ok(path)
}

/// The MCP test server and client `e2e/deps.sh` built from this checkout's `e2e/mcp`: the
/// cache keeps one build per hash of its sources (as deps.sh names them), so worktrees with
/// different versions never run each other's.
pub fn mcp_binary() -> anyhow::Result<PathBuf> {
    let sources = crate::repo_root().join("e2e/mcp");
    let out = Command::new("bash")
        .arg("-c")
        .arg("cat go.mod go.sum *.go | sha256sum | cut -c1-16")
        .current_dir(&sources)
        .output()?;
    let hash = String::from_utf8(out.stdout)?.trim().to_owned();
    anyhow::ensure!(
        out.status.success() && hash.len() == 16,
        "hashing {}",
        sources.display()
    );
    let path = cache_dir()?.join("mcp").join(hash).join("mcp-tools");
    if !path.exists() {
        bail!("{} is missing: run e2e/deps.sh", path.display());
    }
    Ok(path)
}

/// A child process killed on drop, its output in a log file.
pub struct Process {
    child: Child,
    pub log_path: PathBuf,
}

impl Process {
    fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        let dir = state_dir().join("gateway-logs");
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join(format!("{name}-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { child, log_path })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something listens on `addr`.
async fn wait_listening(addr: SocketAddr, what: &str, process: &mut Process) -> anyhow::Result<()> {
    for _ in 0..150 {
        if let Some(status) = process.child.try_wait()? {
            bail!("{what} exited ({status}):\n{}", process.log());
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not listen on {addr}:\n{}", process.log())
}

/// The MCP test server: read_doc, write_doc and delete_doc.
pub struct McpServer {
    pub addr: SocketAddr,
    pub process: Process,
}

impl McpServer {
    pub async fn start() -> anyhow::Result<Self> {
        let [port] = free_ports()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut process = Process::spawn(
            "mcp-server",
            Command::new(mcp_binary()?).args(["serve", "-addr", &addr.to_string()]),
        )?;
        wait_listening(addr, "the MCP server", &mut process).await?;
        Ok(McpServer { addr, process })
    }
}

/// Envoy: MCP filter, then ext_authz (gRPC over TLS to the decision service, failing closed),
/// then the router to the MCP server. Routes tell mandate which Service they lead to.
pub struct Envoy {
    pub addr: SocketAddr,
    pub process: Process,
}

/// Where Envoy sends calls and asks about them.
pub struct EnvoySettings<'a> {
    /// The MCP server's address.
    pub upstream: SocketAddr,
    /// The decision service's address and the CA of its certificate.
    pub authorizer: SocketAddr,
    pub authorizer_ca: &'a [u8],
    /// `<namespace>/<name>` of the Service the gateway's route leads to.
    pub service: &'a str,
    /// How Envoy asks.
    pub variant: Variant,
}

/// The two variants of Envoy's external authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// gRPC `Authorization/Check`, after Envoy's MCP filter (its metadata names the call).
    Grpc,
    /// The HTTP service (`path_prefix: /ext-authz`), without an MCP filter: the headers and the
    /// forwarded body name the call; the route's Service is a header Envoy adds.
    Http,
}

impl Envoy {
    pub async fn start(settings: &EnvoySettings<'_>) -> anyhow::Result<Self> {
        let [port] = free_ports()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let dir = state_dir()
            .join("gateway-logs")
            .join(format!("envoy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = dir.join("authorizer-ca.crt");
        std::fs::write(&ca, settings.authorizer_ca)?;
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, envoy_config(addr, settings, &ca))?;
        let mut process = Process::spawn(
            &format!("envoy-{port}"),
            Command::new(envoy_binary()?)
                .arg("-c")
                .arg(&config)
                .args(["--base-id", &port.to_string()])
                .args(["--log-level", "warn", "--concurrency", "1"]),
        )?;
        wait_listening(addr, "Envoy", &mut process).await?;
        Ok(Envoy { addr, process })
    }

    /// The MCP endpoint through the gateway.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

fn envoy_config(listen: SocketAddr, settings: &EnvoySettings<'_>, ca: &Path) -> String {
    let endpoint = |addr: SocketAddr| {
        format!(
            "{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}",
            addr.ip(),
            addr.port()
        )
    };
    let service = settings.service;
    // gRPC: the MCP filter parses the body first and ext_authz sends its metadata; the route
    // names the Service in a context extension. HTTP: ext_authz forwards the body and the MCP
    // headers, and adds the Service as a header of its own.
    let (mcp_filter, ext_authz, per_route) = match settings.variant {
        Variant::Grpc => (
            r#"          - name: envoy.filters.http.mcp
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp
"#
            .to_owned(),
            r#"              metadata_context_namespaces: ["envoy.filters.http.mcp", "mcp_proxy"]
              grpc_service:
                envoy_grpc: {cluster_name: mandate}
                timeout: 5s
"#
            .to_owned(),
            format!(
                r#"              typed_per_filter_config:
                envoy.filters.http.ext_authz:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                  check_settings:
                    context_extensions: {{"mandate.dev/service": "{service}"}}
"#
            ),
        ),
        Variant::Http => (
            String::new(),
            format!(
                r#"              with_request_body: {{max_request_bytes: 65536, allow_partial_message: true}}
              allowed_headers:
                patterns: [{{exact: mcp-method}}, {{exact: mcp-name}}, {{exact: x-mandate-delegator}}]
              http_service:
                server_uri: {{uri: "https://{authorizer}", cluster: mandate, timeout: 5s}}
                path_prefix: /ext-authz
                authorization_request:
                  headers_to_add: [{{key: x-mandate-service, value: "{service}"}}]
                authorization_response:
                  allowed_client_headers_on_success:
                    patterns: [{{exact: x-mandate-decision-id}}]
                  allowed_client_headers:
                    patterns: [{{exact: x-mandate-decision-id}}, {{exact: x-mandate-reason}}, {{exact: content-type}}]
"#,
                authorizer = settings.authorizer,
            ),
            String::new(),
        ),
    };
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: mcp
    address: {{socket_address: {{address: {listen_ip}, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mcp
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "access %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% method=%DYNAMIC_METADATA(envoy.filters.http.mcp:method)% tool=%DYNAMIC_METADATA(envoy.filters.http.mcp:params:name)% decision=%RESP(x-mandate-decision-id)%\n"
          route_config:
            virtual_hosts:
            - name: tools
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: tools, timeout: 10s}}
{per_route}          http_filters:
{mcp_filter}          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
{ext_authz}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: tools
    type: STATIC
    load_assignment:
      cluster_name: tools
      endpoints: [{upstream}]
  - name: mandate
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          alpn_protocols: ["h2"]
          validation_context:
            trusted_ca: {{filename: "{ca}"}}
    load_assignment:
      cluster_name: mandate
      endpoints: [{authorizer}]
"#,
        listen_ip = listen.ip(),
        listen_port = listen.port(),
        upstream = endpoint(settings.upstream),
        authorizer = endpoint(settings.authorizer),
        ca = ca.display(),
    )
}

/// What the MCP test client reported.
#[derive(Debug)]
pub struct McpCall {
    pub ok: bool,
    /// stdout and stderr together: the tool's answer, or the error with the gateway's refusal.
    pub output: String,
}

/// Calls `tool` (or lists the tools when `None`) through `url` with `token`.
pub fn mcp_call(url: &str, token: &str, tool: Option<&str>) -> anyhow::Result<McpCall> {
    mcp_call_for(url, token, None, tool)
}

/// [`mcp_call`], working for `delegator` (its token goes in `x-mandate-delegator`).
pub fn mcp_call_for(
    url: &str,
    token: &str,
    delegator: Option<&str>,
    tool: Option<&str>,
) -> anyhow::Result<McpCall> {
    let mut command = Command::new(mcp_binary()?);
    command.args(["call", "-url", url, "-token", token]);
    if let Some(delegator) = delegator {
        command.args(["-delegator", delegator]);
    }
    match tool {
        Some(tool) => command.args(["-tool", tool]),
        None => command.arg("-list"),
    };
    let out = command.output()?;
    Ok(McpCall {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// A TCP proxy in front of the API server that can be cut: an operator pointed at it loses the
/// API server (watches, TokenReview) while everything else keeps it.
pub struct ApiServerProxy {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl ApiServerProxy {
    /// Forwards 127.0.0.1:<free port> to `upstream` until [`Self::cut`].
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut until_cut = stopped.clone();
            loop {
                tokio::select! {
                    _ = until_cut.wait_for(|cut| *cut) => return,
                    accepted = listener.accept() => {
                        let Ok((mut downstream, _)) = accepted else { continue };
                        let mut until_cut = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut upstream) = tokio::net::TcpStream::connect(upstream).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {}
                                _ = until_cut.wait_for(|cut| *cut) => {}
                            }
                        });
                    }
                }
            }
        });
        Ok(ApiServerProxy { addr, stop })
    }

    /// Closes every connection and refuses new ones (the listener is dropped).
    pub fn cut(&self) {
        let _ = self.stop.send(true);
    }

    /// A kubeconfig like the admin one, with its server this proxy.
    pub fn kubeconfig(&self) -> anyhow::Result<PathBuf> {
        let mut kubeconfig = kube::config::Kubeconfig::read_from(crate::kubeconfig_path())?;
        for cluster in &mut kubeconfig.clusters {
            if let Some(cluster) = cluster.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.addr));
            }
        }
        let path = state_dir().join(format!("kubeconfig-proxy-{}", self.addr.port()));
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig)?)?;
        Ok(path)
    }
}

impl Drop for ApiServerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The API server's address, from the admin kubeconfig.
pub fn api_server_addr() -> anyhow::Result<SocketAddr> {
    let kubeconfig = kube::config::Kubeconfig::read_from(crate::kubeconfig_path())?;
    let server = kubeconfig
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .context("the admin kubeconfig names no server")?;
    let authority = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    authority
        .parse()
        .with_context(|| format!("the API server {server} is not at an IP address and port"))
}
