//! `[status]`: the operator's status page (`GET /status`) and its JSON API
//! (`/status/api/*`), and who may see them.

use super::{ConfigError, invalid};
use serde::{Deserialize, Serialize};

/// `[status]`: on by default. With `[clients] htpasswd`, only `users` may see it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// The htpasswd users who may see the page; the others get 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            enabled: true,
            users: Vec::new(),
        }
    }
}

impl StatusConfig {
    /// `users` name htpasswd users: they need `[clients] htpasswd`.
    pub fn validate(&self, htpasswd: bool) -> Result<(), ConfigError> {
        if !self.users.is_empty() && !htpasswd {
            return Err(invalid(
                "status.users",
                "names users of [clients] htpasswd, which is not set (without it the page is open to every client)",
            ));
        }
        if let Some(u) = self.users.iter().find(|u| u.is_empty() || u.contains(':')) {
            return Err(invalid("status.users", format!("{u:?} is not an htpasswd user name")));
        }
        Ok(())
    }
}
