//! Reading a file a flag names, bounded: only a regular file, opened without
//! blocking (a FIFO would otherwise hold the process until something writes
//! it), and at most a size limit (`/dev/zero` or a huge file would otherwise
//! grow memory until the address space runs out).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The configuration, the web configuration, certificates and keys: text a
/// person writes. 1 MiB is a thousand times the largest seen.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The baseline state: a few matrices of the feature count squared.
pub const MAX_STATE_BYTES: u64 = 16 << 20;

/// The whole file, or an error that says why not (kept `NotFound` when the
/// file does not exist, so callers can tell a first start).
pub fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = f.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}, not a regular file", kind_of(t))));
    }
    if meta.len() > max {
        return Err(too_big(max));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // The size can change between fstat and read: the limit holds anyway.
    File::take(f, max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_big(max));
    }
    Ok(buf)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_big(max: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("larger than {max} bytes"))
}

/// What a file that is not a regular one is, for an error message.
pub fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_to_string(&ok, 100).unwrap(), "a = 1\n");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        assert!(read(&big, 100).unwrap_err().to_string().contains("larger than 100 bytes"));
        assert!(read(&big, 101).is_ok());
        assert!(read(Path::new("/dev/zero"), 100).unwrap_err().to_string().contains("a device"));
        assert!(read(dir.path(), 100).unwrap_err().to_string().contains("a directory"));
        assert_eq!(read(&dir.path().join("none"), 100).unwrap_err().kind(), io::ErrorKind::NotFound);
        // A FIFO with no writer: refused at once instead of blocking.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t0 = std::time::Instant::now();
        assert!(read(&fifo, 100).unwrap_err().to_string().contains("a FIFO"));
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        std::fs::write(&big, [0xff, 0xfe]).unwrap();
        assert!(read_to_string(&big, 100).unwrap_err().to_string().contains("UTF-8"));
    }
}
