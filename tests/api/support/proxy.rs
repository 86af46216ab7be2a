//! `Proxy`: a TCP forwarder to a local service that a test can cut and restore, to take the
//! real service away from one app without stopping it for every other test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{postgres_admin_url, redis_url};

/// The port of a `scheme://[user@]host:port[/path]` URL.
fn port_of(url: &str) -> u16 {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
    host_port.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("a port in the URL")
}

pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the test PostgreSQL server.
    pub async fn to_postgres() -> Proxy {
        Self::start(port_of(&postgres_admin_url())).await
    }

    /// A proxy to the test Redis server.
    pub async fn to_redis() -> Proxy {
        Self::start(port_of(&redis_url())).await
    }

    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let up = up.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().expect("lock").push(task);
                }
            })
        };
        Proxy { port, up, connections, accept }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[test]
fn port_of_reads_the_port_of_service_urls() {
    assert_eq!(port_of("postgres://postgres@127.0.0.1:5433/postgres"), 5433);
    assert_eq!(port_of("redis://127.0.0.1:6380"), 6380);
    assert_eq!(port_of("redis://127.0.0.1:6380/9"), 6380);
}
