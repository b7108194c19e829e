//! Client authentication: Basic credentials checked against an htpasswd file's bcrypt
//! entries. Successful checks are remembered briefly (as a hash of the password), so a
//! pull's many requests do not each pay for bcrypt.

use crate::secret::Secret;
use axum::http::HeaderMap;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a verified password is trusted without running bcrypt again.
const REMEMBER: Duration = Duration::from_secs(300);

pub struct ClientAuth {
    users: HashMap<String, Secret>,
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

/// The challenge every 401 carries: quoted values, no `=` in the realm (Pulp parses it
/// naively).
pub const CHALLENGE: &str = "Basic realm=\"pullgate\"";

impl ClientAuth {
    pub fn new(entries: Vec<(String, Secret)>) -> Self {
        ClientAuth {
            users: entries.into_iter().collect(),
            verified: Mutex::default(),
        }
    }

    /// The authenticated user, or `None` when credentials are missing or wrong.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get("authorization")?.to_str().ok()?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let hash = self.users.get(user)?.expose().to_string();
        let fingerprint: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((f, at)) = verified.get(user)
                && *f == fingerprint
                && at.elapsed() < REMEMBER
            {
                return Some(user.to_string());
            }
        }
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .ok()?;
        if !ok {
            return None;
        }
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_string(), (fingerprint, Instant::now()));
        Some(user.to_string())
    }
}

/// The cluster's shared secret, as the peer routes check it: kept as its SHA-256, and a
/// presented value compared by hash (the comparison's time says nothing of the secret).
pub struct PeerSecret([u8; 32]);

impl PeerSecret {
    pub fn new(secret: &Secret) -> PeerSecret {
        PeerSecret(Sha256::digest(secret.expose().as_bytes()).into())
    }

    /// Whether the request carries the secret.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        headers
            .get(crate::oci::route::SECRET_HEADER)
            .is_some_and(|v| <[u8; 32]>::from(Sha256::digest(v.as_bytes())) == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert("authorization", format!("Basic {v}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn checks_bcrypt_entries() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = ClientAuth::new(vec![("alice".into(), Secret::new(hash))]);
        assert_eq!(auth.authenticate(&basic("alice", "pw")).await.as_deref(), Some("alice"));
        assert_eq!(
            auth.authenticate(&basic("alice", "pw")).await.as_deref(),
            Some("alice"),
            "remembered"
        );
        assert_eq!(auth.authenticate(&basic("alice", "nope")).await, None);
        assert_eq!(auth.authenticate(&basic("bob", "pw")).await, None);
        assert_eq!(auth.authenticate(&HeaderMap::new()).await, None);
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(auth.authenticate(&bearer).await, None);
    }
}
