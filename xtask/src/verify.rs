//! The hotfix's checklist (the tools crate's tms-verify) against a
//! deployment or a local run. scripts/tool.sh runs it: the binary that
//! `make run` built when it is up to date, else a build of it first.

use crate::env_file;
use anyhow::{Context, Result, bail};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn tms_verify(root: &Path, args: &[String]) -> Command {
    let mut command = Command::new(root.join("scripts/tool.sh"));
    command.arg("tms-verify").args(args).current_dir(root);
    command
}

/// `make verify`: against BASE_URL (and the settings tms-verify reads).
pub fn deployed(root: &Path, args: &[String]) -> Result<()> {
    Err(tms_verify(root, args).exec()).context("cannot run scripts/tool.sh tms-verify")
}

/// `make verify-local`: against the server of `make run` at the same
/// LISTEN_HOST and PORT, with the local settings (SSO_JWT_SECRET mints the
/// GCGC token).
pub fn local(root: &Path, args: &[String]) -> Result<()> {
    let env = env_file::local(root)?;
    let lookup = |name: &str| {
        let from_file = env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone());
        from_file
            .or_else(|| env_file::setting(name))
            .with_context(|| format!("{name} is not set"))
    };
    let (host, port) = (lookup("LISTEN_HOST")?, lookup("PORT")?);
    let address = format!("{host}:{port}");
    let answers = address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(1)).is_ok());
    if !answers {
        bail!(
            "nothing answers on {address}: start make run first (in another terminal), with the same PORT"
        );
    }
    let mut command = tms_verify(root, args);
    command
        .envs(env)
        .env("BASE_URL", format!("http://{address}"));
    Err(command.exec()).context("cannot run scripts/tool.sh tms-verify")
}
