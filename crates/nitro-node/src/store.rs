//! The node's durable store: an embedded SQLite database (WAL, `synchronous = FULL`).
//!
//! Event sourcing by input: every input that changed the party (a request, a peer's
//! message, a chain event, a failed transaction) is appended to `inputs`, in the same SQLite
//! transaction as the messages and transactions it produced (`outbox`, `transactions`).
//! Only after that transaction commits — durably — is anything sent. Since the party is
//! deterministic (RFC 6979 signatures included), replaying the inputs rebuilds exactly the
//! same party and re-derives exactly the same signatures: a restart can never sign a
//! different state at a turn it already signed (ADR-0015).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

/// The schema version this code writes; older databases are migrated on open.
pub const SCHEMA_VERSION: i64 = 1;

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
    /// The database was written by a newer version of this program.
    #[error("store: schema version {found} is newer than this program's {SCHEMA_VERSION}")]
    TooNew {
        /// The version found.
        found: i64,
    },
}

/// One step's records, written atomically.
#[derive(Debug, Default)]
pub struct StepRecord {
    /// The input, as JSON (none for inputs that change nothing durable, e.g. timer ticks).
    pub input: Option<String>,
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
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE inputs (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
                 CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, body TEXT NOT NULL);
                 CREATE TABLE transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
                                            done INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE signatures (channel TEXT NOT NULL, turn INTEGER NOT NULL, hash TEXT NOT NULL,
                                          PRIMARY KEY (channel, turn, hash));
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(Self { conn })
    }

    /// Writes a step's input, messages and transactions in one durable transaction.
    pub fn commit_step(&mut self, step: &StepRecord) -> Result<StepIds, StoreError> {
        let tx = self.conn.transaction()?;
        if let Some(input) = &step.input {
            tx.execute("INSERT INTO inputs (body) VALUES (?1)", params![input])?;
        }
        let mut ids = StepIds::default();
        for (peer, body) in &step.messages {
            tx.execute("INSERT INTO outbox (peer, body) VALUES (?1, ?2)", params![peer, body])?;
            ids.messages.push(tx.last_insert_rowid() as u64);
        }
        for (channel, turn, hash) in &step.signed {
            tx.execute(
                "INSERT OR IGNORE INTO signatures (channel, turn, hash) VALUES (?1, ?2, ?3)",
                params![channel, *turn as i64, hash],
            )?;
        }
        for body in &step.transactions {
            tx.execute("INSERT INTO transactions (body) VALUES (?1)", params![body])?;
            ids.transactions.push(tx.last_insert_rowid() as u64);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Every stored input, oldest first.
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

    /// Marks a transaction as settled (confirmed, or failed and reported to its objective).
    pub fn transaction_done(&self, id: u64) -> Result<(), StoreError> {
        self.conn.execute("UPDATE transactions SET done = 1 WHERE id = ?1", params![id as i64])?;
        Ok(())
    }

    /// Every (channel, turn) at which this party signed more than one state — the audit of
    /// "never sign two different states at one turn" (a leader may, legitimately, only after
    /// its follower rejected the first).
    pub fn double_signed(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT channel, turn FROM signatures GROUP BY channel, turn HAVING COUNT(DISTINCT hash) > 1")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of distinct states this party signed.
    pub fn signed_count(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM signatures", [], |r| r.get::<_, i64>(0))? as u64)
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
