//! The fallback file watch on `controller.conf`: the charm replaces the file by rename, so
//! the parent directory is watched and events naming the file are debounced into one
//! [`Event::ConfigChanged`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::event::{Event, Trigger};

/// Quiet time after the last change before the service is told: a rename, a chmod and a
/// close arrive as a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why the watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// A running watch; dropping it stops the watch.
pub struct FileWatch {
    /// Kept alive for as long as the watch should run.
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `file` (through its parent directory, created if missing) and sends
/// debounced [`Event::ConfigChanged`] events to `events`.
pub fn start(file: &Path, events: mpsc::Sender<Event>) -> Result<FileWatch, WatchError> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|source| WatchError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let name = file.file_name().map(|n| n.to_os_string());
    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) => {
                let names_the_file = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                if names_the_file && !event.kind.is_access() {
                    // The receiver is gone only when the daemon is stopping.
                    let _ = raw_tx.send(());
                }
            }
            Err(e) => log::warn!("file watch error: {e}"),
        })
        .map_err(|source| WatchError::Watch {
            path: dir.clone(),
            source,
        })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Watch {
            path: dir.clone(),
            source,
        })?;
    tokio::spawn(debounce(raw_rx, events, DEBOUNCE));
    Ok(FileWatch { _watcher: watcher })
}

/// Turns bursts of raw notifications into one event each, `quiet` after the last of a burst.
async fn debounce(
    mut raw: mpsc::UnboundedReceiver<()>,
    events: mpsc::Sender<Event>,
    quiet: Duration,
) {
    while raw.recv().await.is_some() {
        loop {
            match tokio::time::timeout(quiet, raw.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        log::debug!("file watch: controller.conf changed");
        if events
            .send(Event::ConfigChanged(Trigger::FileWatch))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn debounce_merges_a_burst() {
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (events_tx, mut events_rx) = mpsc::channel(8);
        tokio::spawn(debounce(raw_rx, events_tx, DEBOUNCE));
        for _ in 0..5 {
            raw_tx.send(()).expect("debouncer runs");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // 5 notifications 30 ms apart are one burst: one event, 100 ms after the last.
        let event = events_rx.recv().await.expect("one event");
        assert!(matches!(event, Event::ConfigChanged(Trigger::FileWatch)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(events_rx.try_recv().is_err());
        // A later change is a new burst.
        raw_tx.send(()).expect("debouncer runs");
        assert!(events_rx.recv().await.is_some());
    }

    #[tokio::test]
    async fn sees_a_file_replaced_by_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("agents/controller-0/controller.conf");
        let (events_tx, mut events_rx) = mpsc::channel(8);
        let _watch = start(&file, events_tx).expect("watch starts");
        let parent = file.parent().expect("parent");
        std::fs::write(parent.join("other.txt"), "x").expect("write unrelated");
        let tmp = parent.join(".controller.conf.tmp");
        std::fs::write(&tmp, "db-bind-addresses: {}\n").expect("write temp");
        std::fs::rename(&tmp, &file).expect("rename");
        let event = tokio::time::timeout(Duration::from_secs(5), events_rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("channel open");
        assert!(matches!(event, Event::ConfigChanged(Trigger::FileWatch)));
    }
}
