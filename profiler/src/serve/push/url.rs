//! `--push URL` and `--otlp URL`: http or https, without credentials (they
//! go in files, push::auth), with the receiver's path added when the URL
//! has none.

use hyper::Uri;

/// Pyroscope's push API (Connect protocol, protobuf body), the default.
pub const CONNECT_PATH: &str = "/push.v1.PusherService/Push";
/// Pyroscope's older HTTP API, one profile per request.
pub const INGEST_PATH: &str = "/ingest";
/// Where an OTLP/HTTP receiver takes profiles: `/v1development/profiles`,
/// the signal's path while profiles are in development (as the Collector's
/// otlpreceiver serves it).
pub const OTLP_PROFILES_PATH: &str = "/v1development/profiles";

/// A URL as given, where one with credentials is let through here and
/// refused by serve with a sentence of its own, as clap's error would
/// repeat the value, password included.
#[derive(Clone, Debug)]
pub enum PushUrl {
    Endpoint(Uri),
    WithCredentials,
}

/// Why a URL with `user:password@` is refused.
pub const CREDENTIALS_IN_URL: &str = "the URL holds a user or password, which anyone \
    can read in ps and logs: give --push-user with --push-password-file, or \
    --push-bearer-token-file";

/// `--push`'s value: a Pyroscope server. Its path, when it has none, comes
/// with `--push-api` (with_default_path).
pub fn push_url(url: &str) -> Result<PushUrl, String> {
    parse(url, "https://pyroscope:4040")
}

/// `--otlp`'s value: an OTLP/HTTP receiver, e.g. a Collector's :4318.
pub fn otlp_url(url: &str) -> Result<PushUrl, String> {
    parse(url, "http://127.0.0.1:4318")
}

fn parse(url: &str, example: &str) -> Result<PushUrl, String> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Ok(PushUrl::WithCredentials);
    }
    let not_a_url = || format!("not a URL such as {example}");
    let uri: Uri = url.parse().map_err(|_| not_a_url())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(not_a_url());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL names no host".to_string());
    }
    if uri.query().is_some() {
        return Err("the URL may not have a query".to_string());
    }
    Ok(PushUrl::Endpoint(uri))
}

/// `url` (as parse let it through), with `default_path` if it has no path.
pub fn with_default_path(url: &Uri, default_path: &str) -> Uri {
    let path = match url.path() {
        "" | "/" => default_path,
        path => path,
    };
    let scheme = url.scheme_str().unwrap_or("http");
    let authority = url.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{scheme}://{authority}{path}")
        .parse()
        .unwrap_or_else(|_| url.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_endpoint(url: &str) -> Result<String, String> {
        match push_url(url)? {
            PushUrl::Endpoint(uri) => Ok(with_default_path(&uri, CONNECT_PATH).to_string()),
            PushUrl::WithCredentials => Err("credentials".to_string()),
        }
    }

    #[test]
    fn push_urls_are_http_or_https_with_the_api_path_and_no_password() {
        assert_eq!(
            push_endpoint("http://127.0.0.1:4040").unwrap(),
            "http://127.0.0.1:4040/push.v1.PusherService/Push"
        );
        assert_eq!(
            push_endpoint("http://pyro:4040/").unwrap(),
            "http://pyro:4040/push.v1.PusherService/Push"
        );
        assert_eq!(
            push_endpoint("http://pyro/custom/Push").unwrap(),
            "http://pyro/custom/Push"
        );
        assert_eq!(
            push_endpoint("https://profiles.example:443").unwrap(),
            "https://profiles.example:443/push.v1.PusherService/Push"
        );
        for with_credentials in ["https://user:secret@x", "http://token@x/path", "u:p@x"] {
            assert!(
                matches!(push_url(with_credentials), Ok(PushUrl::WithCredentials)),
                "{with_credentials}"
            );
            assert!(
                matches!(otlp_url(with_credentials), Ok(PushUrl::WithCredentials)),
                "{with_credentials}"
            );
        }
        assert!(matches!(push_url("http://x/a@b"), Ok(PushUrl::Endpoint(_))));
        for bad in ["pyro:4040", "ftp://x", "http://", "http://x/?a=1", ""] {
            assert!(push_endpoint(bad).is_err(), "{bad}");
            assert!(otlp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn otlp_urls_get_the_profiles_path() {
        let PushUrl::Endpoint(uri) = otlp_url("http://127.0.0.1:4318").unwrap() else {
            panic!("no credentials here")
        };
        assert_eq!(
            with_default_path(&uri, OTLP_PROFILES_PATH).to_string(),
            "http://127.0.0.1:4318/v1development/profiles"
        );
        let PushUrl::Endpoint(uri) = push_url("http://pyro:4040").unwrap() else {
            panic!("no credentials here")
        };
        assert_eq!(
            with_default_path(&uri, INGEST_PATH).to_string(),
            "http://pyro:4040/ingest"
        );
        assert!(otlp_url("ftp://x").unwrap_err().contains(":4318"));
    }
}
