//! Credentials on HTTP requests: bearer tokens and HTTP Basic, compared in constant time.

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `headers` carry `Authorization: Bearer <token>`.
pub fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    match authorization(headers) {
        Some(Credentials::Bearer(given)) => same(&given, token),
        _ => false,
    }
}

/// Whether `headers` carry the token as a bearer token or as an HTTP Basic password
/// (Alertmanager's `http_config.authorization` and `http_config.basic_auth`).
pub fn bearer_or_basic_ok(headers: &HeaderMap, token: &str) -> bool {
    match authorization(headers) {
        Some(Credentials::Bearer(given)) | Some(Credentials::BasicPassword(given)) => {
            same(&given, token)
        }
        None => false,
    }
}

enum Credentials {
    Bearer(String),
    BasicPassword(String),
}

fn authorization(headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return Some(Credentials::BasicPassword(password.to_string()));
    }
    None
}

/// Constant-time equality that also hides the length: both sides are hashed first.
fn same(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn bearer_and_basic() {
        assert!(bearer_or_basic_ok(&headers("Bearer s3cret"), "s3cret"));
        assert!(bearer_or_basic_ok(&headers("bearer  s3cret "), "s3cret"));
        assert!(bearer_or_basic_ok(
            &headers(&basic("alertmanager", "s3cret")),
            "s3cret"
        ));
        assert!(!bearer_or_basic_ok(&headers("Bearer s3cre"), "s3cret"));
        assert!(!bearer_or_basic_ok(
            &headers(&basic("s3cret", "x")),
            "s3cret"
        ));
        assert!(!bearer_or_basic_ok(&headers("Basic !!!"), "s3cret"));
        assert!(!bearer_or_basic_ok(&headers("Token s3cret"), "s3cret"));
        assert!(!bearer_or_basic_ok(&HeaderMap::new(), "s3cret"));
        // The API accepts bearer only.
        assert!(bearer_ok(&headers("Bearer t"), "t"));
        assert!(!bearer_ok(&headers(&basic("u", "t")), "t"));
    }
}
