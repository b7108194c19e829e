//! One handler per registry route. Each resolves the client's name, calls one `Proxy`
//! method and renders the answer: status, headers, body (none for HEAD), and what the
//! access log should say about it ([`Served`]).

use super::AppState;
use super::error::ApiError;
use crate::oci::media::AcceptSet;
use crate::oci::range::{RangeError, RangeSpec};
use crate::oci::route::{HOP_HEADER, PEER_PREFIX};
use crate::oci::route::{Route, RouteError};
use crate::oci::{Digest, ErrorCode, Reference, RepoName};
use crate::proxy::{CacheStatus, ProxyError, Target};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header, response};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// What the access log and the request metrics say about a response: its route (from
/// the one parse of the path), the client's name and how the cache answered. Set by the
/// handler as a response extension for the observing layer.
#[derive(Clone, Default)]
pub struct Served {
    pub route: &'static str,
    pub name: Option<String>,
    pub cache: Option<CacheStatus>,
    /// The signature policy's verdict on a manifest, when the upstream has a policy.
    pub verdict: Option<&'static str>,
    /// The tag or digest of a manifest or blob GET (for the status page's recent pulls).
    pub reference: Option<String>,
    /// The authenticated client user, with `[clients] htpasswd`.
    pub user: Option<String>,
}

/// The route label for metrics and logs.
fn route_label(route: &Result<Route, RouteError>) -> &'static str {
    match route {
        Ok(Route::Base) => "base",
        Ok(Route::Manifest { .. }) => "manifest",
        Ok(Route::Blob { .. }) | Ok(Route::BlobUpload { .. }) => "blob",
        Ok(Route::TagsList { .. }) => "tags",
        Ok(Route::Referrers { .. }) => "referrers",
        Ok(Route::Sigstore { .. }) => "sigstore",
        Ok(Route::SignaturesExtension { .. }) => "signatures",
        Ok(Route::Catalog) => "catalog",
        Err(_) => "other",
    }
}

/// The query parameters pullgate reads; everything else is ignored.
#[derive(Default)]
struct Query {
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
    artifact_type: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut q = Query::default();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "ns" => &mut q.ns,
                "n" => &mut q.n,
                "last" => &mut q.last,
                "artifactType" => &mut q.artifact_type,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        q
    }
}

/// One client request, as the handlers need it.
struct ApiRequest {
    parts: Parts,
    query: Query,
    route: &'static str,
    /// Sent by another replica of the cluster (with the shared secret).
    from_peer: bool,
}

impl ApiRequest {
    /// The upstream and repository `name` means; a peer's request is answered here.
    fn target(&self, app: &AppState, name: &RepoName) -> Result<Target, ApiError> {
        let target = app.proxy.resolve(name, self.ns())?;
        Ok(if self.from_peer { target.asked_by_peer() } else { target })
    }

    fn head(&self) -> bool {
        self.parts.method == Method::HEAD
    }

    fn ns(&self) -> Option<&str> {
        self.query.ns.as_deref()
    }

    /// A `200` reply with `content_type`.
    fn reply(&self, content_type: &str) -> Reply {
        Reply {
            builder: response::Builder::new()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, content_type),
            head: self.head(),
            served: Served {
                route: self.route,
                ..Served::default()
            },
        }
    }
}

/// A response being built: HEAD gets the headers without the body.
struct Reply {
    builder: response::Builder,
    head: bool,
    served: Served,
}

impl Reply {
    fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<axum::http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<axum::http::Error>,
    {
        self.builder = self.builder.header(name, value);
        self
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.builder = self.builder.status(status);
        self
    }

    /// `OCI-Namespace` when the client named the upstream with `?ns=` (containerd).
    fn namespace(self, req: &ApiRequest, target: &Target) -> Self {
        match req.ns() {
            Some(_) => self.header("oci-namespace", target.upstream_name()),
            None => self,
        }
    }

    fn served(mut self, name: &RepoName, cache: Option<CacheStatus>) -> Self {
        self.served.name = Some(name.to_string());
        self.served.cache = cache;
        self
    }

    /// An in-memory body, with its `Content-Length` (also for HEAD).
    fn body(mut self, bytes: impl Into<Bytes>) -> Result<Response, ApiError> {
        let bytes = bytes.into();
        if let Some(headers) = self.builder.headers_mut() {
            headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(bytes.len()));
        }
        let body = if self.head { Body::empty() } else { Body::from(bytes) };
        self.finish(body)
    }

    fn finish(self, body: Body) -> Result<Response, ApiError> {
        let mut resp = self.builder.body(body).map_err(ApiError::internal)?;
        resp.extensions_mut().insert(self.served);
        Ok(resp)
    }
}

/// Every registry API path (`/v2/…`, `/sigstore/…`, `/extensions/v2/…`).
pub async fn registry_api(State(app): State<AppState>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    // The peer routes: the registry API under a prefix, for the cluster's replicas only.
    let peer_path = parts
        .uri
        .path()
        .strip_prefix(PEER_PREFIX)
        .filter(|p| p.starts_with('/'));
    let path = peer_path.unwrap_or(parts.uri.path());
    let route = Route::parse(path);
    let label = route_label(&route);
    let reference = match (&route, app.status.is_some() && parts.method == Method::GET) {
        (Ok(Route::Manifest { reference, .. }), true) => Some(reference.to_string()),
        (Ok(Route::Blob { digest, .. }), true) => Some(digest.to_string()),
        _ => None,
    };
    let peer_admitted = app.peers.as_ref().is_some_and(|p| p.admits(&parts.headers));
    // A replica's request (peer route, or the hop header with the secret) is answered
    // here and never forwarded again.
    let from_peer = peer_admitted && (peer_path.is_some() || parts.headers.contains_key(HOP_HEADER));
    if from_peer {
        app.proxy.served_a_peer();
    }
    // The lookaside is read without credentials by every client (containers/image).
    let needs_user = app.clients.is_some() && !from_peer && !parts.uri.path().starts_with("/sigstore/");
    let user = match &app.clients {
        Some(clients) if needs_user => clients.authenticate(&parts.headers).await,
        _ => None,
    };
    let mut resp = if peer_path.is_some() && app.peers.is_none() {
        ApiError::not_found(ErrorCode::Unsupported, "this pullgate is not in a cluster").into_response()
    } else if peer_path.is_some() && !peer_admitted {
        ApiError::peer_unauthorized().into_response()
    } else if needs_user && user.is_none() {
        ApiError::unauthorized().into_response()
    } else {
        let query = Query::parse(parts.uri.query());
        let req = ApiRequest {
            parts,
            query,
            route: label,
            from_peer,
        };
        dispatch(&app, &req, &route)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    };
    // An error (or a reply that did not say) still names the repository in the log.
    if resp.extensions().get::<Served>().is_none() {
        resp.extensions_mut().insert(Served {
            route: label,
            name: route.as_ref().ok().and_then(Route::name).map(RepoName::to_string),
            ..Served::default()
        });
    }
    // What the status page lists of a pull.
    if app.status.is_some()
        && let Some(served) = resp.extensions_mut().get_mut::<Served>()
    {
        served.reference = reference;
        served.user = user;
    }
    resp
}

async fn dispatch(app: &AppState, req: &ApiRequest, route: &Result<Route, RouteError>) -> Result<Response, ApiError> {
    let route = route.as_ref().map_err(|e| ApiError::from(e.clone()))?;
    let method = &req.parts.method;
    match route {
        Route::BlobUpload { .. } => Err(ApiError::unsupported("uploading blobs")),
        _ if !matches!(*method, Method::GET | Method::HEAD) => {
            Err(ApiError::unsupported(&format!("{method} requests")))
        }
        Route::Base => base(app, req),
        Route::Catalog => Err(ApiError::not_found(
            ErrorCode::Unsupported,
            "the catalog is not available through pullgate",
        )),
        Route::Manifest { name, reference } => manifest(app, req, name, reference).await,
        Route::Blob { name, digest } => blob(app, req, name, digest).await,
        Route::TagsList { name } => tags_list(app, req, name).await,
        Route::Referrers { name, digest } => referrers(app, req, name, digest).await,
        Route::Sigstore { name, digest, index } => sigstore(app, req, name, digest, *index).await,
        Route::SignaturesExtension { name, digest } => signatures_extension(app, req, name, digest).await,
    }
}

fn base(app: &AppState, req: &ApiRequest) -> Result<Response, ApiError> {
    let mut reply = req.reply("application/json");
    if app.proxy.signatures_extension() {
        reply = reply.header("x-registry-supports-signatures", "1");
    }
    reply.body("{}")
}

async fn manifest(
    app: &AppState,
    req: &ApiRequest,
    name: &RepoName,
    reference: &Reference,
) -> Result<Response, ApiError> {
    let target = req.target(app, name)?;
    // By digest the stored bytes answer whatever the client accepts: the header is read
    // for a tag only.
    let accept = match reference {
        Reference::Tag(_) => AcceptSet::from_header_values(
            req.parts
                .headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        ),
        Reference::Digest(_) => AcceptSet::default(),
    };
    let answer = match app.proxy.manifest(&target, reference, &accept).await {
        Ok(a) => a,
        Err(ProxyError::PolicyRefused { message, verdict }) => {
            // The refusal carries its verdict to the access line.
            let mut resp = ApiError::from(ProxyError::PolicyRefused { message, verdict }).into_response();
            resp.extensions_mut().insert(Served {
                route: req.route,
                name: Some(name.to_string()),
                verdict: Some(verdict.as_str()),
                ..Served::default()
            });
            return Ok(resp);
        }
        Err(e) => return Err(e.into()),
    };
    let mut reply = req
        .reply(&answer.media_type)
        .header("docker-content-digest", answer.digest.to_string())
        .namespace(req, &target)
        .served(name, Some(answer.cache));
    reply.served.verdict = answer.verdict.map(|v| v.as_str());
    reply.body(answer.bytes)
}

async fn blob(app: &AppState, req: &ApiRequest, name: &RepoName, digest: &Digest) -> Result<Response, ApiError> {
    let target = req.target(app, name)?;
    let range = match req.parts.headers.get(header::RANGE) {
        Some(v) => Some(RangeSpec::parse(v.to_str().map_err(|_| RangeError::Malformed)?)?),
        None => None,
    };
    let answer = if req.head() && only_if_cached(&req.parts.headers) {
        // RFC 9111: a stored response, else 504; nothing is asked upstream.
        let Some(size) = app.proxy.blob_cached_size(digest).await? else {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::BlobUnknown,
                "not cached (only-if-cached)",
            ));
        };
        crate::proxy::BlobAnswer {
            length: Some(size),
            content_range: None,
            cache: CacheStatus::Hit,
            body: None,
        }
    } else if req.head() {
        app.proxy.blob_head(&target, digest).await?
    } else {
        // A plain HTTP/1.x connection sends a warm blob with sendfile (HTTP/2 frames the
        // body itself, TLS encrypts it: both need the bytes).
        let by_kernel = req
            .parts
            .extensions
            .get::<crate::zero_copy::KernelCopyCapable>()
            .is_some()
            && req.parts.version <= axum::http::Version::HTTP_11;
        let target = if by_kernel {
            target.clone().sent_by_kernel()
        } else {
            target.clone()
        };
        app.proxy.blob(&target, digest, range).await?
    };
    let mut reply = req
        .reply("application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string());
    if let Some(range) = &answer.content_range {
        reply = reply
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, range.as_str());
    }
    if let Some(length) = answer.length {
        reply = reply.header(header::CONTENT_LENGTH, length);
    }
    let reply = reply.namespace(req, &target).served(name, Some(answer.cache));
    reply.finish(answer.body.map_or_else(Body::empty, Body::from_stream))
}

/// `Cache-Control: only-if-cached` among the request's directives.
fn only_if_cached(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
}

async fn tags_list(app: &AppState, req: &ApiRequest, name: &RepoName) -> Result<Response, ApiError> {
    let target = req.target(app, name)?;
    let answer = app
        .proxy
        .tags_list(
            &target,
            name,
            req.ns(),
            req.query.n.as_deref(),
            req.query.last.as_deref(),
        )
        .await?;
    let mut reply = req.reply("application/json");
    if let Some(link) = answer.link {
        reply = reply.header(header::LINK, link);
    }
    reply
        .namespace(req, &target)
        .served(name, Some(answer.cache))
        .body(answer.body)
}

async fn referrers(app: &AppState, req: &ApiRequest, name: &RepoName, digest: &Digest) -> Result<Response, ApiError> {
    let target = req.target(app, name)?;
    let answer = app
        .proxy
        .referrers(&target, digest, req.query.artifact_type.as_deref())
        .await?;
    req.reply(&answer.content_type)
        .namespace(req, &target)
        .served(name, None)
        .body(answer.body)
}

async fn sigstore(
    app: &AppState,
    req: &ApiRequest,
    name: &RepoName,
    digest: &Digest,
    index: u32,
) -> Result<Response, ApiError> {
    let target = app.proxy.resolve(name, None)?;
    let Some(bytes) = app.proxy.signature(&target, digest, index).await? else {
        return Err(ApiError::not_found(ErrorCode::ManifestUnknown, "no such signature"));
    };
    req.reply("application/octet-stream").served(name, None).body(bytes)
}

async fn signatures_extension(
    app: &AppState,
    req: &ApiRequest,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response, ApiError> {
    if !app.proxy.signatures_extension() {
        return Err(ApiError::not_found(
            ErrorCode::Unsupported,
            "the signature extension API is disabled",
        ));
    }
    let target = req.target(app, name)?;
    let body = app.proxy.extension_signatures(&target, digest).await?;
    req.reply("application/json").served(name, None).body(body)
}
