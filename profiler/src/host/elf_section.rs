//! Reading an ELF section of a file anyone may have written.

use object::ObjectSection;

/// A section's bytes, uncompressed, unless its declared size passes `max`:
/// the file may be anyone's, and a compressed section's header names any
/// size it likes (what would be allocated before decompressing).
pub fn bounded_data<'data, S: ObjectSection<'data>>(
    section: &S,
    max: u64,
) -> Option<std::borrow::Cow<'data, [u8]>> {
    let compressed = section.compressed_data().ok()?;
    if compressed.uncompressed_size > max {
        return None;
    }
    compressed.decompress().ok()
}
