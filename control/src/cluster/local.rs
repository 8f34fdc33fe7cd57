//! The `local` cluster: N hosts made of Linux network namespaces on one root machine.
//!
//! Topology (all names carry the run's tag, so runs and leftovers never collide):
//!
//! ```text
//!   rj-<tag>-ctl   eth0 10.x.y.2  ─┐
//!   rj-<tag>-n1    eth0 10.x.y.11 ─┼─ veth ─ br0 in rj-<tag>-sw (the "switch")
//!   ...                            │
//!   rj-<tag>-nN    eth0 10.x.y.1N ─┘
//! ```
//!
//! The bridge lives in its own namespace and every veth is created directly between our
//! namespaces (`ip -n <sw> link add ... peer ... netns <node>`), so not one interface, address
//! or route is added to the host. The control process's SSH client runs inside `rj-<tag>-ctl`
//! (`ip netns exec`), which is why it can reach the nodes while the host cannot: traffic only
//! ever flows between namespaces we created. Each node namespace runs its own sshd with a host
//! key generated for this cluster, pinned in our `known_hosts`; the client key is generated
//! too, and is the only one sshd accepts.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::stale::{self, namespace_name, wait_until};
use super::{new_tag, validate_tag, Cluster, ClusterError, Node, BASE_DIR};
use crate::cmd;
use crate::net::{self, Ipv4Net};
use crate::ssh::{Remote, Ssh, SshSettings};

/// The sshd binary; sshd insists on being started by absolute path (it re-executes itself).
pub const SSHD: &str = "/usr/sbin/sshd";
/// Limit on nodes: addresses .11.. must stay inside a /24 and veth names short.
pub const NODES_MAX: usize = 64;

/// Tags of local clusters alive in this process, so a Ctrl-C handler can tear them down.
static ACTIVE_TAGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Tears down every local cluster this process still has (for signal handlers).
pub fn teardown_active() -> Vec<(String, Result<stale::TeardownReport, ClusterError>)> {
    let tags: Vec<String> = match ACTIVE_TAGS.lock() {
        Ok(mut tags) => std::mem::take(&mut *tags),
        Err(_) => Vec::new(),
    };
    tags.into_iter()
        .map(|tag| {
            let result = stale::teardown_tag(&tag);
            (tag, result)
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub nodes: usize,
    /// `None`: a fresh random tag.
    pub tag: Option<String>,
    /// `None`: the first candidate subnet that does not overlap the host.
    pub subnet: Option<Ipv4Net>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            nodes: 5,
            tag: None,
            subnet: None,
        }
    }
}

/// A provisioned local cluster. Dropping it tears it down.
#[derive(Debug)]
pub struct LocalCluster {
    tag: String,
    subnet: Ipv4Net,
    nodes: Vec<Node>,
    ssh: Ssh,
    control_ip: Ipv4Addr,
    torn_down: bool,
}

/// Checks that everything the local cluster needs is here, naming what is missing.
pub fn check_prerequisites() -> Result<(), ClusterError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ClusterError::Prerequisite {
            what: "root".into(),
            hint: "the local cluster creates network namespaces; run as root".into(),
        });
    }
    let hint = "run `make deps` (iproute2 iptables openssh-server openssh-client)";
    for program in [SSHD, "ip", "ssh", "scp", "ssh-keygen", "iptables"] {
        let found = if program.starts_with('/') {
            Path::new(program).exists()
        } else {
            find_in_path(program)
        };
        if !found {
            return Err(ClusterError::Prerequisite {
                what: program.into(),
                hint: hint.into(),
            });
        }
    }
    Ok(())
}

fn find_in_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(program).exists())
}

fn ip(args: &[&str]) -> Result<(), ClusterError> {
    cmd::run_ok(Command::new("ip").args(args), Duration::from_secs(10))?;
    Ok(())
}

impl LocalCluster {
    /// Builds the namespaces, bridge, veths, keys and sshds, and opens one SSH master per node.
    /// On any failure everything made so far is removed before the error is returned.
    pub fn provision(options: &LocalOptions) -> Result<LocalCluster, ClusterError> {
        check_prerequisites()?;
        if options.nodes == 0 || options.nodes > NODES_MAX {
            return Err(ClusterError::BadOption(format!(
                "nodes = {} (want 1..={NODES_MAX})",
                options.nodes
            )));
        }
        let tag = options.tag.clone().unwrap_or_else(new_tag);
        validate_tag(&tag)?;
        if !stale::our_namespaces(Some(&tag)).is_empty()
            || Path::new(&format!("{BASE_DIR}/{tag}")).exists()
        {
            return Err(ClusterError::BadOption(format!(
                "tag {tag} is already in use (`control teardown --tag {tag}` removes it)"
            )));
        }
        let subnet = match options.subnet {
            Some(subnet) => {
                let host = net::read_host_networks()?;
                net::choose_subnet(&[subnet], &host)?
            }
            None => net::choose_subnet(&net::default_candidates(), &net::read_host_networks()?)?,
        };
        let control_ip = subnet
            .host(2)
            .ok_or_else(|| ClusterError::BadOption(format!("subnet {subnet} too small")))?;
        let mut nodes = Vec::new();
        for i in 1..=options.nodes {
            let ip = u32::try_from(10 + i)
                .ok()
                .and_then(|index| subnet.host(index))
                .ok_or_else(|| ClusterError::BadOption(format!("subnet {subnet} too small")))?;
            nodes.push(Node {
                name: format!("n{i}"),
                host: ip.to_string(),
                ip,
            });
        }
        let run_dir = PathBuf::from(format!("{BASE_DIR}/{tag}"));
        let control_dir = run_dir.join("ctl");
        let mut settings = SshSettings::new(
            "root",
            control_dir.join("id_ed25519"),
            control_dir.join("known_hosts"),
            control_dir.clone(),
        );
        settings.netns = Some(namespace_name(&tag, "ctl"));
        if let Ok(mut tags) = ACTIVE_TAGS.lock() {
            tags.push(tag.clone());
        }
        let mut cluster = LocalCluster {
            tag,
            subnet,
            nodes,
            ssh: Ssh::new(settings),
            control_ip,
            torn_down: false,
        };
        match cluster.build(&run_dir) {
            Ok(()) => Ok(cluster),
            Err(error) => {
                if let Err(cleanup) = cluster.teardown() {
                    eprintln!("control: teardown after failed provisioning: {cleanup}");
                }
                Err(error)
            }
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The address of the control namespace, where our SSH client (and probes) come from.
    pub fn control_ip(&self) -> Ipv4Addr {
        self.control_ip
    }

    /// The namespace of a node (or `ctl`, `sw`).
    pub fn namespace(&self, member: &str) -> String {
        namespace_name(&self.tag, member)
    }

    /// Runs a local program inside the control namespace (for probes from the control side).
    pub fn control_command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace("ctl"), program]);
        command
    }

    fn run_dir(&self) -> PathBuf {
        PathBuf::from(format!("{BASE_DIR}/{}", self.tag))
    }

    fn build(&mut self, run_dir: &Path) -> Result<(), ClusterError> {
        let control_dir = run_dir.join("ctl");
        fs::create_dir_all(&control_dir).map_err(ClusterError::io(format!(
            "creating {}",
            control_dir.display()
        )))?;
        stale::write_owner(&self.tag)?;
        self.build_network()?;
        keygen(&control_dir.join("id_ed25519"), "rj-client")?;
        let client_public = read(&control_dir.join("id_ed25519.pub"))?;
        let authorized = control_dir.join("authorized_keys");
        fs::write(&authorized, &client_public)
            .map_err(ClusterError::io("writing authorized_keys"))?;
        fs::create_dir_all("/run/sshd").map_err(ClusterError::io("creating /run/sshd"))?;
        let mut known_hosts = String::new();
        for node in self.nodes.clone() {
            let host_key = self.start_sshd(run_dir, &node, &authorized)?;
            known_hosts.push_str(&format!("{} {}\n", node.host, host_key));
        }
        fs::write(control_dir.join("known_hosts"), known_hosts)
            .map_err(ClusterError::io("writing known_hosts"))?;
        for node in &self.nodes {
            self.ssh.connect(node, Duration::from_secs(10))?;
            self.ssh
                .exec(node, &format!("mkdir -p {}", self.node_dir(node)))?;
        }
        Ok(())
    }

    fn build_network(&self) -> Result<(), ClusterError> {
        let switch = self.namespace("sw");
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        let mut members = vec![("ctl".to_string(), self.control_ip)];
        members.extend(self.nodes.iter().map(|n| (n.name.clone(), n.ip)));
        for (member, address) in members {
            let ns = self.namespace(&member);
            let port = format!("p-{member}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            let cidr = format!("{address}/{}", self.subnet.prefix_len);
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// `SetEnv SHLVL=1`: bash sources `~/.bashrc` for commands run by sshd only when its shell
    /// level is below 2, and our nodes share root's home with the host, whose rc files may do
    /// anything (we met a `pyenv rehash` that hung on a lock). With it, node commands run in a
    /// plain non-interactive shell, as on a freshly installed machine.
    ///
    /// Writes the node's sshd config and host key, starts sshd in the node's namespace, waits
    /// for its pid file, and returns the public host key line for `known_hosts`.
    fn start_sshd(
        &self,
        run_dir: &Path,
        node: &Node,
        authorized: &Path,
    ) -> Result<String, ClusterError> {
        let dir = run_dir.join("sshd").join(&node.name);
        fs::create_dir_all(&dir)
            .map_err(ClusterError::io(format!("creating {}", dir.display())))?;
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key, &format!("rj-{}-{}", self.tag, node.name))?;
        let pid_file = dir.join("sshd.pid");
        let config = format!(
            "# written by control for run {tag}\n\
             ListenAddress {ip}\nPort 22\nHostKey {key}\nPidFile {pid}\n\
             AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nUseDNS no\nPrintMotd no\n\
             MaxSessions 64\nMaxStartups 64:30:128\nSubsystem sftp internal-sftp\n\
             SetEnv SHLVL=1\n",
            tag = self.tag,
            ip = node.ip,
            key = host_key.display(),
            pid = pid_file.display(),
            auth = authorized.display(),
        );
        let config_path = dir.join("sshd_config");
        fs::write(&config_path, config).map_err(ClusterError::io("writing sshd_config"))?;
        let log = dir.join("sshd.log");
        cmd::run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.namespace(&node.name), SSHD, "-f"])
                .arg(&config_path)
                .arg("-E")
                .arg(&log),
            Duration::from_secs(10),
        )?;
        if !wait_until(Duration::from_secs(5), || pid_file.exists()) {
            return Err(ClusterError::Timeout(format!(
                "sshd of {} wrote no pid file (see {})",
                node.name,
                log.display()
            )));
        }
        let public = read(&dir.join("ssh_host_ed25519_key.pub"))?;
        // "ssh-ed25519 AAAA... comment" -> drop the comment.
        Ok(public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "))
    }
}

fn keygen(path: &Path, comment: &str) -> Result<(), ClusterError> {
    cmd::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        Duration::from_secs(10),
    )?;
    Ok(())
}

fn read(path: &Path) -> Result<String, ClusterError> {
    fs::read_to_string(path).map_err(ClusterError::io(format!("reading {}", path.display())))
}

impl Cluster for LocalCluster {
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
        Some(self.namespace("ctl"))
    }

    fn teardown(&mut self) -> Result<(), ClusterError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        if let Ok(mut tags) = ACTIVE_TAGS.lock() {
            tags.retain(|t| t != &self.tag);
        }
        for node in &self.nodes {
            self.ssh.disconnect(node);
        }
        let result = stale::teardown_tag(&self.tag).map(|_| ());
        // teardown_tag removes the run dir; make sure even a partial failure leaves none.
        let _ = fs::remove_dir_all(self.run_dir());
        result
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(error) = self.teardown() {
            eprintln!("control: teardown of local cluster {}: {error}", self.tag);
        }
    }
}
