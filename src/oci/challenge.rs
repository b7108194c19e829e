//! `WWW-Authenticate` parsing (RFC 7235): one or more challenges, each a scheme and
//! `name=value` parameters where values may be quoted strings containing commas.

use std::collections::BTreeMap;

/// One authentication challenge; parameter names are lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }

    pub fn is_basic(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("basic")
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t' || c == ',') {
            self.i += 1;
        }
    }
    fn token(&mut self) -> &'a str {
        let start = self.i;
        while let Some(c) = self.peek() {
            if !is_token_char(c) {
                break;
            }
            self.i += c.len_utf8();
        }
        &self.s[start..self.i]
    }
    fn quoted(&mut self) -> Option<String> {
        // Precondition: at '"'.
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.i += c.len_utf8();
            match c {
                '"' => return Some(out),
                '\\' => {
                    let escaped = self.peek()?;
                    self.i += escaped.len_utf8();
                    out.push(escaped);
                }
                _ => out.push(c),
            }
        }
    }
}

/// Parses a header value into its challenges. Malformed trailing input ends parsing;
/// what was understood before it is kept.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut cur = Cursor { s: header, i: 0 };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        cur.skip_ws_and_commas();
        let scheme = cur.token();
        if scheme.is_empty() {
            break;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_string(),
            params: BTreeMap::new(),
        };
        // Parameters until the next token that is not followed by '=' (a new scheme).
        loop {
            cur.skip_ws_and_commas();
            let save = cur.i;
            let name = cur.token();
            if name.is_empty() {
                break;
            }
            cur.skip_ws();
            if cur.peek() != Some('=') {
                // A token68 or the next scheme: a token68 belongs to this challenge only
                // when it is not followed by parameters; treat it as the next scheme.
                cur.i = save;
                break;
            }
            cur.i += 1;
            cur.skip_ws();
            let value = if cur.peek() == Some('"') {
                match cur.quoted() {
                    Some(v) => v,
                    None => {
                        out.push(challenge);
                        return out;
                    }
                }
            } else {
                let start = cur.i;
                while cur.peek().is_some_and(|c| c != ',' && c != ' ' && c != '\t') {
                    cur.i += cur.peek().map_or(1, char::len_utf8);
                }
                header[start..cur.i].to_string()
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(challenge);
        if cur.i >= header.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn red_hat_challenge() {
        let c = parse(
            r#"Bearer realm="https://registry.redhat.io/auth/realms/rhcc/protocol/redhat-docker-v2/auth",service="docker-registry""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("service"), Some("docker-registry"));
        assert!(c[0].param("realm").unwrap().ends_with("/auth"));
    }

    #[test]
    fn quoted_commas_several_challenges_and_unquoted_values() {
        let c = parse(
            r#"Bearer realm="https://a/token",scope="repository:a/b:pull,push", error="insufficient_scope", Basic realm=x"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert!(c[1].is_basic());
        assert_eq!(c[1].param("realm"), Some("x"));
        let c = parse(r#"basic REALM="a \"q\" b""#);
        assert_eq!(c[0].param("realm"), Some(r#"a "q" b"#));
        assert!(parse("").is_empty());
        assert_eq!(parse(r#"Bearer realm="unterminated"#).len(), 1);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,120}") {
            let _ = parse(&s);
        }

        #[test]
        fn roundtrips_quoted_values(realm in "[ -~&&[^\"\\\\]]{0,40}", service in "[a-z.-]{1,20}") {
            let header = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
            let c = parse(&header);
            prop_assert_eq!(c[0].param("realm"), Some(realm.as_str()));
            prop_assert_eq!(c[0].param("service"), Some(service.as_str()));
        }
    }
}
