//! Who is on the other end of the connection: IP address and user agent.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::HttpRequest;

/// The longest user agent kept.
const USER_AGENT_MAX: usize = 512;

/// The client's address and user agent, as recorded on logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's IP address (see [`client_ip`]); `None` when the peer is unknown.
    pub ip: Option<String>,
    /// The `User-Agent` header, cut to 512 characters; `None` when absent or not text.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The socket's peer address, unless the peer is a trusted proxy: then the nearest
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. See [`client_ip`].
    pub fn of(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> Self {
        Client::of(req, trusted_proxies).to_info()
    }

    /// The borrowed form, to compare with a login.
    pub fn view(&self) -> Client<'_> {
        Client {
            ip: self.ip.as_deref().and_then(|ip| ip.parse().ok()),
            user_agent: self.user_agent.as_deref(),
        }
    }
}

/// [`ClientInfo`] borrowed from the request: what every logged-in request compares with its
/// login, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client<'a> {
    /// The client's IP address (see [`client_ip`]); `None` when the peer is unknown.
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header, cut to 512 characters; `None` when absent or not text.
    pub user_agent: Option<&'a str>,
}

impl<'a> Client<'a> {
    /// The client of `req`, as [`ClientInfo::of`] records it.
    pub fn of(req: &'a HttpRequest, trusted_proxies: &[IpAddr]) -> Self {
        let ip = req.peer_addr().map(|addr| {
            if trusted_proxies.is_empty() {
                return addr.ip().to_canonical();
            }
            let forwarded: Vec<&str> = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect();
            client_ip(addr.ip(), &forwarded, trusted_proxies)
        });
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.char_indices().nth(USER_AGENT_MAX).map_or(ua, |(end, _)| &ua[..end]));
        Self { ip, user_agent }
    }

    /// The owned form, as logins record it.
    pub fn to_info(self) -> ClientInfo {
        ClientInfo { ip: self.ip.map(|ip| ip.to_string()), user_agent: self.user_agent.map(str::to_owned) }
    }
}

/// The client's address: the peer, unless it is a trusted proxy, in which case the chain of
/// `X-Forwarded-For` entries is walked from the right (the hop nearest us) past every
/// trusted proxy. The walk stops at the first entry that does not parse: everything to its
/// left was written by someone we cannot vouch for, so the last good hop is the answer.
/// Addresses are compared in canonical form, so an IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`)
/// is the IPv4 proxy it maps.
///
/// ```
/// use latchkey_auth::client::client_ip;
/// let proxy = "10.0.0.1".parse().unwrap();
/// let peer = "::ffff:10.0.0.1".parse().unwrap();
/// assert_eq!(client_ip(peer, &["203.0.113.9", "198.51.100.7"], &[proxy]).to_string(), "198.51.100.7");
/// assert_eq!(client_ip(peer, &["203.0.113.9", "junk"], &[proxy]).to_string(), "10.0.0.1");
/// ```
pub fn client_ip(peer: IpAddr, forwarded: &[&str], trusted_proxies: &[IpAddr]) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|proxy| proxy.to_canonical() == ip.to_canonical());
    let mut client = peer.to_canonical();
    if !trusted(client) {
        return client;
    }
    for entry in forwarded.iter().rev() {
        let Ok(hop) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = hop.to_canonical();
        if !trusted(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| unreachable!("test addresses parse"))
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_forward() {
        assert_eq!(client_ip(ip("198.51.100.7"), &["1.2.3.4"], &[ip("10.0.0.1")]), ip("198.51.100.7"));
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        let chain = ["6.6.6.6", "203.0.113.9", "10.0.0.2"];
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &proxies), ip("203.0.113.9"));
    }

    #[test]
    fn the_walk_stops_at_an_entry_that_does_not_parse() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        let chain = ["6.6.6.6", "not an address", "10.0.0.2"];
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &proxies), ip("10.0.0.2"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["6.6.6.6", ""], &proxies), ip("10.0.0.1"));
    }

    #[test]
    fn the_borrowed_and_owned_forms_agree() {
        let client =
            Client { ip: Some(ip("::ffff:198.51.100.7").to_canonical()), user_agent: Some("curl/8") };
        let info = client.to_info();
        assert_eq!(info, ClientInfo { ip: Some("198.51.100.7".into()), user_agent: Some("curl/8".into()) });
        assert_eq!(info.view(), client);
        let unknown = ClientInfo { ip: None, user_agent: None };
        assert_eq!(unknown.view(), Client { ip: None, user_agent: None });
    }

    #[test]
    fn user_agents_are_cut_at_512_characters() {
        // Header values that are text are visible ASCII, so characters are bytes here.
        let long = "Mozilla/5.0 ".repeat(50);
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::USER_AGENT, long.as_str()))
            .peer_addr("203.0.113.9:4000".parse().unwrap_or_else(|_| unreachable!("a socket address")))
            .to_http_request();
        let client = Client::of(&req, &[]);
        assert_eq!(client.user_agent.map(|ua| ua.chars().count()), Some(USER_AGENT_MAX));
        assert_eq!(client.ip, Some(ip("203.0.113.9")));
        assert_eq!(ClientInfo::of(&req, &[]).user_agent.as_deref(), client.user_agent);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_proxies() {
        let chain = ["203.0.113.9"];
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &chain, &[ip("10.0.0.1")]), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &[ip("::ffff:10.0.0.1")]), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("::ffff:198.51.100.7"), &chain, &[ip("10.0.0.1")]), ip("198.51.100.7"));
    }
}
