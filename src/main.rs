//! The `engine` binary: parses the command line and hands over to the library.

mod cli;

/// mimalloc keeps freed pages for reuse: with glibc's allocator every large tensor buffer was
/// a fresh mmap whose page faults cost ~20% of a bf16 forward in kernel time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
