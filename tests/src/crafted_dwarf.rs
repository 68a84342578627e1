//! DWARF as a hostile user writes it, for the hostile-users suite and the
//! bench's hostile soak (xtask includes this file by path: the tests' library
//! builds Go fixtures in its build script, which xtask must not need).
//! Plain std, so it compiles in both crates.

/// DWARF as a hostile user writes it: one compile unit holding a function
/// over `[low, low + size)` whose inlined calls nest `depth` deep, each
/// covering the same range. (`.debug_info`, `.debug_abbrev`.)
pub fn deeply_inlined_dwarf(low: u64, size: u64, depth: usize) -> (Vec<u8>, Vec<u8>) {
    // DW_AT_low_pc (0x11) as DW_FORM_addr (0x01), DW_AT_high_pc (0x12) as
    // DW_FORM_data8 (0x07), DW_AT_name (0x03) as DW_FORM_string (0x08).
    let abbrev = vec![
        1, 0x11, 1, 0x11, 0x01, 0x12, 0x07, 0, 0, // compile unit
        2, 0x2e, 1, 0x03, 0x08, 0x11, 0x01, 0x12, 0x07, 0, 0, // subprogram
        3, 0x1d, 1, 0x11, 0x01, 0x12, 0x07, 0, 0, // inlined subroutine
        0,
    ];
    let range = |entries: &mut Vec<u8>| {
        entries.extend_from_slice(&low.to_le_bytes());
        entries.extend_from_slice(&size.to_le_bytes());
    };
    let mut entries = vec![1];
    range(&mut entries);
    entries.push(2);
    entries.extend_from_slice(b"deep\0");
    range(&mut entries);
    for _ in 0..depth {
        entries.push(3);
        range(&mut entries);
    }
    entries.extend(std::iter::repeat_n(0u8, depth + 2));
    let mut info = Vec::new();
    info.extend_from_slice(&((2 + 4 + 1 + entries.len()) as u32).to_le_bytes());
    info.extend_from_slice(&4u16.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    info.push(8);
    info.extend_from_slice(&entries);
    (info, abbrev)
}
