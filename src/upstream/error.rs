//! How an upstream request failed, as kinds the proxy can act on (stale-if-error, the
//! breaker, the client's status). Messages never carry a URL: a CDN's signed query
//! string is a credential.

/// Where on the way to a host a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetPhase {
    /// The host name did not resolve.
    Dns,
    /// No TCP connection: refused, timed out, unreachable.
    Connect,
    /// The TLS handshake failed (an untrusted or wrong certificate).
    Tls,
    /// Connected, but no usable answer (the connection closed, an HTTP error).
    Status,
    /// The body broke off.
    Body,
}

impl NetPhase {
    /// The `phase` label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            NetPhase::Dns => "dns",
            NetPhase::Connect => "connect",
            NetPhase::Tls => "tls",
            NetPhase::Status => "status",
            NetPhase::Body => "body",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// `host` is `host:port`; `cause` names what happened ("connect timed out") and never
    /// carries a URL.
    #[error("upstream {upstream}: {host} {cause}")]
    Unreachable {
        upstream: String,
        host: String,
        phase: NetPhase,
        cause: String,
    },
    #[error("upstream timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("not found upstream")]
    NotFound,
    #[error("upstream refused access: {0}")]
    Denied(String),
    #[error("upstream rate limit")]
    TooManyRequests { retry_after: Option<u64> },
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("redirect to {host:?} refused: not in allow_redirect_hosts")]
    RedirectRefused { host: String },
    #[error("token realm on {host:?} refused: not the upstream host nor in allow_realm_hosts")]
    RealmRefused { host: String },
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream keeps failing; not asking it again for {retry_after}s")]
    CircuitOpen { retry_after: u64 },
}

impl UpstreamError {
    /// Errors after which serving a stale tag mapping is right (stale-if-error).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable { .. }
                | UpstreamError::Timeout(_)
                | UpstreamError::TooManyRequests { .. }
                | UpstreamError::Status(500..=599)
                | UpstreamError::CircuitOpen { .. }
        )
    }

    /// Where the request failed: the network phase of an unreachable host, else
    /// `status` (the host answered, with something that is not the content).
    pub fn phase(&self) -> NetPhase {
        match self {
            UpstreamError::Unreachable { phase, .. } => *phase,
            _ => NetPhase::Status,
        }
    }

    /// The `kind` label of `pullgate_upstream_errors_total`; `None` for answers that are
    /// not failures of the upstream (a 404).
    pub fn metric_kind(&self) -> Option<&'static str> {
        Some(match self {
            UpstreamError::Unreachable { .. } => "unreachable",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::NotFound => return None,
            UpstreamError::Denied(_) => "denied",
            UpstreamError::TooManyRequests { .. } => "rate_limited",
            UpstreamError::Status(_) => "status",
            UpstreamError::RedirectRefused { .. } | UpstreamError::RealmRefused { .. } | UpstreamError::Protocol(_) => {
                "protocol"
            }
            UpstreamError::CircuitOpen { .. } => "paused",
        })
    }
}

/// A name that did not resolve, as pullgate's resolver reports it (so a DNS failure is
/// told from others by its type, not by an error's wording).
#[derive(Debug, thiserror::Error)]
#[error("{host} does not resolve: {source}")]
pub(super) struct DnsFailure {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

/// reqwest's resolver, with failures typed as [`DnsFailure`].
pub(super) struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await;
            match resolved {
                Ok(addrs) => Ok(Box::new(addrs.collect::<Vec<_>>().into_iter()) as reqwest::dns::Addrs),
                Err(source) => Err(Box::new(DnsFailure {
                    host: host.clone(),
                    source,
                }) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// A reqwest failure of a request to `upstream` as a kind, with the host:port and the
/// phase it failed in, read from the error's types (its Display may include the URL, a
/// signed CDN query string, so only the host, port and kind of failure are kept).
pub(super) fn classify(upstream: &str, e: reqwest::Error) -> UpstreamError {
    let host = e.url().map(super::host_port_label).unwrap_or_else(|| "?".into());
    let mut dns = None;
    let mut refused = false;
    let mut tls = None;
    // The chain of sources, and inside each io::Error what it wraps (its `source()`
    // skips that: rustls' error travels as an io::Error inside an io::Error).
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e).into_iter().collect();
    while let Some(err) = pending.pop() {
        if let Some(d) = err.downcast_ref::<DnsFailure>() {
            dns = Some(d.source.to_string());
        } else if let Some(r) = err.downcast_ref::<rustls::Error>() {
            tls = Some(r.to_string());
        } else if let Some(io) = err.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            if let Some(inner) = io.get_ref() {
                pending.push(inner);
            }
        }
        if let Some(next) = err.source() {
            pending.push(next);
        }
    }
    let (phase, cause) = if let Some(why) = dns {
        (NetPhase::Dns, format!("does not resolve ({why})"))
    } else if let Some(why) = tls {
        (NetPhase::Tls, format!("TLS handshake failed: {why}"))
    } else if e.is_connect() && e.is_timeout() {
        (NetPhase::Connect, "connect timed out".to_string())
    } else if e.is_timeout() {
        return UpstreamError::Timeout("response");
    } else if refused {
        (NetPhase::Connect, "connection refused".to_string())
    } else if e.is_connect() {
        (NetPhase::Connect, "connect failed".to_string())
    } else if e.is_body() || e.is_decode() {
        (NetPhase::Body, "body read failed".to_string())
    } else {
        (
            NetPhase::Status,
            "request failed (the connection closed before an answer)".to_string(),
        )
    };
    UpstreamError::Unreachable {
        upstream: upstream.to_string(),
        host,
        phase,
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        crate::upstream::install_crypto_provider();
        reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(Resolver))
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_named_as_such() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client()
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap_err();
        match classify("rh", e) {
            UpstreamError::Unreachable { host, phase, cause, .. } => {
                assert_eq!(host, format!("127.0.0.1:{port}"));
                assert_eq!(phase, NetPhase::Connect);
                assert_eq!(cause, "connection refused");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_dns_failure() {
        let e = client()
            .get("http://registry.pullgate-test.invalid/v2/")
            .send()
            .await
            .unwrap_err();
        let classified = classify("rh", e);
        assert_eq!(classified.phase(), NetPhase::Dns, "{classified}");
        assert!(
            classified
                .to_string()
                .starts_with("upstream rh: registry.pullgate-test.invalid:80 does not resolve"),
            "{classified}"
        );
    }
}
