//! The durable store's append-only journal. Each entry is `len: u32 LE | crc32: u32 LE | JSON`,
//! written and fsynced before the request that produced it is acknowledged. On open, a torn or
//! corrupt tail (a crash mid-write, which was therefore never acknowledged) is cut off.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path}: entry at byte {offset} is not readable: {message}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        message: String,
    },
}

pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (creating) the journal and returns every intact entry, truncating a torn tail.
    pub fn open<T: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<T>), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut entries = Vec::new();
        let mut good_len = 0u64;
        {
            let mut reader = BufReader::new(&mut file);
            loop {
                let mut head = [0u8; 8];
                match read_full(&mut reader, &mut head).map_err(io)? {
                    0 => break,
                    8 => {}
                    _ => break, // torn header
                }
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                let mut body = vec![0u8; len];
                if read_full(&mut reader, &mut body).map_err(io)? != len
                    || crc32fast::hash(&body) != crc
                {
                    break; // torn or corrupt tail: never acknowledged
                }
                let entry = serde_json::from_slice(&body).map_err(|e| JournalError::Corrupt {
                    path: path.to_owned(),
                    offset: good_len,
                    message: e.to_string(),
                })?;
                entries.push(entry);
                good_len += 8 + len as u64;
            }
        }
        if file.metadata().map_err(io)?.len() != good_len {
            tracing::warn!(path = %path.display(), kept_bytes = good_len, "journal had a torn tail; cut it off");
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Self {
                path: path.to_owned(),
                file,
            },
            entries,
        ))
    }

    /// Appends entries and makes them durable before returning.
    pub fn append<T: Serialize>(&mut self, entries: &[T]) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let mut out = BufWriter::new(&mut self.file);
        for entry in entries {
            let body = serde_json::to_vec(entry).map_err(|e| JournalError::Io {
                path: self.path.clone(),
                source: e.into(),
            })?;
            let len = u32::try_from(body.len()).map_err(|_| JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("journal entry larger than 4 GiB"),
            })?;
            out.write_all(&len.to_le_bytes()).map_err(io)?;
            out.write_all(&crc32fast::hash(&body).to_le_bytes())
                .map_err(io)?;
            out.write_all(&body).map_err(io)?;
        }
        out.flush().map_err(io)?;
        drop(out);
        self.file.sync_data().map_err(io)
    }

    /// Replaces the journal with `entries` (compaction): written to a new file, synced, renamed.
    pub fn rewrite<T: Serialize>(&mut self, entries: &[T]) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("compacting");
        let io = |source| JournalError::Io {
            path: tmp.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        {
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io)?;
            let mut fresh = Journal {
                path: tmp.clone(),
                file,
            };
            fresh.append(entries)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, none) = Journal::open::<String>(&path).unwrap();
        assert!(none.is_empty());
        j.append(&["a".to_string(), "b".to_string()]).unwrap();
        drop(j);
        // Simulate a crash in the middle of the next write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut j, got) = Journal::open::<String>(&path).unwrap();
        assert_eq!(got, ["a", "b"]);
        j.append(&["c".to_string()]).unwrap();
        j.rewrite(&["z".to_string()]).unwrap();
        j.append(&["after".to_string()]).unwrap();
        drop(j);
        let (_, got) = Journal::open::<String>(&path).unwrap();
        assert_eq!(got, ["z", "after"]);
    }
}
