//! The `klab` binary: a thin shell that turns argv into a [`klab::cli::Cli`] and runs it.
//!
//! klab is a multi-call binary, like busybox: started through a link named after an upstream
//! component (`kube-apiserver`, `kubelet`, …) it runs that component. The mapping lives in
//! [`klab::cli::argv_for`]; everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv = klab::cli::argv_for(std::env::args_os());
    let cli = klab::cli::Cli::parse_from(argv);
    match klab::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: what failed, then each cause, `a: b: c`, as kubectl and curl print.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `klab ps | head` closes the pipe early; like other Unix tools, stop quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
