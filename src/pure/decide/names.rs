//! Names a gateway hands over, read: a SPIFFE ID, a ServiceAccount username (from TokenReview)
//! and a Host in; the caller's (namespace, ServiceAccount) and the called Service out, or a
//! sentence saying why not. Pure: no I/O, no DNS.

use super::Server;

/// The (namespace, ServiceAccount) of `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, the form
/// mandate writes on its ServiceAccounts and meshes put in `source.principal`. Another trust
/// domain is refused: a peer from another trust domain is not one of this cluster's agents.
pub fn parse_spiffe_id(trust_domain: &str, id: &str) -> Result<(String, String), String> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("{id:?} is not a SPIFFE ID"))?;
    let (domain, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{id:?} has no path"))?;
    if domain != trust_domain {
        return Err(format!(
            "{id:?} belongs to trust domain {domain:?}, not {trust_domain:?}"
        ));
    }
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["ns", namespace, "sa", service_account]
            if !namespace.is_empty() && !service_account.is_empty() =>
        {
            Ok(((*namespace).to_owned(), (*service_account).to_owned()))
        }
        _ => Err(format!(
            "{id:?} is not of the form spiffe://{trust_domain}/ns/<namespace>/sa/<serviceaccount>"
        )),
    }
}

/// The (namespace, ServiceAccount) of a TokenReview's username
/// `system:serviceaccount:<ns>:<sa>`.
pub fn parse_service_account_username(username: &str) -> Result<(String, String), String> {
    match username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, service_account))
            if !namespace.is_empty()
                && !service_account.is_empty()
                && !service_account.contains(':') =>
        {
            Ok((namespace.to_owned(), service_account.to_owned()))
        }
        _ => Err(format!("{username:?} is not a ServiceAccount")),
    }
}

/// The Service a Host (or `:authority`) names, as cluster DNS resolves it from a pod in
/// `caller_namespace`: `name`, `name.ns`, `name.ns.svc` or `name.ns.svc.<cluster domain>`, with
/// an optional port. An IP address or an outside name is no Service.
pub fn parse_host(host: &str, caller_namespace: &str) -> Result<Server, String> {
    let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let dns_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let service = |name: &str, namespace: &str| Server::Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    if !labels.iter().all(dns_label) || labels[0].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{host:?} names no Service"));
    }
    match labels.as_slice() {
        [name] => Ok(service(name, caller_namespace)),
        [name, namespace] => Ok(service(name, namespace)),
        [name, namespace, "svc", ..] => Ok(service(name, namespace)),
        _ => Err(format!(
            "{host:?} names no Service (expected <service>[.<namespace>[.svc[.<cluster domain>]]])"
        )),
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => {
            name
        }
        _ => host,
    }
}
