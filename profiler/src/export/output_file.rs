//! An output file that appears whole or not at all: it is created next to its
//! destination when the recording starts (so an unwritable path fails before
//! any probe is attached) and renamed into place once complete. Dropped
//! uncommitted, it removes itself.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct OutputFile {
    destination: PathBuf,
    /// None when the destination is not a regular file (/dev/null, a FIFO):
    /// those are written in place, as renaming over them would be wrong.
    temporary: Option<PathBuf>,
    file: Option<File>,
}

impl OutputFile {
    pub fn create(destination: &Path) -> Result<OutputFile> {
        let special = std::fs::metadata(destination)
            .map(|m| !m.is_file())
            .unwrap_or(false);
        let describe = |err: std::io::Error| {
            anyhow::anyhow!(
                "cannot write the output file {}: {err}",
                destination.display()
            )
        };
        if special {
            let file = OpenOptions::new()
                .write(true)
                .open(destination)
                .map_err(describe)?;
            return Ok(OutputFile {
                destination: destination.to_path_buf(),
                temporary: None,
                file: Some(file),
            });
        }
        let name = destination
            .file_name()
            .with_context(|| format!("the output path {} names no file", destination.display()))?;
        let temporary = destination.with_file_name(format!(
            ".{}.clockprof-{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(describe)?;
        Ok(OutputFile {
            destination: destination.to_path_buf(),
            temporary: Some(temporary),
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.destination
    }

    /// Writes `contents` and moves the file into place.
    pub fn commit(mut self, contents: &[u8]) -> Result<()> {
        let mut file = self.file.take().expect("an output file is committed once");
        let context = || format!("could not write {}", self.destination.display());
        file.write_all(contents).with_context(context)?;
        file.sync_all().ok();
        if let Some(temporary) = self.temporary.take() {
            if let Err(err) = std::fs::rename(&temporary, &self.destination) {
                let _ = std::fs::remove_file(&temporary);
                return Err(err).with_context(context);
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(temporary) = &self.temporary {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clockprof-out-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn appears_only_when_committed() {
        let dir = scratch_dir("commit");
        let path = dir.join("p.folded");
        let out = OutputFile::create(&path).unwrap();
        assert!(!path.exists());
        out.commit(b"a;b 1\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a;b 1\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leaves_nothing_when_dropped() {
        let dir = scratch_dir("drop");
        drop(OutputFile::create(&dir.join("p.svg")).unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unwritable_destination_fails_at_once() {
        let err = OutputFile::create(Path::new("/nonexistent-dir/p.svg"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("cannot write the output file"),
            "{err}"
        );
    }
}
