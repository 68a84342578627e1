//! Which cgroup, and so which container, a process runs in: one reading of
//! /proc/PID/cgroup (done by the process tracker while the process lives)
//! for every output, JSON, pprof and `top`.

/// The cgroup path a /proc/PID/cgroup file names, `None` for the root cgroup.
pub fn cgroup_path(cgroup_file: &str) -> Option<String> {
    // cgroup v2 has a single `0::PATH` line; with v1 hierarchies mounted too,
    // systemd's and the memory controller's paths are the ones that name units
    // and containers.
    let mut paths: Vec<(u8, &str)> = cgroup_file
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let rank = match (id, controllers) {
                ("0", "") => 0,
                (_, "name=systemd") => 1,
                (_, c) if c.split(',').any(|c| c == "memory") => 2,
                _ => 3,
            };
            Some((rank, path))
        })
        .filter(|(_, path)| !path.is_empty() && *path != "/")
        .collect();
    paths.sort();
    Some(paths.first()?.1.to_string())
}

/// The id of the container whose cgroup `path` is, taken only from the
/// places container runtimes put their cgroups, read from the root of the
/// hierarchy:
///
/// - docker: `/docker/ID` (cgroupfs driver), `/system.slice/docker-ID.scope`
///   (systemd driver);
/// - containerd and CRI-O outside Kubernetes: `/system.slice/cri-containerd-ID.scope`,
///   `/system.slice/crio-ID.scope`;
/// - Kubernetes: `/kubepods.slice/[kubepods-QOS.slice/]kubepods-[QOS-]podUID.slice/RUNTIME-ID.scope`
///   (RUNTIME `cri-containerd`, `crio` or `docker`), `/kubepods/[QOS/]podUID/ID`
///   (cgroupfs driver);
/// - rootful podman: `/machine.slice/libpod-ID.scope` (its conmon's
///   `libpod-conmon-ID.scope` is not the container), `/libpod_parent/libpod-ID`.
///
/// Only root makes cgroups there: an unprivileged user can make cgroups only
/// in what systemd delegates to them, under `/user.slice/user-UID.slice/user@UID.service/`,
/// so a scope named `docker-ID.scope` there (`systemd-run --user --scope
/// --unit=docker-ID`) could claim any id, and no id is taken under
/// `user.slice`. That leaves rootless podman and rootless docker unlabelled:
/// their ids are the user's word. What a container makes inside its own
/// cgroup (`.../libpod-ID.scope/container`, a nested runtime) keeps the
/// outer id, which is the one the host's runtime gave it.
pub fn container_id(path: &str) -> Option<&str> {
    let mut components = path.split('/').filter(|c| !c.is_empty());
    match components.next()? {
        "docker" => hex_id(components.next()?),
        "system.slice" => scope_id(components.next()?, &["docker", "cri-containerd", "crio"]),
        "machine.slice" => scope_id(components.next()?, &["libpod"]),
        "libpod_parent" => components.next()?.strip_prefix("libpod-").and_then(hex_id),
        "kubepods.slice" => {
            // The QoS and pod slices, then the container's scope.
            let scope = components.find(|c| !c.ends_with(".slice"))?;
            scope_id(scope, &["cri-containerd", "crio", "docker"])
        }
        "kubepods" => {
            let mut next = components.next()?;
            if next == "besteffort" || next == "burstable" {
                next = components.next()?;
            }
            next.strip_prefix("pod")?;
            hex_id(components.next()?)
        }
        _ => None,
    }
}

/// `RUNTIME-ID.scope` for one of `runtimes`: the ID.
fn scope_id<'a>(unit: &'a str, runtimes: &[&str]) -> Option<&'a str> {
    let (runtime, id) = unit.strip_suffix(".scope")?.rsplit_once('-')?;
    if !runtimes.contains(&runtime) {
        return None;
    }
    hex_id(id)
}

fn hex_id(id: &str) -> Option<&str> {
    (id.len() == 64 && is_hex(id)).then_some(id)
}

/// A short name for a cgroup, for a narrow column: a container id shortened
/// as `docker ps` does, with its runtime or parent (`docker:0123456789ab`);
/// else the innermost cgroup, e.g. `nginx.service`.
pub fn short_name(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let last = *components.last()?;
    let unit = last.strip_suffix(".scope").unwrap_or(last);
    let (runtime, id) = match unit.rsplit_once('-') {
        Some((runtime, id)) if is_group_id(id) => (runtime, id),
        _ if is_group_id(unit) => {
            let parent = components.len().checked_sub(2).map(|i| components[i]);
            (parent.unwrap_or("container"), unit)
        }
        _ => return Some(last.to_string()),
    };
    let runtime = match runtime {
        "cri-containerd" => "containerd",
        other => other.trim_end_matches(".slice"),
    };
    Some(format!("{runtime}:{}", &id[..12]))
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Container runtimes name cgroups by 64 hex digits; other tools by 32.
fn is_group_id(s: &str) -> bool {
    s.len() >= 32 && is_hex(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn short(file: &str) -> Option<String> {
        short_name(&cgroup_path(file)?)
    }

    #[test]
    fn names_containers_by_runtime_and_short_id() {
        assert_eq!(
            short(&format!("0::/system.slice/docker-{ID}.scope\n")).as_deref(),
            Some("docker:0123456789ab")
        );
        assert_eq!(
            short(&format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope\n"
            ))
            .as_deref(),
            Some("containerd:0123456789ab")
        );
        assert_eq!(
            short(&format!("0::/docker/{ID}\n")).as_deref(),
            Some("docker:0123456789ab")
        );
    }

    #[test]
    fn names_units_and_skips_the_root() {
        assert_eq!(
            short("0::/system.slice/nginx.service\n").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(cgroup_path("0::/\n"), None);
        assert_eq!(cgroup_path(""), None);
    }

    #[test]
    fn prefers_v2_then_systemd_then_memory_paths() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/f4a016991216957140c5d8bda19f4fad\n1:cpu:/other\n0::/\n";
        assert_eq!(short(v1).as_deref(), Some("process_api:f4a016991216"));
        let both = "1:name=systemd:/user.slice/session-3.scope\n0::/system.slice/cron.service\n";
        assert_eq!(
            cgroup_path(both).as_deref(),
            Some("/system.slice/cron.service")
        );
    }

    #[test]
    fn reads_ids_where_runtimes_put_their_cgroups() {
        for path in [
            // docker: cgroupfs and systemd drivers
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            // containerd and CRI-O under systemd, outside Kubernetes
            format!("/system.slice/cri-containerd-{ID}.scope"),
            format!("/system.slice/crio-{ID}.scope"),
            // Kubernetes, systemd driver: guaranteed, burstable, besteffort pods
            format!("/kubepods.slice/kubepods-pod1b2c.slice/cri-containerd-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c.slice/crio-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod1b2c.slice/docker-{ID}.scope"),
            // Kubernetes, cgroupfs driver
            format!("/kubepods/pod1b2c/{ID}"),
            format!("/kubepods/burstable/pod1b2c/{ID}"),
            format!("/kubepods/besteffort/pod1b2c/{ID}"),
            // rootful podman: systemd and cgroupfs managers, and the
            // container's own sub-cgroup
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/libpod_parent/libpod-{ID}"),
        ] {
            assert_eq!(container_id(&path), Some(ID), "{path}");
        }
    }

    #[test]
    fn takes_no_id_from_cgroups_a_user_or_a_container_can_make() {
        let other = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        for path in [
            // systemd-run --user --scope --unit=docker-ID, and rootless
            // runtimes: the user's delegated subtree
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            format!("/user.slice/user-1000.slice/session-3.scope/docker-{ID}.scope"),
            format!("/user.slice/docker-{ID}.scope"),
            // anywhere else, or under an unknown runtime or unit
            format!("/clockprof-test/docker-{ID}.scope"),
            format!("/{ID}"),
            format!("/system.slice/evil-{ID}.scope"),
            format!("/system.slice/docker-{ID}.service"),
            format!("/system.slice/foo.service/docker-{ID}.scope"),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/machine.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/evil-{ID}.scope"),
            format!("/kubepods/burstable/{ID}"),
            "/system.slice/nginx.service".to_string(),
            "/process_api/f4a016991216957140c5d8bda19f4fad".to_string(),
            format!("/docker/{}", &ID[1..]),
            format!("/system.slice/docker-{}.scope", &ID[1..]),
        ] {
            assert_eq!(container_id(&path), None, "{path}");
        }
        // A container's own nested cgroups keep the id the host gave it.
        assert_eq!(
            container_id(&format!(
                "/system.slice/docker-{ID}.scope/docker-{other}.scope"
            )),
            Some(ID)
        );
        assert_eq!(
            container_id(&format!("/docker/{ID}/docker/{other}")),
            Some(ID)
        );
    }
}
