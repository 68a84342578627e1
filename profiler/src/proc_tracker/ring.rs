//! The side-band's ring reader: one host-wide perf event per CPU that
//! reports mmaps, comm/exec, forks and exits, and its mmapped ring buffer,
//! drained in time order across CPUs. The only unsafe code of the side-band.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::{io, mem, ptr, slice};

use anyhow::{anyhow, bail, Result};
use byteorder::NativeEndian;
use linux_perf_event_reader::{
    Endianness, PerfEventAttr, RawData, RawEventRecord, RecordParseInfo, RecordType,
};

use crate::host::perf_event::{self, sys};

/// 256 KiB per CPU: room for well over a hundred execs per CPU between two drains.
pub const DEFAULT_DATA_PAGES: usize = 64;
const HEADER_SIZE: usize = 8;

/// The side-band events of every online CPU.
pub struct Rings {
    rings: Vec<Ring>,
}

impl Rings {
    /// Opens one event per online CPU with `data_pages` (a power of two)
    /// ring-buffer pages each. Needs root/CAP_PERFMON.
    pub fn open(data_pages: usize) -> Result<Rings> {
        if !data_pages.is_power_of_two() {
            bail!("the side-band ring buffer needs a power-of-two page count, not {data_pages}");
        }
        let rings = crate::host::facts::online_cpus()?
            .into_iter()
            .map(|cpu| Ring::open(cpu, data_pages))
            .collect::<Result<_>>()?;
        Ok(Rings { rings })
    }

    /// Hands every settled record to `apply`, oldest first, and counts in
    /// `lost` the records the kernel dropped or that could not be read.
    ///
    /// Each CPU has its own ring, but one process's records can land on several CPUs
    /// (the parent forks on one, the child execs on the other; exec itself may migrate).
    /// Records therefore carry a timestamp and are applied in time order across rings.
    /// Records newer than the drain's start wait for the next drain, because an older
    /// record on another ring might not have been published yet.
    pub fn drain(&mut self, lost: &mut u64, mut apply: impl FnMut(RawEventRecord<'_>)) {
        let limit = monotonic_ns();
        let mut pending = Vec::new();
        let mut stops = Vec::with_capacity(self.rings.len());
        for (index, ring) in self.rings.iter().enumerate() {
            stops.push(ring.collect(index, limit, &mut pending, lost));
        }
        // Stable sort: equal timestamps keep their order within a ring.
        pending.sort_by_key(|&(time, index, _)| (time, index));
        for (_, _, record) in pending {
            apply(record);
        }
        for (ring, stop) in self.rings.iter_mut().zip(stops) {
            ring.release(stop);
        }
    }
}

/// What each CPU's event reports: mmaps (with device and inode), comm and
/// exec, fork and exit, each stamped with the monotonic clock.
fn side_band_attr() -> sys::perf_event_attr {
    let mut attr = perf_event::attr(sys::PERF_TYPE_SOFTWARE, sys::PERF_COUNT_SW_DUMMY.into());
    attr.sample_type = sys::PERF_SAMPLE_TIME.into();
    // Same clock as `monotonic_ns`, so drain can tell which records are settled.
    attr.clockid = libc::CLOCK_MONOTONIC;
    attr.set_mmap(1);
    // Without attr.build_id, MMAP2 records carry the device and inode
    // that mapped files are checked against.
    attr.set_mmap2(1);
    attr.set_comm(1);
    attr.set_comm_exec(1);
    attr.set_task(1);
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr
}

/// The record layout (where sample_id_all puts the timestamp) that `attr`
/// gives, worked out by linux-perf-event-reader from the very bytes the
/// kernel is handed.
fn parse_info(attr: &sys::perf_event_attr) -> Result<RecordParseInfo> {
    // SAFETY: perf_event_attr is a C struct of naturally aligned integers,
    // without padding, that the kernel itself reads as `size` bytes.
    let bytes = unsafe {
        slice::from_raw_parts(
            ptr::from_ref(attr).cast::<u8>(),
            mem::size_of::<sys::perf_event_attr>(),
        )
    };
    let (attr, _) = PerfEventAttr::parse::<_, NativeEndian>(bytes)
        .map_err(|err| anyhow!("could not read back the side-band event's attributes: {err}"))?;
    Ok(RecordParseInfo::new(&attr, Endianness::NATIVE))
}

pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One CPU's side-band event and its mmapped ring buffer.
struct Ring {
    _fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    page_size: usize,
    data_size: u64,
    tail: u64,
    /// Where each record keeps its timestamp, as the attributes put it there.
    info: RecordParseInfo,
}

// SAFETY: the mapping is owned by this Ring alone and the kernel side is synchronized
// through data_head/data_tail, so moving it to another thread is sound.
unsafe impl Send for Ring {}

impl Ring {
    fn open(cpu: u32, data_pages: usize) -> Result<Self> {
        let mut attr = side_band_attr();
        let info = parse_info(&attr)?;
        let fd = perf_event::open_on_cpu(&mut attr, cpu).map_err(|err| {
            anyhow!(
                "opening the process-tracking perf event on CPU {cpu} failed ({err}); \
                 run as root or with CAP_PERFMON"
            )
        })?;
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map_len = (1 + data_pages) * page_size;
        // SAFETY: a fresh shared mapping of the perf fd; checked for failure below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            bail!("mapping the perf ring buffer of CPU {cpu} failed ({err}); raise `ulimit -l` or kernel.perf_event_mlock_kb");
        }
        Ok(Self {
            _fd: fd,
            base: base.cast(),
            map_len,
            page_size,
            data_size: (data_pages * page_size) as u64,
            tail: 0,
            info,
        })
    }

    fn control(&self) -> *mut sys::perf_event_mmap_page {
        self.base.cast()
    }

    /// The `len` (at most data_size) bytes at ring position `pos`, in one or two pieces.
    /// Only for bytes between data_tail and data_head, which the kernel leaves alone
    /// until `release`; no reference ever covers the part the kernel is writing.
    fn bytes(&self, pos: u64, len: usize) -> RawData<'_> {
        let start = (pos % self.data_size) as usize;
        let first_len = len.min(self.data_size as usize - start);
        // SAFETY: both pieces lie inside the data area that follows the control page.
        unsafe {
            let data = self.base.add(self.page_size);
            let first = slice::from_raw_parts(data.add(start), first_len);
            match len - first_len {
                0 => RawData::Single(first),
                rest => RawData::Split(first, slice::from_raw_parts(data, rest)),
            }
        }
    }

    /// Pushes (time, ring index, record) for each record up to `limit`, and returns the
    /// position up to which the ring may be released once they have been applied.
    fn collect<'a>(
        &'a self,
        index: usize,
        limit: u64,
        out: &mut Vec<(u64, usize, RawEventRecord<'a>)>,
        lost: &mut u64,
    ) -> u64 {
        // SAFETY: data_head is a u64 in the control page, which the kernel updates
        // atomically; Acquire makes the record bytes before it visible.
        let head = unsafe {
            (*ptr::addr_of!((*self.control()).data_head).cast::<AtomicU64>())
                .load(Ordering::Acquire)
        };
        let mut pos = self.tail;
        while pos < head {
            let mut header = [0u8; HEADER_SIZE];
            let size = match self.bytes(pos, HEADER_SIZE).read_exact(&mut header) {
                Ok(()) => u64::from(u16::from_ne_bytes([header[6], header[7]])),
                Err(_) => 0,
            };
            if size < HEADER_SIZE as u64
                || !size.is_multiple_of(8)
                || size > self.data_size
                || pos + size > head
            {
                // Without a trustworthy size there is no next record to find.
                *lost += 1;
                return head;
            }
            let record_type = RecordType(u32::from_ne_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            let misc = u16::from_ne_bytes([header[4], header[5]]);
            if record_type.is_builtin_type() {
                let body = self.bytes(pos + HEADER_SIZE as u64, size as usize - HEADER_SIZE);
                let record = RawEventRecord::new(record_type, misc, body, self.info);
                match record.timestamp() {
                    Some(time) if time > limit => return pos,
                    Some(time) => out.push((time, index, record)),
                    None => *lost += 1,
                }
            }
            pos += size;
        }
        pos
    }

    fn release(&mut self, stop: u64) {
        self.tail = stop;
        // SAFETY: as for data_head; Release keeps our reads before the kernel reuses the space.
        unsafe {
            (*ptr::addr_of!((*self.control()).data_tail).cast::<AtomicU64>())
                .store(stop, Ordering::Release)
        };
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/map_len describe the mapping created in `open`; the fd closes after.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linux_perf_event_reader::SampleFormat;

    /// Every record ends in its u64 timestamp: nothing else is asked for.
    #[test]
    fn records_end_in_their_timestamp() {
        let info = parse_info(&side_band_attr()).unwrap();
        assert_eq!(info.sample_format, SampleFormat::TIME);
        assert_eq!(info.common_data_offset_from_end, Some(8));
        assert_eq!(info.nonsample_record_time_offset_from_end, Some(8));
        assert_eq!(info.sample_record_time_offset_from_start, Some(0));
        assert_eq!(info.id_parse_info.nonsample_record_id_offset_from_end, None);
    }
}
