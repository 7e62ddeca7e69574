//! `ctr`: Oxbow's container runtime. A thin front over the `ctr` library;
//! see docs/ctr.md.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::SUCCESS
}
