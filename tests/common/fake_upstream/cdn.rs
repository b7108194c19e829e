//! The fake CDN: signed, expiring blob URLs, byte ranges, bodies in 64 KiB frames.

use super::*;

fn cdn_error(status: StatusCode, code: &str, message: &str) -> Response {
    respond(
        status,
        "application/xml",
        &[],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
    )
}

/// `/sha256/ab/abcd...` -> `sha256:abcd...`
fn parse_cdn_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/sha256/")?;
    let (prefix, hex) = rest.split_once('/')?;
    let valid =
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && hex.starts_with(prefix) && prefix.len() == 2;
    valid.then(|| format!("sha256:{hex}"))
}

/// `Ok(Some((start, end_inclusive)))` for a single satisfiable range,
/// `Ok(None)` when the header is to be ignored, `Err(())` when unsatisfiable.
fn parse_range(value: &str, total: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(suffix) = b.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 || total == 0 {
            return Err(());
        }
        return Ok(Some((total - suffix.min(total), total - 1)));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Ok(None),
        }
    };
    if start >= total {
        return Err(());
    }
    Ok(Some((start, end.min(total - 1))))
}

pub(super) async fn cdn_handler(
    State(st): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        st.cdn_saw_authorization.store(true, SeqCst);
    }
    let ranges: Vec<String> = headers
        .get_all(header::RANGE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if !ranges.is_empty() {
        lock(&st.log).cdn_ranges.extend(ranges.iter().cloned());
    }
    if st.cdn_fail_5xx.load(SeqCst) {
        return cdn_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        );
    }
    let path = uri.path();
    let Some(digest) = parse_cdn_path(path) else {
        return cdn_error(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.");
    };
    if method == Method::GET {
        *lock(&st.log).cdn_gets.entry(digest.clone()).or_default() += 1;
    } else if method != Method::HEAD {
        return cdn_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        );
    }

    let query = parse_query(uri.query());
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let expires = param("Expires").and_then(|e| e.parse::<u64>().ok());
    let signature_ok = match (expires, param("Signature")) {
        (Some(exp), Some(sig)) => sig == cdn_signature(path, exp),
        _ => false,
    };
    if !signature_ok {
        return cdn_error(StatusCode::FORBIDDEN, "AccessDenied", "Access denied: bad signature");
    }
    if expires.is_some_and(|e| unix_now() >= e) {
        return cdn_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    let Some(mut blob) = st.blob(&digest) else {
        return cdn_error(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.");
    };
    if st.wrong_bytes.load(SeqCst) && !blob.is_empty() {
        let mut v = blob.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        blob = Bytes::from(v);
    }
    let total = blob.len() as u64;
    let range = match ranges.first() {
        _ if st.ignore_range.load(SeqCst) => Ok(None),
        // Several Range lines: ignore them all, like most servers.
        Some(r) if ranges.len() == 1 => parse_range(r, total),
        _ => Ok(None),
    };
    let hex = digest.trim_start_matches("sha256:");
    let mut extra = vec![("accept-ranges", "bytes".to_string()), ("etag", format!("\"{hex}\""))];
    let (status, body) = match range {
        Err(()) => {
            return respond(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "application/xml",
                &[("content-range", format!("bytes */{total}"))],
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRange</Code><Message>The requested range is not satisfiable</Message></Error>",
            );
        }
        Ok(Some((start, end))) => {
            extra.push(("content-range", format!("bytes {start}-{end}/{total}")));
            (StatusCode::PARTIAL_CONTENT, blob.slice(start as usize..=end as usize))
        }
        Ok(None) => (StatusCode::OK, blob),
    };
    extra.push(("content-length", body.len().to_string()));
    if method == Method::HEAD {
        return respond(status, "binary/octet-stream", &extra, Bytes::new());
    }
    let cut = st.take_cut(body.len() as u64);
    let mut resp = respond(status, "binary/octet-stream", &extra, Bytes::new());
    *resp.body_mut() = cdn_body(st.clone(), body, cut);
    resp
}

fn cdn_body(st: Arc<FakeState>, data: Bytes, cut: Option<usize>) -> Body {
    let limit = cut.unwrap_or(data.len()).min(data.len());
    let stream = futures_util::stream::unfold((0usize, false), move |(offset, done)| {
        let st = st.clone();
        let data = data.clone();
        async move {
            if done {
                return None;
            }
            if offset >= limit {
                // A whole body just ends; a cut one ends with an error.
                cut?;
                // Let hyper flush what was sent before the connection dies.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let err = io::Error::new(io::ErrorKind::ConnectionAborted, "fake CDN: cut");
                return Some((Err(err), (offset, true)));
            }
            let delay = st.frame_delay_ms.load(SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let end = (offset + CDN_FRAME).min(limit);
            let chunk = data.slice(offset..end);
            st.cdn_bytes_sent.fetch_add(chunk.len() as u64, SeqCst);
            Some((Ok(chunk), (end, false)))
        }
    });
    Body::from_stream(stream)
}
