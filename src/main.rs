//! The `wsgate` binary: the allocator, then [`wsgate::cli::run`].

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wsgate::cli::run()
}
