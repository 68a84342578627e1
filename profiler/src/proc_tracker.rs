// TEMPORARY stand-in (helper is writing the real side-band tracker).
use std::collections::HashMap;
pub struct Mapping { pub start: u64, pub end: u64, pub file_offset: u64, pub path: String }
impl Mapping { pub fn file_offset_of(&self, addr: u64) -> u64 { addr - self.start + self.file_offset } }
#[derive(Default)]
pub struct ProcTracker { maps: HashMap<u32, Vec<Mapping>>, comms: HashMap<u32, String> }
impl ProcTracker {
    pub fn start() -> anyhow::Result<Self> { Ok(Self::default()) }
    pub fn snapshot_pid(&mut self, pid: u32) {
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) { self.comms.insert(pid, c.trim().to_string()); }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
        let mut v = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') { continue; }
            let (s, e) = f[0].split_once('-').unwrap();
            v.push(Mapping { start: u64::from_str_radix(s,16).unwrap(), end: u64::from_str_radix(e,16).unwrap(), file_offset: u64::from_str_radix(f[2],16).unwrap(), path: f[5..].join(" ") });
        }
        self.maps.insert(pid, v);
    }
    pub fn snapshot_all(&mut self) {}
    pub fn drain(&mut self) {
        let pids: Vec<u32> = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        for p in pids { if !self.maps.contains_key(&p) { self.snapshot_pid(p); } }
    }
    pub fn lost_records(&self) -> u64 { 0 }
    pub fn comm(&self, pid: u32) -> Option<&str> { self.comms.get(&pid).map(|s| s.as_str()) }
    pub fn lookup(&mut self, pid: u32, addr: u64) -> Option<&Mapping> { self.maps.get(&pid)?.iter().find(|m| m.start <= addr && addr < m.end) }
}
