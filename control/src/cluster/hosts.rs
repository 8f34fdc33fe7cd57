//! The `ssh` cluster: real hosts with a user and a key, through the same [`Ssh`] layer as the
//! local cluster.
//!
//! Hosts file: one node per line, `address` or `name address`; `#` starts a comment. Names
//! default to `n1`, `n2`, ... in file order. Addresses must be IPv4 literals or resolve to
//! one: the nemesis needs the address other nodes see (`iptables -s`).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{new_tag, validate_tag, Cluster, ClusterError, Node, BASE_DIR};
use crate::cmd::shell_quote;
use crate::ssh::{Remote, Ssh, SshSettings};

/// Parses a hosts file's text; `resolve` turns a name into an IPv4 address.
pub fn parse_hosts(
    text: &str,
    resolve: impl Fn(&str) -> Option<Ipv4Addr>,
) -> Result<Vec<Node>, ClusterError> {
    let mut nodes: Vec<Node> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, host) = match words.as_slice() {
            [host] => (format!("n{}", nodes.len() + 1), host.to_string()),
            [name, host] => (name.to_string(), host.to_string()),
            _ => {
                return Err(ClusterError::BadOption(format!(
                    "hosts file line {}: want `address` or `name address`, got `{line}`",
                    index + 1
                )))
            }
        };
        let name_ok = !name.is_empty()
            && name.len() <= 16
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ClusterError::BadOption(format!(
                "hosts file line {}: bad node name `{name}`",
                index + 1
            )));
        }
        if nodes.iter().any(|n| n.name == name) {
            return Err(ClusterError::BadOption(format!(
                "hosts file line {}: node name `{name}` repeated",
                index + 1
            )));
        }
        let ip = resolve(&host).ok_or_else(|| {
            ClusterError::BadOption(format!(
                "hosts file line {}: `{host}` is not an IPv4 address and does not resolve to one",
                index + 1
            ))
        })?;
        nodes.push(Node { name, host, ip });
    }
    if nodes.is_empty() {
        return Err(ClusterError::BadOption("hosts file lists no hosts".into()));
    }
    Ok(nodes)
}

/// IPv4 literal, or the first IPv4 address the system resolver gives.
pub fn resolve_ipv4(host: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    (host, 22).to_socket_addrs().ok()?.find_map(|a| match a {
        SocketAddr::V4(v4) => Some(*v4.ip()),
        SocketAddr::V6(_) => None,
    })
}

/// Real hosts. Control-side files live in `/var/tmp/rj/<tag>/ctl`; on each host the node's
/// files live in `/var/tmp/rj/<tag>/nodes/<name>`.
#[derive(Debug)]
pub struct SshCluster {
    tag: String,
    nodes: Vec<Node>,
    ssh: Ssh,
    torn_down: bool,
}

#[derive(Debug, Clone)]
pub struct SshClusterOptions {
    pub nodes: Vec<Node>,
    pub user: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub tag: Option<String>,
    /// Run the client in this network namespace; only for testing against a local cluster.
    pub client_netns: Option<String>,
}

impl SshClusterOptions {
    /// Reads a hosts file (see the module docs).
    pub fn from_hosts_file(
        path: &Path,
        user: &str,
        identity: PathBuf,
        known_hosts: PathBuf,
    ) -> Result<Self, ClusterError> {
        let text = fs::read_to_string(path)
            .map_err(ClusterError::io(format!("reading {}", path.display())))?;
        Ok(Self {
            nodes: parse_hosts(&text, resolve_ipv4)?,
            user: user.to_string(),
            identity,
            known_hosts,
            tag: None,
            client_netns: None,
        })
    }
}

impl SshCluster {
    /// Connects to every host (one multiplexing master each) and creates the node directories.
    pub fn connect(options: SshClusterOptions) -> Result<SshCluster, ClusterError> {
        let tag = options.tag.clone().unwrap_or_else(new_tag);
        validate_tag(&tag)?;
        for (what, path) in [
            ("key", &options.identity),
            ("known_hosts", &options.known_hosts),
        ] {
            if !path.exists() {
                return Err(ClusterError::BadOption(format!(
                    "{what} file {} does not exist",
                    path.display()
                )));
            }
        }
        let control_dir = PathBuf::from(format!("{BASE_DIR}/{tag}/ctl"));
        fs::create_dir_all(&control_dir).map_err(ClusterError::io(format!(
            "creating {}",
            control_dir.display()
        )))?;
        let mut settings = SshSettings::new(
            &options.user,
            options.identity.clone(),
            options.known_hosts.clone(),
            control_dir,
        );
        settings.netns = options.client_netns.clone();
        let mut cluster = SshCluster {
            tag,
            nodes: options.nodes,
            ssh: Ssh::new(settings),
            torn_down: false,
        };
        let result = (|| {
            for node in &cluster.nodes {
                cluster.ssh.connect(node, Duration::from_secs(10))?;
                cluster.ssh.exec(
                    node,
                    &format!("mkdir -p {}", shell_quote(&cluster.node_dir(node))),
                )?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(cluster),
            Err(error) => {
                let _ = cluster.teardown();
                Err(error)
            }
        }
    }
}

impl Cluster for SshCluster {
    fn tag(&self) -> &str {
        &self.tag
    }

    fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn ssh(&self) -> &Ssh {
        &self.ssh
    }

    fn client_netns(&self) -> Option<String> {
        self.ssh.settings.netns.clone()
    }

    /// On each host: signals the live processes named in our pid files (TERM, then KILL), removes
    /// our iptables chain and the node directory. Then closes the SSH masters.
    fn teardown(&mut self) -> Result<(), ClusterError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_error = None;
        for node in &self.nodes {
            let script = teardown_script(
                &self.node_dir(node),
                &format!("{BASE_DIR}/{}/nodes", self.tag),
                &format!("{BASE_DIR}/{}", self.tag),
            );
            if let Err(error) = self.ssh.exec(node, &script) {
                first_error.get_or_insert(ClusterError::from(error));
            }
        }
        for node in &self.nodes {
            self.ssh.disconnect(node);
        }
        let _ = fs::remove_dir_all(&self.ssh.settings.control_dir);
        let _ = fs::remove_dir_all(self.staging_dir());
        let _ = fs::remove_dir(format!("{BASE_DIR}/{}", self.tag));
        first_error.map_or(Ok(()), Err)
    }
}

/// The remote half of an ssh cluster's teardown. Signals only pids from pid files under
/// `dir` whose executable also lives under `dir` (our daemons' binaries are uploaded there), so
/// a stale pid file whose pid was reused by another program is left alone: TERM (+CONT), a
/// short grace, KILL. Then removes our iptables chain and our directories.
pub fn teardown_script(dir: &str, parent: &str, grand: &str) -> String {
    let dir = shell_quote(dir);
    let ours = format!(
        "ours() {{ case \"$(readlink /proc/$1/exe 2>/dev/null)\" in {dir}/*) return 0;; esac; return 1; }}"
    );
    let each = |action: &str| {
        format!(
            "for f in $(find {dir} -name '*.pid' 2>/dev/null); do \
               p=$(cat \"$f\" 2>/dev/null) || continue; \
               case \"$p\" in ''|*[!0-9]*) continue;; esac; \
               ours $p && {{ {action}; }}; \
             done"
        )
    };
    format!(
        "{ours}\n{term}; sleep 0.3; {kill}; {heal}; rm -rf {dir}; rmdir {parent} {grand} 2>/dev/null; true",
        term = each("kill -TERM $p; kill -CONT $p"),
        kill = each("kill -KILL $p"),
        heal = crate::nemesis::apply::remove_chain_script(),
        parent = shell_quote(parent),
        grand = shell_quote(grand),
    )
}

impl Drop for SshCluster {
    fn drop(&mut self) {
        if let Err(error) = self.teardown() {
            eprintln!("control: teardown of ssh cluster {}: {error}", self.tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(host: &str) -> Option<Ipv4Addr> {
        match host {
            "db1.example" => Some(Ipv4Addr::new(192, 0, 2, 10)),
            other => other.parse().ok(),
        }
    }

    #[test]
    fn hosts_file_with_names_comments_and_defaults() {
        let nodes = parse_hosts(
            "# cluster\n10.0.0.1\nweb db1.example # named\n\n10.0.0.3\n",
            fake,
        )
        .unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "web", "n3"]);
        assert_eq!(nodes[1].ip, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(nodes[1].host, "db1.example");
    }

    /// The teardown script against real processes: it kills the daemon running a binary from
    /// our directory and spares a live process whose pid sits in a stale pid file.
    #[test]
    fn teardown_script_kills_only_our_binaries() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::copy("/bin/sleep", bin.join("sleep")).unwrap();
        let mut ours = Command::new(bin.join("sleep")).arg("30").spawn().unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(dir.path().join("ours.pid"), format!("{}\n", ours.id())).unwrap();
        fs::write(dir.path().join("stale.pid"), format!("{}\n", other.id())).unwrap();
        let root = dir.path().display().to_string();
        let script = teardown_script(&root, &format!("{root}/none"), &format!("{root}/none2"))
            .replace(&crate::nemesis::apply::remove_chain_script(), "true");
        let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success());
        let ours_status = ours.wait().unwrap();
        assert!(!ours_status.success(), "our daemon was signalled");
        assert!(
            other.try_wait().unwrap().is_none(),
            "a foreign pid must survive"
        );
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(
            !dir.path().join("bin").exists(),
            "the node directory is removed"
        );
    }

    #[test]
    fn hosts_file_errors_name_the_line() {
        let err = parse_hosts("10.0.0.1\nnope.invalid\n", fake)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse_hosts("a 10.0.0.1\na 10.0.0.2\n", fake)
            .unwrap_err()
            .to_string();
        assert!(err.contains("repeated"), "{err}");
        assert!(parse_hosts("# nothing\n", fake).is_err());
        assert!(parse_hosts("a b c\n", fake).is_err());
    }
}
