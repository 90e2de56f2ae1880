//! The process's global allocator, chosen by cargo feature.
//!
//! Default `jemalloc`, tuned to give memory back: a background thread
//! purges dirty pages after `dirty_decay_ms`, so the RSS a burst of
//! connections raised falls back once they close, even when the worker
//! threads are idle (an allocator that purges only when the owning thread
//! allocates again keeps it). The feature `mimalloc` switches to mimalloc;
//! with neither feature the system allocator is used. Each choice was
//! measured in `load/` (CPU per request, memory per idle connection, RSS
//! after the connections close); the README's performance section has the
//! figures. The library holds the allocator so that the benchmark's
//! bare-Pingora cell links the very same one.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the
/// environment still overrides them).
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
