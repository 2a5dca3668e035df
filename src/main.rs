//! The `engine` binary: parses the command line and hands over to the library.

mod cli;

/// mimalloc keeps freed pages for reuse: with glibc's allocator every large tensor buffer was
/// a fresh mmap whose page faults cost ~20% of a bf16 forward in kernel time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the vendored mimalloc v3 header (`libmimalloc-sys` 0.1.49 names
/// the options around it but not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of returning it to the OS after mimalloc's 10 ms
/// purge delay. Training allocates and frees tensors of hundreds of MB every step (logits over
/// the vocabulary, activations kept for the backward); returned pages came back as fresh
/// zeroed huge pages, and zeroing them took a third of a fine-tuning step
/// (`docs/results.md`, "Training step speed"). Batch commands run to an end, so the peak stays
/// theirs; `engine serve` keeps the default so an idle server shrinks. `MIMALLOC_PURGE_DELAY`
/// in the environment wins.
fn retain_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads it at each purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> std::process::ExitCode {
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
