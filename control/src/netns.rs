//! Entering a network namespace from a thread of the control process.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only, and a socket keeps
//! the namespace it was created in. So a client thread that enters the local cluster's control
//! namespace first can talk to the nodes while the rest of the process (and the host) stays
//! where it was: no route or address is ever added to the host.

use std::fs::File;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening namespace {name}: {source}")]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("entering namespace {name}: {source}")]
    Enter { name: String, source: nix::Error },
}

/// Moves the calling thread into the named namespace (`/run/netns/<name>`).
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let file =
        File::open(Path::new("/run/netns").join(name)).map_err(|source| NetnsError::Open {
            name: name.to_string(),
            source,
        })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        NetnsError::Enter {
            name: name.to_string(),
            source,
        }
    })
}

/// Runs `f` on a fresh thread inside namespace `name` (or here, in a fresh thread, for `None`)
/// and returns its result.
pub fn run_in<T: Send + 'static>(
    name: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let name = name.map(String::from);
    let handle = std::thread::spawn(move || -> Result<T, NetnsError> {
        if let Some(name) = &name {
            enter(name)?;
        }
        Ok(f())
    });
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
