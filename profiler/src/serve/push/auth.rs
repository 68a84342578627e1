//! What each push carries besides its body: basic auth or a bearer token,
//! read from files (a command line is seen in `ps`, an environment in
//! /proc/PID/environ of any process root starts), the tenant header and
//! any other header. The secrets are marked sensitive and never printed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};

use crate::host::safe_open;

/// The header Pyroscope (and Grafana's other multi-tenant backends) reads
/// the tenant from.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// A secret file is one line: anything larger is not one.
const MAX_SECRET_FILE: u64 = 64 << 10;

/// A `--push-header`.
#[derive(Clone, Debug)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// Headers clockprof sets itself, which `--push-header` may not replace.
const OWN_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "connect-protocol-version",
    "authorization",
];

/// `--push-header 'Name: value'`.
pub fn header(text: &str) -> Result<Header, String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| "not 'Name: value'".to_string())?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| "the name is not a header name (letters, digits and -)".to_string())?;
    if OWN_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "`{name}` is set by clockprof (credentials go in --push-user with \
             --push-password-file, or --push-bearer-token-file)"
        ));
    }
    if name.as_str().eq_ignore_ascii_case(TENANT_HEADER) {
        return Err("the tenant goes in --push-tenant".to_string());
    }
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| "the value has characters a header cannot carry".to_string())?;
    Ok(Header { name, value })
}

/// `--push-tenant`: printable ASCII, as a header value must be.
pub fn tenant(text: &str) -> Result<String, String> {
    let valid = !text.is_empty() && text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err("a tenant is 1 to 256 printable characters, without spaces".to_string());
    }
    Ok(text.to_string())
}

/// `--push-user`: basic auth's user may not hold the `:` that ends it.
pub fn user_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(':') || text.chars().any(char::is_control) {
        return Err("a user name is not empty and has no `:` or control characters".to_string());
    }
    Ok(text.to_string())
}

/// The first line of a secret file, opened as every file root reads
/// (a regular file, without blocking); an empty secret is refused.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    let bytes = safe_open::read_regular(path, MAX_SECRET_FILE)
        .with_context(|| format!("could not read the {what} from {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("the {what} in {} is not text", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if secret.is_empty() {
        bail!("{} holds no {what} on its first line", path.display());
    }
    Ok(secret.to_string())
}

/// The headers every push carries, credentials marked sensitive so that no
/// debug output of a request shows them.
pub fn push_headers(
    user: Option<&str>,
    password_file: Option<&Path>,
    token_file: Option<&Path>,
    tenant: Option<&str>,
    extra: &[Header],
) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::new();
    let authorization = match (user, password_file, token_file) {
        (Some(user), Some(password_file), None) => {
            let password = read_secret(password_file, "push password")?;
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {pair}"))
        }
        (None, None, Some(token_file)) => Some(format!(
            "Bearer {}",
            read_secret(token_file, "push bearer token")?
        )),
        (None, None, None) => None,
        _ => {
            bail!("give either --push-user with --push-password-file, or --push-bearer-token-file")
        }
    };
    if let Some(authorization) = authorization {
        let mut value = HeaderValue::from_str(&authorization)
            .context("the push credentials have characters a header cannot carry")?;
        value.set_sensitive(true);
        headers.push((AUTHORIZATION, value));
    }
    if let Some(tenant) = tenant {
        headers.push((
            HeaderName::from_static("x-scope-orgid"),
            HeaderValue::from_str(tenant).context("the tenant is not a header value")?,
        ));
    }
    headers.extend(extra.iter().map(|h| (h.name.clone(), h.value.clone())));
    Ok(headers)
}

/// How the pushes authenticate, for the start-up line: never the secret.
pub fn described(user: Option<&str>, bearer: bool, tenant: Option<&str>) -> String {
    let mut parts = Vec::new();
    match (user, bearer) {
        (Some(user), _) => parts.push(format!("basic auth as {user}")),
        (None, true) => parts.push("a bearer token".to_string()),
        (None, false) => {}
    }
    if let Some(tenant) = tenant {
        parts.push(format!("tenant {tenant}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value_and_not_ours() {
        let parsed = header("X-Team:  clocks ").unwrap();
        assert_eq!(parsed.name.as_str(), "x-team");
        assert_eq!(parsed.value, "clocks");
        for bad in [
            "no colon",
            ": value",
            "bad name: v",
            "Authorization: Basic eA==",
            "Host: elsewhere",
            "X-Scope-OrgID: t",
            "X-Ok: line\nbreak",
        ] {
            assert!(header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_come_from_the_first_line_of_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\r\nignored\n").unwrap();
        assert_eq!(read_secret(&file, "password").unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_secret(&file, "password").is_err());
        assert!(read_secret(dir.path(), "password").is_err());
        let fifo = dir.path().join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        // A FIFO is refused, not waited on.
        assert!(read_secret(&fifo, "password").is_err());
    }

    #[test]
    fn basic_auth_and_tenant_headers_are_built_and_the_secret_is_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "pa55\n").unwrap();
        let extra = [header("X-Team: clocks").unwrap()];
        let headers =
            push_headers(Some("alice"), Some(&file), None, Some("tenant-1"), &extra).unwrap();
        let shown: Vec<(String, String, bool)> = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    v.to_str().unwrap().to_string(),
                    v.is_sensitive(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "authorization".into(),
                    "Basic YWxpY2U6cGE1NQ==".into(),
                    true
                ),
                ("x-scope-orgid".into(), "tenant-1".into(), false),
                ("x-team".into(), "clocks".into(), false),
            ]
        );
        std::fs::write(&file, "tok\n").unwrap();
        let headers = push_headers(None, None, Some(&file), None, &[]).unwrap();
        assert_eq!(headers[0].1, "Bearer tok");
    }
}
