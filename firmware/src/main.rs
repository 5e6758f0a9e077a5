//! The data owner's client on a Cortex-M4 (thumbv7em-none-eabihf), run under
//! `qemu-system-arm -M mps2-an386` by `scripts/firmware.sh`.
//!
//! It holds the model's device profile (the primes its single-image plan chose and the
//! owner's input layout: `cryptonets device profile`), derives its secret key from a
//! 32-byte seed, takes one MNIST image, and for each CRT channel builds that channel's
//! table-free parameters (`cryptonets_core::bfv::CompactChannel`: the primes, transforms
//! whose twiddles are made on the fly), encodes the image in the single-image layout into
//! one polynomial and encrypts it with seeded secret-key encryption, one RNS limb at a time
//! in one more polynomial (plus the compression's correction), writing each chunk of a limb
//! to the host file `device-upload.bin` as it is made (semihosting). Its memory: the key
//! (n bytes), the message (4n), `CompactScratch` (9n compressed, 5n not) and the parsed
//! profile. The profile, the image and both seeds are built in
//! (`CRYPTONETS_FIRMWARE_PROFILE`, `CRYPTONETS_FIRMWARE_INPUT`, made by `cryptonets device
//! profile` and `cryptonets device input`).
//!
//! It then prints one line of measurements: the heap's high-water mark (a counting
//! allocator), the stack's (a painted region), and the processor clock ticks the encryption
//! took (SysTick on the core clock, wraps counted).
//!
//! `unsafe` here is what a bare-metal binary cannot do without (the heap's memory, the
//! semihosting calls, the linker's symbols), each with its reason.
#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::vec;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio, syscall};
use cryptonets_core::bfv::CompactScratch;
use cryptonets_core::network::single::DeviceProfile;
use cryptonets_core::sampling::ternary;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

/// The model's device profile.
static PROFILE: &[u8] = include_bytes!(env!("CRYPTONETS_FIRMWARE_PROFILE"));
/// The image (784 bytes), the secret key's seed and the encryption's seed (32 bytes each).
static INPUT: &[u8] = include_bytes!(env!("CRYPTONETS_FIRMWARE_INPUT"));

/// The heap, in the board's PSRAM, bounded at 128 KiB: an allocation past it fails the run
/// (the allocation error handler panics), so the bound is enforced, not only observed.
const HEAP_START: usize = 0x2100_0000;
const HEAP_BYTES: usize = 128 << 10;

/// An allocator that counts: the bytes in use and their high-water mark.
struct Counting {
    heap: embedded_alloc::LlffHeap,
    used: AtomicUsize,
    peak: AtomicUsize,
}

// SAFETY: every call is forwarded to the heap, which upholds GlobalAlloc's contract; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            let used = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(used, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded: p was allocated by this heap with this layout.
        unsafe { self.heap.dealloc(p, layout) }
    }
}

#[global_allocator]
static HEAP: Counting = Counting {
    heap: embedded_alloc::LlffHeap::empty(),
    used: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

/// SysTick on the reference clock (1 MHz on the mps2 boards), counting down from 2^24 - 1:
/// 16 s, far more than the whole run, so a wrap (COUNTFLAG) is refused, never misread.
struct Clock<'a> {
    syst: &'a mut cortex_m::peripheral::SYST,
    last: u32,
}

impl<'a> Clock<'a> {
    fn start(syst: &'a mut cortex_m::peripheral::SYST) -> Self {
        syst.set_clock_source(SystClkSource::External);
        syst.set_reload(0x00ff_ffff);
        syst.clear_current();
        syst.enable_counter();
        // The first tick reloads the counter (and sets COUNTFLAG): start after it.
        while cortex_m::peripheral::SYST::get_current() == 0 {}
        let _ = syst.has_wrapped();
        let last = cortex_m::peripheral::SYST::get_current();
        Self { syst, last }
    }

    /// Ticks since the last call.
    fn lap(&mut self) -> Result<u64, ()> {
        let now = cortex_m::peripheral::SYST::get_current();
        if self.syst.has_wrapped() || now > self.last {
            return Err(());
        }
        let ticks = self.last - now;
        self.last = now;
        Ok(u64::from(ticks))
    }
}

const STACK_PAINT: u32 = 0x5afe_c0de;

unsafe extern "C" {
    /// End of .bss and .uninit (cortex-m-rt): the stack grows down toward it.
    static mut __sheap: u32;
    /// The top of the stack (cortex-m-rt).
    static _stack_start: u32;
}

/// Paints the free stack below the current frame (leaving 4 KiB of margin).
fn paint_stack() {
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    let here = cortex_m::register::msp::read() as usize - 4096;
    let mut p = bottom;
    while p < here {
        // SAFETY: [bottom, here) is the free part of the stack region, below every live frame
        // (4 KiB of margin under this one); nothing else uses it.
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT) };
        p += 4;
    }
}

/// The stack's high-water mark: the painted words left untouched, counted from the bottom.
fn stack_peak() -> usize {
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads of the stack region, word aligned, below the top.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT {
        p += 4;
    }
    top - p
}

/// A host file opened for writing (semihosting SYS_OPEN, "wb").
fn open_host_file(name: &str) -> Result<usize, ()> {
    let mut path = [0u8; 64];
    path[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SYS_OPEN reads `name.len()` bytes of the NUL-terminated path buffer.
    let fd = unsafe {
        syscall!(
            OPEN,
            path.as_ptr(),
            cortex_m_semihosting::nr::open::W_TRUNC_BINARY,
            name.len()
        )
    } as isize;
    if fd < 0 { Err(()) } else { Ok(fd as usize) }
}

fn write_host_file(fd: usize, bytes: &[u8]) -> Result<(), ()> {
    // SAFETY: SYS_WRITE reads `bytes.len()` bytes from the live slice; it answers the
    // number not written.
    match unsafe { syscall!(WRITE, fd, bytes.as_ptr(), bytes.len()) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

fn close_host_file(fd: usize) {
    // SAFETY: SYS_CLOSE of a descriptor SYS_OPEN returned.
    unsafe { syscall!(CLOSE, fd) };
}

/// What the encryption failed on.
fn fail(out: &mut hio::HostStream, what: &str) -> ! {
    let _ = writeln!(out, "error: {what}");
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[entry]
fn main() -> ! {
    paint_stack();
    // SAFETY: called once, before any allocation; the PSRAM range is unused by anything else.
    unsafe { HEAP.heap.init(HEAP_START, HEAP_BYTES) };
    let mut out = match hio::hstdout() {
        Ok(out) => out,
        Err(()) => loop {},
    };
    let mut core = match cortex_m::Peripherals::take() {
        Some(core) => core,
        None => fail(&mut out, "no core peripherals"),
    };
    let mut clock = Clock::start(&mut core.SYST);

    if INPUT.len() != 784 + 64 {
        fail(
            &mut out,
            "the built-in input is not 784 pixels and two seeds",
        );
    }
    let (image, seeds) = INPUT.split_at(784);
    let (secret_seed, encryption_seed) = seeds.split_at(32);
    let seed = |s: &[u8]| -> [u8; 32] { s.try_into().unwrap_or([0; 32]) };

    let mut lap = |out: &mut hio::HostStream| {
        clock
            .lap()
            .unwrap_or_else(|()| fail(out, "SysTick wrapped: the measurement would be wrong"))
    };
    let mut total = 0u64;
    let profile = DeviceProfile::from_bytes(PROFILE).unwrap_or_else(|_| fail(&mut out, "profile"));
    if image.len() != profile.pixels {
        fail(&mut out, "the profile does not take this image");
    }
    let (n, compressed) = (profile.n, profile.compressed);
    // The secret key from its seed: n ternary coefficients, the same in every channel (they
    // share Q), as SecretKey::generate draws them.
    let mut key = Zeroizing::new(vec![0i8; n]);
    ternary(&mut ChaCha20Rng::from_seed(seed(secret_seed)), &mut key);
    let mut message = Zeroizing::new(vec![0u32; n]);
    let mut scratch = CompactScratch::new(n, compressed);
    let mut rng = ChaCha20Rng::from_seed(seed(encryption_seed));
    let file = open_host_file("device-upload.bin").unwrap_or_else(|_| fail(&mut out, "open"));
    let (mut written, mut channel_heap) = (0usize, 0usize);
    let (mut setup, mut encode, mut encrypt) = (0u64, 0u64, 0u64);
    total += lap(&mut out);
    for c in 0..profile.plaintext_primes.len() {
        // One channel at a time: its primes and table-free transforms, checked by its id.
        let heap_before = HEAP.used.load(Ordering::Relaxed);
        let channel = profile
            .compact_channel(c)
            .unwrap_or_else(|_| fail(&mut out, "the profile's parameters"));
        channel_heap = channel_heap.max(HEAP.used.load(Ordering::Relaxed) - heap_before);
        let t1 = lap(&mut out);
        profile
            .encode_into(&channel, image, &mut message)
            .unwrap_or_else(|_| fail(&mut out, "encoding"));
        let t2 = lap(&mut out);
        let result = channel.encrypt(
            &key,
            &message,
            compressed,
            &mut rng,
            &mut scratch,
            |bytes| {
                written += bytes.len();
                write_host_file(file, bytes).map_err(|()| cryptonets_core::Error::Malformed {
                    reason: "the host file refused a write",
                })
            },
        );
        if result.is_err() {
            fail(&mut out, "encryption");
        }
        let t3 = lap(&mut out);
        setup += t1;
        encode += t2;
        encrypt += t3;
        total += t1 + t2 + t3;
    }
    close_host_file(file);
    let total = total + lap(&mut out);
    let _ = writeln!(
        out,
        "device n={n} channels={} compressed={compressed} upload_bytes={written} setup_ticks={setup} encode_ticks={encode} encrypt_ticks={encrypt} total_ticks={} heap_bound_bytes={HEAP_BYTES} heap_peak_bytes={} channel_heap_bytes={channel_heap} scratch_bytes={} key_and_message_bytes={} stack_peak_bytes={}",
        profile.plaintext_primes.len(),
        total,
        HEAP.peak.load(Ordering::Relaxed),
        CompactScratch::bytes(n, compressed),
        n + 4 * n,
        stack_peak(),
    );
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(
            out,
            "panic: {info} (heap: {} bytes in use, peak {})",
            HEAP.used.load(Ordering::Relaxed),
            HEAP.peak.load(Ordering::Relaxed)
        );
    }
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
