//! Tag lists for clients: upstream's page (`n`, `last`), renamed to the name the client
//! used and with its next-page `Link` rewritten into the client's namespace; the page as
//! last seen when upstream is unavailable.

use super::{CacheStatus, Proxy, ProxyError, ProxyResult, Target};
use crate::cache::TagListPage;
use crate::oci::RepoName;
use crate::upstream::UpstreamError;
use tracing::warn;

pub struct TagsAnswer {
    /// The JSON body, `name` set to the client's name.
    pub body: String,
    /// The next page as a `Link` header value, when there is one.
    pub link: Option<String>,
    pub cache: CacheStatus,
}

impl Proxy {
    /// One page of the tag list of `target`, which the client called `client_name`
    /// (with `?ns=` when it used one).
    pub async fn tags_list(
        &self,
        target: &Target,
        client_name: &RepoName,
        ns: Option<&str>,
        n: Option<&str>,
        last: Option<&str>,
    ) -> ProxyResult<TagsAnswer> {
        let query = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(n) = n {
                q.append_pair("n", n);
            }
            if let Some(last) = last {
                q.append_pair("last", last);
            }
            q.finish()
        };
        let (page, cache) = self.tag_list_page(target, &query).await?;
        Ok(TagsAnswer {
            body: rename_tag_list(&page.body, client_name.as_str()),
            link: page
                .next
                .as_deref()
                .map(|next| client_link(next, client_name.as_str(), ns)),
            cache,
        })
    }

    /// One page, from upstream or (when it is unavailable) as last seen.
    async fn tag_list_page(&self, target: &Target, query: &str) -> ProxyResult<(TagListPage, CacheStatus)> {
        let upstream_name = target.upstream.name.as_str();
        let repo = target.repo.as_str();
        match target.upstream.tags_list(&target.repo, query).await {
            Ok((body, next)) => {
                let body = String::from_utf8(body.to_vec())
                    .map_err(|_| ProxyError::Upstream(UpstreamError::Protocol("tag list is not UTF-8".into())))?;
                let page = TagListPage { body, next };
                self.cache
                    .put_tag_list(upstream_name, repo, query, page.clone())
                    .await?;
                Ok((page, CacheStatus::Miss))
            }
            Err(e) if e.is_transient() => match self.cache.tag_list(upstream_name, repo, query).await? {
                Some(page) => {
                    warn!(upstream = %upstream_name, repo, error = %e, "upstream unavailable; serving the last known tag list");
                    Ok((page, CacheStatus::Stale))
                }
                None => Err(e.into()),
            },
            Err(UpstreamError::NotFound) => Err(ProxyError::NameUnknown(format!("{repo} is not known upstream"))),
            Err(e) => Err(e.into()),
        }
    }
}

/// Upstream's tag list body with `name` set to the name the client used.
fn rename_tag_list(body: &str, client_name: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("name".into(), serde_json::Value::String(client_name.to_string()));
            }
            v.to_string()
        }
        Err(_) => body.to_string(),
    }
}

/// Rewrites upstream's next-page target into the client's namespace as an absolute path.
fn client_link(upstream_target: &str, client_name: &str, ns: Option<&str>) -> String {
    let query = upstream_target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "n" || k == "last" {
            out.append_pair(&k, &v);
        }
    }
    if let Some(ns) = ns {
        out.append_pair("ns", ns);
    }
    let q = out.finish();
    format!("</v2/{client_name}/tags/list?{q}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_rewritten_to_the_client_name() {
        assert_eq!(
            client_link("/v2/ubi9/ubi/tags/list?last=b&n=2", "registry.redhat.io/ubi9/ubi", None),
            "</v2/registry.redhat.io/ubi9/ubi/tags/list?last=b&n=2>; rel=\"next\""
        );
        assert_eq!(
            client_link(
                "/v2/ubi9/ubi/tags/list?n=2&last=b&evil=x",
                "ubi9/ubi",
                Some("registry.redhat.io")
            ),
            "</v2/ubi9/ubi/tags/list?n=2&last=b&ns=registry.redhat.io>; rel=\"next\""
        );
    }

    #[test]
    fn tag_list_names_are_rewritten() {
        assert_eq!(
            rename_tag_list(r#"{"name":"ubi9/ubi","tags":["a"]}"#, "r/ubi9/ubi"),
            r#"{"name":"r/ubi9/ubi","tags":["a"]}"#
        );
    }
}
