//! The `action-ledger` binary. Everything lives in the library: [`action_ledger::cli`] parses
//! the command line, runs the command and maps the outcome to an exit code (0 ok, 1 damage
//! found by `verify`, 2 any other error).

/// jemalloc instead of the C library's allocator: the write path allocates on the ledger's
/// threads and frees on the HTTP workers, where glibc's malloc spent ~20% of the server's CPU
/// per durable event (see README, Performance). The benchmarks that host the server in
/// their own process use the same allocator (`benches/common`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    action_ledger::cli::main()
}
