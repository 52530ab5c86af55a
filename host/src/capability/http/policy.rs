//! The egress policy, applied to every request before any connection: its method, scheme and authority against
//! the allowed origins, then (in [`super::client`]) every address its host name resolves to against the ranges a
//! name may not reach.
//!
//! Server-side request forgery is what this stops: a guest (or a dependency of it) asking the host to reach the
//! instance metadata service, the Lambda Runtime API on 127.0.0.1:9001, or a service on a private network. Those
//! addresses are reachable only through an allow entry naming the address itself; an allowed name that resolves to
//! one of them is refused, and the connection is made to the address that was checked (no second lookup, so a
//! name cannot change its answer in between: DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::Method;

use super::settings::{Host, Origin, Scheme, split_port};

/// Where a request that passed the policy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Its exact origin: what injections and the audit name.
    pub(crate) origin: Origin,
    /// Its host, as the request named it.
    pub(crate) host: Host,
}

/// Why a request was refused: the origin as the request named it (for the audit), the rule, and the error code
/// the guest gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) origin: String,
    pub(crate) rule: String,
    pub(crate) code: Code,
}

/// The `wasi:http` error a refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The origin, method or form is not allowed: `HTTP-request-denied`.
    Denied,
    /// The request is malformed: `HTTP-request-URI-invalid`.
    UriInvalid,
}

impl Refusal {
    fn new(origin: impl Into<String>, code: Code, rule: impl Into<String>) -> Self {
        Self { origin: origin.into(), rule: rule.into(), code }
    }
}

/// The allowed origins; empty: every request is refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    allow: Vec<Origin>,
}

impl Policy {
    pub(crate) fn new(allow: Vec<Origin>) -> Self {
        Self { allow }
    }

    /// Checks a request as wasi:http hands it over (an absolute URI, and the `Host` header it set from the
    /// authority; guests cannot set `Host` themselves).
    ///
    /// # Errors
    /// The [`Refusal`]: `CONNECT`; a scheme other than http and https; an authority with a user, an odd port or an
    /// IP address in a non-standard form; a path that is not absolute (absolute-form or `*` tricks); a `Host`
    /// header that disagrees with the authority; an origin no entry allows.
    pub(crate) fn check<B>(&self, request: &http::Request<B>) -> Result<Target, Refusal> {
        let uri = request.uri();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        // Host and port only: a user part (refused below) may hold a password, which the audit must not.
        let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        let named = format!("{}://{}{port}", uri.scheme_str().unwrap_or_default(), uri.host().unwrap_or_default());
        if request.method() == Method::CONNECT {
            return Err(Refusal::new(named, Code::Denied, "CONNECT is not sent: requests go to their origin only"));
        }
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(Refusal::new(named, Code::UriInvalid, "the scheme is neither http nor https")),
        };
        if authority.contains('@') {
            return Err(Refusal::new(named, Code::UriInvalid, "the authority names a user"));
        }
        let (host, port) = split_port(authority).map_err(|why| Refusal::new(&named, Code::UriInvalid, why))?;
        let host = Host::parse(host).map_err(|why| Refusal::new(&named, Code::UriInvalid, why))?;
        let port = port.unwrap_or(scheme.default_port());
        let origin = Origin::of(scheme, &host, port);
        let shown = origin.to_string();
        if !uri.path().starts_with('/') {
            return Err(Refusal::new(shown, Code::UriInvalid, "the path is not absolute"));
        }
        for value in request.headers().get_all(http::header::HOST) {
            let agrees = value.to_str().ok().and_then(|v| split_port(v).ok()).is_some_and(|(h, p)| {
                Host::parse(h).is_ok_and(|h| h == host) && p.unwrap_or(scheme.default_port()) == port
            });
            if !agrees {
                return Err(Refusal::new(shown, Code::Denied, "the Host header disagrees with the authority"));
            }
        }
        if !self.allow.iter().any(|entry| entry.allows(scheme, &host, port)) {
            let rule = match self.allow.is_empty() {
                true => "no origin is allowed (KEYWARD_ALLOW_OUTBOUND is empty)".to_string(),
                false => "not an origin KEYWARD_ALLOW_OUTBOUND allows".to_string(),
            };
            return Err(Refusal::new(shown, Code::Denied, rule));
        }
        Ok(Target { origin, host })
    }
}

/// Why a host name may not reach `ip`: it is loopback, private, link-local (the metadata services among them),
/// unique-local, shared (carrier-grade NAT), multicast, reserved or unspecified, or an IPv6 address embedding
/// such an IPv4 one (mapped, compatible, NAT64, 6to4). `None`: a public address.
pub(crate) fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified (0.0.0.0/8)",
        (127, ..) => "loopback (127.0.0.0/8)",
        (10, ..) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local (169.254.0.0/16: instance metadata)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (224..=239, ..) => "multicast (224.0.0.0/4)",
        (240..=255, ..) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_range(v4).map(|_| "an IPv4-mapped internal address (::ffff:0:0/96)");
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified (::)",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback (::1)",
        // IPv4-compatible (deprecated), NAT64 and 6to4 addresses carry an IPv4 address a router may reach.
        [0, 0, 0, 0, 0, 0, hi, lo] if v4_range(embedded(hi, lo)).is_some() => "an IPv4-compatible internal address",
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] if v4_range(embedded(hi, lo)).is_some() => "a NAT64 internal address",
        // Local-use NAT64 (RFC 8215) embeds its IPv4 address where the operator chose: refused whole.
        [0x64, 0xff9b, 1, ..] => "local-use NAT64 (64:ff9b:1::/48)",
        // SIIT's IPv4-translated form.
        [0, 0, 0, 0, 0xffff, 0, hi, lo] if v4_range(embedded(hi, lo)).is_some() => {
            "an IPv4-translated internal address"
        }
        // Teredo carries its server's IPv4 address in clear, and tunnels past the host's view.
        [0x2001, 0, ..] => "Teredo (2001::/32)",
        [0x2002, hi, lo, ..] if v4_range(embedded(hi, lo)).is_some() => "a 6to4 internal address (2002::/16)",
        [first, ..] if first & 0xfe00 == 0xfc00 => "unique-local (fc00::/7: fd00:ec2::254 is instance metadata)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [first, ..] if first & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        [0x2001, 0x0db8, ..] => "documentation (2001:db8::/32)",
        [0x0100, 0, 0, 0, ..] => "discard-only (100::/64)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> http::Request<()> {
        let mut request = http::Request::builder().method(method).uri(uri).body(()).unwrap();
        let authority = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        request.headers_mut().insert(http::header::HOST, authority.parse().unwrap());
        request
    }

    fn policy(entries: &[&str]) -> Policy {
        Policy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let refusal = Policy::default().check(&request(Method::GET, "https://api.example.com/v1")).unwrap_err();
        assert_eq!(refusal.origin, "https://api.example.com");
        assert_eq!(refusal.code, Code::Denied);
        assert!(refusal.rule.contains("KEYWARD_ALLOW_OUTBOUND is empty"), "{refusal:?}");
    }

    #[test]
    fn allowed_origins_pass_with_their_exact_origin() {
        let policy = policy(&["https://api.example.com", "http://127.0.0.1:8080", "https://*.stripe.com"]);
        let target = policy.check(&request(Method::POST, "https://API.example.com:443/v1?x=1")).unwrap();
        assert_eq!(target.origin.to_string(), "https://api.example.com");
        assert!(policy.check(&request(Method::GET, "http://127.0.0.1:8080/")).is_ok());
        assert!(policy.check(&request(Method::GET, "https://x.stripe.com/")).is_ok());
        for denied in ["https://127.0.0.1:8080/", "http://127.0.0.1:8081/", "https://stripe.com/", "https://evil.io/"] {
            assert_eq!(policy.check(&request(Method::GET, denied)).unwrap_err().code, Code::Denied, "{denied}");
        }
    }

    #[test]
    fn connect_odd_addresses_and_tricks_are_refused() {
        let policy = policy(&["http://127.0.0.1:8080", "https://api.example.com"]);
        let refused = |r: http::Request<()>| policy.check(&r).unwrap_err();
        assert!(refused(request(Method::CONNECT, "http://127.0.0.1:8080/")).rule.contains("CONNECT"));
        for odd in ["http://2130706433:8080/", "http://0x7f.1:8080/", "http://127.1:8080/", "http://localhost:8080/"] {
            assert!(policy.check(&request(Method::GET, odd)).is_err(), "{odd}");
        }
        assert_eq!(refused(request(Method::GET, "http://[::ffff:127.0.0.1]:8080/")).code, Code::Denied);
        assert_eq!(refused(request(Method::GET, "https://u:p@api.example.com/")).code, Code::UriInvalid);
        let mut lying = request(Method::GET, "https://api.example.com/");
        lying.headers_mut().append(http::header::HOST, "evil.io".parse().unwrap());
        assert!(refused(lying).rule.contains("Host header disagrees"));
        let star = http::Uri::builder().scheme("https").authority("api.example.com").path_and_query("*").build();
        if let Ok(star) = star {
            let mut request = request(Method::OPTIONS, "https://api.example.com/");
            *request.uri_mut() = star;
            assert_eq!(refused(request).rule, "the path is not absolute");
        }
    }

    #[test]
    fn internal_ranges_are_named_public_ones_pass() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(internal_range(internal.parse().unwrap()).is_some(), "{internal}");
        }
        for public in
            ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"]
        {
            assert_eq!(internal_range(public.parse().unwrap()), None, "{public}");
        }
    }
}
