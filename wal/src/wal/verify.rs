//! The one verifier: [`Wal::check`] reads the log without changing it, in a [`VerifyMode`].

use crate::format::index_name;
use crate::{Error, LogStore, Result};

use super::Wal;

/// How much [`Wal::check`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Every sealed segment's index and every live entry; stop at the first problem.
    Live,
    /// Also every frame of every sealed segment (superseded entries, stable-key frames, commit
    /// records); report every problem.
    Every,
}

impl Wal {
    /// Checks the log without modifying anything: every sealed segment's index, every live
    /// entry's checksum and, with [`VerifyMode::Every`], every frame of every sealed segment
    /// (superseded entries, stable-key frames and commit records included). [`VerifyMode::Live`]
    /// stops at the first problem; [`VerifyMode::Every`] collects them all. Returns the number
    /// of live entries checked and the problems found.
    pub fn check(&self, mode: VerifyMode) -> (u64, Vec<Error>) {
        let every = mode == VerifyMode::Every;
        let mut problems = Vec::new();
        let (sealed, bounds) = {
            let st = self.read_state();
            (st.sealed.clone(), st.bounds)
        };
        for s in &sealed {
            let seg = &s.seg;
            let mut found = seg.check_index().err().map(|kind| Error::Corrupt {
                path: self.dir.join(index_name(seg.id.seq)),
                offset: 0,
                indexes: Some((s.lo, s.hi.saturating_sub(1))),
                kind,
            });
            if every && found.is_none() {
                found = seg
                    .check_frames()
                    .err()
                    .map(|(offset, kind)| Error::Corrupt {
                        path: seg.path.clone(),
                        offset,
                        indexes: Some((s.lo, s.hi.saturating_sub(1))),
                        kind,
                    });
            }
            if let Some(e) = found {
                problems.push(e);
                if !every {
                    return (0, problems);
                }
            }
        }
        let (first, last) = bounds.reported();
        let mut checked = 0;
        if last > 0 {
            for i in first..=last {
                match self.get_log(i) {
                    Ok(_) => checked += 1,
                    Err(e) => {
                        problems.push(e);
                        if !every {
                            break;
                        }
                    }
                }
            }
        }
        (checked, problems)
    }

    /// Reads every live entry and checks its checksum ([`Wal::check`] with
    /// [`VerifyMode::Live`]), returning the number checked.
    ///
    /// # Errors
    /// The first [`Error::Corrupt`] found.
    pub fn verify(&self) -> Result<u64> {
        let (n, problems) = self.check(VerifyMode::Live);
        problems.into_iter().next().map_or(Ok(n), Err)
    }
}
