//! The commit position: the sequence number through which records have been
//! delivered and must never be handed out again.
//!
//! The file `head` holds two 16-byte slots, `[magic "SPH1"][seq u64][crc32]`,
//! written alternately in place. A torn write can damage only the slot being
//! written; the other still holds the previous position, and since the
//! position only grows, the valid slot with the larger value wins. Losing the
//! newest write therefore means redelivery, never loss. Writing in place
//! costs one `pwrite` (and, when the policy asks, one `fdatasync` of a file
//! whose size never changes) instead of the create + rename + directory sync
//! an atomic replacement would need on every commit.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{IoContext, SpoolError};

const FILE_NAME: &str = "head";
const MAGIC: [u8; 4] = *b"SPH1";
const SLOT_LEN: usize = 16;

pub(super) struct HeadFile {
    file: File,
    path: PathBuf,
    /// Slot the next write goes to: the one not holding the current value.
    next_slot: u64,
}

/// What [`HeadFile::open`] found.
pub(super) struct LoadedHead {
    pub(super) head: HeadFile,
    /// Highest committed sequence number (0: nothing committed yet).
    pub(super) committed: u64,
    /// The file existed with content but neither slot was valid; everything
    /// still on disk will be delivered again.
    pub(super) was_damaged: bool,
}

impl HeadFile {
    pub(super) fn open(dir: &Path) -> Result<LoadedHead, SpoolError> {
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let mut content = Vec::with_capacity(2 * SLOT_LEN);
        // A longer file is not ours to trust beyond the two slots.
        (&mut file)
            .take(2 * SLOT_LEN as u64)
            .read_to_end(&mut content)
            .at(&path)?;

        let slots = [
            decode_slot(content.get(..SLOT_LEN)),
            decode_slot(content.get(SLOT_LEN..2 * SLOT_LEN)),
        ];
        let (committed, next_slot) = match slots {
            [Some(a), Some(b)] if b > a => (b, 0),
            [Some(a), _] => (a, 1),
            [None, Some(b)] => (b, 0),
            [None, None] => (0, 0),
        };
        let was_damaged = slots == [None, None] && content.iter().any(|&byte| byte != 0);
        Ok(LoadedHead {
            head: HeadFile {
                file,
                path,
                next_slot,
            },
            committed,
            was_damaged,
        })
    }

    /// Records that everything through `seq` has been delivered. The bytes
    /// reach the OS before this returns (so a process crash cannot lose
    /// them); `sync` also forces them to stable storage.
    pub(super) fn store(&mut self, seq: u64, sync: bool) -> Result<(), SpoolError> {
        let mut slot = [0u8; SLOT_LEN];
        slot[0..4].copy_from_slice(&MAGIC);
        slot[4..12].copy_from_slice(&seq.to_le_bytes());
        let crc = crc32fast::hash(&slot[0..12]);
        slot[12..16].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&slot, self.next_slot * SLOT_LEN as u64)
            .at(&self.path)?;
        self.next_slot = 1 - self.next_slot;
        if sync {
            self.file.sync_data().at(&self.path)?;
        }
        Ok(())
    }

    /// A second handle on the file, for syncing it from another thread.
    pub(super) fn try_clone_file(&self) -> Result<File, SpoolError> {
        self.file.try_clone().at(&self.path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

fn decode_slot(bytes: Option<&[u8]>) -> Option<u64> {
    let bytes = bytes?;
    if bytes[0..4] != MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if crc32fast::hash(&bytes[0..12]) != stored {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[4..12]);
    Some(u64::from_le_bytes(seq))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn committed_after_reopen(dir: &Path) -> u64 {
        HeadFile::open(dir).expect("open head").committed
    }

    #[test]
    fn a_new_head_starts_at_zero() {
        let dir = tempfile::tempdir().expect("tempdir");

        let loaded = HeadFile::open(dir.path()).expect("open head");

        assert_eq!(loaded.committed, 0);
        assert!(!loaded.was_damaged);
    }

    #[test]
    fn the_latest_store_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut head = HeadFile::open(dir.path()).expect("open head").head;

        for seq in [5, 9, 12] {
            head.store(seq, false).expect("store");
        }
        drop(head);

        assert_eq!(committed_after_reopen(dir.path()), 12);
    }

    #[test]
    fn a_torn_latest_slot_falls_back_to_the_previous_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut head = HeadFile::open(dir.path()).expect("open head").head;
        head.store(40, false).expect("store");
        head.store(41, false).expect("store");
        drop(head);
        // 41 went to the second slot; damage it as a torn write would.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).expect("read head");
        bytes[SLOT_LEN + 5] ^= 0xFF;
        fs::write(&path, &bytes).expect("write head");

        assert_eq!(committed_after_reopen(dir.path()), 40);
    }

    #[test]
    fn garbage_is_reported_and_means_nothing_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE_NAME), b"not a head file at all").expect("write");

        let loaded = HeadFile::open(dir.path()).expect("open head");

        assert_eq!(loaded.committed, 0);
        assert!(loaded.was_damaged);
    }
}
