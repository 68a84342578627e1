//! Whom COMMAND runs as: under sudo, the user who ran sudo (SUDO_UID,
//! SUDO_GID, SUDO_USER's groups and home), or the one `--user` names. The
//! user is resolved here, before the fork, so the child only makes the
//! async-signal-safe setgroups/setgid/setuid calls. The user who ran sudo
//! is also whose the output files are (export/output_file.rs).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<libc::gid_t>,
    pub home: OsString,
}

impl std::fmt::Display for RunAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user {} (uid {})", self.name, self.uid)
    }
}

/// A passwd entry's fields we use.
struct Passwd {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    home: OsString,
}

fn lookup(
    by: impl Fn(*mut libc::passwd, &mut [u8], *mut *mut libc::passwd) -> i32,
) -> Option<Passwd> {
    let mut buffer = vec![0u8; 4096];
    loop {
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let ret = by(&mut entry, &mut buffer, &mut found);
        if ret == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if ret != 0 || found.is_null() {
            return None;
        }
        // SAFETY: getpw*_r filled `entry` with strings inside `buffer`.
        let text = |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec();
        return Some(Passwd {
            name: String::from_utf8_lossy(&text(entry.pw_name)).into_owned(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: OsStr::from_bytes(&text(entry.pw_dir)).to_os_string(),
        });
    }
}

fn by_name(name: &str) -> Option<Passwd> {
    let c_name = CString::new(name).ok()?;
    lookup(|entry, buffer, found| unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            found,
        )
    })
}

fn by_uid(uid: libc::uid_t) -> Option<Passwd> {
    lookup(|entry, buffer, found| unsafe {
        libc::getpwuid_r(uid, entry, buffer.as_mut_ptr().cast(), buffer.len(), found)
    })
}

/// The groups of `name` as initgroups would set them, `gid` included.
fn group_list(name: &str, gid: libc::gid_t) -> Vec<libc::gid_t> {
    let Ok(c_name) = CString::new(name) else {
        return vec![gid];
    };
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        let ret =
            unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if ret >= 0 {
            groups.truncate(count as usize);
            return groups;
        }
        if count as usize <= groups.len() || groups.len() >= 65536 {
            return vec![gid];
        }
        groups.resize(count as usize, 0);
    }
}

fn run_as(entry: Passwd, gid: libc::gid_t) -> RunAs {
    RunAs {
        groups: group_list(&entry.name, gid),
        name: entry.name,
        uid: entry.uid,
        gid,
        home: entry.home,
    }
}

/// `--user`'s value: a name or a numeric uid of this host's user database.
fn named_user(user: &str) -> Result<RunAs> {
    let entry = match user.parse::<libc::uid_t>() {
        Ok(uid) => by_uid(uid),
        Err(_) => by_name(user),
    };
    let Some(entry) = entry else {
        bail!("--user {user:?}: no such user on this host");
    };
    let gid = entry.gid;
    Ok(run_as(entry, gid))
}

/// The user who ran sudo, from the variables sudo sets.
fn sudo_user(vars: &dyn Fn(&str) -> Option<String>) -> Result<Option<RunAs>> {
    let Some(uid) = vars("SUDO_UID") else {
        return Ok(None);
    };
    let Ok(uid) = uid.trim().parse::<libc::uid_t>() else {
        bail!("SUDO_UID={uid:?} is not a user id");
    };
    let gid = match vars("SUDO_GID") {
        Some(gid) => match gid.trim().parse::<libc::gid_t>() {
            Ok(gid) => Some(gid),
            Err(_) => bail!("SUDO_GID={gid:?} is not a group id"),
        },
        None => None,
    };
    // SUDO_USER names the account (several names may share a uid); it is
    // trusted only if it has that uid.
    let entry = vars("SUDO_USER")
        .and_then(|name| by_name(&name))
        .filter(|entry| entry.uid == uid)
        .or_else(|| by_uid(uid));
    Ok(Some(match entry {
        Some(entry) => {
            let gid = gid.unwrap_or(entry.gid);
            run_as(entry, gid)
        }
        None => {
            let gid = gid.unwrap_or(uid);
            RunAs {
                name: uid.to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: OsString::from("/"),
            }
        }
    }))
}

/// Whom COMMAND runs as: `--user`, else the user who ran sudo, else None
/// (as clockprof itself runs).
pub fn command_user(user: Option<&str>) -> Result<Option<RunAs>> {
    if let Some(user) = user {
        return named_user(user).map(Some);
    }
    sudo_invoker()
        .map_err(|err| anyhow::anyhow!("{err}; pass --user USER to say whom COMMAND runs as"))
}

/// The user who ran sudo, when clockprof runs as root under sudo: COMMAND
/// runs as them by default, and the files they asked for are theirs
/// (export's OutputFile). None as root without sudo and as any other user.
pub fn sudo_invoker() -> Result<Option<RunAs>> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    sudo_user(&|name| std::env::var(name).ok())
}

/// Who clockprof itself runs as, for the message when COMMAND stays so.
pub fn current_user() -> String {
    let uid = unsafe { libc::geteuid() };
    match by_uid(uid) {
        Some(entry) => format!("user {} (uid {uid})", entry.name),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn sudo_variables_name_the_user() {
        let root = sudo_user(&vars(&[
            ("SUDO_UID", "0"),
            ("SUDO_GID", "0"),
            ("SUDO_USER", "root"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
        assert!(root.groups.contains(&0));
        assert_eq!(root.home, OsString::from("/root"));
        assert_eq!(sudo_user(&vars(&[])).unwrap(), None);
        let err = sudo_user(&vars(&[("SUDO_UID", "x")])).unwrap_err();
        assert!(err.to_string().contains("SUDO_UID"), "{err}");
        // A SUDO_USER that does not own SUDO_UID is not believed.
        let other = sudo_user(&vars(&[("SUDO_UID", "0"), ("SUDO_USER", "nobody")]))
            .unwrap()
            .unwrap();
        assert_eq!(other.name, "root");
    }

    #[test]
    fn user_by_name_or_uid() {
        assert_eq!(named_user("root").unwrap().uid, 0);
        assert_eq!(named_user("0").unwrap().name, "root");
        let err = named_user("no-such-user-here").unwrap_err();
        assert!(err.to_string().contains("no such user"), "{err}");
    }
}
