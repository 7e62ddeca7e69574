//! The resolver configuration (`resolv.conf`) netd writes.

use std::net::IpAddr;

/// The most name servers the C library's resolver reads.
const MAX_NAMESERVERS: usize = 3;

/// Renders `resolv.conf` for the given name servers and search domain.
/// `origin` says where they came from, for the header comment.
pub fn render(nameservers: &[IpAddr], search: Option<&str>, origin: &str) -> String {
    let mut out = format!("# Written by Oxbow netd ({origin}); changes will be overwritten.\n");
    if let Some(domain) = search.map(str::trim).filter(|d| is_domain(d)) {
        out.push_str(&format!("search {domain}\n"));
    }
    let mut seen = Vec::new();
    for ns in nameservers {
        if seen.len() == MAX_NAMESERVERS {
            break;
        }
        if ns.is_unspecified() || seen.contains(ns) {
            continue;
        }
        seen.push(*ns);
        out.push_str(&format!("nameserver {ns}\n"));
    }
    out
}

/// Whether `d` is safe to put on a `search` line: a plain domain name, so
/// a hostile DHCP server cannot inject other directives.
fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn renders_nameservers_and_search() {
        let text = render(
            &[ip("10.0.2.3"), ip("2001:db8::53")],
            Some("lab.example"),
            "dhcp on vmbr0",
        );
        assert_eq!(
            text,
            "# Written by Oxbow netd (dhcp on vmbr0); changes will be overwritten.\n\
             search lab.example\n\
             nameserver 10.0.2.3\n\
             nameserver 2001:db8::53\n"
        );
    }

    #[test]
    fn drops_duplicates_excess_and_bad_domains() {
        let ns = [
            ip("192.0.2.1"),
            ip("192.0.2.1"),
            ip("0.0.0.0"),
            ip("192.0.2.2"),
            ip("192.0.2.3"),
            ip("192.0.2.4"),
        ];
        let text = render(&ns, Some("evil\noptions ndots:15"), "static");
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "nameserver 192.0.2.1",
                "nameserver 192.0.2.2",
                "nameserver 192.0.2.3"
            ]
        );
    }
}
