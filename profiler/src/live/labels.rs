//! Names processes on screen: their command, and the container or cgroup they
//! run in, read once per process from /proc/PID/cgroup.

use std::collections::HashMap;

use super::Label;
use crate::proc_tracker::ProcTracker;

/// Remembers each listed process's group, so /proc is read once per process
/// and not once per refresh.
#[derive(Default)]
pub struct Labeler {
    /// Group by pid, with the refresh that last asked for it.
    groups: HashMap<u32, (Option<String>, u64)>,
    refresh: u64,
}

impl Labeler {
    pub fn label(&mut self, pid: u32, tracker: &ProcTracker) -> Label {
        let refresh = self.refresh;
        let entry = self.groups.entry(pid).or_insert_with(|| {
            let file = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            (group_name(&file), refresh)
        });
        entry.1 = refresh;
        Label {
            comm: tracker
                .comm(pid)
                .map(str::to_string)
                .unwrap_or_else(|| format!("[pid {pid}]")),
            group: entry.0.clone(),
        }
    }

    /// Forgets processes no longer listed: their pids may be reused by
    /// processes in other groups.
    pub fn end_refresh(&mut self) {
        let refresh = self.refresh;
        self.groups.retain(|_, (_, asked)| *asked == refresh);
        self.refresh += 1;
    }
}

/// The group a /proc/PID/cgroup file names, `None` for the root cgroup.
pub fn group_name(cgroup_file: &str) -> Option<String> {
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
    name_of_path(paths.first()?.1)
}

/// A container id shortened as `docker ps` does, with its runtime or parent:
/// `docker:0123456789ab`; else the innermost cgroup, e.g. `nginx.service`.
fn name_of_path(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let last = *components.last()?;
    let unit = last.strip_suffix(".scope").unwrap_or(last);
    let (runtime, id) = match unit.rsplit_once('-') {
        Some((runtime, id)) if is_container_id(id) => (runtime, id),
        _ if is_container_id(unit) => {
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

/// Container runtimes name cgroups by 64 hex digits; other tools by 32.
fn is_container_id(s: &str) -> bool {
    s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_containers_by_runtime_and_short_id() {
        assert_eq!(
            group_name(&format!("0::/system.slice/docker-{ID}.scope\n")).as_deref(),
            Some("docker:0123456789ab")
        );
        assert_eq!(
            group_name(&format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope\n"
            ))
            .as_deref(),
            Some("containerd:0123456789ab")
        );
        assert_eq!(
            group_name(&format!("0::/docker/{ID}\n")).as_deref(),
            Some("docker:0123456789ab")
        );
    }

    #[test]
    fn names_units_and_skips_the_root() {
        assert_eq!(
            group_name("0::/system.slice/nginx.service\n").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(group_name("0::/\n"), None);
        assert_eq!(group_name(""), None);
    }

    #[test]
    fn prefers_v2_then_systemd_then_memory_paths() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/f4a016991216957140c5d8bda19f4fad\n1:cpu:/other\n0::/\n";
        assert_eq!(group_name(v1).as_deref(), Some("process_api:f4a016991216"));
        let both = "1:name=systemd:/user.slice/session-3.scope\n0::/system.slice/cron.service\n";
        assert_eq!(group_name(both).as_deref(), Some("cron.service"));
    }
}
