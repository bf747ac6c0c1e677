//! Where webhooks may go: not to the server's own network. A target whose address is loopback,
//! private, link-local (cloud metadata), shared (CGNAT), multicast, reserved or unspecified is
//! refused — checked on the addresses DNS gives at delivery time, and the connection goes to
//! exactly the addresses checked (the HTTP client resolves through [`GuardedResolver`]), so a
//! name cannot resolve to a public address when checked and a private one when connected.
//! The operator may allow-list hosts (`--webhook-allow-host`), e.g. an ERP on the same network.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The operator's allow-list, and the checks.
#[derive(Debug, Default)]
pub struct Guard {
    allow: HashSet<String>,
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl Guard {
    pub fn new(allow: impl IntoIterator<Item = String>) -> Self {
        Self {
            allow: allow
                .into_iter()
                .map(|host| host.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect(),
        }
    }

    fn allows(&self, host: &str) -> bool {
        self.allow
            .contains(&host.trim_matches(['[', ']']).to_ascii_lowercase())
    }

    /// Checks what can be checked without DNS: an `http`/`https` URL with a host and no
    /// credentials, whose host, if an address, is not a refused one.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("`{url}` is not an http or https URL")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused(
                "a webhook URL may not hold credentials: the secret signs each delivery".into(),
            ));
        }
        let Some(host) = url.host_str() else {
            return Err(Refused(format!("`{url}` has no host")));
        };
        if self.allows(host) {
            return Ok(());
        }
        if let Ok(address) = host.trim_matches(['[', ']']).parse::<IpAddr>()
            && let Some(range) = refused_range(address)
        {
            return Err(Refused(format!(
                "`{host}` is {range}: webhooks may not reach the server's own network (an operator can allow-list the host with --webhook-allow-host)"
            )));
        }
        Ok(())
    }

    /// Checks the addresses a name resolved to.
    fn check_resolved(&self, host: &str, addresses: &[SocketAddr]) -> Result<(), Refused> {
        if self.allows(host) {
            return Ok(());
        }
        for address in addresses {
            if let Some(range) = refused_range(address.ip()) {
                return Err(Refused(format!(
                    "`{host}` resolves to {}, {range}: webhooks may not reach the server's own network (an operator can allow-list the host with --webhook-allow-host)",
                    address.ip()
                )));
            }
        }
        Ok(())
    }
}

/// Resolves names for the webhook client, refusing those that resolve to a refused address;
/// the client connects to the addresses returned, which are the ones checked.
#[derive(Debug)]
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.is_empty() {
                return Err(Box::new(Refused(format!("`{host}` does not resolve"))) as _);
            }
            guard.check_resolved(&host, &addresses)?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The kind of address a webhook may not reach, if `ip` is one.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let segments = v6.segments();
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("a private (unique local) address")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if segments[0] & 0xffc0 == 0xfec0 {
                Some("a site-local address")
            } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (`::a.b.c.d`, deprecated): the IPv4 address decides.
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                refused_v4(Ipv4Addr::new(a, b, c, d)).or(Some("a reserved address"))
            } else if segments[0] == 0x2002 {
                // 6to4 embeds an IPv4 address in the next 32 bits.
                let [a, b] = segments[1].to_be_bytes();
                let [c, d] = segments[2].to_be_bytes();
                refused_v4(Ipv4Addr::new(a, b, c, d))
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
                Some("a documentation address")
            } else if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1 {
                Some("a local-use NAT64 address")
            } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64: the IPv4 address it stands for decides.
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                refused_v4(Ipv4Addr::new(a, b, c, d))
            } else {
                None
            }
        }
    }
}

fn refused_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_private() {
        Some("a private address")
    } else if v4.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if a == 0 {
        Some("an address of this network")
    } else if v4.is_broadcast() || a >= 240 {
        Some("a reserved address")
    } else if v4.is_multicast() {
        Some("a multicast address")
    } else if (a, b, c) == (192, 0, 0)
        || (a, b, c) == (192, 0, 2)
        || (a, b, c) == (192, 88, 99)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
        || (a == 198 && (b == 18 || b == 19))
    {
        Some("a special-purpose address")
    } else {
        None
    }
}

/// Whether `ip` is one webhooks may reach.
#[cfg(test)]
fn is_public(ip: IpAddr) -> bool {
    refused_range(ip).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_networks_are_refused_and_the_internet_is_not() {
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "240.0.0.1",
            "224.0.0.1",
            "192.0.2.10",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "fec0::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "64:ff9b:1::a00:1",
            "192.88.99.1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!is_public(ip), "{refused} should be refused");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public} should be allowed");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_address_literals() {
        let guard = Guard::new(["127.0.0.1".to_owned(), "ERP.internal".to_owned()]);
        let check = |url: &str| guard.check_url(&Url::parse(url).unwrap());
        assert!(check("https://hooks.example.com/x").is_ok());
        assert!(check("http://127.0.0.1:9000/hook").is_ok(), "allow-listed");
        assert!(
            check("http://erp.internal/hook").is_ok(),
            "allow-listed, any case"
        );
        let error = check("http://10.0.0.5/hook").unwrap_err();
        assert!(error.0.contains("a private address"), "{error}");
        let error = check("http://[::1]:8080/").unwrap_err();
        assert!(error.0.contains("loopback"), "{error}");
        let error = check("http://169.254.169.254/latest/meta-data").unwrap_err();
        assert!(error.0.contains("link-local"), "{error}");
        // The URL parser writes the other spellings of an IPv4 address in dotted form first.
        for other in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0177.0.0.2/",
        ] {
            let guard = Guard::default();
            let error = guard.check_url(&Url::parse(other).unwrap()).unwrap_err();
            assert!(error.0.contains("loopback"), "{other}: {error}");
        }
        assert!(check("ftp://example.com/").unwrap_err().0.contains("http"));
        assert!(
            check("https://user:pw@example.com/")
                .unwrap_err()
                .0
                .contains("credentials")
        );
    }

    #[test]
    fn resolved_addresses_are_checked_unless_the_name_is_allowed() {
        let guard = Guard::new(["erp.internal".to_owned()]);
        let local: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap()];
        let error = guard.check_resolved("localhost", &local).unwrap_err();
        assert!(
            error.0.contains("resolves to 127.0.0.1, a loopback"),
            "{error}"
        );
        assert!(guard.check_resolved("erp.internal", &local).is_ok());
        let mixed: Vec<SocketAddr> = vec![
            "93.184.215.14:0".parse().unwrap(),
            "10.0.0.1:0".parse().unwrap(),
        ];
        assert!(
            guard.check_resolved("rebinding.example", &mixed).is_err(),
            "one refused address refuses the name"
        );
    }
}
