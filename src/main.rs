//! The `ckptpilot` binary: the command line is [`ckptpilot::cli`]; this only sets the allocator and
//! hands over the arguments.

use std::process::ExitCode;

// The audit builds many small strings and tables and drops them at once; mimalloc reuses freed
// pages instead of faulting fresh ones in (measured in the commit that added it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ckptpilot::fsutil::exit_cleanly_on_signals();
    ckptpilot::cli::own_process();
    let code = ckptpilot::cli::main_with(std::env::args_os());
    // Interrupted: the signal thread exits with 128 + the signal once its cleanup is done.
    ckptpilot::fsutil::wait_if_interrupted();
    ExitCode::from(code)
}
