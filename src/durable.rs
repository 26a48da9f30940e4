//! Files replaced whole and durably: written beside, `fsync`ed, renamed over the old one, and
//! the folder `fsync`ed, so a crash leaves either the old file or the new one, never a part.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Replaces the file at `path` with `bytes`, readable and writable by `mode` (Unix
/// permissions, set before anything is written). The new file is written first as
/// `<name>.new` in the same folder.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let temporary = path.with_file_name(name);
    {
        let mut out = File::create(&temporary)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        out.write_all(bytes)?;
        out.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    File::open(folder)?.sync_all()
}
