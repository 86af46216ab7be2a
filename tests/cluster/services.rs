//! The cluster's own PostgreSQL, Redis and nginx, as real processes on free loopback ports in
//! a temporary directory, so a test can stop and start them without touching the servers the
//! other tests share. Each is stopped when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PostgreSQL cluster of the test's own. PostgreSQL refuses to run as root, so as root it
/// runs as the `postgres` system user, as `scripts/test` does.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.filter_map(Result::ok).map(|v| v.path().join("bin")).max())
            .filter(|bin| bin.join("initdb").exists())
            .expect("PostgreSQL's binaries under /usr/lib/postgresql (scripts/test installs them)");
        let dir = tempfile::Builder::new().prefix("latchkey-cluster-pg").tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let postgres = Postgres { port: free_port(), bin, data, _dir: dir };
        postgres
            .as_owner(&["initdb", "-D"], &["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]);
        postgres.resume();
        postgres
    }

    fn as_owner(&self, program_and_flag: &[&str], args: &[&str]) {
        let program = self.bin.join(program_and_flag[0]);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(&program_and_flag[1..]).arg(&self.data).args(args);
        run(command.stdout(Stdio::null()));
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server, ending every connection (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.as_owner(&["pg_ctl", "-D"], &["-m", "fast", "-w", "stop"]);
    }

    /// Starts it again on the same port and data, and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=", self.port);
        let log = self.data.with_file_name("server.log");
        let log = log.to_str().unwrap();
        self.as_owner(&["pg_ctl", "-D"], &["-w", "-o", &options, "-l", log, "start"]);
    }

    /// Runs one SQL statement as the superuser.
    pub fn execute(&self, sql: &str) {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        let mut conn = PgConnection::establish(&self.url("postgres")).expect("connect to PostgreSQL");
        diesel::sql_query(sql).execute(&mut conn).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ =
                std::panic::catch_unwind(|| self.as_owner(&["pg_ctl", "-D"], &["-m", "immediate", "stop"]));
        }
    }
}

/// A Redis server of the test's own. It keeps an append-only file synced on every write, as a
/// deployment that must not log everyone out on a restart does, so a restart loses nothing.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::Builder::new().prefix("latchkey-cluster-redis").tempdir().unwrap();
        let mut redis = Redis { port: free_port(), dir, child: None };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and files, and waits until it accepts connections.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// Stops the server the way a service manager does (SIGTERM), and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long nginx skips an upstream after a failed connection.
pub const FAIL_TIMEOUT_SECS: u64 = 1;

/// nginx balancing round robin over `upstreams`, as `docs/DEPLOY.md` sets it up.
pub struct Nginx {
    pub address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[u16]) -> Nginx {
        let dir = tempfile::Builder::new().prefix("latchkey-cluster-nginx").tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("nginx.conf"), config(dir.path(), port, upstreams)).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test installs it)");
        wait_for_port(port, Duration::from_secs(10));
        Nginx { address: format!("http://127.0.0.1:{port}"), child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, port: u16, upstreams: &[u16]) -> String {
    let dir = dir.display();
    // A server that refused a connection is skipped for `fail_timeout`; a rolling restart waits
    // that long after an instance is ready again before stopping the next (docs/DEPLOY.md).
    let servers: String = upstreams
        .iter()
        .map(|port| {
            format!("        server 127.0.0.1:{port} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECS}s;\n")
        })
        .collect();
    // As root nginx would switch its workers to `nobody`, who cannot write the temp dirs.
    let user = if is_root() { "user root;" } else { "" };
    format!(
        r#"{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream latchkey {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://latchkey;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"#
    )
}
