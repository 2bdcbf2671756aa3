//! Helpers of the host-failure tests: a small tmpfs to fill, the daemon as a child process
//! with its log, and an emptied WAL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::reliability_support::{BIN, World};

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` only when mounting failed and `PAYRECON_SKIP_TMPFS_TESTS=1` allows skipping.
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("payrecon-test")
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Self { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("PAYRECON_SKIP_TMPFS_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: cannot mount a tmpfs ({why}); PAYRECON_SKIP_TMPFS_TESTS=1");
            return None;
        }
        panic!(
            "cannot mount a {size} tmpfs on {} ({why}): this test needs root (CI runs as root); \
             set PAYRECON_SKIP_TMPFS_TESTS=1 to skip it knowingly",
            dir.path().display()
        );
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `file` until the file system is full; returns its size.
pub fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).unwrap();
    let block = vec![0x5a_u8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    let _ = f.sync_all();
    written
}

/// Kills the daemon if the test fails before it exits on its own.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(w: &World, name: &str) -> Self {
        let log = w.dir.path().join(name);
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&w.config)
            .arg("run")
            .env("RUST_LOG", "payrecon=info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub async fn stop(&mut self) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_exit(Duration::from_secs(40)).await
    }

    /// Waits until the log contains `text`.
    pub async fn wait_log(&mut self, text: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.log().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Empties the WAL so that the next write needs fresh space on the disk.
pub async fn checkpoint(w: &World) {
    let pool = w.pool().await;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
