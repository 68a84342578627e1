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

/// The id of the container whose cgroup `path` is: the 64 hex digits that
/// docker, containerd, cri-o and podman name their cgroups by
/// (`docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`,
/// `libpod-ID.scope`, `/docker/ID`), innermost first.
pub fn container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|component| {
        let unit = component.strip_suffix(".scope").unwrap_or(component);
        let id = unit.rsplit_once('-').map_or(unit, |(_, id)| id);
        (id.len() == 64 && is_hex(id)).then_some(id)
    })
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
    fn reads_full_container_ids() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/docker/{ID}"),
        ] {
            assert_eq!(container_id(&path), Some(ID), "{path}");
        }
        assert_eq!(container_id("/system.slice/nginx.service"), None);
        assert_eq!(
            container_id("/process_api/f4a016991216957140c5d8bda19f4fad"),
            None
        );
        assert_eq!(container_id(&format!("/docker-{}.scope", &ID[1..])), None);
    }
}
