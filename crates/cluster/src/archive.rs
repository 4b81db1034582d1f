//! The history archive: where closed conversations go when they leave the
//! journal.
//!
//! etcd holds the journal of ACTIVE conversations only; it is not a bulk
//! store (1.5 MiB per request, a 2 GiB quota). When a conversation is
//! resolved, its whole history is stored here, and only then does the
//! journal drop it (see [`CoordinatedJournal`](crate::journal)): an
//! acknowledged close is durable in the archive before anything leaves
//! etcd. [`Archive`] is the port; [`FileArchive`] (a directory, shared by
//! the nodes of a cluster) and [`MemoryArchive`] (standalone nodes and
//! tests) implement it and pass the same [`contract`]. A bigger store (an
//! object store, a database) is another implementation of the same port.
//!
//! # Stale writers
//!
//! The archive is written before the fenced journal transaction, so the
//! fence cannot stop a node that has lost the customer (a zombie past its
//! lease) from reaching the archive. Every version is therefore stored with
//! the fencing token of the owner that wrote it, and the version with the
//! highest token is the conversation's history: tokens only grow from one
//! owner to the next, so a stale owner's write never replaces what a newer
//! owner stored. A store with a token older than the stored one is refused
//! ([`ClusterError::Fenced`]); a store with the same or a newer token
//! replaces it (a close whose journal write failed is made again, possibly
//! with more events).
//!
//! An archived conversation whose journal transaction then failed is still
//! open in the journal until a later close archives it again: the journal's
//! record (`open`) says which conversation is open, and that one is not
//! closed, whatever the archive holds.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use centralino_core::history::HistoryEvent;
use centralino_core::{ConversationId, CustomerId};

use crate::error::{ClusterError, Result};

/// Where closed conversations are kept.
#[async_trait::async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Stores the whole history (from seq 1, contiguous) of the closed
    /// conversation `conversation`, written by the owner holding fencing
    /// token `token`; returns once it is durable. Storing it again with the
    /// same or a newer token replaces it; with an older token it is
    /// refused with [`ClusterError::Fenced`] and changes nothing.
    async fn store(
        &self,
        conversation: ConversationId,
        token: u64,
        events: &[HistoryEvent],
    ) -> Result<()>;
    /// The history of an archived conversation.
    async fn read(&self, conversation: ConversationId) -> Result<Option<Vec<HistoryEvent>>>;
    /// The customer's archived conversations, oldest first.
    async fn list(&self, customer: CustomerId) -> Result<Vec<ConversationId>>;
}

/// Refuses anything but a whole history: seq 1, 2, 3, ... with no gap.
pub fn check_whole(conversation: ConversationId, events: &[HistoryEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(ClusterError::Rejected(format!(
            "archive of {conversation}: the history is empty; a closed conversation has at least one event"
        )));
    }
    for (i, e) in events.iter().enumerate() {
        let expected = i as u64 + 1;
        if e.seq != expected {
            return Err(ClusterError::Rejected(format!(
                "archive of {conversation}: event {i} has seq {}, expected {expected}; \
                 a close must carry the whole history from seq 1",
                e.seq
            )));
        }
    }
    Ok(())
}

/// The archive in memory: for standalone nodes (whose journal is in memory
/// too) and tests.
#[derive(Default)]
pub struct MemoryArchive {
    conversations: Mutex<BTreeMap<ConversationId, (u64, Vec<HistoryEvent>)>>,
}

impl MemoryArchive {
    pub fn new() -> Self {
        Self::default()
    }

    fn conversations(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<ConversationId, (u64, Vec<HistoryEvent>)>> {
        self.conversations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Archive for MemoryArchive {
    async fn store(
        &self,
        conversation: ConversationId,
        token: u64,
        events: &[HistoryEvent],
    ) -> Result<()> {
        check_whole(conversation, events)?;
        let mut g = self.conversations();
        if let Some((stored, _)) = g.get(&conversation)
            && *stored > token
        {
            return Err(stale(conversation, token, *stored));
        }
        g.insert(conversation, (token, events.to_vec()));
        Ok(())
    }

    async fn read(&self, conversation: ConversationId) -> Result<Option<Vec<HistoryEvent>>> {
        Ok(self
            .conversations()
            .get(&conversation)
            .map(|(_, e)| e.clone()))
    }

    async fn list(&self, customer: CustomerId) -> Result<Vec<ConversationId>> {
        Ok(self
            .conversations()
            .keys()
            .filter(|c| c.customer == customer)
            .copied()
            .collect())
    }
}

fn stale(conversation: ConversationId, token: u64, stored: u64) -> ClusterError {
    ClusterError::Fenced {
        key: format!("archive/{conversation} (stored by token {stored})"),
        token,
    }
}

/// The archive as files in a directory, one file per closed conversation,
/// readable by an operator:
///
/// ```text
/// <root>/cu-<n>/<k>.<token>.jsonl    conversation cu-<n>.<k>, one JSON HistoryEvent per line,
///                                    written by the owner that held fencing token <token>
/// ```
///
/// (`jq . <root>/cu-42/*.jsonl` prints a customer's closed conversations.)
/// A file is written whole or not at all: written to a hidden temporary
/// file in the same directory, flushed to disk (`fsync`), renamed into
/// place, and the directory flushed too, so that the rename itself survives
/// a crash; a new customer directory is flushed into the root the same way.
/// An interrupted write leaves at most a `.*.tmp` file behind, which
/// readers ignore and an operator may delete.
///
/// Several processes may share the directory (the nodes of one cluster on
/// one machine, or on a shared file system): writers never modify a file in
/// place, and the highest token wins (see the module docs), so no lock is
/// needed. A store removes the versions it supersedes.
///
/// Each store costs two `fsync`s on the archive's disk; they run on tokio's
/// blocking pool, so closes of different customers proceed in parallel.
pub struct FileArchive {
    root: PathBuf,
}

/// Names temporary files uniquely within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileArchive {
    /// Opens the archive in directory `root`, creating it if needed, and
    /// checks that this process can write there, so that a misconfigured
    /// directory stops the node at start rather than at the first close.
    pub fn open(root: impl Into<PathBuf>) -> Result<FileArchive> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| io_error("creating the directory", &root, e))?;
        let probe = root.join(format!(".probe.{}.tmp", std::process::id()));
        fs::write(&probe, b"").map_err(|e| io_error("writing a file in", &root, e))?;
        fs::remove_file(&probe).map_err(|e| io_error("removing a file in", &root, e))?;
        Ok(FileArchive { root })
    }

    /// Opens an existing archive to read it (a what-if replay, an audit):
    /// nothing is created or probed, so a read-only copy or mount will do.
    /// Stores through it fail where the directory is not writable.
    pub fn open_to_read(root: impl Into<PathBuf>) -> Result<FileArchive> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(FileArchive { root }),
            Ok(_) => Err(ClusterError::Archive(format!(
                "{} is not a directory",
                root.display()
            ))),
            Err(e) => Err(io_error("opening the archive", &root, e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every customer with a directory in the archive, in id order. Not
    /// part of [`Archive`]: a node only ever asks about one customer, while
    /// a reader of a whole archive walks them all.
    pub async fn customers(&self) -> Result<Vec<CustomerId>> {
        let root = self.root.clone();
        blocking(move || {
            let entries = fs::read_dir(&root).map_err(|e| io_error("listing", &root, e))?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_error("listing", &root, e))?;
                // Anything but `cu-<n>` (temporary files, an operator's
                // notes) is not a customer's directory.
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<CustomerId>().ok())
                {
                    found.push(id);
                }
            }
            found.sort_unstable();
            Ok(found)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Archive for FileArchive {
    async fn store(
        &self,
        conversation: ConversationId,
        token: u64,
        events: &[HistoryEvent],
    ) -> Result<()> {
        check_whole(conversation, events)?;
        let mut lines = Vec::new();
        for e in events {
            serde_json::to_writer(&mut lines, e).map_err(|e| {
                ClusterError::Archive(format!("encoding an event of {conversation}: {e}"))
            })?;
            lines.push(b'\n');
        }
        let root = self.root.clone();
        blocking(move || store_file(&root, conversation, token, &lines)).await
    }

    async fn read(&self, conversation: ConversationId) -> Result<Option<Vec<HistoryEvent>>> {
        let root = self.root.clone();
        blocking(move || read_file(&root, conversation)).await
    }

    async fn list(&self, customer: CustomerId) -> Result<Vec<ConversationId>> {
        let dir = self.root.join(customer.to_string());
        blocking(move || {
            let mut numbers: Vec<u32> = versions(&dir)?.into_iter().map(|v| v.number).collect();
            numbers.sort_unstable();
            numbers.dedup();
            Ok(numbers
                .into_iter()
                .map(|number| ConversationId { customer, number })
                .collect())
        })
        .await
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Archive(format!("archive task failed: {e}")))?
}

fn io_error(what: &str, path: &Path, e: io::Error) -> ClusterError {
    ClusterError::Archive(format!("{what} {}: {e}", path.display()))
}

/// One stored version of a conversation: `<number>.<token>.jsonl`.
struct Version {
    number: u32,
    token: u64,
    path: PathBuf,
}

/// The versions in a customer's directory (none if it does not exist).
fn versions(dir: &Path) -> Result<Vec<Version>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing", dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Temporary files start with a dot; anything else unknown is not ours.
        let Some((number, token)) = name
            .strip_suffix(".jsonl")
            .and_then(|stem| stem.split_once('.'))
        else {
            continue;
        };
        if let (Ok(number), Ok(token)) = (number.parse(), token.parse()) {
            found.push(Version {
                number,
                token,
                path: entry.path(),
            });
        }
    }
    Ok(found)
}

fn store_file(root: &Path, conv: ConversationId, token: u64, lines: &[u8]) -> Result<()> {
    let dir = root.join(conv.customer.to_string());
    match fs::create_dir(&dir) {
        // A new directory entry in the root: durable only once the root is.
        Ok(()) => sync_dir(root)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("creating", &dir, e)),
    }
    let older: Vec<Version> = versions(&dir)?
        .into_iter()
        .filter(|v| v.number == conv.number)
        .collect();
    if let Some(newer) = older.iter().find(|v| v.token > token) {
        return Err(stale(conv, token, newer.token));
    }
    let name = format!("{}.{token}.jsonl", conv.number);
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = fs::File::create(&temp)?;
        f.write_all(lines)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error("writing", &temp, e));
    }
    let path = dir.join(&name);
    if let Err(e) = fs::rename(&temp, &path) {
        let _ = fs::remove_file(&temp);
        return Err(io_error("renaming into place", &path, e));
    }
    sync_dir(&dir)?;
    // Superseded: readers already prefer the new version, so a removal
    // that fails only leaves a file behind.
    for v in older.iter().filter(|v| v.token < token) {
        if let Err(e) = fs::remove_file(&v.path) {
            tracing::debug!(path = %v.path.display(), error = %e, "superseded archive file not removed");
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("flushing the directory", dir, e))
}

fn read_file(root: &Path, conv: ConversationId) -> Result<Option<Vec<HistoryEvent>>> {
    let dir = root.join(conv.customer.to_string());
    let Some(newest) = versions(&dir)?
        .into_iter()
        .filter(|v| v.number == conv.number)
        .max_by_key(|v| v.token)
    else {
        return Ok(None);
    };
    let text = match fs::read_to_string(&newest.path) {
        Ok(text) => text,
        // Superseded and removed between listing and reading: look again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return read_file(root, conv),
        Err(e) => return Err(io_error("reading", &newest.path, e)),
    };
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let event = serde_json::from_str(line).map_err(|e| {
            ClusterError::Archive(format!(
                "{} line {}: not a history event: {e}",
                newest.path.display(),
                i + 1
            ))
        })?;
        events.push(event);
    }
    check_whole(conv, &events)
        .map_err(|e| ClusterError::Archive(format!("{} is damaged: {e}", newest.path.display())))?;
    Ok(Some(events))
}

/// The promises every [`Archive`] keeps, written once and run against each.
/// Each check panics with a message that says which promise broke. Use a
/// fresh, empty archive.
pub async fn contract(a: &dyn Archive) {
    use centralino_core::history::EventKind;
    let customer = CustomerId(4_242);
    let conv = |number| ConversationId { customer, number };
    let history = |n: u64, by: &str| -> Vec<HistoryEvent> {
        (1..=n)
            .map(|seq| HistoryEvent {
                seq,
                at: 1_000 + seq,
                kind: EventKind::Resolved { by: by.into() },
            })
            .collect()
    };
    assert_eq!(
        a.read(conv(1)).await.expect("read"),
        None,
        "nothing is archived before a store"
    );
    assert_eq!(
        a.list(customer).await.expect("list"),
        vec![],
        "a customer with nothing archived"
    );

    a.store(conv(1), 10, &history(3, "first"))
        .await
        .expect("store");
    assert_eq!(
        a.read(conv(1)).await.expect("read"),
        Some(history(3, "first")),
        "what was stored comes back"
    );
    a.store(conv(1), 10, &history(5, "again"))
        .await
        .expect("the same owner stores again");
    assert_eq!(
        a.read(conv(1)).await.expect("read"),
        Some(history(5, "again")),
        "storing again replaces"
    );
    match a.store(conv(1), 9, &history(2, "stale")).await {
        Err(ClusterError::Fenced { token: 9, .. }) => {}
        other => panic!("a store with an older token must be fenced, got {other:?}"),
    }
    assert_eq!(
        a.read(conv(1)).await.expect("read"),
        Some(history(5, "again")),
        "a stale owner's store changes nothing"
    );
    a.store(conv(1), 20, &history(6, "newer owner"))
        .await
        .expect("a newer owner stores");
    assert_eq!(
        a.read(conv(1)).await.expect("read"),
        Some(history(6, "newer owner")),
        "a newer token replaces"
    );

    for bad in [vec![], history(3, "x")[1..].to_vec()] {
        match a.store(conv(7), 20, &bad).await {
            Err(ClusterError::Rejected(m)) => assert!(m.contains("cu-4242.7"), "{m}"),
            other => panic!("a store of a partial history must be rejected, got {other:?}"),
        }
    }
    assert_eq!(a.read(conv(7)).await.expect("read"), None);

    a.store(conv(10), 20, &history(1, "tenth"))
        .await
        .expect("store");
    a.store(conv(2), 20, &history(2, "second"))
        .await
        .expect("store");
    let other = ConversationId {
        customer: CustomerId(42),
        number: 1,
    };
    a.store(other, 1, &history(1, "someone else"))
        .await
        .expect("store");
    assert_eq!(
        a.list(customer).await.expect("list"),
        vec![conv(1), conv(2), conv(10)],
        "the customer's conversations, in number order, and no one else's"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed
    /// on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "centralino-archive-test-{name}-{}-{}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn memory_archive_passes_the_contract() {
        contract(&MemoryArchive::new()).await;
    }

    #[tokio::test]
    async fn file_archive_passes_the_contract() {
        let dir = TempDir::new("contract");
        contract(&FileArchive::open(&dir.0).expect("open")).await;
    }

    /// Two processes sharing the directory see each other's conversations;
    /// what is left on disk is one readable file per conversation.
    #[tokio::test]
    async fn file_archive_is_shared_and_readable() {
        let dir = TempDir::new("shared");
        let (a, b) = (
            FileArchive::open(&dir.0).expect("open a"),
            FileArchive::open(&dir.0).expect("open b"),
        );
        let conv = ConversationId {
            customer: CustomerId(7),
            number: 3,
        };
        let events: Vec<HistoryEvent> = (1..=2)
            .map(|seq| HistoryEvent {
                seq,
                at: seq,
                kind: centralino_core::history::EventKind::Resolved { by: "anna".into() },
            })
            .collect();
        a.store(conv, 5, &events).await.expect("a stores");
        assert_eq!(b.read(conv).await.expect("b reads"), Some(events.clone()));
        b.store(conv, 6, &events).await.expect("b stores, newer");
        let files: Vec<String> = fs::read_dir(dir.0.join("cu-7"))
            .expect("the customer's directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files,
            vec!["3.6.jsonl".to_string()],
            "one file, the newest; no temporary or superseded file left"
        );
        let text = fs::read_to_string(dir.0.join("cu-7/3.6.jsonl")).expect("read the file");
        assert_eq!(text.lines().count(), 2, "one event per line: {text}");
        assert!(text.starts_with("{\"seq\":1,"), "{text}");

        // A reader walks every customer and creates nothing.
        fs::create_dir_all(dir.0.join("cu-12")).expect("mkdir");
        fs::write(dir.0.join("notes.txt"), b"an operator's file").expect("write");
        let reader = FileArchive::open_to_read(&dir.0).expect("open to read");
        assert_eq!(
            reader.customers().await.expect("customers"),
            vec![CustomerId(7), CustomerId(12)],
            "customers in id order; other entries ignored"
        );
        assert_eq!(reader.read(conv).await.expect("read"), Some(events));
        assert!(
            FileArchive::open_to_read(dir.0.join("missing")).is_err(),
            "a missing directory is an error, not an empty archive"
        );
    }

    #[tokio::test]
    async fn a_damaged_file_is_an_error_that_names_it() {
        let dir = TempDir::new("damaged");
        let archive = FileArchive::open(&dir.0).expect("open");
        fs::create_dir_all(dir.0.join("cu-1")).expect("mkdir");
        fs::write(dir.0.join("cu-1/1.3.jsonl"), "{\"seq\":1,\n").expect("write");
        let conv = ConversationId {
            customer: CustomerId(1),
            number: 1,
        };
        match archive.read(conv).await {
            Err(ClusterError::Archive(m)) => assert!(m.contains("1.3.jsonl line 1"), "{m}"),
            other => panic!("a damaged file must be an error, got {other:?}"),
        }
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_refused_at_open() {
        let dir = TempDir::new("not-a-dir");
        fs::write(&dir.0, b"a file, not a directory").expect("write");
        match FileArchive::open(&dir.0) {
            Err(ClusterError::Archive(m)) => {
                assert!(m.contains(&dir.0.display().to_string()), "{m}")
            }
            Ok(_) => panic!("a file is no archive directory"),
            Err(other) => panic!("expected an archive error, got {other:?}"),
        }
        let _ = fs::remove_file(&dir.0);
    }
}
