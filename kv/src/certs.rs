//! `raftwal-kv certs`: a development CA and one certificate per node, as PEM files:
//! `ca.pem`, `node-<id>.pem`, `node-<id>-key.pem`. For trying a cluster out: the CA's key is
//! not kept, so adding a node later means making a new set.

use std::path::Path;

use raftwal_glue::DevCa;

/// The files node `id` loads from `dir`: CA, certificate, key.
pub fn files(dir: &Path, id: u64) -> [std::path::PathBuf; 3] {
    [
        dir.join("ca.pem"),
        dir.join(format!("node-{id}.pem")),
        dir.join(format!("node-{id}-key.pem")),
    ]
}

/// Writes a new development CA and certificates for `nodes` into `dir`.
///
/// # Errors
/// Creating the directory, generating keys, writing the files.
pub fn write(dir: &Path, nodes: &[u64]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = DevCa::new()?;
    std::fs::write(dir.join("ca.pem"), ca.ca_pem())?;
    for &id in nodes {
        let (cert, key) = ca.node(id)?;
        let [_, c, k] = files(dir, id);
        std::fs::write(c, cert)?;
        write_private(&k, key.as_bytes())?;
    }
    Ok(())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)?.write_all(data)
}
