//! How a command ends: its exit status, and the early stop that carries one.

use std::process::ExitCode;

/// Exit code of a one-shot command that did not wait for the database's writer
/// (`EX_TEMPFAIL`: try again later).
pub(super) const EXIT_HELD: u8 = 75;

/// A command that stopped early with this exit status, after saying why on stderr (another
/// process holds the database or an instance); [`super::run`] turns it into the status.
#[derive(Debug, thiserror::Error)]
#[error("stopped with exit status {0}")]
pub(super) struct Stopped(pub u8);

/// The status of a command whose runs all succeeded, or not.
pub(super) fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
