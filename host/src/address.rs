//! Addresses keyward is configured with (the Lambda Runtime API, a KMS endpoint), checked once at init so that a
//! typo fails there, in one line, and not as an outage on every invocation.

/// `text` as an `http` or `https` URL (as `schemes` allow) with a host and, if it has one, a port that a port can
/// be (`http` itself reads `:99999` as no port at all).
pub(crate) fn parse_url(text: &str, schemes: &[&str]) -> Option<http::Uri> {
    let uri = text.parse::<http::Uri>().ok()?;
    let scheme_ok = uri.scheme_str().is_some_and(|s| schemes.contains(&s));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    let port_ok = uri.authority().is_some_and(|a| {
        let after_ipv6 = a.as_str().rfind(']').map_or(a.as_str(), |end| &a.as_str()[end + 1..]);
        after_ipv6.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_ok())
    });
    (scheme_ok && host_ok && port_ok).then_some(uri)
}

/// Whether a URL carries a user name or password (`https://user:pw@host`): its authority holds an `@`.
pub(crate) fn has_user_info(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.split(['/', '?', '#']).next().is_some_and(|authority| authority.contains('@'))
}

/// Whether `region` can be an AWS region name (`eu-west-1`): the SDK puts it into the endpoint's host name.
pub(crate) fn is_region(region: &str) -> bool {
    !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme_a_host_and_a_real_port() {
        for good in [
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9001/.rt/fn",
            "https://kms.eu-west-1.amazonaws.com",
            "http://[::1]:80",
        ] {
            assert!(parse_url(good, &["http", "https"]).is_some(), "{good}");
        }
        for bad in
            ["not a url", "kms.eu-west-1.amazonaws.com", "ftp://host", "http://127.0.0.1:99999", "http://:80", ""]
        {
            assert!(parse_url(bad, &["http", "https"]).is_none(), "{bad}");
        }
        assert!(parse_url("https://x", &["http"]).is_none());
    }

    #[test]
    fn user_info_is_found_in_the_authority_only() {
        assert!(has_user_info("http://admin:s3cretpw@127.0.0.1:1") && has_user_info("https://user@kms.example"));
        assert!(!has_user_info("https://kms.eu-west-1.amazonaws.com/a@b") && !has_user_info("http://h:1/?x=@"));
    }

    #[test]
    fn regions_are_host_labels() {
        assert!(is_region("eu-west-1") && is_region("us-gov-west-1"));
        for bad in ["", "us east 1", "us-east-1\n", "EU-WEST-1", "a.b"] {
            assert!(!is_region(bad), "{bad:?}");
        }
    }
}
