//! Reads struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! Rust eBPF code cannot carry CO-RE relocations, so a program that reads a
//! kernel struct gets the offsets from here through a global. aya-obj's BTF
//! parser is crate-private and btf-rs is LGPL, so this reads just the part of
//! the format needed: type records, struct/union members, typedefs.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// The referenced type of typedefs and modifiers.
    type_ref: u32,
    members: Vec<Member>,
}

pub struct KernelBtf {
    strings: Vec<u8>,
    /// Index 0 is the void type.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .ok_or_else(|| anyhow!("BTF truncated at byte {at}"))
}

impl KernelBtf {
    pub fn load() -> Result<KernelBtf> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| {
            format!("this kernel has no BTF ({path} is unreadable); the vdso source needs a kernel built with CONFIG_DEBUG_INFO_BTF")
        })?;
        KernelBtf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<KernelBtf> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            bail!("not little-endian BTF data");
        }
        let header_len = u32_at(data, 4)? as usize;
        let type_start = header_len + u32_at(data, 8)? as usize;
        let type_end = type_start + u32_at(data, 12)? as usize;
        let string_start = header_len + u32_at(data, 16)? as usize;
        let string_end = string_start + u32_at(data, 20)? as usize;
        let strings = data
            .get(string_start..string_end)
            .ok_or_else(|| anyhow!("BTF string section out of bounds"))?
            .to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            type_ref: 0,
            members: Vec::new(),
        }];
        let mut at = type_start;
        while at < type_end {
            let name = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let size_or_type = u32_at(data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let bitfield = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(data, at + 8)?;
                        members.push(Member {
                            name: u32_at(data, at)?,
                            type_id: u32_at(data, at + 4)?,
                            // With kind_flag, the high 8 bits are a bitfield size.
                            bit_offset: if bitfield { offset & 0xff_ffff } else { offset },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                type_ref: size_or_type,
                members,
            });
        }
        let mut btf = KernelBtf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                let name = btf.string(ty.name).to_string();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        while let Some(ty) = self.types.get(id as usize) {
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.type_ref
                }
                _ => break,
            }
        }
        id
    }

    /// Finds `name` in a struct or union, looking into anonymous members (the
    /// kernel nests most of mm_struct in one). Returns (bit offset, type).
    fn find_member(&self, type_id: u32, name: &str) -> Option<(u32, u32)> {
        let ty = self.types.get(self.resolve(type_id) as usize)?;
        for member in &ty.members {
            if member.name == 0 {
                if let Some((offset, found)) = self.find_member(member.type_id, name) {
                    return Some((member.bit_offset + offset, found));
                }
            } else if self.string(member.name) == name {
                return Some((member.bit_offset, member.type_id));
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. ["context", "vdso"]) inside `struct name`.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Result<u32> {
        let mut type_id = *self
            .structs_by_name
            .get(name)
            .ok_or_else(|| anyhow!("the kernel's BTF has no struct {name}"))?;
        let mut bits = 0;
        for member in path {
            let (offset, next) = self.find_member(type_id, member).ok_or_else(|| {
                anyhow!(
                    "the kernel's struct {name} has no member {}",
                    path.join(".")
                )
            })?;
            bits += offset;
            type_id = next;
        }
        if bits % 8 != 0 {
            bail!("{name}.{} is a bitfield", path.join("."));
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked against bpftool's own reading of the same BTF, where present.
    fn bpftool_offset(strukt: &str, member: &str) -> Option<u32> {
        let out = std::process::Command::new("bpftool")
            .args([
                "btf",
                "dump",
                "file",
                "/sys/kernel/btf/vmlinux",
                "format",
                "raw",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut in_struct = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_struct = line.contains(&format!("STRUCT '{strukt}' size="));
            } else if in_struct && line.trim_start().starts_with(&format!("'{member}' ")) {
                let bits = line
                    .split("bits_offset=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                return bits.parse::<u32>().ok().map(|b| b / 8);
            }
        }
        None
    }

    #[test]
    fn finds_task_mm_and_the_vdso_pointer() {
        let btf = KernelBtf::load().expect("this kernel has BTF");
        let mm = btf.member_offset("task_struct", &["mm"]).unwrap();
        assert!(mm > 0 && mm < 16384, "{mm}");
        if let Some(expected) = bpftool_offset("task_struct", "mm") {
            assert_eq!(mm, expected);
        }
        let vdso = btf
            .member_offset("mm_struct", &["context", "vdso"])
            .unwrap();
        assert!(vdso > 0 && vdso < 16384, "{vdso}");
        assert!(btf
            .member_offset("task_struct", &["no_such_member"])
            .is_err());
        assert!(btf.member_offset("no_such_struct", &["mm"]).is_err());
    }

    /// What the programs read to tell two processes with one PID apart
    /// (group_leader, start_time) and a process's last exiting thread.
    #[test]
    fn finds_the_process_start_time_and_live_threads() {
        let btf = KernelBtf::load().expect("this kernel has BTF");
        for (strukt, member) in [
            ("task_struct", "group_leader"),
            ("task_struct", "start_time"),
            ("task_struct", "signal"),
            ("signal_struct", "live"),
        ] {
            let offset = btf.member_offset(strukt, &[member]).unwrap();
            assert!(offset > 0 && offset < 16384, "{strukt}.{member}: {offset}");
            if let Some(expected) = bpftool_offset(strukt, member) {
                assert_eq!(offset, expected, "{strukt}.{member}");
            }
        }
    }
}
