//! Where serve listens: a TCP address, or `unix:PATH`, a socket of mode 0660
//! in a directory only root writes, its group `--listen-group`, for hosts
//! that scrape through a local agent. The socket is removed when serve ends.

use std::ffi::CString;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::host::peer::Client;

/// `--listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Listen::Tcp(address) => write!(f, "{address}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Listen {
    /// Whether only this host can reach it.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(address) => address.ip().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

/// `--listen ADDR|unix:PATH`.
pub fn parse(text: &str) -> Result<Listen, String> {
    match text.strip_prefix("unix:") {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err("unix:PATH needs an absolute path to the socket".to_string());
            }
            Ok(Listen::Unix(path))
        }
        None => text.parse().map(Listen::Tcp).map_err(|_| {
            "not an address such as 127.0.0.1:9742, nor unix:/run/clockprof.sock".to_string()
        }),
    }
}

/// A bound listener; a Unix socket's file is removed on drop.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        _socket: RemoveOnDrop,
    },
}

/// An accepted connection and who is at its other end.
pub enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// Binds `listen`; a Unix socket gets mode 0660 and `group`.
    pub fn bind(listen: &Listen, group: Option<&str>) -> Result<Listener> {
        match listen {
            Listen::Tcp(address) => {
                if group.is_some() {
                    bail!("--listen-group is for a unix:PATH --listen");
                }
                let listener = std::net::TcpListener::bind(address)
                    .with_context(|| format!("could not listen on {address}"))?;
                listener.set_nonblocking(true)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(listener)?))
            }
            Listen::Unix(path) => bind_unix(path, group),
        }
    }

    /// The next connection, with its client.
    pub async fn accept(&self) -> std::io::Result<(Accepted, Client)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let local = stream.local_addr()?;
                Ok((Accepted::Tcp(stream), Client::of(local, peer)))
            }
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let uid = stream.peer_cred()?.uid();
                Ok((Accepted::Unix(stream), Client::local_user(uid)))
            }
        }
    }
}

/// Removes the socket serve made, when serve ends.
pub struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bind_unix(path: &Path, group: Option<&str>) -> Result<Listener> {
    let directory = path.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(directory)
        .with_context(|| format!("could not listen on unix:{}", path.display()))?;
    // A user who can write the directory could put their own socket or a
    // link where serve's goes, between its checks and its bind. Root's, or
    // serve's own user's under the unit (RuntimeDirectory=clockprof).
    // SAFETY: geteuid has no preconditions.
    let serves_as = unsafe { libc::geteuid() };
    let owner_ok = meta.uid() == 0 || meta.uid() == serves_as;
    if !owner_ok || meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "could not listen on unix:{}: its directory must be root's (or serve's user's) and writable by its owner alone, as /run is",
            path.display()
        );
    }
    let gid = group.map(group_id).transpose()?;
    match std::fs::symlink_metadata(path) {
        // A socket left by an earlier serve that was killed.
        Ok(old) if old.file_type().is_socket() && (old.uid() == 0 || old.uid() == serves_as) => {
            std::fs::remove_file(path)?
        }
        Ok(_) => bail!(
            "could not listen on unix:{}: something else is there",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("could not listen on unix:{}", path.display()))?;
    let remove = RemoveOnDrop(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .with_context(|| format!("could not give unix:{} its group", path.display()))?;
    }
    Ok(Listener::Unix {
        listener,
        _socket: remove,
    })
}

/// The id of group `name`, from the group database.
fn group_id(name: &str) -> Result<u32> {
    let c_name = CString::new(name).context("a group name has no NUL")?;
    // SAFETY: a valid NUL-terminated name; getgrnam's result is read at
    // once, before any other call that could reuse its buffer.
    let entry = unsafe { libc::getgrnam(c_name.as_ptr()) };
    if entry.is_null() {
        bail!("--listen-group {name}: no such group");
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*entry).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_an_address_or_an_absolute_unix_path() {
        assert_eq!(
            parse("127.0.0.1:9742"),
            Ok(Listen::Tcp("127.0.0.1:9742".parse().unwrap()))
        );
        assert_eq!(
            parse("unix:/run/clockprof.sock"),
            Ok(Listen::Unix("/run/clockprof.sock".into()))
        );
        for bad in ["unix:relative.sock", "unix:", "unix:/", "localhost", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(Listen::Unix("/x".into()).is_local());
        assert!(!Listen::Tcp("0.0.0.0:1".parse().unwrap()).is_local());
    }

    #[tokio::test]
    async fn a_unix_socket_is_0660_in_its_group_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("serve.sock");
        // Something not a socket is never removed.
        std::fs::write(&path, "").unwrap();
        assert!(Listener::bind(&Listen::Unix(path.clone()), None).is_err());
        std::fs::remove_file(&path).unwrap();
        let listener = Listener::bind(&Listen::Unix(path.clone()), Some("root")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), 0);
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (_, accepted_from) = listener.accept().await.unwrap();
        assert_eq!(accepted_from.user, Some(unsafe { libc::getuid() }));
        drop(client);
        drop(listener);
        assert!(!path.exists());
        // A directory others may write is refused.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Listener::bind(&Listen::Unix(path.clone()), None).is_err());
    }
}
