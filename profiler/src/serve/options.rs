//! `clockprof serve`'s options.

use std::time::Duration;

use clap::Args;

use crate::session::options::ProbeArgs;

/// `clockprof serve`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("pushes").multiple(true).args(["push", "otlp"])))]
pub struct ServeArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Serve HTTP on this address, or on a Unix socket (unix:PATH, mode
    /// 0660). Anything but loopback exposes the endpoints to the network:
    /// choose it on purpose, with --web-config.
    #[arg(long, value_name = "ADDR|unix:PATH", default_value = "127.0.0.1:9742",
          value_parser = crate::serve::listen::parse)]
    pub listen: crate::serve::listen::Listen,

    /// The group of a unix:PATH socket, whose members may connect.
    #[arg(long, value_name = "GROUP")]
    pub listen_group: Option<String>,

    /// Serve over TLS, with basic auth and response headers, as Prometheus
    /// exporter-toolkit's web configuration file (YAML) says.
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<std::path::PathBuf>,

    /// Push each interval's profile to this Pyroscope server (http or
    /// https, e.g. https://pyroscope:4040; the push API's path is added).
    #[arg(long, value_name = "URL", value_parser = crate::serve::push::url::push_url)]
    pub push: Option<crate::serve::push::url::PushUrl>,

    /// Which of Pyroscope's APIs --push speaks: `connect`
    /// (push.v1.PusherService/Push, one request a push) or `ingest`
    /// (/ingest, one request per series, for gateways that allow only it).
    #[arg(
        long,
        value_name = "API",
        value_enum,
        default_value = "connect",
        requires = "push"
    )]
    pub push_api: crate::serve::push::IngestApi,

    /// Send each interval's profile as OTLP profiles (v1development, over
    /// HTTP/protobuf) to this receiver, e.g. an OpenTelemetry Collector's
    /// http://127.0.0.1:4318 (/v1development/profiles is added).
    #[arg(long, value_name = "URL", value_parser = crate::serve::push::url::otlp_url)]
    pub otlp: Option<crate::serve::push::url::PushUrl>,

    /// The OTLP-Profiles-Development-Version header --otlp sends: the
    /// version-skew test sends another to see the Collector's refusal
    /// reach the log and the metrics; not for production, hence hidden.
    #[arg(long, hide = true, value_name = "N", requires = "otlp",
          default_value_t = crate::serve::push::otlp::VERSION)]
    pub otlp_profiles_version: u32,

    /// The user of the pushes' basic auth; the password is read from
    /// --push-password-file (never from the command line or environment).
    #[arg(long, value_name = "NAME", requires_all = ["push", "push_password_file"],
          value_parser = crate::serve::push::auth::user_name)]
    pub push_user: Option<String>,

    /// A file holding the pushes' basic-auth password (its first line).
    #[arg(long, value_name = "FILE", requires = "push_user")]
    pub push_password_file: Option<std::path::PathBuf>,

    /// A file holding a bearer token sent with every push (its first line),
    /// as Grafana Cloud and token-guarded gateways take.
    #[arg(
        long,
        value_name = "FILE",
        requires = "push",
        conflicts_with = "push_user"
    )]
    pub push_bearer_token_file: Option<std::path::PathBuf>,

    /// The tenant of the pushes (X-Scope-OrgID), for multi-tenant Pyroscope.
    #[arg(long, value_name = "ID", requires = "push",
          value_parser = crate::serve::push::auth::tenant)]
    pub push_tenant: Option<String>,

    /// A header sent with every push, as 'Name: value'; repeatable.
    #[arg(long = "push-header", value_name = "'NAME: VALUE'", requires = "push",
          value_parser = crate::serve::push::auth::header)]
    pub push_headers: Vec<crate::serve::push::auth::Header>,

    /// PEM CA certificates trusted for https pushes (--push and --otlp),
    /// besides the system's.
    #[arg(long, value_name = "FILE", requires = "pushes")]
    pub push_ca_file: Option<std::path::PathBuf>,

    /// Seconds between pushes, to --push and --otlp (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub push_interval: u64,

    /// A label added to every metric and pushed profile (host, cluster);
    /// repeatable.
    #[arg(long = "label", value_name = "K=V", value_parser = fixed_label)]
    pub labels: Vec<(String, String)>,

    /// Drop a process's series from /metrics (and the pushes' cap) once it
    /// made no clock read for DUR: seconds, or with a unit, as 90s, 10m, 1h
    /// (1 s to 366 days). The series cap then holds what runs now.
    #[arg(long, value_name = "DUR", default_value = crate::serve::limits::DEFAULT_SERIES_TTL,
          value_parser = series_ttl)]
    pub series_ttl: Duration,

    /// A series cap below the built-in one, so a test fills it with a few
    /// processes; not for production, hence hidden.
    #[arg(long, hide = true, value_name = "N",
          default_value_t = crate::serve::limits::MAX_SERIES as u64,
          value_parser = clap::value_parser!(u64).range(1..=crate::serve::limits::MAX_SERIES as u64))]
    pub max_series: u64,
}

/// The longest `--series-ttl`: a year, as for `record -d`.
const MAX_SERIES_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// `--series-ttl`: whole seconds, or a whole number of s, m or h.
fn series_ttl(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.trim().strip_suffix(['s', 'm', 'h']) {
        Some(number) => (
            number,
            match text.trim().chars().last() {
                Some('m') => 60,
                Some('h') => 3600,
                _ => 1,
            },
        ),
        None => (text.trim(), 1),
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| "not a duration such as 600, 90s, 10m or 1h".to_string())?;
    let ttl = Duration::from_secs(secs);
    if ttl.is_zero() || ttl > MAX_SERIES_TTL {
        return Err("must be at least 1 s and at most 366 days".to_string());
    }
    Ok(ttl)
}

/// Label names clockprof sets itself.
const RESERVED_LABELS: &[&str] = &[
    "process",
    "source",
    "clock",
    "container_id",
    "reason",
    "clocksource",
    "vdso_capable",
    "service_name",
];

/// `--label K=V`: a Prometheus label name that is not one of ours, and a
/// value without control characters.
fn fixed_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| "not K=V".to_string())?;
    let mut chars = name.chars();
    let valid_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !valid_name {
        return Err(format!(
            "`{}` is not a label name (letters, digits and _, not starting with a digit or __)",
            crate::host::printable::printable(name)
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!("`{name}` is a label clockprof sets itself"));
    }
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(
            "the value must be 1 to 256 characters, without control characters".to_string(),
        );
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_ttl_is_seconds_or_a_number_with_a_unit() {
        for (text, secs) in [
            ("600", 600),
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("3s", 3),
            (" 2m ", 120),
        ] {
            assert_eq!(series_ttl(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in [
            "",
            "0",
            "0s",
            "-1",
            "1.5m",
            "10 m",
            "1d",
            "m",
            "10ms",
            "9999999h",
            "18446744073709551615h",
        ] {
            assert!(series_ttl(bad).is_err(), "{bad}");
        }
    }
}
