//! Keeping secrets out of core dumps and swap.
//!
//! Two defences: the daemon turns core dumps off for the whole process at start
//! ([`disable_core_dumps`]: no core file, and no ptrace attach by other processes of the same
//! user); and its long-lived secrets (the master key's and cached keys' AES key schedules, the
//! secret access keys and their signing keys, the audit log's context key) live in pages of
//! their own ([`Locked`], [`LockedText`]) that are excluded from any dump that is still taken
//! (`MADV_DONTDUMP`, which a debugger's `gcore` honours too) and locked in memory (`mlock`) so
//! they never reach swap. Per-request secrets (plaintexts, data keys) are short-lived, wiped
//! when dropped, and covered by the first defence.
//!
//! Locking is bounded by `RLIMIT_MEMLOCK`; past it a secret is still kept out of dumps, and
//! one warning says how to raise the limit (`LimitMEMLOCK=` in the systemd unit). Each
//! secret in a [`Locked`] takes at least one page (4 KiB): an access key or a session's
//! credentials two (the secret and its day's signing key). The sealed keystore's cached keys
//! share pages ([`LockedSlab`]), under 1 KiB each.
//!
//! This is the one module of the library with `unsafe` code: the system calls, and the page
//! allocations the secrets live in.

#![allow(unsafe_code)]

use std::alloc::Layout;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use zeroize::Zeroize;

/// Turns off core dumps for this process: `RLIMIT_CORE` (soft and hard) to 0, and on Linux
/// the process is made non-dumpable (`PR_SET_DUMPABLE` 0), which also stops other processes
/// of the same user from attaching a debugger or reading its memory.
pub fn disable_core_dumps() -> std::io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `setrlimit` only reads the struct, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether this process can dump core: false once [`disable_core_dumps`] has run.
pub fn core_dumps_possible() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the struct, which lives across the call.
    let limited = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } == 0
        && limit.rlim_cur == 0
        && limit.rlim_max == 0;
    #[cfg(target_os = "linux")]
    // SAFETY: PR_GET_DUMPABLE takes no pointer and returns the flag.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } != 0;
    #[cfg(not(target_os = "linux"))]
    let dumpable = true;
    !limited && dumpable
}

static MEMLOCK_WARNED: AtomicBool = AtomicBool::new(false);

fn page_size() -> usize {
    // SAFETY: `sysconf` takes an integer and returns one.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

/// Whole pages of their own, zeroed, out of core dumps and (within `RLIMIT_MEMLOCK`) locked.
/// Wiped, unlocked and freed on drop.
struct Pages {
    start: NonNull<u8>,
    layout: Layout,
}

impl Pages {
    fn new(size: usize, align: usize) -> Self {
        let page = page_size();
        let length = size.max(1).div_ceil(page) * page;
        let layout = Layout::from_size_align(length, align.max(page))
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::new::<u8>()));
        // SAFETY: the layout has a non-zero size.
        let start = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(start) = NonNull::new(start) else {
            std::alloc::handle_alloc_error(layout)
        };
        let pages = Self { start, layout };
        pages.protect();
        pages
    }

    fn protect(&self) {
        let (start, length) = (self.start.as_ptr().cast(), self.layout.size());
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a page-aligned range this value owns; MADV_DONTDUMP changes no contents.
            if unsafe { libc::madvise(start, length, libc::MADV_DONTDUMP) } != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "madvise(MADV_DONTDUMP) failed");
            }
        }
        // SAFETY: the range is owned by this value and mapped (just allocated).
        if unsafe { libc::mlock(start, length) } != 0
            && !MEMLOCK_WARNED.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot lock secrets in memory (RLIMIT_MEMLOCK too low?): they may be swapped \
                 out; they are still kept out of core dumps. Raise the limit (`ulimit -l`, or \
                 LimitMEMLOCK= in the systemd unit) to about 1 KiB per cached key and 8 KiB per \
                 access key or session"
            );
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `layout.size()` initialised bytes (zeroed at allocation,
        // or written since), owned by this value.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        let (start, length) = (self.start.as_ptr().cast(), self.layout.size());
        // SAFETY: the range was allocated by this value; unlocking a range that was never
        // locked is harmless, and no other value shares these pages.
        unsafe { libc::munlock(start, length) };
        // SAFETY: allocated with this layout in `Pages::new`, freed once.
        unsafe { std::alloc::dealloc(self.start.as_ptr(), self.layout) };
    }
}

/// A long-lived secret value (a cipher's key schedule, a key) in pages of its own, kept out
/// of core dumps and swap. Its bytes are wiped on drop, after the value's own `Drop` ran.
///
/// The value passes through the stack on its way in (as any returned value does).
pub struct Locked<T> {
    pages: Pages,
    _value: std::marker::PhantomData<T>,
}

// SAFETY: `Locked<T>` owns its `T` as a `Box<T>` would.
unsafe impl<T: Send> Send for Locked<T> {}
// SAFETY: shared access gives only `&T`.
unsafe impl<T: Sync> Sync for Locked<T> {}

impl<T> Locked<T> {
    pub fn new(value: T) -> Self {
        let pages = Pages::new(size_of::<T>(), align_of::<T>());
        // SAFETY: the pages are large enough and aligned for `T`, and hold no value yet.
        unsafe { pages.start.cast::<T>().as_ptr().write(value) };
        Self {
            pages,
            _value: std::marker::PhantomData,
        }
    }
}

impl<T> Deref for Locked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: written in `new`, dropped only in `drop`.
        unsafe { self.pages.start.cast::<T>().as_ref() }
    }
}

impl<T> Drop for Locked<T> {
    fn drop(&mut self) {
        // SAFETY: the value was written in `new` and is dropped once, here; `pages` then
        // wipes and frees the memory.
        unsafe { std::ptr::drop_in_place(self.pages.start.cast::<T>().as_ptr()) };
    }
}

impl<T> std::fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Many values of one type in shared pages, each kept as [`Locked`] keeps one alone (out of
/// core dumps, locked in memory): for caches of many small secrets. A cached key's schedule
/// is under a kilobyte, so a page of its own would be four times its size, and a miss would
/// pay for the page's allocation, `madvise`, `mlock` and `munlock`. The pages are taken a
/// chunk at a time ([`SLAB_CHUNK`]) and kept while any value or the slab lives; a value's
/// slot is wiped when the value is dropped, and used again.
pub struct LockedSlab<T> {
    slots: Arc<Mutex<Slots>>,
    _value: std::marker::PhantomData<fn() -> T>,
}

/// Bytes of pages a slab takes at a time.
pub const SLAB_CHUNK: usize = 64 * 1024;

/// A slab's pages and its free slots.
struct Slots {
    chunks: Vec<Pages>,
    free: Vec<NonNull<u8>>,
    /// A slot's bytes: the value's size, a multiple of its alignment.
    slot: usize,
    align: usize,
}

// SAFETY: the pointers are into pages the value owns; they are handed out only through
// `LockedSlab::put`, whose `InSlab` gives them back.
unsafe impl Send for Slots {}

impl Slots {
    /// Takes another chunk of pages and frees its slots.
    fn grow(&mut self) {
        let pages = Pages::new(SLAB_CHUNK.max(self.slot), self.align);
        let count = pages.layout.size() / self.slot;
        for at in (0..count).rev() {
            // SAFETY: `at * slot` is within the chunk (`count` slots fit in it).
            let slot = unsafe { pages.start.add(at * self.slot) };
            self.free.push(slot);
        }
        self.chunks.push(pages);
    }
}

/// A value in a [`LockedSlab`]'s pages; its slot is wiped and freed on drop, after the value's
/// own `Drop` ran.
pub struct InSlab<T> {
    value: NonNull<T>,
    slots: Arc<Mutex<Slots>>,
}

// SAFETY: `InSlab<T>` owns its `T` as a `Box<T>` would; the slab is shared behind a mutex.
unsafe impl<T: Send> Send for InSlab<T> {}
// SAFETY: shared access gives only `&T`.
unsafe impl<T: Sync> Sync for InSlab<T> {}

fn lock_slots(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    match slots.lock() {
        Ok(slots) => slots,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl<T> Default for LockedSlab<T> {
    fn default() -> Self {
        let align = align_of::<T>();
        Self {
            slots: Arc::new(Mutex::new(Slots {
                chunks: Vec::new(),
                free: Vec::new(),
                slot: slot_len::<T>(),
                align,
            })),
            _value: std::marker::PhantomData,
        }
    }
}

impl<T> LockedSlab<T> {
    /// Moves `value` into a free slot (taking another chunk when none is free).
    pub fn put(&self, value: T) -> InSlab<T> {
        let slot = {
            let mut slots = lock_slots(&self.slots);
            if slots.free.is_empty() {
                slots.grow();
            }
            slots.free.pop()
        };
        let Some(slot) = slot else {
            std::alloc::handle_alloc_error(Layout::new::<T>())
        };
        let at = slot.cast::<T>();
        // SAFETY: the slot is free (no value lives in it), aligned and large enough for `T`.
        unsafe { at.as_ptr().write(value) };
        InSlab {
            value: at,
            slots: self.slots.clone(),
        }
    }

    /// Bytes of pages taken so far.
    pub fn taken(&self) -> usize {
        lock_slots(&self.slots)
            .chunks
            .iter()
            .map(|c| c.layout.size())
            .sum()
    }
}

impl<T> Deref for InSlab<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: written in `LockedSlab::put`, dropped only in `drop`.
        unsafe { self.value.as_ref() }
    }
}

impl<T> Drop for InSlab<T> {
    fn drop(&mut self) {
        // SAFETY: the value was written in `put` and is dropped once, here; then its slot's
        // bytes are wiped (the slot is this many bytes long, as `LockedSlab::default` sized
        // it), and only then is the slot free again. Both outside the slab's lock.
        unsafe {
            std::ptr::drop_in_place(self.value.as_ptr());
            std::slice::from_raw_parts_mut(self.value.as_ptr().cast::<u8>(), slot_len::<T>())
                .zeroize();
        }
        lock_slots(&self.slots).free.push(self.value.cast());
    }
}

/// A slot's bytes for a `T`: its size, a multiple of its alignment.
fn slot_len<T>() -> usize {
    size_of::<T>().max(1).next_multiple_of(align_of::<T>())
}

impl<T> std::fmt::Debug for InSlab<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Secret text (a secret access key) in pages of its own, as [`Locked`].
pub struct LockedText {
    pages: Pages,
    len: usize,
}

// SAFETY: plain bytes, owned.
unsafe impl Send for LockedText {}
// SAFETY: shared access gives only `&str`.
unsafe impl Sync for LockedText {}

impl LockedText {
    /// Copies `text` in; the caller wipes its own copy.
    pub fn new(text: &str) -> Self {
        let mut pages = Pages::new(text.len(), 1);
        pages.bytes_mut()[..text.len()].copy_from_slice(text.as_bytes());
        Self {
            pages,
            len: text.len(),
        }
    }

    pub fn expose(&self) -> &str {
        // SAFETY: the first `len` bytes are initialised (copied in `new`) and not written since.
        let bytes = unsafe { std::slice::from_raw_parts(self.pages.start.as_ptr(), self.len) };
        // Copied from a `&str`, so always UTF-8.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl std::fmt::Debug for LockedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn locked_values_read_back_and_are_dropped_once() {
        struct Counted(Arc<AtomicUsize>, [u8; 100]);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let locked = Locked::new(Counted(drops.clone(), [7; 100]));
        assert_eq!(locked.1, [7; 100]);
        assert_eq!(
            (&*locked as *const Counted as usize) % page_size(),
            0,
            "a page of its own"
        );
        assert_eq!(format!("{locked:?}"), "[redacted]");
        drop(locked);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        let big = Locked::new([9u8; 10_000]);
        assert!(big.iter().all(|b| *b == 9));
        let text = LockedText::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        assert_eq!(text.expose(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        assert_eq!(LockedText::new("").expose(), "");
        assert_eq!(format!("{text:?}"), "[redacted]");
    }

    #[test]
    fn slab_values_share_pages_read_back_and_are_dropped_once() {
        struct Counted(Arc<AtomicUsize>, [u8; 500]);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let slab = LockedSlab::default();
        let values: Vec<InSlab<Counted>> = (0..300u32)
            .map(|i| slab.put(Counted(drops.clone(), [i as u8; 500])))
            .collect();
        // 300 values of 512 bytes (500 and the counter's pointer) in three 64 KiB chunks.
        assert_eq!(slab.taken(), 3 * SLAB_CHUNK);
        for (i, value) in values.iter().enumerate() {
            assert_eq!(value.1, [i as u8; 500]);
        }
        let address = |v: &InSlab<Counted>| &**v as *const Counted as usize;
        assert_eq!(address(&values[1]) - address(&values[0]), 512);
        assert_eq!(format!("{:?}", values[0]), "[redacted]");
        let freed = address(&values[7]);
        let mut values = values;
        drop(values.remove(7));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // The freed slot is used again, before any other.
        let again = slab.put(Counted(drops.clone(), [1; 500]));
        assert_eq!(address(&again), freed);
        assert_eq!(again.1, [1; 500]);
        drop(values);
        drop(slab);
        assert_eq!(drops.load(Ordering::SeqCst), 300);
        // The value outlives its slab.
        assert_eq!(again.1, [1; 500]);
        drop(again);
        assert_eq!(drops.load(Ordering::SeqCst), 301);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn slab_pages_are_marked_dont_dump_and_locked() {
        let slab = LockedSlab::default();
        let value = slab.put([1u8; 64]);
        let flags = mapping_flags(&*value as *const [u8; 64] as usize);
        assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
        assert!(flags.split_whitespace().any(|f| f == "lo"), "{flags}");
    }

    /// The VmFlags of the mapping holding `address`.
    #[cfg(target_os = "linux")]
    fn mapping_flags(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((from, to)) = range.split_once('-')
                && let (Ok(from), Ok(to)) = (
                    usize::from_str_radix(from, 16),
                    usize::from_str_radix(to, 16),
                )
            {
                inside = (from..to).contains(&address);
            } else if inside && let Some(found) = line.strip_prefix("VmFlags:") {
                flags = Some(found.to_owned());
            }
        }
        flags.expect("the value's mapping is in smaps")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn locked_pages_are_marked_dont_dump_and_locked() {
        let locked = Locked::new([1u8; 64]);
        // The mapping holding the value: its VmFlags include dd (do not dump) and lo (locked).
        let flags = mapping_flags(&*locked as *const [u8; 64] as usize);
        assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
        // Locked too (lo), within RLIMIT_MEMLOCK.
        assert!(flags.split_whitespace().any(|f| f == "lo"), "{flags}");
    }
}
