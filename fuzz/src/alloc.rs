//! Allocation measurement: [`CountingAlloc`], a global allocator that counts the bytes
//! a decoder under test holds, and the helpers a checker measures a call with and
//! bounds its peak by.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A global allocator that forwards to [`System`] and counts, per thread, the bytes
/// allocated while a decoder under test runs. Install it in the fuzzing binary:
///
/// ```
/// #[global_allocator]
/// static ALLOC: anytls_fuzz::CountingAlloc = anytls_fuzz::CountingAlloc;
/// # fn main() {}
/// ```
pub struct CountingAlloc;

static ALLOC_SEEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Whether [`CountingAlloc`] is installed (it has seen an allocation).
pub(crate) fn measured() -> bool {
    ALLOC_SEEN.load(Ordering::Relaxed)
}

/// Stops counting on this thread: after a case, which a panic may have left inside
/// [`measure`].
pub(crate) fn stop_tracking() {
    TRACKING.set(false);
}

fn note_alloc(delta: isize) {
    if !ALLOC_SEEN.load(Ordering::Relaxed) {
        ALLOC_SEEN.store(true, Ordering::Relaxed);
    }
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every method forwards to `System` with its arguments unchanged; the counting
// only touches const-initialised, destructor-free thread-locals, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_alloc(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// What one case measured besides its outcome.
#[derive(Default)]
pub(crate) struct CaseStats {
    /// Most bytes one measured call had allocated at once.
    pub(crate) alloc_peak: usize,
    /// Padding: the most record bytes one write could be shaped into.
    pub(crate) shape_bound: usize,
}

/// Runs a decoder counting its allocations: returns its result and the peak bytes it
/// held, and keeps the largest peak of the case in `stats`.
pub(crate) fn measure<R>(stats: &mut CaseStats, f: impl FnOnce() -> R) -> (R, usize) {
    let (out, peak) = measure_aside(f);
    stats.alloc_peak = stats.alloc_peak.max(peak);
    (out, peak)
}

/// [`measure`] for a call whose allocations follow from something else than the input
/// (the records [`padding::shape`](anytls::proto::padding::shape) builds for a payload):
/// not kept in the case's stats.
pub(crate) fn measure_aside<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let out = f();
    TRACKING.set(false);
    (out, PEAK.get().max(0) as usize)
}

/// Fails a check with an `alloc:` message when `peak` exceeds `bound`.
pub(crate) fn alloc_within(
    what: &str,
    peak: usize,
    bound: usize,
    input_len: usize,
) -> Result<(), String> {
    if peak > bound {
        return Err(format!(
            "alloc: {what} held {peak} bytes for a {input_len}-byte input (bound {bound})"
        ));
    }
    Ok(())
}
