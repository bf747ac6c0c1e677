//! SQLite allocating on mimalloc, the allocator of the rest of the server.
//!
//! SQLite allocates through the C library's `malloc` unless told otherwise before it starts.
//! With glibc, each of sqlx's SQLite threads got an arena of its own; a page of records (tens of
//! KiB, built by SQLite on that thread) was freed on the request's thread, and glibc then trimmed
//! the arena's heap back (`heap_trim`: an `mprotect` and a TLB shoot-down on the other core) only
//! to grow it again for the next page: 4.4 % of a list's CPU, besides glibc's own `malloc` and
//! `free` (docs/BENCHMARKS.md, session 19). mimalloc frees across threads without system calls.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::sync::Once;

use libmimalloc_sys as mi;
use libsqlite3_sys as ffi;

// SAFETY (the five functions below): SQLite calls them as its `sqlite3_mem_methods` contract
// says: sizes from 1 to under 2^31, and only pointers it got from `malloc`/`realloc` here,
// never freed twice. mimalloc returns memory aligned to at least 8 bytes, as SQLite requires.

unsafe extern "C" fn malloc(size: c_int) -> *mut c_void {
    // A negative size never comes (SQLite checks sizes first); it would get the smallest block.
    unsafe { mi::mi_malloc(usize::try_from(size).unwrap_or(0)) }
}

unsafe extern "C" fn free(block: *mut c_void) {
    unsafe { mi::mi_free(block) }
}

unsafe extern "C" fn realloc(block: *mut c_void, size: c_int) -> *mut c_void {
    unsafe { mi::mi_realloc(block, usize::try_from(size).unwrap_or(0)) }
}

/// The usable size of a block: at least what was asked for.
unsafe extern "C" fn size(block: *mut c_void) -> c_int {
    c_int::try_from(unsafe { mi::mi_usable_size(block) }).unwrap_or(c_int::MAX)
}

/// The size a request of `size` bytes really gets.
unsafe extern "C" fn roundup(size: c_int) -> c_int {
    let wanted = usize::try_from(size).unwrap_or(0);
    c_int::try_from(unsafe { mi::mi_good_size(wanted) }).unwrap_or(size)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// Points SQLite's allocations at mimalloc, once per process. It must run before SQLite's first
/// use in the process and while no other thread uses SQLite: [`super::Store::connect`] calls it
/// before it opens a SQLite connection, and everything in the server opens SQLite through it.
/// If SQLite was started already (a program that opened a SQLite database by other means first),
/// SQLite refuses the change and keeps the C library's allocator, which works as well.
pub fn use_mimalloc() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(malloc),
            xFree: Some(free),
            xRealloc: Some(realloc),
            xSize: Some(size),
            xRoundup: Some(roundup),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: `SQLITE_CONFIG_MALLOC` takes a pointer to a `sqlite3_mem_methods` and copies
        // it before returning; the functions it names are sound for SQLite's calls (above). The
        // `Once` keeps two threads of this process from configuring at the same time.
        let status = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            )
        };
        if status != ffi::SQLITE_OK {
            tracing::debug!(
                status,
                "SQLite had started already: it keeps the C library's allocator"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_allocates_from_mimalloc() {
        use_mimalloc();
        // SAFETY: a block from SQLite's allocator, checked and handed back to it.
        unsafe {
            let block = ffi::sqlite3_malloc(100);
            assert!(!block.is_null());
            assert!(
                mi::mi_is_in_heap_region(block),
                "SQLite's block does not come from mimalloc"
            );
            assert!(mi::mi_usable_size(block) >= 100);
            ffi::sqlite3_free(block);
        }
    }
}
