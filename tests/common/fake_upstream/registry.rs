//! The fake registry's routes: `/v2/`, the token realm, manifests, blobs (302 to the
//! CDN), tags and referrers, with the fault switches applied and every request logged.

use super::*;

enum Route {
    Base,
    Token,
    Manifest { repo: String, reference: String },
    Blob { repo: String, digest: String },
    Tags { repo: String },
    Referrers { repo: String },
    Unknown,
}

fn parse_route(path: &str) -> Route {
    if path == REALM_PATH {
        return Route::Token;
    }
    if path == "/v2" || path == "/v2/" {
        return Route::Base;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Unknown;
    };
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        if !repo.is_empty() {
            return Route::Tags { repo: repo.to_string() };
        }
        return Route::Unknown;
    }
    for marker in ["/manifests/", "/blobs/", "/referrers/"] {
        let Some(i) = rest.rfind(marker) else {
            continue;
        };
        let repo = &rest[..i];
        let reference = &rest[i + marker.len()..];
        if repo.is_empty() || reference.is_empty() || reference.contains('/') {
            continue;
        }
        let (repo, reference) = (repo.to_string(), reference.to_string());
        return match marker {
            "/manifests/" => Route::Manifest { repo, reference },
            "/blobs/" => Route::Blob {
                repo,
                digest: reference,
            },
            _ => Route::Referrers { repo },
        };
    }
    Route::Unknown
}

pub(super) async fn registry_handler(
    State(st): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    st.request_count.fetch_add(1, SeqCst);
    st.apply_pending_revoke();
    let path = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let query = parse_query(uri.query());
    let route = parse_route(&path);

    let mut resp = if let Route::Token = route {
        st.token_endpoint(&query, &headers)
    } else if let Some(fault) = st.injected_fault() {
        fault
    } else {
        st.dispatch(&route, &method, &query, &headers)
    };
    if !matches!(route, Route::Token) {
        resp.headers_mut().insert(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        );
    }

    let status = resp.status().as_u16();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut log = lock(&st.log);
    match &route {
        Route::Manifest { repo, reference } => {
            log.manifest_requests.push(ManifestRequest {
                method: method.to_string(),
                repo: repo.clone(),
                reference: reference.clone(),
                accept: headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect(),
                status,
                had_authorization: authorization.is_some(),
            });
        }
        Route::Blob { digest, .. } if method == Method::GET => {
            *log.registry_blob_gets.entry(digest.clone()).or_default() += 1;
            if status == 302 {
                *log.registry_blob_redirects.entry(digest.clone()).or_default() += 1;
            }
        }
        _ => {}
    }
    log.registry_requests.push(RegistryRequest {
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default(),
        status,
        authorization,
    });
    resp
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

impl FakeState {
    pub(super) fn challenge(&self, repo: Option<&str>) -> Response {
        let mut value = format!(r#"Bearer realm="{}",service="{SERVICE}""#, self.realm());
        if let Some(repo) = repo {
            value.push_str(&format!(r#",scope="repository:{repo}:pull""#));
        }
        respond(
            StatusCode::UNAUTHORIZED,
            "application/json",
            &[("www-authenticate", value)],
            UNAUTHORIZED_BODY,
        )
    }

    pub(super) fn authorized(&self, headers: &HeaderMap, repo: Option<&str>) -> bool {
        bearer(headers).is_some_and(|t| self.token_valid(&t, repo))
    }

    fn token_endpoint(&self, query: &[(String, String)], headers: &HeaderMap) -> Response {
        let scopes: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, creds)| creds.trim().to_string());
        let had_basic = basic.is_some();
        lock(&self.log).token_requests.push((scopes.join(" "), had_basic));

        let creds_ok = basic
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|raw| raw == format!("{USERNAME}:{PASSWORD}").as_bytes());
        if !creds_ok && !self.anonymous.load(SeqCst) {
            return respond(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                &[],
                REALM_UNAUTHORIZED_BODY,
            );
        }

        let serial = self.token_serial.fetch_add(1, SeqCst);
        let token = format!("tok-{serial}-{}", scopes.join("+"));
        let expires_in = self.token_expires_in.load(SeqCst);
        lock(&self.data).tokens.insert(
            token.clone(),
            TokenInfo {
                serial,
                scopes,
                expires_at: Instant::now() + Duration::from_secs(expires_in),
            },
        );
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": rfc3339(unix_now()),
        });
        respond(StatusCode::OK, "application/json", &[], body.to_string())
    }

    fn dispatch(&self, route: &Route, method: &Method, query: &[(String, String)], headers: &HeaderMap) -> Response {
        let repo = match route {
            Route::Base => {
                return if self.authorized(headers, None) {
                    respond(StatusCode::OK, "application/json", &[], "{}")
                } else {
                    self.challenge(None)
                };
            }
            Route::Token | Route::Unknown => return rh_not_found(),
            Route::Manifest { repo, .. }
            | Route::Blob { repo, .. }
            | Route::Tags { repo }
            | Route::Referrers { repo } => repo,
        };
        if !self.authorized(headers, Some(repo)) {
            return self.challenge(Some(repo));
        }
        let is_head = *method == Method::HEAD;
        if !is_head && *method != Method::GET {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "The operation is unsupported.",
            );
        }
        match route {
            Route::Manifest { repo, reference } => self.manifest(repo, reference, is_head),
            Route::Blob { digest, .. } => self.registry_blob(digest, is_head),
            Route::Tags { repo } if !is_head => self.tags(repo, query),
            _ => rh_not_found(),
        }
    }

    pub(super) fn manifest(&self, repo: &str, reference: &str, is_head: bool) -> Response {
        let found = {
            let data = lock(&self.data);
            let digest = if reference.starts_with("sha256:") {
                Some(reference.to_string())
            } else {
                data.tags.get(repo).and_then(|t| t.get(reference)).cloned()
            };
            digest.and_then(|d| {
                data.manifests
                    .get(repo)
                    .and_then(|m| m.get(&d))
                    .map(|(mt, b)| (d.clone(), mt.clone(), b.clone()))
            })
        };
        let Some((digest, media_type, bytes)) = found else {
            return rh_not_found();
        };
        let mut extra = vec![
            ("content-length", bytes.len().to_string()),
            ("etag", format!("\"{digest}\"")),
        ];
        if !self.omit_digest_header.load(SeqCst) {
            extra.push(("docker-content-digest", digest));
        }
        let body = if is_head { Bytes::new() } else { bytes };
        respond(StatusCode::OK, &media_type, &extra, body)
    }

    fn registry_blob(&self, digest: &str, is_head: bool) -> Response {
        let Some(bytes) = self.blob(digest) else {
            return json_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry");
        };
        if is_head {
            return respond(
                StatusCode::OK,
                "application/octet-stream",
                &[
                    ("content-length", bytes.len().to_string()),
                    ("docker-content-digest", digest.to_string()),
                    ("accept-ranges", "bytes".to_string()),
                ],
                Bytes::new(),
            );
        }
        // Known blobs always have a valid sha256 digest.
        let hex = digest.trim_start_matches("sha256:");
        let path = format!("/sha256/{}/{hex}", &hex[..2]);
        let expires = unix_now() + self.cdn_url_ttl_secs.load(SeqCst);
        let signature = cdn_signature(&path, expires);
        let base = lock(&self.redirect_to).clone().unwrap_or_else(|| self.cdn_url.clone());
        let base = base.trim_end_matches('/');
        respond(
            StatusCode::FOUND,
            "text/html; charset=utf-8",
            &[
                (
                    "location",
                    format!("{base}{path}?Expires={expires}&Signature={signature}"),
                ),
                ("docker-content-digest", digest.to_string()),
                ("accept-ranges", "bytes".to_string()),
            ],
            Bytes::new(),
        )
    }

    pub(super) fn tags(&self, repo: &str, query: &[(String, String)]) -> Response {
        let all: Vec<String> = {
            let data = lock(&self.data);
            match data.tags.get(repo) {
                Some(t) => t.keys().cloned().collect(),
                None if data.manifests.contains_key(repo) => Vec::new(),
                None => {
                    return json_error(
                        StatusCode::NOT_FOUND,
                        "NAME_UNKNOWN",
                        "repository name not known to registry",
                    );
                }
            }
        };
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let n = param("n").and_then(|n| n.parse::<usize>().ok()).or_else(|| {
            let d = self.default_tags_page.load(SeqCst);
            (d > 0).then_some(d)
        });
        let last = param("last");
        let remaining: Vec<String> = all
            .into_iter()
            .filter(|t| last.as_ref().is_none_or(|l| t > l))
            .collect();
        let (page, more) = match n {
            Some(n) => (
                remaining.iter().take(n).cloned().collect::<Vec<_>>(),
                remaining.len() > n,
            ),
            None => (remaining, false),
        };
        let mut extra = Vec::new();
        if let (true, Some(n), Some(last)) = (more, n, page.last()) {
            extra.push((
                "link",
                format!(r#"</v2/{repo}/tags/list?last={last}&n={n}>; rel="next""#),
            ));
        }
        let body = serde_json::json!({"name": repo, "tags": page});
        respond(StatusCode::OK, "application/json", &extra, body.to_string())
    }
}
