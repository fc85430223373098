//! The node's durable store: an embedded SQLite database (WAL, `synchronous = FULL`).
//!
//! State, not history (ADR-0020): the party's state is kept one record per thing — each
//! ledger, each objective, what it knows of each channel, and the rest — in `state`; each step
//! writes the records it changed, in the same SQLite transaction as the messages and
//! transactions it produced (`outbox`, `transactions`) and the states it signed
//! (`signed_states`, which refuses a second state at one turn). Only after that transaction
//! commits — durably — is anything sent. Start-up loads the records and verifies them; its
//! cost follows the live state. Finished objectives leave a compact row in `archive`.
//!
//! Schema history: v1 logged every input (`inputs`, replayed on start, ADR-0015); v2 added
//! `signed_states`; v3 adds `state` and `archive`. A v1/v2 store is migrated on first open by
//! the engine: its inputs are replayed once, the state written, the inputs dropped.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

/// The schema version this code writes; older databases are migrated on open.
pub const SCHEMA_VERSION: i64 = 3;

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record does not decode (a corrupt or foreign database).
    #[error("store: record {seq} of {table} does not decode: {message}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Row.
        seq: i64,
        /// Decoder's message.
        message: String,
    },
    /// The step would record a signature on a different state at a (channel, turn) where this
    /// party already signed one: refused inside the transaction, nothing of the step is kept.
    #[error("store: refusing to sign a second state of {channel} at turn {turn} (signed {recorded}, now {attempted})")]
    ConflictingSignature {
        /// The channel.
        channel: String,
        /// The turn.
        turn: u64,
        /// The state hash signed before.
        recorded: String,
        /// The state hash the step signed.
        attempted: String,
    },
    /// The database was written by a newer version of this program.
    #[error("store: schema version {found} is newer than this program's {SCHEMA_VERSION}")]
    TooNew {
        /// The version found.
        found: i64,
    },
}

/// One step's records, written atomically.
///
/// `signed` is checked against what was signed before, inside the same transaction: a step
/// that would sign a second state at a (channel, turn) is refused as a whole
/// ([`StoreError::ConflictingSignature`]) and nothing of it is kept, so nothing of it is sent.
#[derive(Debug, Default)]
pub struct StepRecord {
    /// State records changed: (kind, key, JSON body), or `None` to delete the record.
    pub state: Vec<(&'static str, String, Option<String>)>,
    /// Objectives finished and moved out of the live state: (objective id, status, detail).
    pub archived: Vec<(String, String, String)>,
    /// Channels no longer open: their signature rows are dropped (nothing can be signed for
    /// them any more).
    pub retired: Vec<String>,
    /// The migration's last step: the input log is dropped with it.
    pub clear_inputs: bool,
    /// Messages to send: (recipient address, JSON body).
    pub messages: Vec<(String, String)>,
    /// Transactions to submit: JSON bodies.
    pub transactions: Vec<String>,
    /// States this party signed in the step: (channel id, turn, state hash), all 0x-hex.
    pub signed: Vec<(String, u64, String)>,
}

/// Ids the store gave a step's records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StepIds {
    /// One per message, in order: the transport's message id.
    pub messages: Vec<u64>,
    /// One per transaction, in order.
    pub transactions: Vec<u64>,
}

/// The SQLite store.
pub struct Store {
    conn: Connection,
    /// The version of an earlier release's store whose input log is still to be replayed.
    pending_upgrade: Option<i64>,
    /// Steps committed since the store was opened.
    commits: u64,
}

/// The schema of version 1 (an input log).
const V1_SCHEMA: &str = "
    CREATE TABLE inputs (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
    CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, body TEXT NOT NULL);
    CREATE TABLE transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
                               done INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE signatures (channel TEXT NOT NULL, turn INTEGER NOT NULL, hash TEXT NOT NULL,
                             PRIMARY KEY (channel, turn, hash));
    PRAGMA user_version = 1;";

/// The statements taking a store of `from` (1 or 2) to [`SCHEMA_VERSION`], without BEGIN/COMMIT.
fn upgrade_sql(from: i64) -> String {
    let mut sql = String::new();
    if from < 2 {
        // Version 2: one signed state per (channel, turn), enforced by the key. A version-1
        // audit table is carried over (the first state signed at a turn is kept).
        sql.push_str(
            "CREATE TABLE signed_states (channel TEXT NOT NULL, turn INTEGER NOT NULL, hash TEXT NOT NULL,
                                         PRIMARY KEY (channel, turn)) WITHOUT ROWID;
             INSERT OR IGNORE INTO signed_states (channel, turn, hash)
                 SELECT channel, turn, hash FROM signatures ORDER BY rowid;
             DROP TABLE signatures;",
        );
    }
    // Version 3: the party's state records and the archive of finished objectives.
    sql.push_str(
        "CREATE TABLE state (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
                             PRIMARY KEY (kind, key)) WITHOUT ROWID;
         CREATE TABLE archive (id TEXT PRIMARY KEY, status TEXT NOT NULL, detail TEXT NOT NULL) WITHOUT ROWID;
         PRAGMA user_version = 3;",
    );
    sql
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// An in-memory database (for tests of the sans-IO layers only).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version });
        }
        let mut store = Self { conn, pending_upgrade: None, commits: 0 };
        if version < 1 {
            store.conn.execute_batch(&format!("BEGIN; {V1_SCHEMA} COMMIT;"))?;
            store.conn.execute_batch(&format!("BEGIN; {} COMMIT;", upgrade_sql(1)))?;
        } else if version < SCHEMA_VERSION {
            let logged: i64 = store.conn.query_row("SELECT COUNT(*) FROM inputs", [], |r| r.get(0))?;
            if logged == 0 {
                store.conn.execute_batch(&format!("BEGIN; {} COMMIT;", upgrade_sql(version)))?;
            } else {
                // An input log to replay: the file stays as the earlier release wrote it (that
                // release can still open it) until the migrated state is committed, in the
                // same transaction as the schema upgrade.
                store.pending_upgrade = Some(version);
            }
        }
        Ok(store)
    }

    /// The schema version on disk: below [`SCHEMA_VERSION`] only while an earlier release's
    /// input log waits to be replayed (the first [`Store::commit_step`] upgrades it).
    pub fn user_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Writes a step's input, messages and transactions in one durable transaction.
    pub fn commit_step(&mut self, step: &StepRecord) -> Result<StepIds, StoreError> {
        let tx = self.conn.transaction()?;
        if let Some(version) = self.pending_upgrade {
            tx.execute_batch(&upgrade_sql(version))?;
        }
        for (kind, key, body) in &step.state {
            match body {
                Some(body) => tx.execute(
                    "INSERT INTO state (kind, key, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
                    params![kind, key, body],
                )?,
                None => tx.execute("DELETE FROM state WHERE kind = ?1 AND key = ?2", params![kind, key])?,
            };
        }
        for (id, status, detail) in &step.archived {
            tx.execute(
                "INSERT INTO archive (id, status, detail) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, detail = excluded.detail",
                params![id, status, detail],
            )?;
        }
        for channel in &step.retired {
            tx.execute("DELETE FROM signed_states WHERE channel = ?1", params![channel])?;
        }
        if step.clear_inputs {
            tx.execute("DELETE FROM inputs", [])?;
        }
        let mut ids = StepIds::default();
        for (peer, body) in &step.messages {
            tx.execute("INSERT INTO outbox (peer, body) VALUES (?1, ?2)", params![peer, body])?;
            ids.messages.push(tx.last_insert_rowid() as u64);
        }
        for (channel, turn, hash) in &step.signed {
            let recorded: Option<String> = tx
                .query_row(
                    "SELECT hash FROM signed_states WHERE channel = ?1 AND turn = ?2",
                    params![channel, *turn as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match recorded {
                Some(recorded) if recorded != *hash => {
                    // Dropping `tx` rolls the whole step back.
                    return Err(StoreError::ConflictingSignature {
                        channel: channel.clone(),
                        turn: *turn,
                        recorded,
                        attempted: hash.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO signed_states (channel, turn, hash) VALUES (?1, ?2, ?3)",
                        params![channel, *turn as i64, hash],
                    )?;
                }
            }
        }
        for body in &step.transactions {
            tx.execute("INSERT INTO transactions (body) VALUES (?1)", params![body])?;
            ids.transactions.push(tx.last_insert_rowid() as u64);
        }
        tx.commit()?;
        self.pending_upgrade = None;
        self.commits += 1;
        Ok(ids)
    }

    /// Steps committed (durable transactions, each one fsync) since the store was opened.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Every state record: (kind, key, body).
    pub fn state(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare("SELECT kind, key, body FROM state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Bytes and rows of the state records (for sizing figures).
    pub fn state_size(&self) -> Result<(u64, u64), StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok((0, 0));
        }
        Ok(self.conn.query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM state", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?)
    }

    /// The archived record of a finished objective: (status, detail).
    pub fn archived(&self, id: &str) -> Result<Option<(String, String)>, StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok(None);
        }
        Ok(self
            .conn
            .query_row("SELECT status, detail FROM archive WHERE id = ?1", params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Archived objectives whose id contains `needle` (all with `""`), at most `limit`, in id
    /// order: (id, status, detail).
    pub fn archive(&self, needle: &str, limit: usize) -> Result<Vec<(String, String, String)>, StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok(Vec::new());
        }
        let mut stmt =
            self.conn.prepare("SELECT id, status, detail FROM archive WHERE instr(id, ?1) > 0 ORDER BY id LIMIT ?2")?;
        let rows = stmt.query_map(params![needle, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stored input of a v1/v2 store, oldest first (the migration replays them once).
    pub fn inputs(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT seq, body FROM inputs ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The most recent `per_peer` outbox messages of each peer, oldest first: what to hand the
    /// transport again after a restart.
    pub fn recent_outbox(&self, per_peer: usize) -> Result<Vec<(u64, String, String)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, peer, body FROM (
                 SELECT id, peer, body, ROW_NUMBER() OVER (PARTITION BY peer ORDER BY id DESC) AS n FROM outbox
             ) WHERE n <= ?1 ORDER BY id",
        )?;
        let rows =
            stmt.query_map(params![per_peer as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rewrites every outbox message with `rewrite` (a migration bringing an earlier release's
    /// messages to today's shapes), in one transaction.
    pub fn rewrite_outbox(&mut self, mut rewrite: impl FnMut(&str) -> Option<String>) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let rows: Vec<(i64, String)> = {
            let mut stmt = tx.prepare("SELECT id, body FROM outbox")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut changed = 0;
        for (id, body) in rows {
            if let Some(new) = rewrite(&body).filter(|new| *new != body) {
                tx.execute("UPDATE outbox SET body = ?1 WHERE id = ?2", params![new, id])?;
                changed += 1;
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Drops outbox messages older than the most recent `per_peer` of each peer.
    pub fn prune_outbox(&self, per_peer: usize) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY peer ORDER BY id DESC) AS n FROM outbox)
                 WHERE n > ?1)",
            params![per_peer as i64],
        )?)
    }

    /// Transactions not yet confirmed (or given up), oldest first.
    pub fn pending_transactions(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, body FROM transactions WHERE done = 0 ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a settled transaction (confirmed, or failed and reported to its objective).
    pub fn transaction_done(&self, id: u64) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM transactions WHERE id = ?1", params![id as i64])?;
        Ok(())
    }

    /// Rows of each table, for figures and tests of growth.
    pub fn row_counts(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut out = Vec::new();
        for table in ["state", "archive", "outbox", "transactions", "signed_states", "inputs"] {
            let exists: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![table],
                |r| r.get(0),
            )?;
            if exists == 0 {
                out.push((table, 0));
                continue;
            }
            let n: i64 = self.conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            out.push((table, n as u64));
        }
        Ok(out)
    }

    /// The state hash this party signed for `channel` at `turn`, if any.
    pub fn signed_at(&self, channel: &str, turn: u64) -> Result<Option<String>, StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok(None);
        }
        Ok(self
            .conn
            .query_row(
                "SELECT hash FROM signed_states WHERE channel = ?1 AND turn = ?2",
                params![channel, turn as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every state this party signed: (channel, turn, state hash), in channel and turn order.
    pub fn signed_states(&self) -> Result<Vec<(String, u64, String)>, StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare("SELECT channel, turn, hash FROM signed_states ORDER BY channel, turn")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of distinct states this party signed.
    pub fn signed_count(&self) -> Result<u64, StoreError> {
        if self.pending_upgrade.is_some() {
            return Ok(0);
        }
        Ok(self.conn.query_row("SELECT COUNT(*) FROM signed_states", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).optional()?)
    }

    /// Sets a value of the `meta` table.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(input: &str, signed: &[(&str, u64, &str)]) -> StepRecord {
        StepRecord {
            state: vec![("objective", input.into(), Some(format!("{{\"step\":\"{input}\"}}")))],
            messages: vec![("0xpeer".into(), format!("{{\"from\":\"{input}\"}}"))],
            transactions: vec![],
            signed: signed.iter().map(|(c, t, h)| (c.to_string(), *t, h.to_string())).collect(),
            ..StepRecord::default()
        }
    }

    #[test]
    fn a_second_state_at_one_turn_is_refused_with_the_whole_step() {
        let mut store = Store::in_memory().unwrap();
        store.commit_step(&step("a", &[("0xc", 2, "0xh1"), ("0xc", 3, "0xh2")])).unwrap();
        // The same state again is fine (a retransmission of our signature).
        store.commit_step(&step("b", &[("0xc", 2, "0xh1")])).unwrap();
        let err = store.commit_step(&step("c", &[("0xc", 4, "0xh4"), ("0xc", 3, "0xOTHER")])).unwrap_err();
        assert!(
            matches!(&err, StoreError::ConflictingSignature { turn: 3, recorded, attempted, .. }
                if recorded == "0xh2" && attempted == "0xOTHER"),
            "{err}"
        );
        // Nothing of the refused step was kept: not its state, its message, nor turn 4.
        assert_eq!(store.state().unwrap().len(), 2);
        assert_eq!(store.recent_outbox(10).unwrap().len(), 2);
        assert_eq!(store.signed_at("0xc", 4).unwrap(), None);
        assert_eq!(store.signed_at("0xc", 3).unwrap().as_deref(), Some("0xh2"));
        assert_eq!(store.signed_count().unwrap(), 2);
        // Another channel's turn 3 is its own.
        store.commit_step(&step("d", &[("0xd", 3, "0xOTHER")])).unwrap();
    }

    #[test]
    fn a_version_1_store_migrates_keeping_its_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE inputs (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
                 CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, body TEXT NOT NULL);
                 CREATE TABLE transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
                                            done INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE signatures (channel TEXT NOT NULL, turn INTEGER NOT NULL, hash TEXT NOT NULL,
                                          PRIMARY KEY (channel, turn, hash));
                 INSERT INTO signatures VALUES ('0xc', 1, '0xa'), ('0xc', 2, '0xb');
                 INSERT INTO inputs (body) VALUES ('{}');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        // Untouched until the migrated state is committed: the earlier release can still open it.
        assert_eq!(store.user_version().unwrap(), 1);
        assert_eq!(store.inputs().unwrap().len(), 1);
        store.commit_step(&StepRecord { clear_inputs: true, ..StepRecord::default() }).unwrap();
        assert_eq!(store.user_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.signed_states().unwrap().len(), 2);
        assert!(matches!(
            store.commit_step(&step("x", &[("0xc", 2, "0xz")])),
            Err(StoreError::ConflictingSignature { turn: 2, .. })
        ));
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }
}
