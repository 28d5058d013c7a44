//! The allocator of the `weir` binary: mimalloc on the threads that serve traffic, the
//! system allocator (glibc's malloc) everywhere else.
//!
//! The two halves of weir allocate differently. Serving a request allocates and frees a
//! dozen short-lived blocks; under HTTP/2, with hundreds of streams in flight, glibc's malloc
//! and free took 17% of weir's user time, and mimalloc on the traffic thread serves 9% more
//! HTTP/2 and 3% more HTTP/1.1 requests per CPU-second (BENCHMARKS.md). Loading a config is
//! the other half: parsing and compiling a large config allocates several times what the
//! served snapshot keeps, interleaved with it. glibc packs what stays and `malloc_trim`
//! returns the pages in between; mimalloc keeps any 64 KiB page that still holds one live
//! block, which cost 35% more memory per cluster. So each thread picks: a thread that called
//! [`serve_traffic_on_this_thread`] allocates from mimalloc, any other from glibc, and a block
//! is freed (or resized) by the allocator that owns its address, whichever thread frees it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Once;

use mimalloc::MiMalloc;

thread_local! {
    /// Set on traffic threads. A constant initialiser and a type without `Drop`: reading it
    /// never allocates nor registers a destructor, so the allocator itself may read it.
    static TRAFFIC: Cell<bool> = const { Cell::new(false) };
}

/// From now on, blocks this thread allocates come from mimalloc (see the module docs).
/// Called by each thread of the traffic runtime; a no-op unless [`SplitAlloc`] is the
/// global allocator.
pub fn serve_traffic_on_this_thread() {
    static CONFIGURE: Once = Once::new();
    CONFIGURE.call_once(|| {
        #[allow(unsafe_code)]
        // SAFETY: sets an option value; called before this thread's first mimalloc
        // allocation, and mimalloc reads the option when it next reserves an arena.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    });
    TRAFFIC.with(|t| t.set(true));
}

/// `mi_option_arena_eager_commit` in mimalloc 3's `mimalloc.h` (libmimalloc-sys has no
/// constant for it). On Linux mimalloc commits each arena it reserves at once: 4 MiB more
/// idle RSS for weir. Off, pages are committed as they are used.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

fn on_traffic_thread() -> bool {
    // During a thread's teardown the key may be gone: that thread allocates from glibc.
    TRAFFIC.try_with(Cell::get).unwrap_or(false)
}

/// Whether mimalloc owns `ptr` (else glibc does). A lookup in mimalloc's page map: a
/// pointer never handed out by mimalloc is outside every page it registered.
fn owned_by_mimalloc(ptr: *mut u8) -> bool {
    #[allow(unsafe_code)]
    // SAFETY: `mi_is_in_heap_region` only reads mimalloc's page map (and answers false
    // before mimalloc has allocated anything); it never dereferences `ptr`.
    unsafe {
        libmimalloc_sys::mi_is_in_heap_region(ptr.cast::<c_void>().cast_const())
    }
}

/// The global allocator of the `weir` binary: `#[global_allocator] static A: SplitAlloc = SplitAlloc;`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitAlloc;

#[allow(unsafe_code)]
// SAFETY: each call is forwarded unchanged to one of two allocators that uphold
// `GlobalAlloc`'s contract. New blocks come from the allocator this thread uses;
// `dealloc` and `realloc` go to the allocator that owns the block's address, which is
// the one that allocated it (mimalloc's page map covers exactly the blocks mimalloc
// handed out and glibc never places a block inside them), with the same layout.
unsafe impl GlobalAlloc for SplitAlloc {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees (non-zero size) are passed on unchanged.
        unsafe { if on_traffic_thread() { MiMalloc.alloc(layout) } else { System.alloc(layout) } }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { if on_traffic_thread() { MiMalloc.alloc_zeroed(layout) } else { System.alloc_zeroed(layout) } }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator with `layout`, so by the half that owns it.
        unsafe { if owned_by_mimalloc(ptr) { MiMalloc.dealloc(ptr, layout) } else { System.dealloc(ptr, layout) } }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the block stays with the allocator that owns it.
        unsafe {
            if owned_by_mimalloc(ptr) {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, grows, shrinks and frees through `SplitAlloc` directly (tests run under
    /// the default allocator), on a traffic thread and on another, and frees each side's
    /// blocks on the other thread.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_go_back_to_the_allocator_that_owns_them() {
        let a = SplitAlloc;
        let sizes = [1usize, 24, 1000, 2448, 9000, 1 << 20];
        let make = |traffic: bool| {
            std::thread::spawn(move || {
                if traffic {
                    serve_traffic_on_this_thread();
                }
                sizes
                    .iter()
                    .map(|&n| {
                        let layout = Layout::from_size_align(n, if n > 1000 { 64 } else { 8 }).expect("layout");
                        // SAFETY: non-zero sizes.
                        let p = unsafe { a.alloc_zeroed(layout) };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % layout.align(), 0);
                        assert_eq!(owned_by_mimalloc(p), traffic, "{n} bytes, traffic thread: {traffic}");
                        // SAFETY: `p` holds `n` initialised (zeroed) bytes.
                        unsafe { p.add(n - 1).write(0xA5) };
                        (p as usize, layout)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let fast = make(true).join().expect("traffic thread");
        let slow = make(false).join().expect("other thread");
        assert!(!owned_by_mimalloc(std::ptr::null_mut()));
        // Each side's blocks are resized and freed on a thread of the other kind.
        let free = move |blocks: Vec<(usize, Layout)>, mimalloc: bool| {
            std::thread::spawn(move || {
                if !mimalloc {
                    serve_traffic_on_this_thread();
                }
                for (p, layout) in blocks {
                    let p = p as *mut u8;
                    // SAFETY: allocated above with `layout`; grown, then shrunk, then freed once.
                    unsafe {
                        assert_eq!(p.add(layout.size() - 1).read(), 0xA5);
                        let grown = a.realloc(p, layout, layout.size() * 2);
                        assert!(!grown.is_null());
                        assert_eq!(owned_by_mimalloc(grown), mimalloc);
                        assert_eq!(grown.add(layout.size() - 1).read(), 0xA5);
                        let bigger = Layout::from_size_align(layout.size() * 2, layout.align()).expect("layout");
                        let shrunk = a.realloc(grown, bigger, layout.size());
                        assert_eq!(owned_by_mimalloc(shrunk), mimalloc);
                        a.dealloc(shrunk, layout);
                    }
                }
            })
        };
        free(fast, true).join().expect("free mimalloc blocks on another thread");
        free(slow, false).join().expect("free glibc blocks on a traffic thread");
    }

    /// `MI_OPTION_ARENA_EAGER_COMMIT` is an index into mimalloc 3's option list: a major
    /// update of the bundled mimalloc must check it against `mimalloc.h` again.
    #[test]
    #[allow(unsafe_code)]
    fn the_bundled_mimalloc_is_version_3() {
        // SAFETY: no arguments, no preconditions.
        let v = unsafe { libmimalloc_sys::mi_version() };
        assert_eq!(v / 10_000, 3, "mimalloc {v}: check MI_OPTION_ARENA_EAGER_COMMIT");
    }
}
