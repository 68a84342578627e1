//! The vDSO, named from this kernel's own image.

/// The vDSO has no file: this kernel's image, copied from our own address
/// space (every process maps the same one) into an anonymous memory file,
/// stands in. blazesym reads it by its /proc/self/fd path; no name exists in
/// any directory, so nothing can be planted there and nothing is left
/// behind, whatever way clockprof exits.
pub(super) const VDSO: &str = "[vdso]";

pub(super) struct VdsoImage(std::fs::File);

impl VdsoImage {
    pub(super) fn dump() -> Option<VdsoImage> {
        let image = crate::host::facts::own_vdso_image()?;
        // The system call, not glibc's memfd_create (2.27): the shipped binary
        // needs only glibc 2.26 (docs/packaging.md), and every kernel clockprof
        // runs on (5.10 up) has the call.
        // SAFETY: a valid NUL-terminated name; the flags are known to memfd_create.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_memfd_create,
                c"clockprof-vdso".as_ptr(),
                libc::MFD_CLOEXEC,
            )
        };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: memfd_create just returned this descriptor, owned by nobody else.
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        std::io::Write::write_all(&mut file, &image).ok()?;
        Some(VdsoImage(file))
    }

    pub(super) fn path(&self) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        std::path::PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use blazesym::symbolize::source::{Elf, Source as BlazeSource};
    use blazesym::symbolize::{Input, Symbolizer};

    use super::super::lookup::names_of;
    use super::*;

    #[test]
    fn vdso_image_is_a_symbolizable_elf_in_memory() {
        let image = VdsoImage::dump().expect("this process has a vDSO");
        let path = image.path();
        let target = std::fs::read_link(&path).unwrap();
        assert!(
            target
                .to_string_lossy()
                .starts_with("/memfd:clockprof-vdso"),
            "{target:?}"
        );
        let symbolizer = Symbolizer::new();
        let source = BlazeSource::Elf(Elf::new(&path));
        // Symbolize every offset of the image: clock_gettime lives somewhere in it.
        let size = std::fs::metadata(&path).unwrap().len();
        let offsets: Vec<u64> = (0..size).step_by(16).collect();
        let names: Vec<String> = symbolizer
            .symbolize(&source, Input::FileOffset(&offsets))
            .unwrap()
            .iter()
            .filter_map(|s| names_of(s))
            .flatten()
            .collect();
        assert!(
            names.iter().any(|n| n.contains("clock_gettime")),
            "{names:?}"
        );
        drop(image);
        assert!(!path.exists());
    }
}
