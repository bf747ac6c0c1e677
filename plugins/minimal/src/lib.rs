//! The smallest hook the contract allows, for the invocation benchmark only: no standard
//! library (so the component imports no WASI at all and has a single core instance), a bump
//! allocator (every invocation gets a fresh instance, so nothing is ever freed), and a `before`
//! hook that proceeds without reading its event. It measures what the sandbox itself costs per
//! invocation on this engine, apart from any guest work. Not a model for real plugins: use
//! `rapport-sdk`.
// Only a WebAssembly build has anything in it (`cargo test` in `plugins/` runs natively).
#![cfg(target_arch = "wasm32")]
#![cfg_attr(not(test), no_std)]
// A global allocator and a panic handler cannot be written without `unsafe`.
#![allow(unsafe_code)]

extern crate alloc;
// The generated bindings name `std::error::Error` and `std::fmt`, which `core` provides.
extern crate core as std;

use alloc::string::String;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

wit_bindgen::generate!({
    path: "../../wit/v0.1.0",
    world: "hook-plugin",
});

use exports::rapport::plugin::hooks::{Guest, Outcome, RecordEvent};

struct Minimal;

impl Guest for Minimal {
    fn handle(_event: RecordEvent) -> Result<Outcome, String> {
        Ok(Outcome::Proceed)
    }
}

export!(Minimal);

/// Hands out memory from the heap the linker leaves after the static data, growing the linear
/// memory only when that runs out.
struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a component instance runs on one thread.
unsafe impl Sync for Bump {}

const PAGE: usize = 65_536;

unsafe extern "C" {
    /// Where the linker ends the static data: the heap begins here.
    static __heap_base: u8;
}

// SAFETY: every returned block is aligned, inside memory the instance owns, and never reused.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.end.get() == 0 {
            // First use: the heap starts where the linker put it, and the initial memory's
            // pages after that are free. Growing the memory on every invocation would make the
            // host change the slot's page protection twice per call (grow, then reset).
            self.next.set(core::ptr::addr_of!(__heap_base) as usize);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        let start = (self.next.get() + layout.align() - 1) & !(layout.align() - 1);
        let end = start + layout.size();
        if end > self.end.get() {
            let pages = layout.size().div_ceil(PAGE) + 1;
            let previous = core::arch::wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return core::ptr::null_mut();
            }
            self.next.set(previous * PAGE);
            self.end.set((previous + pages) * PAGE);
            return unsafe { self.alloc(layout) };
        }
        self.next.set(end);
        start as *mut u8
    }

    unsafe fn dealloc(&self, _block: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: Cell::new(0),
    end: Cell::new(0),
};

/// The canonical ABI's allocator: the host calls it to copy the event into the instance.
///
/// # Safety
/// Called by the host only, with `old`/`old_len` from an earlier call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    let Ok(layout) = Layout::from_size_align(new_len, align) else {
        core::arch::wasm32::unreachable()
    };
    let new = unsafe { ALLOCATOR.alloc(layout) };
    if new.is_null() {
        core::arch::wasm32::unreachable()
    }
    if !old.is_null() && old_len > 0 {
        unsafe { core::ptr::copy_nonoverlapping(old, new, old_len.min(new_len)) };
    }
    new
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
