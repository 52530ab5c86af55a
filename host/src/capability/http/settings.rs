//! The `http` capability's settings: which origins a guest may reach (default: none), which secrets the host
//! injects into requests to which origin, and how much outgoing work one invocation may ask for.
//!
//! An origin is written as a browser writes one: `https://api.example.com`, `http://127.0.0.1:8080`,
//! `https://*.stripe.com:443`. The scheme is `https` unless the entry says `http://`; the port is the scheme's
//! default unless given; `*.` matches subdomains only (`*.stripe.com` matches `api.stripe.com`, not `stripe.com`).
//! An entry names no path, query or user. An IP address is matched only by an entry naming that address, so the
//! addresses a name may not resolve to (loopback, private, link-local: [`super::policy`]) are reachable only by
//! naming them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::settings::{Env, SettingError};

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP: only where an entry says `http://`.
    Http,
    /// HTTP over TLS: the default.
    Https,
}

impl Scheme {
    /// The scheme's port when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The host part of an allowed origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One host name, lower-cased, without a trailing dot.
    Name(String),
    /// Every subdomain of a name (`*.example.com`), not the name itself.
    Subdomains(String),
    /// One IP address: the only way to allow an address a name must not resolve to.
    Ip(IpAddr),
}

/// The host a request names: a host name (lower-cased, without a trailing dot) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, resolved by the host.
    Name(String),
    /// An IP address literal (`127.0.0.1`, `[::1]`).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// Parses the host of an origin or a request's authority: a bracketed IPv6 address, a dotted-quad IPv4 address,
    /// or a DNS name (letters, digits, `-` and `_`, in dot-separated labels).
    ///
    /// # Errors
    /// Anything else, with why: an address in another form (`2130706433`, `0x7f.1`, `127.1`) is refused as such,
    /// since a resolver would read it as an address the allow list never named.
    pub fn parse(host: &str) -> Result<Self, String> {
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse().map(Self::Ip).map_err(|_| format!("{host:?} is not an IPv6 address"));
        }
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Self::Ip(IpAddr::V4(ip)));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !labels.iter().all(label_ok) {
            return Err(format!("{host:?} is not a host name"));
        }
        // A top-level label is never numeric: a name ending in one (`2130706433`, `0x7f.1`, `127.1`) is an IP
        // address in a form resolvers accept and the allow list cannot match.
        let last = labels.last().copied().unwrap_or_default();
        let hex = last.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if hex || last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{host:?} is an IP address in a non-standard form: write it as a dotted quad"));
        }
        Ok(Self::Name(name))
    }
}

/// One allowed origin: a scheme, a host (or every subdomain of one), a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` only where the entry says so.
    pub scheme: Scheme,
    /// The host, subdomains or address.
    pub host: HostPattern,
    /// The port (the scheme's default unless the entry gave one).
    pub port: u16,
}

impl FromStr for Origin {
    type Err = String;

    /// `[http://|https://]host[:port]`, with `*.` before a name for its subdomains.
    fn from_str(entry: &str) -> Result<Self, String> {
        // A URL with a user, a password, a path or a query is not quoted back: any of them may hold a secret.
        if entry.contains(',') {
            return Err("an entry is a list: give one origin per entry (repeat --allow-outbound)".into());
        }
        let authority_of = |rest: &str| rest.strip_suffix('/').unwrap_or(rest).to_string();
        let rest = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        if authority_of(rest).contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(
                "an entry is not an origin (not shown: a user, password, path or query in it may be a secret): \
                        give the scheme, host and port only"
                    .into(),
            );
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((other, _)) => return Err(format!("{entry:?}: the scheme {other:?} is neither http nor https")),
            None => (Scheme::Https, entry),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_port(authority).map_err(|why| format!("{entry:?}: {why}"))?;
        let port = port.unwrap_or(scheme.default_port());
        let host = match host.strip_prefix("*.") {
            Some(parent) => match Host::parse(parent) {
                Ok(Host::Name(name)) if !name.contains('.') => {
                    return Err(format!("{entry:?}: *.{name} is every name under a top-level domain; name the domain"));
                }
                Ok(Host::Name(name)) => HostPattern::Subdomains(name),
                Ok(Host::Ip(_)) => return Err(format!("{entry:?}: an IP address has no subdomains")),
                Err(why) => return Err(format!("{entry:?}: {why}")),
            },
            None => match Host::parse(host).map_err(|why| format!("{entry:?}: {why}"))? {
                Host::Name(name) => HostPattern::Name(name),
                Host::Ip(ip) => HostPattern::Ip(ip),
            },
        };
        Ok(Self { scheme, host, port })
    }
}

/// Splits `host[:port]` (IPv6 in brackets); the port must be a number from 1 to 65535.
pub(crate) fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => Some(i),
        _ => None,
    };
    let Some(i) = colon else { return Ok((authority, None)) };
    let port = &authority[i + 1..];
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((&authority[..i], Some(p))),
        _ => Err(format!("the port {port:?} is not a number from 1 to 65535")),
    }
}

impl fmt::Display for Origin {
    /// The origin as the audit names it: `https://api.example.com`, with the port only when it is not the
    /// scheme's default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(name) => f.write_str(name)?,
            HostPattern::Subdomains(name) => write!(f, "*.{name}")?,
            HostPattern::Ip(ip) => write!(f, "{}", Host::Ip(*ip))?,
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl Origin {
    /// The origin of one request: its scheme, host and port exactly.
    pub fn of(scheme: Scheme, host: &Host, port: u16) -> Self {
        let host = match host {
            Host::Name(name) => HostPattern::Name(name.clone()),
            Host::Ip(ip) => HostPattern::Ip(*ip),
        };
        Self { scheme, host, port }
    }

    /// Whether this entry allows a request to `scheme://host:port`.
    pub fn allows(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Name(allowed), Host::Name(name)) => allowed == name,
            (HostPattern::Subdomains(parent), Host::Name(name)) => {
                name.strip_suffix(parent.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
            (HostPattern::Ip(allowed), Host::Ip(ip)) => allowed == ip,
            _ => false,
        }
    }
}

/// What a request's injected header carries of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{secret}`: the secret's bytes as they are (they must be a valid header value).
    Secret,
    /// `{basic:USER}`: Basic auth's `base64(USER:secret)`.
    Basic(String),
}

/// A header the host sets on requests to one origin, from a secret the guest never sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The one origin (no wildcard) the header goes to.
    pub origin: Origin,
    /// The header's name, lower-cased (`authorization`).
    pub header: http::HeaderName,
    /// The value's text before the placeholder (`Bearer `).
    pub prefix: String,
    /// The placeholder.
    pub placeholder: Placeholder,
    /// The value's text after the placeholder.
    pub suffix: String,
}

/// Headers a host never injects: the ones that frame or route the request, which the client sets.
const NOT_INJECTABLE: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "http2-settings",
];

impl FromStr for Injection {
    type Err = String;

    /// `<origin> <Header-Name>: <template>`, the template holding `{secret}` or `{basic:USER}` once:
    /// `https://api.example.com Authorization: Bearer {secret}`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let shape = "write it as '<origin> <Header-Name>: <template with {secret}>'";
        let (origin, header) = spec.split_once(char::is_whitespace).ok_or_else(|| shape.to_string())?;
        let origin: Origin = origin.parse()?;
        if matches!(origin.host, HostPattern::Subdomains(_)) {
            return Err(format!("{origin}: a secret is injected into requests to one origin, not a wildcard"));
        }
        let (name, template) = header.trim_start().split_once(':').ok_or_else(|| shape.to_string())?;
        let header = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| "the header name before ':' is not an HTTP token (RFC 9110 §5.1)".to_string())?;
        if NOT_INJECTABLE.contains(&header.as_str()) {
            return Err(format!("{header} frames the request and is set by the client, not injected"));
        }
        let template = template.trim();
        let (prefix, placeholder, suffix) = split_template(template)?;
        for text in [prefix, suffix] {
            if http::HeaderValue::from_str(text).is_err() {
                // The template is not quoted back: a token pasted in place of {secret} would be echoed.
                return Err("the template holds characters a header value may not".into());
            }
        }
        Ok(Self { origin, header, prefix: prefix.into(), placeholder, suffix: suffix.into() })
    }
}

/// The template's text around its one placeholder.
fn split_template(template: &str) -> Result<(&str, Placeholder, &str), String> {
    let placeholders = template.matches('{').count();
    // Not quoted back: a token pasted in place of {secret} would be echoed.
    let none =
        || "the template must hold {secret} or {basic:USER} once (it is not shown: it may hold a secret)".to_string();
    if placeholders != 1 {
        return Err(none());
    }
    let start = template.find('{').ok_or_else(none)?;
    let end = start + template[start..].find('}').ok_or_else(none)?;
    let placeholder = match &template[start + 1..end] {
        "secret" => Placeholder::Secret,
        basic => match basic.strip_prefix("basic:") {
            Some(user) if !user.is_empty() && !user.contains(':') && !user.chars().any(char::is_control) => {
                Placeholder::Basic(user.into())
            }
            Some(_) => return Err(format!("{{{basic}}}: Basic auth's user is not empty and holds no ':'")),
            None => return Err(none()),
        },
    };
    Ok((&template[..start], placeholder, &template[end + 1..]))
}

/// Every setting of outgoing HTTP. With the defaults a guest reaches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The origins guests may send requests to; empty: none.
    pub allow: Vec<Origin>,
    /// Headers injected from secrets, by the guest env var that holds each secret's ciphertext.
    pub inject: Vec<(String, Injection)>,
    /// Requests one invocation may send; one more fails (`internal-error`, naming this setting).
    pub max_requests: u32,
    /// Requests one invocation may have in flight at once; one more fails with `connection-limit-reached`.
    pub max_concurrent: u32,
    /// Most bytes of one response body the guest may read; past them the body fails with `HTTP-response-body-size`.
    pub max_response_bytes: u64,
    /// A PEM file of CA certificates trusted for outgoing HTTPS besides Mozilla's roots (a private CA).
    pub ca_bundle: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            inject: Vec::new(),
            max_requests: 32,
            max_concurrent: 8,
            max_response_bytes: 16 << 20,
            ca_bundle: None,
        }
    }
}

/// The variables, and the prefix of the per-secret one.
const ALLOW: &str = "KEYWARD_ALLOW_OUTBOUND";
pub(crate) const INJECT: &str = "KEYWARD_INJECT_";
const MAX_REQUESTS: &str = "KEYWARD_MAX_OUTBOUND_REQUESTS";
const MAX_CONCURRENT: &str = "KEYWARD_MAX_CONCURRENT_OUTBOUND";
const MAX_RESPONSE_BYTES: &str = "KEYWARD_MAX_OUTBOUND_RESPONSE_BYTES";
const CA_BUNDLE: &str = "KEYWARD_OUTBOUND_CA_BUNDLE";

impl HttpSettings {
    /// Reads the settings from Lambda mode's variables, with an injection for each of the guest env vars `names`
    /// that has a `KEYWARD_INJECT_<NAME>`.
    ///
    /// # Errors
    /// The first [`SettingError`], naming its variable.
    pub(crate) fn from_env<'n>(env: &Env<'_>, names: impl Iterator<Item = &'n str>) -> Result<Self, SettingError> {
        let d = Self::default();
        let allow = env.list(ALLOW).iter().map(|entry| entry.parse()).collect::<Result<_, String>>();
        let mut inject = Vec::new();
        for name in names {
            let variable = format!("{INJECT}{name}");
            if let Some(spec) = env.get(&variable) {
                inject.push((name.to_string(), spec.parse().map_err(|why| SettingError::new(&variable, why))?));
            }
        }
        Ok(Self {
            allow: allow.map_err(|why| SettingError::new(ALLOW, why))?,
            inject,
            max_requests: env.number(MAX_REQUESTS, d.max_requests)?,
            max_concurrent: env.number(MAX_CONCURRENT, d.max_concurrent)?,
            max_response_bytes: env.number(MAX_RESPONSE_BYTES, d.max_response_bytes)?,
            ca_bundle: env.get(CA_BUNDLE).filter(|p| !p.is_empty()).map(Into::into),
        })
    }

    /// Checks the settings: every injection goes to an allowed origin, one header per origin once, and the limits
    /// allow some work.
    ///
    /// # Errors
    /// The first [`SettingError`].
    pub(crate) fn check(&self) -> Result<(), SettingError> {
        if self.max_concurrent == 0 {
            return Err(SettingError::new(MAX_CONCURRENT, "at least one request must be allowed in flight"));
        }
        for (i, (name, injection)) in self.inject.iter().enumerate() {
            let variable = format!("{INJECT}{name}");
            let origin = &injection.origin;
            let target = match &origin.host {
                HostPattern::Name(n) => Some(Host::Name(n.clone())),
                HostPattern::Ip(ip) => Some(Host::Ip(*ip)),
                // Refused when parsed; a library caller may still build one.
                HostPattern::Subdomains(_) => None,
            };
            let Some(target) = target else {
                let reason = format!("{origin}: a secret is injected into requests to one origin, not a wildcard");
                return Err(SettingError::new(variable, reason));
            };
            if !self.allow.iter().any(|allowed| allowed.allows(origin.scheme, &target, origin.port)) {
                let reason = format!("injects into requests to {origin}, which {ALLOW} does not allow: add it there");
                return Err(SettingError::new(variable, reason));
            }
            if self.inject[..i].iter().any(|(seen, _)| seen == name) {
                let reason = format!("{name} is injected already: a secret goes into one header of one origin");
                return Err(SettingError::new(variable, reason));
            }
            if let Some((other, _)) =
                self.inject[..i].iter().find(|(_, o)| o.origin == injection.origin && o.header == injection.header)
            {
                let reason = format!(
                    "{other} is injected as {} into requests to {origin} already: one secret per header and origin",
                    injection.header
                );
                return Err(SettingError::new(variable, reason));
            }
        }
        Ok(())
    }
}

/// `keyward invoke`'s flags for outgoing HTTP, as the variables read them.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpFlags {
    /// An origin the guest may send requests to (repeatable): `https://api.example.com`, `http://127.0.0.1:8080`,
    /// `https://*.example.com`. Default: none.
    #[arg(long = "allow-outbound", value_name = "ORIGIN", value_parser = |s: &str| s.parse::<Origin>())]
    allow_outbound: Vec<Origin>,
    /// A header the host sets from the secret in the guest env var NAME, on requests to one origin (repeatable):
    /// `--inject 'API_KEY=https://api.example.com Authorization: Bearer {secret}'`.
    #[arg(long, value_name = "NAME=ORIGIN HEADER: TEMPLATE", value_parser = parse_inject_flag)]
    inject: Vec<(String, Injection)>,
    /// Requests one invocation may send (refused ones count).
    #[arg(long, value_name = "N", default_value_t = HttpSettings::default().max_requests)]
    max_outbound_requests: u32,
    /// CA certificates (PEM) trusted for outgoing HTTPS besides Mozilla's roots.
    #[arg(long, value_name = "FILE")]
    outbound_ca_bundle: Option<PathBuf>,
}

#[cfg(feature = "cli")]
fn parse_inject_flag(flag: &str) -> Result<(String, Injection), String> {
    let (name, spec) = flag.split_once('=').ok_or("write it as NAME=<origin> <Header-Name>: <template>")?;
    Ok((name.trim().to_string(), spec.parse()?))
}

#[cfg(feature = "cli")]
impl From<HttpFlags> for HttpSettings {
    fn from(flags: HttpFlags) -> Self {
        let d = Self::default();
        Self {
            allow: flags.allow_outbound,
            inject: flags.inject,
            max_requests: flags.max_outbound_requests,
            ca_bundle: flags.outbound_ca_bundle,
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Host {
        Host::parse(h).unwrap()
    }

    #[test]
    fn origins_default_to_https_and_the_schemes_port() {
        let origin: Origin = "api.example.com".parse().unwrap();
        assert_eq!(
            origin,
            Origin { scheme: Scheme::Https, host: HostPattern::Name("api.example.com".into()), port: 443 }
        );
        assert_eq!(origin.to_string(), "https://api.example.com");
        let plain: Origin = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(plain.to_string(), "http://127.0.0.1:8080");
        assert!(plain.allows(Scheme::Http, &host("127.0.0.1"), 8080));
        assert!(!plain.allows(Scheme::Https, &host("127.0.0.1"), 8080), "the scheme is part of the origin");
        assert!(!plain.allows(Scheme::Http, &host("127.0.0.1"), 80), "and so is the port");
        let v6: Origin = "https://[::1]:8443/".parse().unwrap();
        assert_eq!(v6.to_string(), "https://[::1]:8443");
        assert_eq!("HTTPS://API.Example.COM.".parse::<Origin>().unwrap().to_string(), "https://api.example.com");
    }

    #[test]
    fn a_wildcard_matches_subdomains_only() {
        let wildcard: Origin = "https://*.stripe.com:443".parse().unwrap();
        assert!(wildcard.allows(Scheme::Https, &host("api.stripe.com"), 443));
        assert!(wildcard.allows(Scheme::Https, &host("a.b.stripe.com"), 443));
        assert!(!wildcard.allows(Scheme::Https, &host("stripe.com"), 443));
        assert!(!wildcard.allows(Scheme::Https, &host("evilstripe.com"), 443));
        assert!(!wildcard.allows(Scheme::Https, &host("api.stripe.com.evil.io"), 443));
        assert!(!wildcard.allows(Scheme::Http, &host("api.stripe.com"), 443));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused_with_why() {
        for (entry, why) in [
            ("ftp://example.com", "neither http nor https"),
            ("https://example.com/v1", "not shown: a user, password, path or query"),
            ("https://user@example.com", "not shown: a user, password, path or query"),
            ("https://example.com:0", "not a number from 1 to 65535"),
            ("https://example.com:99999", "not a number from 1 to 65535"),
            ("https://*.127.0.0.1", "an IP address has no subdomains"),
            ("https://*.[::1]", "an IP address has no subdomains"),
            ("https://2130706433", "non-standard form"),
            ("https://0x7f.1", "non-standard form"),
            ("https://127.1", "non-standard form"),
            ("https://exa mple.com", "not shown: a user, password, path or query"),
            ("https://[::1", "not a host name"),
            ("https://*.com", "name the domain"),
            ("https://a.com,https://b.com", "one origin per entry"),
            // A password or a token in a URL is not quoted back.
            ("https://u:s3cr3t@api.example.com", "not shown"),
            ("https://api.example.com/?token=s3cr3t", "not shown"),
            ("ftp://u:s3cr3t@api.example.com", "not shown"),
        ] {
            let error = entry.parse::<Origin>().unwrap_err();
            assert!(error.contains(why), "{entry}: {error}");
            assert!(!error.contains("s3cr3t"), "{entry}: {error}");
        }
    }

    #[test]
    fn requests_name_hosts_in_standard_forms_only() {
        assert_eq!(host("Api.Example.com."), Host::Name("api.example.com".into()));
        assert_eq!(host("[::ffff:127.0.0.1]"), Host::Ip("::ffff:127.0.0.1".parse().unwrap()));
        for odd in ["2130706433", "0x7f.1", "127.1", "0177.0.0.1", "", "a..b", "-a.com", "a\r\nb"] {
            assert!(Host::parse(odd).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn injections_are_one_header_from_one_placeholder_to_one_origin() {
        let bearer: Injection = "https://api.example.com Authorization: Bearer {secret}".parse().unwrap();
        assert_eq!(bearer.header, "authorization");
        assert_eq!(
            (bearer.prefix.as_str(), &bearer.placeholder, bearer.suffix.as_str()),
            ("Bearer ", &Placeholder::Secret, "")
        );
        let basic: Injection = "https://api.example.com Authorization: Basic {basic:svc}".parse().unwrap();
        assert_eq!(basic.placeholder, Placeholder::Basic("svc".into()));
        let key: Injection = "api.example.com X-Api-Key:{secret}".parse().unwrap();
        assert_eq!(key.origin.to_string(), "https://api.example.com");
        for (spec, why) in [
            ("https://*.example.com Authorization: {secret}", "not a wildcard"),
            ("https://api.example.com Authorization: Bearer", "{secret} or {basic:USER} once"),
            ("https://api.example.com Authorization: {secret} {secret}", "once"),
            ("https://api.example.com Authorization: {token}", "once"),
            ("https://api.example.com Host: {secret}", "set by the client"),
            ("https://api.example.com Bad Header: {secret}", "is not an HTTP token"),
            ("https://api.example.com", "write it as"),
            ("https://api.example.com X: {basic:a:b}", "holds no ':'"),
            ("https://api.example.com X: a\u{7f}{secret}", "header value may not"),
        ] {
            let error = spec.parse::<Injection>().unwrap_err();
            assert!(error.contains(why), "{spec}: {error}");
        }
    }

    #[test]
    fn injections_go_only_to_allowed_origins_once_per_header() {
        let injection: Injection = "https://api.example.com Authorization: Bearer {secret}".parse().unwrap();
        let mut settings = HttpSettings { inject: vec![("KEY".into(), injection.clone())], ..HttpSettings::default() };
        let error = settings.check().unwrap_err();
        assert_eq!(error.setting, "KEYWARD_INJECT_KEY");
        assert!(error.reason.contains("which KEYWARD_ALLOW_OUTBOUND does not allow"), "{error}");
        settings.allow = vec!["https://*.example.com".parse().unwrap()];
        settings.check().unwrap();
        let twice: Injection = "https://api.example.com X-Key: {secret}".parse().unwrap();
        settings.inject.push(("KEY".into(), twice));
        assert_eq!(
            settings.check().unwrap_err().reason,
            "KEY is injected already: a secret goes into one header of one origin"
        );
        settings.inject.pop();
        settings.inject.push(("OTHER".into(), injection));
        let error = settings.check().unwrap_err();
        assert_eq!(
            error.to_string(),
            "KEYWARD_INJECT_OTHER: KEY is injected as authorization into requests to https://api.example.com already: one secret per header and origin"
        );
    }
}
