//! `clockprof serve`'s options.

use clap::Args;

use crate::session::options::ProbeArgs;

/// `clockprof serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Serve HTTP on this address. Anything but loopback exposes the
    /// endpoints to the network: choose it on purpose.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9742")]
    pub listen: std::net::SocketAddr,

    /// Push each interval's profile to this Pyroscope server (plain http,
    /// e.g. http://pyroscope:4040; the push API's path is added).
    #[arg(long, value_name = "URL", value_parser = crate::serve::push::endpoint)]
    pub push: Option<hyper::Uri>,

    /// Seconds between pushes (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub push_interval: u64,

    /// A label added to every metric and pushed profile (host, cluster);
    /// repeatable.
    #[arg(long = "label", value_name = "K=V", value_parser = fixed_label)]
    pub labels: Vec<(String, String)>,
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
