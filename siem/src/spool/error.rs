//! Errors of the spool.

use std::io;
use std::path::{Path, PathBuf};

use super::frame::FrameError;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool configuration: {field} {reason}")]
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
    #[error("spool directory {} is in use by another Spool", dir.display())]
    Locked { dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record of {len} bytes exceeds the {max}-byte limit")]
    RecordTooLarge { len: usize, max: usize },
    /// A segment changed under the running spool. `peek` first returns the
    /// good records in front of the damage. To go on, drop the [`Spool`]
    /// and open it again: `open` skips the damaged frame, counts it, and
    /// delivers the records after it.
    ///
    /// [`Spool`]: super::Spool
    #[error("corrupt record in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: FrameError,
    },
    #[error(
        "commit through sequence {requested}, but peek has only returned records through {peeked}"
    )]
    CommitBeyondPeek { requested: u64, peeked: u64 },
}

/// Attaches the file an I/O error is about.
pub(super) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, SpoolError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, SpoolError> {
        self.map_err(|source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
