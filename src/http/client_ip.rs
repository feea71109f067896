//! Who the client is: the peer address, or, only when the peer is a trusted proxy, the address that
//! proxy saw. `X-Forwarded-For` is read from the right: each trusted proxy appends the address it
//! was connected from, so the right-most entry that is not itself a trusted proxy is the first
//! address nobody but the client could have chosen. Entries further left are the client's own
//! words and never believed.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// Entries of `X-Forwarded-For` looked at, from the right; a chain of proxies is never longer.
const MAX_HOPS: usize = 16;

/// The client behind a request, as far as the service can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The address limits count against.
    pub ip: IpAddr,
    /// Whether `ip` is the client's own. When a trusted proxy passed no usable `X-Forwarded-For`,
    /// `ip` is the proxy's: its limits still count, but a refusal never names it for Fail2Ban
    /// (that would ban the proxy, and every client behind it).
    pub known: bool,
}

impl Client {
    /// The address to name on a refusal line, when it is the client's own.
    pub fn named(self) -> Option<IpAddr> {
        self.known.then_some(self.ip)
    }
}

/// Resolves client addresses with the configured `server.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct ClientResolver {
    trusted: Vec<IpNet>,
}

impl ClientResolver {
    pub fn new(trusted: Vec<IpNet>) -> ClientResolver {
        ClientResolver { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request; `None` only when actix knows no peer (never on TCP).
    pub fn client(&self, req: &HttpRequest) -> Option<Client> {
        let peer = req.peer_addr()?.ip().to_canonical();
        let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok());
        let ip = self.resolve(peer, forwarded);
        Some(Client {
            ip,
            // Still a trusted proxy: the proxy passed no usable address, and the client is unknown.
            known: !self.is_trusted(ip),
        })
    }

    /// The rule itself, on the peer and the `X-Forwarded-For` header values in order.
    pub fn resolve<'a>(&self, peer: IpAddr, forwarded: impl IntoIterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        // Several header lines are one list, in order.
        let entries: Vec<&str> = forwarded.into_iter().flat_map(|v| v.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev().take(MAX_HOPS) {
            match parse_entry(entry) {
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                // A trusted proxy never writes garbage; whatever it passed on is not an address,
                // so the last address known for certain stands.
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(nets: &[&str]) -> ClientResolver {
        ClientResolver::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(r.resolve(ip("203.0.113.7"), ["198.51.100.1"]), ip("203.0.113.7"));
        assert_eq!(
            resolver(&[]).resolve(ip("127.0.0.1"), ["198.51.100.1"]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let r = resolver(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client wrote "6.6.6.6" itself; the proxy appended the address it really saw.
        assert_eq!(r.resolve(ip("127.0.0.1"), ["6.6.6.6, 203.0.113.7"]), ip("203.0.113.7"));
        // Two proxies, the second one trusted too; several header lines are one list.
        assert_eq!(
            r.resolve(ip("127.0.0.1"), ["6.6.6.6, 203.0.113.7", "10.1.2.3"]),
            ip("203.0.113.7")
        );
        assert_eq!(r.resolve(ip("10.0.0.5"), ["2001:db8::1"]), ip("2001:db8::1"));
        assert_eq!(r.resolve(ip("10.0.0.5"), ["[2001:db8::2]:4711"]), ip("2001:db8::2"));
        assert_eq!(r.resolve(ip("10.0.0.5"), ["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(r.resolve(ip("10.0.0.5"), ["::ffff:203.0.113.9"]), ip("203.0.113.9"));
    }

    #[test]
    fn without_a_usable_entry_the_last_known_address_stands() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(r.resolve(ip("10.0.0.5"), []), ip("10.0.0.5"));
        assert_eq!(r.resolve(ip("10.0.0.5"), ["not-an-address"]), ip("10.0.0.5"));
        assert_eq!(
            r.resolve(ip("10.0.0.5"), ["6.6.6.6, garbage, 10.0.0.9"]),
            ip("10.0.0.9")
        );
        // Every hop trusted: the left-most is as far as anyone can tell.
        assert_eq!(r.resolve(ip("10.0.0.5"), ["10.0.0.8, 10.0.0.9"]), ip("10.0.0.8"));
    }

    #[test]
    fn a_long_forged_chain_is_not_walked_past_the_hop_limit() {
        let r = resolver(&["10.0.0.0/8"]);
        let chain = vec!["10.9.9.9"; 100].join(", ");
        let header = format!("6.6.6.6, {chain}");
        assert_eq!(r.resolve(ip("10.0.0.5"), [header.as_str()]), ip("10.9.9.9"));
    }
}
