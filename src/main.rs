//! The `action-ledger` binary. Everything lives in the library: [`action_ledger::cli`] parses
//! the command line, runs the command and maps the outcome to an exit code (0 ok, 1 damage
//! found by `verify`, 2 any other error).

/// See [`action_ledger::Allocator`].
#[global_allocator]
static GLOBAL: action_ledger::Allocator = action_ledger::Allocator;

fn main() -> std::process::ExitCode {
    action_ledger::cli::main()
}
