//! Upstream authentication state: the challenge an upstream answered with, and the
//! Bearer tokens it issued, cached per scope until shortly before `expires_in`.

use crate::secret::Secret;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The distribution token spec's default lifetime, also containers/image's minimum.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Not yet known: the first request goes out without credentials.
    Unknown,
    Anonymous,
    Basic,
    Bearer {
        realm: url::Url,
        service: Option<String>,
    },
}

/// Credentials for an upstream, from `username` + `password_file`.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub refresh_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug)]
pub struct AuthState {
    pub scheme: Scheme,
    tokens: HashMap<String, Token>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            scheme: Scheme::Unknown,
            tokens: HashMap::new(),
        }
    }
}

impl AuthState {
    pub fn token(&self, scope: &str) -> Option<Token> {
        self.tokens
            .get(scope)
            .filter(|t| Instant::now() < t.refresh_at)
            .cloned()
    }

    pub fn store_token(&mut self, scope: &str, value: String, expires_in: Option<u64>) {
        let lifetime = expires_in
            .map(Duration::from_secs)
            .unwrap_or(MIN_TOKEN_LIFETIME)
            .max(MIN_TOKEN_LIFETIME);
        // Refresh early: 10% of the lifetime, at most 30 s.
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        self.tokens.insert(
            scope.to_string(),
            Token {
                value,
                refresh_at: Instant::now() + lifetime - margin,
            },
        );
    }

    pub fn forget_token(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

/// The token endpoint's answer: `token` or `access_token`, and `expires_in`.
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<(String, Option<u64>)> {
        let value = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        Some((value, self.expires_in))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_variants() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.into_token(), Some(("a".to_string(), Some(300))));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"t","access_token":"a"}"#).unwrap();
        assert_eq!(t.into_token(), Some(("t".to_string(), None)));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(t.into_token(), None);
    }

    #[test]
    fn tokens_expire_early_and_at_least_a_minute() {
        let mut s = AuthState::default();
        s.store_token("scope", "v".into(), Some(1));
        let t = s.token("scope").unwrap();
        assert!(t.refresh_at > Instant::now() + Duration::from_secs(50));
        s.forget_token("scope");
        assert!(s.token("scope").is_none());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
