//! Who is on the other end of the connection: IP address and user agent.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::HttpRequest;

/// The longest user agent kept.
const USER_AGENT_MAX: usize = 512;

/// The client's address and user agent, as recorded on login sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The socket's peer address, unless the peer is a trusted proxy: then the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. Never trusts the header
    /// from anyone else, since clients can write anything there.
    pub fn of(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> Self {
        let peer = req.peer_addr().map(|addr| addr.ip());
        let ip = match peer {
            Some(peer) if trusted_proxies.contains(&peer) => {
                forwarded_client(req, trusted_proxies).or(Some(peer))
            }
            other => other,
        };
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(USER_AGENT_MAX).collect());
        Self { ip: ip.map(|ip| ip.to_string()), user_agent }
    }
}

fn forwarded_client(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let chain: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    chain.into_iter().rev().find(|ip| !trusted_proxies.contains(ip))
}
