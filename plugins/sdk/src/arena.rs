//! The SDK's global allocator: small allocations come from a static arena, the rest from the
//! standard allocator.
//!
//! The host gives every invocation a fresh instance, so a plugin's memory lives for one call.
//! Most calls allocate a few kilobytes (the event's JSON, the configuration, a patch): handing
//! those out by bumping a pointer through a static array costs a few instructions, where
//! `malloc` first sets itself up in every fresh instance and then searches its bins. An
//! allocation that does not fit what is left of the arena goes to the standard allocator
//! (Rust's `dlmalloc` on `wasm32-unknown-unknown`, which takes its pages with `memory.grow`;
//! wasi-libc's `malloc` on `wasm32-wasip2`), so a plugin that works through much data (a
//! workflow step, a segmentation) runs as it would without the arena. The arena is a `static`, so it is part of the
//! module's own memory image: no `memory.grow`, and only the pages used are ever touched.
//!
//! Turn it off with `default-features = false` on `rapport-sdk` if a plugin brings its own
//! global allocator.
// A global allocator cannot be written without `unsafe`; the argument for each block is below.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

/// Bytes in the arena: one WebAssembly page.
const SIZE: usize = 64 << 10;

/// The arena's storage, aligned for any allocation the bump can serve.
#[repr(C, align(16))]
struct Storage(UnsafeCell<[u8; SIZE]>);

pub struct Arena {
    storage: Storage,
    /// Bytes handed out from the start of `storage`.
    used: Cell<usize>,
}

// SAFETY: a WebAssembly instance of a plugin runs on one thread (the component model gives it no
// threads), so the cell is never touched concurrently.
unsafe impl Sync for Arena {}

impl Arena {
    pub const fn new() -> Self {
        Self {
            storage: Storage(UnsafeCell::new([0; SIZE])),
            used: Cell::new(0),
        }
    }

    fn start(&self) -> usize {
        self.storage.0.get() as usize
    }

    fn contains(&self, block: *mut u8) -> bool {
        let address = block as usize;
        address >= self.start() && address < self.start() + SIZE
    }

    /// Whether `block` (of `size` bytes) is the last one handed out: the one `used` ends at.
    fn is_last(&self, block: *mut u8, size: usize) -> bool {
        block as usize + size == self.start() + self.used.get()
    }

    /// A block from the arena, or `None` if what is left does not fit `layout`.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let start = self.start();
        let next = start + self.used.get();
        // Alignments above the storage's 16 still work: the address itself is aligned.
        let aligned = next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = aligned.checked_add(layout.size())?;
        if end > start + SIZE {
            return None;
        }
        self.used.set(end - start);
        Some(aligned as *mut u8)
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block from the arena lies inside `storage`, is aligned to its layout, and is
// handed out once (`used` only moves past it, or back over it when it is the last block and is
// freed or resized). Blocks outside the arena are the standard allocator's and go back to it.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(block) => block,
            // SAFETY: the caller's contract for `layout` is passed on unchanged.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(block) => {
                // The arena's bytes are zero until used, but a block freed and handed out
                // again is not.
                // SAFETY: the block is `layout.size()` bytes inside the arena.
                unsafe { block.write_bytes(0, layout.size()) };
                block
            }
            // SAFETY: as in `alloc`.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if self.contains(block) {
            // The last block handed out is taken back; others stay used until the instance
            // ends.
            if self.is_last(block, layout.size()) {
                self.used.set(block as usize - self.start());
            }
        } else {
            // SAFETY: not the arena's, so the standard allocator gave it out with `layout`.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.contains(block) {
            // The last block grows or shrinks in place while it fits.
            let offset = block as usize - self.start();
            if self.is_last(block, layout.size()) && offset + new_size <= SIZE {
                self.used.set(offset + new_size);
                return block;
            }
            // SAFETY: `layout.align()` is a valid alignment and the caller guarantees that
            // `new_size`, rounded up to it, does not overflow.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: `new_layout` has a non-zero size (the caller's contract).
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are valid for the smaller size and do not overlap (the
                // new one was handed out while the old one was still in use).
                unsafe {
                    std::ptr::copy_nonoverlapping(block, new, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
            }
            new
        } else {
            // SAFETY: the standard allocator's block, with the caller's contract passed on.
            unsafe { System.realloc(block, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_blocks_come_from_the_arena_aligned_and_apart() {
        let arena = Arena::new();
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(arena.contains(a) && arena.contains(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3);
            a.write_bytes(0xAA, 3);
            b.write_bytes(0xBB, 8);
            assert_eq!(*a, 0xAA);
            // A block freed while a later one is live is not taken back (only the last block
            // is), so the next block comes after `b`.
            arena.dealloc(a, layout(3, 1));
            let c = arena.alloc(layout(8, 8));
            assert!(
                c as usize >= b as usize + 8,
                "a new block never overlaps a live one"
            );
            assert_eq!(*b, 0xBB);
            arena.dealloc(c, layout(8, 8));
            arena.dealloc(b, layout(8, 8));
        }
    }

    #[test]
    fn what_does_not_fit_goes_to_the_standard_allocator() {
        let arena = Arena::new();
        unsafe {
            let big = arena.alloc(layout(SIZE + 1, 8));
            assert!(!big.is_null() && !arena.contains(big));
            arena.dealloc(big, layout(SIZE + 1, 8));
            let most = arena.alloc(layout(SIZE - 8, 8));
            assert!(arena.contains(most));
            let next = arena.alloc(layout(64, 8));
            assert!(!arena.contains(next), "the arena is full");
            arena.dealloc(next, layout(64, 8));
        }
    }

    #[test]
    fn the_last_block_is_taken_back_and_grows_in_place() {
        let arena = Arena::new();
        unsafe {
            let a = arena.alloc(layout(16, 8));
            let b = arena.alloc(layout(16, 8));
            arena.dealloc(b, layout(16, 8));
            assert_eq!(
                arena.alloc(layout(16, 8)),
                b,
                "the freed last block is reused"
            );
            let grown = arena.realloc(b, layout(16, 8), 1024);
            assert_eq!(grown, b, "the last block grows in place");
            a.write_bytes(1, 16);
            let moved = arena.realloc(a, layout(16, 8), 32);
            assert_ne!(moved, a, "a block in the middle moves");
            assert_eq!(std::slice::from_raw_parts(moved, 16), &[1; 16]);
            let out = arena.realloc(grown, layout(1024, 8), SIZE * 2);
            assert!(!arena.contains(out), "past the arena's end it moves out");
            arena.dealloc(out, layout(SIZE * 2, 8));
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        let arena = Arena::new();
        unsafe {
            let a = arena.alloc(layout(32, 8));
            a.write_bytes(0xFF, 32);
            arena.dealloc(a, layout(32, 8));
            let z = arena.alloc_zeroed(layout(32, 8));
            assert_eq!(z, a);
            assert_eq!(std::slice::from_raw_parts(z, 32), &[0; 32]);
        }
    }
}
