//! All SQL lives here. The store owns the connection pools of one backend (SQLite, the embedded
//! default, or PostgreSQL) and hands out tenant-scoped handles: every query that touches tenant
//! data takes a [`TenantId`] from a [`Scoped`] handle and filters by it, so no caller can forget.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Encode, PgPool, SqlitePool, Type};
use tokio::sync::{mpsc, oneshot};

use crate::domain::TenantId;

pub mod direct;
pub mod entities;
pub mod outbox;
pub mod packs;
pub mod plugins;
pub mod records;
pub mod sql;
pub mod sqlite_malloc;
pub mod tenants;
pub mod wal;
pub mod webhooks;
pub mod workflows;

pub use sql::{Dialect, SqlValue};

/// The page cache of the one SQLite write connection, in KiB (negative: SQLite's convention).
/// Kept small on purpose: when a B-tree split renumbers pages, SQLite parks a page under the
/// pending-byte page number (262,145 with 4 KiB pages), and the next COMMIT then walks every page
/// in the connection's cache to drop it (`pcache1TruncateUnsafe`): with the readers' 64 MiB that
/// walk took 20% of the writer's time. Pages the writer misses come from the OS page cache.
const WRITER_CACHE_SIZE: &str = "-8192";

/// How often the background checkpointer looks for new commits to copy from the WAL into the
/// database (see [`checkpointer`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The WAL frames (pages) after which the writer lets the WAL start over (see [`checkpointer`]):
/// 128 MiB with 4 KiB pages. Each restart stalls the writer for a few milliseconds (it copies the
/// frames of the last moments and the database file is synced); at 32 MiB they came every 300 ms
/// under a stream of creates and were most of the create p99 (BENCHMARKS, session 24). A larger
/// WAL costs disk, and the replay after a crash reads all of it.
#[cfg(not(test))]
const WAL_RESTART_FRAMES: i64 = 32_768;
#[cfg(test)]
const WAL_RESTART_FRAMES: i64 = 64;

/// The size, in bytes, the WAL file is cut back to when it starts over after growing past it.
const WAL_SIZE_LIMIT: i64 = WAL_RESTART_FRAMES * 4_096;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use `sqlite:<path>` or `postgres://…`")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    /// Committed, but syncing the WAL afterwards failed (see `store::wal`).
    #[error("the write may not be durable: {0}")]
    NotDurable(String),
    /// A statement run on the write connection's handle failed (`store::direct`).
    #[error("database error: {0}")]
    Direct(String),
    /// A request the stored data refuses (an unknown role, say); the message says why.
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// The name of the unique index a write violated, if that is why it failed.
    pub fn violated_unique_index(&self) -> Option<String> {
        let StoreError::Database(sqlx::Error::Database(error)) = self else {
            return None;
        };
        if !error.is_unique_violation() {
            return None;
        }
        if let Some(constraint) = error.constraint() {
            return Some(constraint.to_owned());
        }
        // SQLite names expression indexes in the message: "UNIQUE constraint failed: index 'ru_1_email'".
        let message = error.message();
        let start = message.find("index '")? + "index '".len();
        let end = message[start..].find('\'')? + start;
        Some(message[start..end].to_owned())
    }
}

/// A point in time as bound to queries. PostgreSQL stores `timestamptz`; SQLite stores text, in
/// one fixed-width UTC form (`2026-01-02T03:04:05.123456Z`) so that text comparison and sorting
/// follow time (sqlx's own form trims trailing zeros, which breaks both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub time::OffsetDateTime);

impl Timestamp {
    fn sqlite_text(&self) -> String {
        let utc = self.0.to_offset(time::UtcOffset::UTC);
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        utc.format(&format).expect("timestamps format")
    }
}

impl Type<sqlx::Sqlite> for Timestamp {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as Type<sqlx::Sqlite>>::type_info()
    }
}

impl Encode<'_, sqlx::Sqlite> for Timestamp {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'_>>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Encode::<sqlx::Sqlite>::encode(self.sqlite_text(), buf)
    }
}

impl Type<sqlx::Postgres> for Timestamp {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <time::OffsetDateTime as Type<sqlx::Postgres>>::type_info()
    }
}

impl Encode<'_, sqlx::Postgres> for Timestamp {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Encode::<sqlx::Postgres>::encode_by_ref(&self.0, buf)
    }
}

/// The current time at the precision both backends store (microseconds).
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("a valid nanosecond")
}

/// How much of the SQLite database file each read connection maps into memory by default, in
/// MiB: 64 GiB, enough for any database this host is meant for. Reads of mapped pages skip
/// the `pread` into the connection's page cache (the screen pop over a 9.2 GB database: 8% of
/// the SQLite threads' time); the mapping is address space, and the pages it touches are the OS
/// page cache's, shared, counted in the process's RSS. SQLite is built to allow it
/// (`SQLITE_MAX_MMAP_SIZE`, `.cargo/config.toml`); the writer does not map (measured: no gain).
pub const READER_MMAP_MIB: u64 = 64 << 10;

/// How durable an acknowledged write is on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// The WAL is synced before a write is acknowledged, as with `synchronous=FULL` (by
    /// [`wal::Syncer`], beside the writer): an acknowledged write survives a power cut (the
    /// default).
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process, may lose the last writes on power loss.
    Normal,
}

/// Connection pools of one backend.
#[derive(Debug, Clone)]
enum Pools {
    /// SQLite allows one writer at a time: writes go through a pool of one connection, so they
    /// queue in the process instead of failing with `SQLITE_BUSY`; reads use their own pool.
    /// Record writes reach that connection through the group-commit writer.
    Sqlite {
        read: Readers,
        write: SqlitePool,
        writer: mpsc::Sender<Job>,
        /// The one connection that checkpoints the WAL, off the write path.
        checkpoint: SqlitePool,
        /// Syncs the WAL after the write connection's commits ([`Durability::Full`]; see
        /// `store::wal`); `None` with [`Durability::Normal`].
        syncer: Option<wal::Syncer>,
    },
    Postgres(PgPool),
}

/// A boxed future borrowing its transaction, as [`Store::write`] takes them.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = T> + Send + 't>>;

/// One request's work for the group-commit writer: runs inside a batch's transaction and says
/// whether its changes stay, and how to answer its caller once the batch has committed or not.
enum Job {
    /// Work through sqlx: each statement is a round trip to the connection's thread.
    Async(AsyncWork),
    /// Work on the connection's handle, on the writer's own thread (see [`direct`]).
    Direct(DirectWork),
}

type AsyncWork = Box<dyn for<'t> FnOnce(&'t mut Tx) -> TxFuture<'t, Finish> + Send>;
type DirectWork = Box<dyn FnOnce(&mut direct::Direct<'_>) -> Finish + Send>;

impl Finish {
    /// How a caller waiting on `reply` is answered once the group has committed or not.
    fn of<T, E>(result: Result<T, E>, reply: oneshot::Sender<Result<T, E>>) -> Self
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        Finish {
            keep: result.is_ok(),
            answer: Box::new(move |committed: Result<(), Unfinished>| {
                let result = match (result, committed) {
                    (Ok(_), Err(unfinished)) => Err(StoreError::from(unfinished).into()),
                    (result, _) => result,
                };
                let _ = reply.send(result);
            }),
        }
    }
}

struct Finish {
    keep: bool,
    answer: Box<dyn FnOnce(Result<(), Unfinished>) + Send>,
}

/// Why a group's writes were not acknowledged as done: one reason for each of its callers.
#[derive(Debug, Clone)]
enum Unfinished {
    NotCommitted(String),
    NotDurable(String),
}

impl From<Unfinished> for StoreError {
    fn from(unfinished: Unfinished) -> Self {
        match unfinished {
            Unfinished::NotCommitted(message) => StoreError::NotCommitted(message),
            Unfinished::NotDurable(message) => StoreError::NotDurable(message),
        }
    }
}

/// The most requests one group commit holds.
const MAX_GROUP: usize = 512;

/// The database of a Rapport server.
#[derive(Debug, Clone)]
pub struct Store {
    pools: Pools,
}

impl Store {
    /// Connects to `sqlite:<path>` (created if missing) or `postgres://…` and runs migrations.
    pub async fn connect(url: &str, durability: Durability) -> Result<Self, StoreError> {
        Self::connect_with(url, durability, READER_MMAP_MIB).await
    }

    /// [`Store::connect`], with each SQLite read connection mapping up to `reader_mmap_mib` MiB
    /// of the database file into memory (0: none; ignored on PostgreSQL).
    pub async fn connect_with(
        url: &str,
        durability: Durability,
        reader_mmap_mib: u64,
    ) -> Result<Self, StoreError> {
        let store = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, durability, reader_mmap_mib).await?
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                // A connection scoped outside a transaction set its tenant and role for the
                // session (see `Scoped::entered`): they go before anyone else gets it.
                .after_release(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute("RESET ROLE; SELECT set_config('rapport.tenant', '', false)")
                            .await?;
                        Ok(true)
                    })
                })
                .connect_with(options)
                .await?;
            Self {
                pools: Pools::Postgres(pool),
            }
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_sqlite(
        url: &str,
        durability: Durability,
        reader_mmap_mib: u64,
    ) -> Result<Self, StoreError> {
        sqlite_malloc::use_mimalloc();
        let options = SqliteConnectOptions::from_str(url)?;
        if let Some(parent) = options
            .get_filename()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            create_dir(parent)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-65536")
            // ANALYZE samples at most this many rows per index: statistics stay cheap to refresh.
            .pragma("analysis_limit", "1000")
            .pragma("temp_store", "memory");
        // Commits never checkpoint: copying the WAL into the database (and syncing it) inside a
        // commit stalled every request waiting on the writer. `checkpointer` does it instead.
        let options = options
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string());
        // With `FULL`, the write connection's commits only write the WAL, and `syncer` syncs it
        // before a write is acknowledged, while the writer goes on (see `store::wal`).
        let write = sqlite_pool()
            .max_connections(1)
            .min_connections(1)
            .connect_with(
                options
                    .clone()
                    .synchronous(SqliteSynchronous::Normal)
                    .pragma("cache_size", WRITER_CACHE_SIZE),
            )
            .await?;
        let database = options.get_filename().to_owned();
        let syncer = match durability {
            Durability::Full => {
                let mut wal = database.clone().into_os_string();
                wal.push("-wal");
                Some(wal::Syncer::start(wal.into()).map_err(sqlx::Error::Io)?)
            }
            Durability::Normal => None,
        };
        let flusher = wal::Flusher::start(database).map_err(sqlx::Error::Io)?;
        let checkpoint = sqlite_pool()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-1024"))
            .await?;
        let restart = Arc::new(AtomicBool::new(false));
        tokio::spawn(checkpointer(
            checkpoint.clone(),
            restart.clone(),
            flusher.clone(),
        ));
        let read = Readers::builder(ReadConnections(
            options
                .read_only(true)
                .pragma("mmap_size", (reader_mmap_mib << 20).to_string()),
        ))
        .max_size(READERS)
        .build()
        .expect("a pool without timeouts needs no runtime");
        let (writer, jobs) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(group_commit(
            write.clone(),
            jobs,
            restart,
            syncer.clone(),
            flusher,
        ));
        Ok(Self {
            pools: Pools::Sqlite {
                read,
                write,
                writer,
                checkpoint,
                syncer,
            },
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Brings the schema up to date; migrations are append-only.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Sqlite { write, syncer, .. } => {
                sqlx::migrate!("./migrations/sqlite").run(write).await?;
                let started = std::time::Instant::now();
                let rebuilt = reconcile_record_indexes(write).await?;
                if rebuilt > 0 {
                    tracing::info!(
                        rebuilt,
                        ms = started.elapsed().as_millis() as u64,
                        "rebuilt the record indexes of an older layout"
                    );
                }
                if let Some(syncer) = syncer {
                    syncer.sync().await.map_err(StoreError::NotDurable)?;
                }
            }
            Pools::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Opens a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { write, syncer, .. } => Tx::Sqlite(write.begin().await?, syncer.clone()),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Runs `work` in a write transaction and commits it if `work` succeeds; an error rolls back
    /// everything `work` did.
    ///
    /// On SQLite this is a **group commit**: one writer task takes the work of every request that
    /// is waiting, runs each in its own savepoint of one transaction (a failing request rolls
    /// back to its savepoint, the others keep their changes) and commits them with one fsync.
    /// Each caller is answered only after the commit, so an acknowledged write is durable, and
    /// its work runs to the end even if the caller goes away. `work` should hold the database
    /// part of a request only: whatever can be prepared before (parsing, validation against a
    /// cached schema) belongs outside, where requests run in parallel.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> TxFuture<'t, Result<T, E>> + Send + 'static,
    {
        let Pools::Sqlite { writer, .. } = &self.pools else {
            let mut tx = self.begin().await?;
            let result = work(&mut tx).await;
            if result.is_ok() {
                tx.commit().await?;
            }
            return result;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job::Async(Box::new(move |tx: &mut Tx| {
            Box::pin(async move { Finish::of(work(tx).await, reply) })
        }));
        let aborted = || StoreError::NotCommitted("the writer stopped; see the server log".into());
        writer.send(job).await.map_err(|_| aborted())?;
        answer.await.map_err(|_| aborted())?
    }

    /// Like [`Store::write`], for work that runs on the SQLite write connection's handle, on
    /// the group-commit writer's own thread, without a round trip to sqlx's thread per
    /// statement (see [`direct`]). `None` on PostgreSQL, where the caller writes with
    /// [`Store::write`] instead.
    pub async fn write_direct<T, E, F>(&self, work: F) -> Option<Result<T, E>>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut direct::Direct<'_>) -> Result<T, E> + Send + 'static,
    {
        let Pools::Sqlite { writer, .. } = &self.pools else {
            return None;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job::Direct(Box::new(move |direct: &mut direct::Direct<'_>| {
            Finish::of(work(direct), reply)
        }));
        let aborted = || StoreError::NotCommitted("the writer stopped; see the server log".into());
        Some(match writer.send(job).await {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(aborted().into())),
            Err(_) => Err(aborted().into()),
        })
    }

    /// How many writes wait for the group-commit writer.
    #[cfg(test)]
    fn queued(&self) -> usize {
        match &self.pools {
            Pools::Sqlite { writer, .. } => writer.max_capacity() - writer.capacity(),
            Pools::Postgres(_) => 0,
        }
    }

    /// How many WAL syncs have succeeded; `None` without a syncer (PostgreSQL, or SQLite with
    /// `synchronous=NORMAL`).
    #[cfg(test)]
    fn wal_syncs(&self) -> Option<u64> {
        match &self.pools {
            Pools::Sqlite { syncer, .. } => syncer.as_ref().map(wal::Syncer::synced),
            Pools::Postgres(_) => None,
        }
    }

    /// A connection for reads.
    pub async fn reader(&self) -> Result<Conn, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { read, .. } => Conn::Sqlite(read_connection(read).await?),
            Pools::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    /// Waits for in-flight work and closes every connection (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite {
                read,
                write,
                checkpoint,
                ..
            } => {
                let idle = read.retain(|_, _| false).removed;
                read.close();
                for conn in idle {
                    if let Err(error) = sqlx::Connection::close(conn).await {
                        tracing::warn!(%error, "a read connection did not close cleanly");
                    }
                }
                checkpoint.close().await;
                write.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }

    /// Refreshes SQLite's planner statistics when the records table has at least doubled since
    /// `analyzed_rows` (or has them not yet), so that the planner picks the expression index a
    /// filter or group names. Returns the table's size after a refresh, `None` when nothing was
    /// done. PostgreSQL's autovacuum does this by itself.
    ///
    /// `ANALYZE` samples at most 1,000 rows per index (`analysis_limit`): cheap on millions of
    /// records, but the sample makes every entity look like a thousand records, so the index on
    /// `(entity_id, id)` looked as selective as any expression index and filters on a date range
    /// scanned the whole entity (measured: 5.8 s for a KPI over 5 million activities). Its row of
    /// `sqlite_stat1` is then set to the true size and records per entity — SQLite documents
    /// editing that table to guide the planner.
    pub async fn refresh_statistics(&self, analyzed_rows: i64) -> Result<Option<i64>, StoreError> {
        const SMALL: i64 = 10_000;
        let Pools::Sqlite { write, .. } = &self.pools else {
            return Ok(None);
        };
        let mut conn = write.acquire().await?;
        // The largest rowid: the table's size give or take its deletions, without counting.
        let (rows,): (Option<i64>,) = sqlx::query_as("SELECT max(rowid) FROM records")
            .fetch_one(&mut *conn)
            .await?;
        let rows = rows.unwrap_or(0);
        if rows < SMALL || (analyzed_rows > 0 && rows < 2 * analyzed_rows) {
            return Ok(None);
        }
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
        let (entities,): (i64,) = sqlx::query_as("SELECT count(*) FROM entities")
            .fetch_one(&mut *conn)
            .await?;
        let per_entity = rows / entities.max(1);
        sqlx::query(
            "UPDATE sqlite_stat1 SET stat = $1 WHERE tbl = 'records' AND idx = 'records_entity_id'",
        )
        .bind(format!("{rows} {} 1", per_entity.max(1)))
        .execute(&mut *conn)
        .await?;
        // Every connection reloads the statistics.
        sqlx::query("ANALYZE sqlite_schema")
            .execute(&mut *conn)
            .await?;
        Ok(Some(rows))
    }
}

/// Rebuilds, in one transaction, every per-entity index on `records` that is missing or whose
/// definition differs from the one this build creates for it (a database written by an older
/// build: its indexes would no longer match the queries' expressions, or would not cover them),
/// so that the indexes are exactly what the entity definitions ask for — aggregations name them
/// (`INDEXED BY`). Indexes are compared by their SQL as SQLite stores it; an index the
/// definitions do not ask for is left alone. Returns how many were built. SQLite only:
/// PostgreSQL's layout has not changed.
async fn reconcile_record_indexes(pool: &SqlitePool) -> Result<usize, StoreError> {
    fn normalize(sql: &str) -> String {
        sql.replace("IF NOT EXISTS ", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
    let existing: std::collections::HashMap<String, String> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(name, sql): (String, String)| (name, normalize(&sql)))
    .collect();
    let entities: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, tenant_id, definition FROM entities")
            .fetch_all(pool)
            .await?;
    let mut stale = Vec::new();
    for (id, tenant, text) in entities {
        let definition: crate::metadata::definition::EntityDefinition = serde_json::from_str(&text)
            .map_err(|error| StoreError::Corrupt(format!("entity definition {id}: {error}")))?;
        for (name, sql) in entities::entity_index_sql(Dialect::Sqlite, &tenant, id, &definition) {
            if existing
                .get(&name)
                .is_none_or(|current| *current != normalize(&sql))
            {
                stale.push((name, sql));
            }
        }
    }
    if stale.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    for (name, sql) in &stale {
        sqlx::query(&format!("DROP INDEX IF EXISTS {name}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(stale.len())
}

/// Copies committed WAL frames into the database file, on its own connection, whenever other
/// connections have committed since it last looked (`PRAGMA data_version`), at most every
/// [`CHECKPOINT_EVERY`]. `PASSIVE` waits for nobody: the writer keeps committing meanwhile.
/// Durability is unchanged: a commit is durable once its WAL frames are synced; this only moves
/// the database file's writes and sync out of the commits. Runs until the pool is closed.
///
/// The WAL starts over from its beginning only when a write transaction begins with every frame
/// in it copied, which under a steady stream of commits never happens by itself: the WAL grew
/// to 1.6 GB over one 100,000-record import. So when a pass finds more than
/// [`WAL_RESTART_FRAMES`] in the WAL, it raises `restart`, and the group-commit writer, between
/// two groups, copies the few frames committed since this pass on its own connection
/// ([`restart_wal`]); its next transaction then starts the WAL over, and SQLite cuts the file
/// back to [`WAL_SIZE_LIMIT`].
async fn checkpointer(pool: SqlitePool, restart: Arc<AtomicBool>, flusher: wal::Flusher) {
    let mut seen = None;
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if pool.is_closed() {
            return;
        }
        let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&pool)
            .await;
        let version = match version {
            Ok(version) => version,
            Err(_) if pool.is_closed() => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the database's data version");
                continue;
            }
        };
        if seen == Some(version) {
            continue;
        }
        // (busy, frames in the WAL, frames copied into the database)
        let flushing = flusher.during_checkpoint();
        let pass = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        drop(flushing);
        match pass {
            Ok((_, frames, _)) => {
                seen = Some(version);
                if frames >= WAL_RESTART_FRAMES {
                    restart.store(true, Ordering::Release);
                }
            }
            Err(_) if pool.is_closed() => return,
            Err(error) => tracing::warn!(%error, "a WAL checkpoint failed; it is retried"),
        }
    }
}

/// How many read connections a SQLite store opens at most (each on demand, and each with a thread
/// of its own).
const READERS: usize = 8;

/// The read connections of a SQLite store.
///
/// Not an sqlx pool: sqlx pings every connection that goes back to its pool, a round trip to
/// the connection's thread after every read (two thread wake-ups, as many as the read itself).
/// A connection handed back here goes back as it is. What the ping guards against, a connection
/// left in the middle of a statement by a request that went away, cannot hurt a SQLite
/// connection: its thread runs commands in order, so the next one waits for the abandoned one to
/// end. Connections open on first need, up to [`READERS`].
type Readers = deadpool::managed::Pool<ReadConnections>;

/// Opens the connections of [`Readers`].
#[derive(Debug)]
pub struct ReadConnections(SqliteConnectOptions);

impl deadpool::managed::Manager for ReadConnections {
    type Type = sqlx::SqliteConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<sqlx::SqliteConnection, sqlx::Error> {
        use sqlx::ConnectOptions;
        self.0.connect().await
    }

    async fn recycle(
        &self,
        _: &mut sqlx::SqliteConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        Ok(())
    }
}

/// How long a read waits for a free connection before it fails (sqlx's default for its pools).
const READ_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

async fn read_connection(
    read: &Readers,
) -> Result<deadpool::managed::Object<ReadConnections>, StoreError> {
    use deadpool::managed::PoolError;
    match tokio::time::timeout(READ_ACQUIRE_TIMEOUT, read.get()).await {
        Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(PoolError::Backend(error))) => Err(error.into()),
        Ok(Err(PoolError::Closed)) => Err(sqlx::Error::PoolClosed.into()),
        Ok(Err(error)) => Err(StoreError::Database(sqlx::Error::Protocol(
            error.to_string(),
        ))),
    }
}

/// A pool of SQLite connections that hands out an idle connection without pinging it first.
/// sqlx's default (`test_before_acquire`) asks the connection's worker thread whether it is
/// alive before every acquire: a round trip between threads in front of every read and every
/// group commit. A SQLite connection is a file handle that does not go stale; the ping on
/// release, which sqlx always runs, still retires a connection whose worker has gone.
fn sqlite_pool() -> SqlitePoolOptions {
    SqlitePoolOptions::new().test_before_acquire(false)
}

/// The group-commit writer of a SQLite store (see [`Store::write`]): runs until every
/// [`Store`] is dropped.
async fn group_commit(
    pool: SqlitePool,
    mut jobs: mpsc::Receiver<Job>,
    restart: Arc<AtomicBool>,
    syncer: Option<wal::Syncer>,
    flusher: wal::Flusher,
) {
    let mut waiting = Vec::new();
    while jobs.recv_many(&mut waiting, MAX_GROUP).await > 0 {
        if restart.swap(false, Ordering::AcqRel) {
            let _flushing = flusher.during_checkpoint();
            restart_wal(&pool).await;
        }
        let batch = std::mem::take(&mut waiting);
        // A panicking request ends its batch (rolled back, every caller told) but not the writer.
        if let Err(error) = tokio::spawn(commit_group(pool.clone(), batch, syncer.clone())).await {
            tracing::error!(%error, "a group commit panicked; its writes were rolled back");
        }
    }
}

/// Copies into the database what the WAL holds beyond the checkpointer's last pass, on the
/// write connection, so that its next transaction begins with the whole WAL copied and starts it
/// over (see [`checkpointer`]). A reader still on an older snapshot can keep part of the WAL
/// from being copied; the checkpointer then asks again after its next pass.
async fn restart_wal(pool: &SqlitePool) {
    if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(pool)
        .await
    {
        tracing::warn!(%error, "the WAL could not be copied to start it over; it is retried");
    }
}

async fn commit_group(pool: SqlitePool, batch: Vec<Job>, syncer: Option<wal::Syncer>) {
    let conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "cannot open a write transaction");
            return; // dropping the jobs tells their callers
        }
    };
    let mut tx = Tx::Group {
        conn: GroupConnection { conn, open: false },
        entity_versions: EntityVersions::default(),
        savepoints: Savepoints::default(),
    };
    // A group of several requests runs each in a savepoint of its own (see [`Savepoints`]);
    // COMMIT ends the last.
    let single = batch.len() == 1;
    let mut finished = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter().peekable();
    let is_direct = |job: &Job| matches!(job, Job::Direct(_));
    // The group alternates between runs of direct jobs, on the connection's handle, and runs of
    // the others, through sqlx; the transaction begins and ends on the side of its first and
    // last job. It ends with what COMMIT said, or with why the group failed before.
    let committed: Result<(), String> = 'group: loop {
        let Tx::Group {
            conn,
            entity_versions,
            savepoints,
        } = &mut tx
        else {
            unreachable!("a group commit runs in Tx::Group")
        };
        if jobs.peek().is_some_and(is_direct) {
            let open = &mut conn.open;
            let mut locked = match conn.conn.lock_handle().await {
                Ok(locked) => locked,
                Err(error) => break Err(error.to_string()),
            };
            // The run's SQLite work blocks this thread, a tokio worker: the worker's other
            // tasks go to another thread meanwhile (as they did while sqlx's thread ran the
            // statements).
            let run = blocking(|| {
                run_direct(
                    &mut locked,
                    entity_versions,
                    savepoints,
                    open,
                    &mut jobs,
                    &mut finished,
                    single,
                )
            });
            drop(locked);
            match run {
                DirectRun::More => {}
                DirectRun::Ended(ended) => break ended,
                DirectRun::Alone(finish) => {
                    (finish.answer)(Ok(()));
                    return;
                }
            }
        } else if !conn.open {
            // A group that starts with a request through sqlx begins through sqlx: one round
            // trip, as before direct requests existed. Open from here on, whatever BEGIN says:
            // if it failed halfway, the connection is closed rather than pooled in doubt.
            conn.open = true;
            if let Err(error) = sqlx::query(begin_sql(single))
                .execute(&mut *conn.conn)
                .await
            {
                break Err(error.to_string());
            }
        }
        while let Some(Job::Async(job)) = jobs.next_if(|job| !is_direct(job)) {
            let finish = job(&mut tx).await;
            let Tx::Group {
                conn, savepoints, ..
            } = &mut tx
            else {
                unreachable!("a group commit runs in Tx::Group")
            };
            match settle(single, savepoints, finish, &mut finished) {
                Settled::Kept => {}
                Settled::Alone(finish) => {
                    conn.end("ROLLBACK").await.ok();
                    (finish.answer)(Ok(()));
                    return;
                }
                Settled::Undo(sql) => {
                    if let Err(error) = sqlx::query(sql).execute(&mut *conn.conn).await {
                        break 'group Err(error.to_string());
                    }
                }
            }
        }
        if jobs.peek().is_none() {
            let Tx::Group { conn, .. } = &mut tx else {
                unreachable!("a group commit runs in Tx::Group")
            };
            break conn.end("COMMIT").await.map_err(|error| error.to_string());
        }
    };
    if committed.is_err()
        && let Tx::Group { conn, .. } = &mut tx
        && conn.open
    {
        // Jobs left unrun are dropped below, which tells their callers.
        conn.end("ROLLBACK").await.ok();
    }
    drop(jobs);
    match (committed, syncer) {
        (Ok(()), Some(syncer)) => syncer.after_sync(
            finished
                .into_iter()
                .map(|finish| -> wal::Answer {
                    Box::new(move |synced| (finish.answer)(synced.map_err(Unfinished::NotDurable)))
                })
                .collect(),
        ),
        (committed, _) => {
            if let Err(error) = &committed {
                tracing::error!(%error, requests = finished.len(), "a group commit failed");
            }
            let committed = committed.map_err(Unfinished::NotCommitted);
            for finish in finished {
                (finish.answer)(committed.clone());
            }
        }
    }
}

/// How a run of direct jobs ([`run_direct`]) left the group.
enum DirectRun {
    /// The next job is not direct: the group goes on through sqlx.
    More,
    /// The group ended: committed, or failed with this reason.
    Ended(Result<(), String>),
    /// The group's only request failed and its transaction was rolled back: answer it.
    Alone(Finish),
}

/// Runs on the write connection's handle what comes next in a group commit: `BEGIN` if the
/// transaction is not open yet, every direct job up to the next job that is not, and `COMMIT`
/// if no job is left.
fn run_direct(
    locked: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
    entity_versions: &mut EntityVersions,
    savepoints: &mut Savepoints,
    open: &mut bool,
    jobs: &mut std::iter::Peekable<std::vec::IntoIter<Job>>,
    finished: &mut Vec<Finish>,
    single: bool,
) -> DirectRun {
    let failed = |error: rusqlite::Error| DirectRun::Ended(Err(error.to_string()));
    let mut direct = match direct::Direct::new(locked, entity_versions) {
        Ok(direct) => direct,
        Err(error) => return failed(error),
    };
    if !*open {
        if !direct.is_autocommit() {
            // Left open by a group that panicked: it never committed.
            tracing::error!("the write connection was left in a transaction; rolled back");
            if let Err(error) = direct.execute_batch("ROLLBACK") {
                *open = true; // so that the connection is not pooled in it
                return failed(error);
            }
        }
        let begun = direct.execute_batch(begin_sql(single));
        // The savepoint can fail after BEGIN succeeded: the transaction is open either way.
        *open = !direct.is_autocommit();
        if let Err(error) = begun {
            return failed(error);
        }
    }
    while let Some(Job::Direct(job)) = jobs.next_if(|job| matches!(job, Job::Direct(_))) {
        if let Some(sql) = savepoints.take()
            && let Err(error) = direct.execute_batch(sql)
        {
            return failed(error);
        }
        let finish = job(&mut direct);
        match settle(single, savepoints, finish, finished) {
            Settled::Kept => {}
            Settled::Alone(finish) => {
                // (SQLite may have rolled back already, after an I/O error or a full disk.)
                if !direct.is_autocommit()
                    && let Err(error) = direct.execute_batch("ROLLBACK")
                {
                    tracing::error!(%error, "a failed write could not be rolled back");
                }
                *open = !direct.is_autocommit();
                return DirectRun::Alone(finish);
            }
            Settled::Undo(sql) => {
                // The request may have written in its savepoint: undo that now, before the
                // next request reads.
                if let Err(error) = direct.execute_batch(sql) {
                    return failed(error);
                }
            }
        }
    }
    if jobs.peek().is_some() {
        return DirectRun::More;
    }
    let committed = direct.execute_batch("COMMIT");
    *open = !direct.is_autocommit();
    match committed {
        Ok(()) => DirectRun::Ended(Ok(())),
        Err(error) => failed(error),
    }
}

/// What begins a group's transaction. IMMEDIATE takes the write lock at once: another process
/// writing the same file makes this wait (busy timeout) instead of failing a request halfway.
/// A group of several requests opens the first request's savepoint with it.
fn begin_sql(single: bool) -> &'static str {
    if single {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN IMMEDIATE; SAVEPOINT request_a"
    }
}

/// Runs `work`, which blocks its thread, so that a multi-threaded runtime moves the worker's
/// other tasks to another thread meanwhile; elsewhere (tests on one thread) it just runs it.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// What happens after a request of a group commit ran.
enum Settled {
    /// Nothing more: its changes stay (or it ran no statement).
    Kept,
    /// The group's only request failed: answer it; the transaction rolls back.
    Alone(Finish),
    /// It failed: this undoes what it wrote, before the next request runs.
    Undo(&'static str),
}

/// Files a finished request with the group's and says what to do about it.
fn settle(
    single: bool,
    savepoints: &mut Savepoints,
    finish: Finish,
    finished: &mut Vec<Finish>,
) -> Settled {
    if single && !finish.keep {
        return Settled::Alone(finish);
    }
    let keep = finish.keep;
    finished.push(finish);
    if single {
        return Settled::Kept;
    }
    if keep {
        savepoints.kept();
        return Settled::Kept;
    }
    match savepoints.rollback() {
        Some(sql) => Settled::Undo(sql),
        None => Settled::Kept,
    }
}

/// The savepoints of a group commit: each request of the group writes in a savepoint of its
/// own, so that a failing request rolls back to it and the others keep their changes.
///
/// A savepoint costs a round trip to SQLite's thread, so a request's savepoint opens with its
/// first statement, in the same round trip where it can: after a request succeeds,
/// `RELEASE <its savepoint>; SAVEPOINT <the next>` is *pending*, and the next statement of the
/// group runs it first ([`Savepoints::take`]): a record's read or insert at the front of its own
/// SQL, anything else through [`Scoped::entered`] or [`Tx::exec`] in a round trip of its own. A
/// request that fails before anything took the pending savepoint ran no statement, and has
/// nothing to roll back.
///
/// The savepoints alternate between two names, so that a rollback never reaches an earlier
/// request's work: had the pending statements failed in front of a write (leaving the earlier
/// savepoint open, or the next one never opened), `ROLLBACK TO <the next>` fails, and with it the
/// whole group.
#[derive(Debug, Default)]
pub struct Savepoints {
    /// The savepoint open now, or the one the pending statements open: an index of
    /// [`SAVEPOINTS`].
    open: usize,
    /// Whether the statements that open the next savepoint wait for the next statement.
    pending: bool,
}

/// What opens each savepoint, releasing the other: by [`Savepoints::open`].
const SAVEPOINTS: [&str; 2] = [
    "RELEASE request_b; SAVEPOINT request_a",
    "RELEASE request_a; SAVEPOINT request_b",
];

/// What rolls back to each savepoint.
const ROLLBACKS: [&str; 2] = ["ROLLBACK TO request_a", "ROLLBACK TO request_b"];

impl Savepoints {
    /// The pending statements, to run before the next statement of the group.
    pub(crate) fn take(&mut self) -> Option<&'static str> {
        if !std::mem::take(&mut self.pending) {
            return None;
        }
        self.open = 1 - self.open;
        Some(SAVEPOINTS[self.open])
    }

    /// A request succeeded: its savepoint (open or not) is released before the next statement.
    fn kept(&mut self) {
        self.pending = true;
    }

    /// A request failed: what undoes its statements, if it may have run any.
    fn rollback(&self) -> Option<&'static str> {
        (!self.pending).then_some(ROLLBACKS[self.open])
    }
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path).map_err(|error| {
        StoreError::Database(sqlx::Error::Configuration(
            format!(
                "cannot create the database directory `{}`: {error}",
                path.display()
            )
            .into(),
        ))
    })
}

/// Entity versions read in a group commit, by (tenant, entity name).
pub(crate) type EntityVersions = std::collections::HashMap<(String, String), Option<(i64, i64)>>;

/// The write connection of a group commit, whose transaction is begun and ended with plain
/// statements (on its handle or through sqlx: see `commit_group`), not sqlx's `Transaction`.
/// Dropped with the transaction open (a panic), it is closed, which rolls the transaction back,
/// instead of going back to the pool.
pub struct GroupConnection {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    open: bool,
}

impl GroupConnection {
    /// Ends the transaction with `COMMIT` or `ROLLBACK`, through sqlx.
    async fn end(&mut self, sql: &'static str) -> Result<(), StoreError> {
        sqlx::query(sql).execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for GroupConnection {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// An open transaction on either backend. Dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    /// A transaction on the SQLite write connection; committing it waits for the WAL's sync
    /// when there is a syncer (see `store::wal`).
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        Option<wal::Syncer>,
    ),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// A SQLite group commit (`Store::write`). It holds the write lock from its first statement
    /// (`BEGIN IMMEDIATE`) and none of its requests changes entity definitions (metadata
    /// changes run in transactions of their own), so an entity's version, once read, holds for
    /// the rest of the group: it is read once per group instead of once per request.
    Group {
        conn: GroupConnection,
        entity_versions: EntityVersions,
        savepoints: Savepoints,
    },
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx, syncer) => {
                tx.commit().await?;
                if let Some(syncer) = syncer {
                    syncer.sync().await.map_err(StoreError::NotDurable)?;
                }
            }
            Tx::Group { mut conn, .. } => conn.end("COMMIT").await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// The transaction's connection; in a group commit, with the request's savepoint open
    /// (see [`Savepoints`]).
    pub async fn exec(&mut self) -> Result<Exec<'_>, StoreError> {
        Ok(match self {
            Tx::Group {
                conn, savepoints, ..
            } => {
                if let Some(sql) = savepoints.take() {
                    sqlx::query(sql).execute(&mut *conn.conn).await?;
                }
                Exec::Sqlite(&mut conn.conn)
            }
            Tx::Sqlite(tx, _) => Exec::Sqlite(tx),
            Tx::Postgres(tx) => Exec::Postgres(tx),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(..) | Tx::Group { .. } => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Scopes this transaction to one tenant.
    pub fn scoped<'t>(&'t mut self, tenant: &'t TenantId) -> Scoped<'t> {
        match self {
            Tx::Group {
                conn,
                entity_versions,
                savepoints,
            } => Scoped {
                exec: Exec::Sqlite(&mut conn.conn),
                tenant,
                entity_versions: Some(entity_versions),
                savepoints: Some(savepoints),
                entered: false,
                in_transaction: true,
            },
            Tx::Sqlite(tx, _) => Scoped::new(Exec::Sqlite(tx), tenant, true),
            Tx::Postgres(tx) => Scoped::new(Exec::Postgres(tx), tenant, true),
        }
    }
}

/// A pooled connection for reads.
pub enum Conn {
    Sqlite(deadpool::managed::Object<ReadConnections>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl Conn {
    pub fn exec(&mut self) -> Exec<'_> {
        match self {
            Conn::Sqlite(conn) => Exec::Sqlite(conn),
            Conn::Postgres(conn) => Exec::Postgres(conn),
        }
    }

    pub fn scoped<'t>(&'t mut self, tenant: &'t TenantId) -> Scoped<'t> {
        Scoped::new(self.exec(), tenant, false)
    }
}

/// A borrowed connection of either backend; queries dispatch on it with [`on!`].
pub enum Exec<'c> {
    Sqlite(&'c mut sqlx::SqliteConnection),
    Postgres(&'c mut sqlx::PgConnection),
}

impl Exec<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Exec::Sqlite(_) => Dialect::Sqlite,
            Exec::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// A connection or transaction bound to one tenant: the only way to reach tenant data.
pub struct Scoped<'t> {
    exec: Exec<'t>,
    tenant: &'t TenantId,
    /// In a group commit: the entity versions already read in it.
    entity_versions: Option<&'t mut EntityVersions>,
    /// In a group commit: its savepoints, the pending one opened before the first write.
    savepoints: Option<&'t mut Savepoints>,
    /// Whether the tenant and role are set on the connection (PostgreSQL).
    entered: bool,
    in_transaction: bool,
}

/// The role tenant-scoped work runs as on PostgreSQL: it owns nothing, so the row-level
/// security of every tenant table applies to it (migration `0010_row_security.sql`).
pub const APP_ROLE: &str = "rapport_app";

impl<'t> Scoped<'t> {
    fn new(exec: Exec<'t>, tenant: &'t TenantId, in_transaction: bool) -> Self {
        Scoped {
            exec,
            tenant,
            entity_versions: None,
            savepoints: None,
            entered: false,
            in_transaction,
        }
    }

    /// In a group commit, the statements that open this request's savepoint if they have not
    /// run yet (see [`Savepoints`]): whoever takes them runs them before writing.
    pub(crate) fn take_savepoint(&mut self) -> Option<&'static str> {
        self.savepoints
            .as_mut()
            .and_then(|savepoints| savepoints.take())
    }

    /// `sql` with, in a group commit, the statements that open this request's savepoint in
    /// front if they have not run yet: one round trip for both.
    pub(crate) fn after_savepoint(&mut self, sql: String) -> String {
        match self.take_savepoint() {
            Some(savepoint) => format!("{savepoint};\n{sql}"),
            None => sql,
        }
    }

    /// The connection, with (on PostgreSQL) the tenant set for row-level security and the
    /// role switched to [`APP_ROLE`]: for the transaction, or, on a pooled connection, until
    /// the pool takes it back. Every query of a scoped store function goes through here, so
    /// a query that forgot its `tenant_id = $1` still sees only this tenant's rows.
    pub async fn entered(&mut self) -> Result<&mut Exec<'t>, StoreError> {
        if let Some(sql) = self.take_savepoint()
            && let Exec::Sqlite(c) = &mut self.exec
        {
            sqlx::query(sql).execute(&mut **c).await?;
        }
        if !self.entered {
            if let Exec::Postgres(c) = &mut self.exec {
                sqlx::query(
                    "SELECT set_config('rapport.tenant', $1, $2), set_config('role', $3, $2)",
                )
                .bind(self.tenant.as_str())
                .bind(self.in_transaction)
                .bind(APP_ROLE)
                .execute(&mut **c)
                .await?;
            }
            self.entered = true;
        }
        Ok(&mut self.exec)
    }

    /// Runs DDL (index changes, which need the tables' owner) as the connection's own role,
    /// then goes back to [`APP_ROLE`].
    pub async fn as_owner(&mut self, sql: &str) -> Result<(), StoreError> {
        let local = self.in_transaction;
        match self.entered().await? {
            Exec::Sqlite(c) => {
                sqlx::query(sql).execute(&mut **c).await?;
            }
            Exec::Postgres(c) => {
                sqlx::query("SELECT set_config('role', 'none', $1)")
                    .bind(local)
                    .execute(&mut **c)
                    .await?;
                let done = sqlx::query(sql).execute(&mut **c).await;
                // A failed statement aborts a transaction (whose end resets the role anyway):
                // its error is the one to report.
                if let Err(error) = done {
                    if local {
                        return Err(error.into());
                    }
                    sqlx::query("SELECT set_config('role', $1, false)")
                        .bind(APP_ROLE)
                        .execute(&mut **c)
                        .await?;
                    return Err(error.into());
                }
                sqlx::query("SELECT set_config('role', $1, $2)")
                    .bind(APP_ROLE)
                    .bind(local)
                    .execute(&mut **c)
                    .await?;
            }
        }
        Ok(())
    }
}

impl Scoped<'_> {
    pub fn dialect(&self) -> Dialect {
        self.exec.dialect()
    }

    pub fn tenant(&self) -> &TenantId {
        self.tenant
    }

    /// Whether this is a transaction (not a pooled connection for reads).
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// The condition selecting this tenant's records of one entity ([`sql::entity_rows`]).
    pub fn entity_rows(&self, entity_id: i64) -> String {
        sql::entity_rows(self.dialect(), self.tenant.as_str(), entity_id)
    }
}

/// Runs `$body` with `$conn` bound to the backend's concrete connection type. The body is
/// compiled once per backend, so the same SQL-building code serves both.
macro_rules! on {
    ($exec:expr, $conn:ident => $body:expr) => {
        match $exec {
            $crate::store::Exec::Sqlite($conn) => $body,
            $crate::store::Exec::Postgres($conn) => $body,
        }
    };
}
pub(crate) use on;

/// Finishes a newest-first list query: ` AND <column op> $n` for each filter that is set (e.g.
/// `("status = ", Some("failed"))`, or `("id < ", cursor)` for the page after a cursor), then
/// `ORDER BY id DESC LIMIT $n`.
pub fn newest_first(
    sql: &mut String,
    binds: &mut Vec<SqlValue>,
    filters: &[(&str, Option<&str>)],
    limit: i64,
) {
    for (column, value) in filters {
        if let Some(value) = value {
            binds.push(SqlValue::Text((*value).to_owned()));
            sql.push_str(&format!(" AND {column}${}", binds.len()));
        }
    }
    binds.push(SqlValue::Int(limit));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len()));
}

/// Cuts a page fetched with one row more than `limit` (see [`newest_first`]) back to `limit`;
/// the cursor of the next page is the last kept row's id, `None` on the last page.
pub fn next_page<T>(rows: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|row| id(row).to_owned())
}

/// Binds dynamic values in order.
pub fn bind_all<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>,
    values: &'q [SqlValue],
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    String: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    Timestamp: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: Encode<'q, DB> + Type<DB>,
{
    for value in values {
        query = match value {
            SqlValue::Text(text) => query.bind(text.as_str()),
            SqlValue::Int(int) => query.bind(*int),
            SqlValue::Float(float) => query.bind(*float),
            SqlValue::Bool(boolean) => query.bind(*boolean),
            SqlValue::Timestamp(timestamp) => query.bind(Timestamp(*timestamp)),
            SqlValue::Null => query.bind(None::<String>),
            SqlValue::NullTimestamp => query.bind(None::<Timestamp>),
        };
    }
    query
}

/// Same as [`bind_all`], for `query_as`.
pub fn bind_all_as<'q, DB, O>(
    mut query: sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments<'q>>,
    values: &'q [SqlValue],
) -> sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    Timestamp: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: Encode<'q, DB> + Type<DB>,
{
    for value in values {
        query = match value {
            SqlValue::Text(text) => query.bind(text.as_str()),
            SqlValue::Int(int) => query.bind(*int),
            SqlValue::Float(float) => query.bind(*float),
            SqlValue::Bool(boolean) => query.bind(*boolean),
            SqlValue::Timestamp(timestamp) => query.bind(Timestamp(*timestamp)),
            SqlValue::Null => query.bind(None::<String>),
            SqlValue::NullTimestamp => query.bind(None::<Timestamp>),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a write that holds the group-commit writer until the returned sender fires, so
    /// that the requests sent meanwhile queue and commit as one group. Returns once it holds it.
    async fn hold_the_writer(
        store: &Store,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), StoreError>>,
    ) {
        let (release, hold) = oneshot::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let blocker = store.clone();
        let first = tokio::spawn(async move {
            blocker
                .write(move |_: &mut Tx| {
                    Box::pin(async move {
                        started.send(()).unwrap();
                        hold.await.ok();
                        Ok::<_, StoreError>(())
                    })
                })
                .await
        });
        running.await.unwrap();
        (release, first)
    }

    /// Inserts a tenant row through the group-commit writer.
    async fn insert_tenant(store: &Store, name: String) -> Result<(), StoreError> {
        tenant_request(store, name, Request::Insert, false).await
    }

    /// What a test request does in a group commit.
    #[derive(Clone, Copy, Debug)]
    enum Request {
        Insert,
        InsertThenFail,
        /// Fails before writing anything.
        Fail,
        /// Succeeds without writing anything.
        Nothing,
    }

    /// Runs `request` through the group-commit writer, on a tenant row named `name`: a failing
    /// request's insert must not survive it. With `direct`, on the connection's handle.
    async fn tenant_request(
        store: &Store,
        name: String,
        request: Request,
        direct: bool,
    ) -> Result<(), StoreError> {
        if direct {
            return store
                .write_direct(move |direct: &mut direct::Direct<'_>| {
                    if let Request::Insert | Request::InsertThenFail = request {
                        direct.insert_tenant_row(&name)?;
                    }
                    if let Request::InsertThenFail | Request::Fail = request {
                        return Err(StoreError::Corrupt(format!("{name} refused")));
                    }
                    Ok(())
                })
                .await
                .expect("SQLite");
        }
        store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    if let Request::Insert | Request::InsertThenFail = request {
                        on!(tx.exec().await?, conn => sqlx::query(
                            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, 'now')",
                        )
                        .bind(&name)
                        .execute(conn)
                        .await
                        .map(|_| ()))?;
                    }
                    if let Request::InsertThenFail | Request::Fail = request {
                        return Err(StoreError::Corrupt(format!("{name} refused")));
                    }
                    Ok(())
                })
            })
            .await
    }

    /// A fresh directory for a test database named `file`: (the directory, the file, its URL).
    fn temp_database(file: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("rapport-store-{}", uuid::Uuid::now_v7()));
        let path = dir.join(file);
        let url = format!("sqlite:{}", path.display());
        (dir, path, url)
    }

    /// The tenant of the planner tests' entity 7.
    const PLAN_TENANT: &str = "0190c0de-0000-7000-8000-000000000001";

    /// A SQLite store in which entity 7 of [`PLAN_TENANT`] has the indexes `definition` asks for
    /// (and no records): enough for SQLite to plan statements over it.
    async fn store_with_indexes(
        file: &str,
        definition: serde_json::Value,
    ) -> (
        std::path::PathBuf,
        Store,
        crate::metadata::definition::EntityDefinition,
    ) {
        let (dir, _, url) = temp_database(file);
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        let definition = crate::metadata::definition::from_json(&definition).unwrap();
        let Pools::Sqlite { write, .. } = &store.pools else {
            unreachable!("a SQLite store")
        };
        for (_, sql) in entities::entity_index_sql(Dialect::Sqlite, PLAN_TENANT, 7, &definition) {
            sqlx::query(&sql).execute(write).await.unwrap();
        }
        (dir, store, definition)
    }

    /// SQLite's query plan of `sql` with `binds`, its lines joined by `; `.
    async fn query_plan(
        pool: &SqlitePool,
        sql: &str,
        binds: &[SqlValue],
    ) -> Result<String, sqlx::Error> {
        let rows: Vec<(i64, i64, i64, String)> =
            bind_all_as(sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}")), binds)
                .fetch_all(pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(.., detail)| detail)
            .collect::<Vec<_>>()
            .join("; "))
    }

    async fn tenant_count(store: &Store) -> i64 {
        let mut conn = store.reader().await.unwrap();
        let Conn::Sqlite(c) = &mut conn else {
            unreachable!("a SQLite store")
        };
        sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(&mut **c)
            .await
            .unwrap()
    }

    /// A read connection goes back to its pool as it is (no ping; see [`Readers`]). A read left
    /// in the middle of its statement, as when its client goes away, must not leave the
    /// connection to the next reader in a state that gives it a wrong answer or an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_abandoned_mid_statement_leaves_its_connection_usable() {
        let (dir, _, url) = temp_database("abandoned.db");
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        let slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) \
                    SELECT count(*) FROM n";
        {
            let mut conn = store.reader().await.unwrap();
            let Conn::Sqlite(c) = &mut conn else {
                unreachable!("a SQLite store")
            };
            let read = sqlx::query_scalar::<_, i64>(slow).fetch_one(&mut **c);
            let abandoned = tokio::time::timeout(Duration::from_millis(5), read).await;
            assert!(
                abandoned.is_err(),
                "the statement ended before it was abandoned"
            );
        }
        // The pool opened one connection, so this is the same one, its thread possibly still
        // counting.
        let mut conn = store.reader().await.unwrap();
        let Pools::Sqlite { read, .. } = &store.pools else {
            unreachable!("a SQLite store")
        };
        assert_eq!(read.status().size, 1);
        let Conn::Sqlite(c) = &mut conn else {
            unreachable!("a SQLite store")
        };
        let answer: i64 = sqlx::query_scalar("SELECT 41 + 1")
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(answer, 42);
        let count: i64 = sqlx::query_scalar(slow).fetch_one(&mut **c).await.unwrap();
        assert_eq!(count, 3_000_000);
        drop(conn);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_writes_reach_the_database_file_while_the_store_is_open() {
        let (dir, path, url) = temp_database("checkpoint.db");
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        // Commits do not checkpoint: only the background checkpointer copies the WAL (here the
        // migrations, then 2,000 tenants) into the database file.
        for n in 0..2_000 {
            insert_tenant(&store, format!("tenant {n:04} {}", "x".repeat(200)))
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() < 400 << 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            size() >= 400 << 10,
            "the database file holds {} bytes: the WAL was not checkpointed",
            size()
        );
        // Nothing was lost on the way: a fresh connection reads every row from the file.
        store.close().await;
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        assert_eq!(tenant_count(&store).await, 2_000);
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_a_steady_stream_of_writes() {
        use std::io::Read;
        let (dir, _, url) = temp_database("restart.db");
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        // The WAL header's checkpoint sequence number counts the times the WAL started over.
        let wal = dir.join("restart.db-wal");
        let restarts = || {
            let mut header = [0u8; 16];
            std::fs::File::open(&wal)
                .and_then(|mut file| file.read_exact(&mut header))
                .map_or(0, |()| {
                    u32::from_be_bytes([header[12], header[13], header[14], header[15]])
                })
        };
        let first = restarts();
        // Four writers keep the group-commit writer busy, so that its transactions begin right
        // after one another and never find the whole WAL copied unless the writer sees to it.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut written = 0_i64;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("tenant {writer} {written} {}", "x".repeat(500));
                        insert_tenant(&store, name).await.unwrap();
                        written += 1;
                    }
                    written
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while restarts() < first + 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let restarted = restarts() - first;
        stop.store(true, Ordering::Relaxed);
        let mut written = 0;
        for writer in writers {
            written += writer.await.unwrap();
        }
        assert!(
            restarted >= 3,
            "the WAL started over {restarted} times in {written} writes"
        );
        // Nothing was lost when it started over.
        assert_eq!(tenant_count(&store).await, written);
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_rolls_back_alone_within_a_group_commit() {
        // Runs of three requests on the connection's handle and three through sqlx, alternating;
        // the group begins and ends with either.
        for direct_first in [true, false] {
            failing_requests_in_one_group(move |n| ((n / 3) % 2 == 0) == direct_first).await;
        }
    }

    async fn failing_requests_in_one_group(direct: impl Fn(usize) -> bool) {
        let (dir, _, url) = temp_database("group.db");
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        // Requests that write and fail (the first and the last among them), fail before
        // writing, succeed without writing, and write. A request's savepoint opens with its
        // first write, so the pattern puts each kind after the states the others leave: after
        // a rollback, after a failure that wrote nothing, after a success with or without writes.
        const PATTERN: [Request; 8] = [
            Request::InsertThenFail,
            Request::Fail,
            Request::Nothing,
            Request::Insert,
            Request::Fail,
            Request::Insert,
            Request::Nothing,
            Request::Insert,
        ];
        const REQUESTS: usize = 201;
        let request = |n: usize| PATTERN[n % PATTERN.len()];
        // A first write holds the writer until every other request waits in its queue, so that
        // they are committed as one group.
        let (release, first) = hold_the_writer(&store).await;
        // Queued one after the other, so that the group runs them in this order.
        let mut requests = Vec::with_capacity(REQUESTS);
        for n in 0..REQUESTS {
            let store_ = store.clone();
            let direct = direct(n);
            requests.push(tokio::spawn(async move {
                tenant_request(&store_, format!("t{n:03}"), request(n), direct).await
            }));
            while store.queued() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        let mut outcomes = Vec::new();
        for request in requests {
            outcomes.push(request.await.unwrap());
        }
        for (n, outcome) in outcomes.iter().enumerate() {
            let fails = matches!(request(n), Request::InsertThenFail | Request::Fail);
            assert_eq!(outcome.is_err(), fails, "request {n}: {outcome:?}");
        }
        let mut conn = store.reader().await.unwrap();
        let names: Vec<String> = on!(conn.exec(), conn => sqlx::query_scalar(
            "SELECT name FROM tenants ORDER BY name",
        )
        .fetch_all(conn)
        .await)
        .unwrap();
        let expected: Vec<String> = (0..REQUESTS)
            .filter(|&n| matches!(request(n), Request::Insert))
            .map(|n| format!("t{n:03}"))
            .collect();
        assert_eq!(names, expected);
        drop(conn);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The tenant rows' names, in order.
    async fn tenant_names(store: &Store) -> Vec<String> {
        let mut conn = store.reader().await.unwrap();
        on!(conn.exec(), conn => sqlx::query_scalar("SELECT name FROM tenants ORDER BY name")
            .fetch_all(conn)
            .await)
        .unwrap()
    }

    /// After a failed group: the write connection is out of any transaction (a transaction of
    /// another kind begins on it), writes on the handle and through sqlx go on, and nothing of
    /// the failed group is there. Then closes `store` and removes `dir`.
    async fn the_writer_goes_on(store: Store, dir: std::path::PathBuf) {
        store.begin().await.unwrap().commit().await.unwrap();
        tenant_request(&store, "after".into(), Request::Insert, true)
            .await
            .unwrap();
        insert_tenant(&store, "through sqlx".into()).await.unwrap();
        assert_eq!(tenant_names(&store).await, ["after", "through sqlx"]);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_lone_failing_request_on_the_handle_rolls_back_and_the_writer_goes_on() {
        let (dir, _, url) = temp_database("lone.db");
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        // Alone in its group (nothing else is queued): no savepoint, the transaction rolls back.
        let refused = tenant_request(&store, "lone".into(), Request::InsertThenFail, true).await;
        assert!(
            matches!(&refused, Err(StoreError::Corrupt(message)) if message == "lone refused"),
            "{refused:?}"
        );
        the_writer_goes_on(store, dir).await;
    }

    #[tokio::test]
    async fn a_request_that_panics_on_the_handle_takes_its_group_down_but_not_the_writer() {
        let (dir, _, url) = temp_database("panic.db");
        let store = Store::connect(&url, Durability::Normal).await.unwrap();
        let (release, first) = hold_the_writer(&store).await;
        let written = {
            let store = store.clone();
            tokio::spawn(async move {
                tenant_request(&store, "before".into(), Request::Insert, true).await
            })
        };
        let panics = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_direct(|direct: &mut direct::Direct<'_>| {
                        direct.insert_tenant_row("panicked")?;
                        panic!("a plugin's bug");
                        #[allow(unreachable_code)]
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        };
        while store.queued() < 2 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        // The group's transaction was open when its task unwound: both callers are told it
        // failed, and neither row is there.
        let written = written.await.unwrap();
        assert!(
            matches!(&written, Err(StoreError::NotCommitted(_))),
            "{written:?}"
        );
        assert!(panics.await.unwrap().unwrap().is_err());
        the_writer_goes_on(store, dir).await;
    }

    #[tokio::test]
    async fn with_full_durability_a_write_is_answered_after_a_wal_sync() {
        let (dir, _, url) = temp_database("synced.db");
        let normal = Store::connect(&url, Durability::Normal).await.unwrap();
        assert_eq!(
            normal.wal_syncs(),
            None,
            "NORMAL leaves the WAL to checkpoints"
        );
        normal.close().await;
        let store = Store::connect(&url, Durability::Full).await.unwrap();
        let mut syncs = store.wal_syncs().unwrap();
        assert!(syncs >= 1, "the migrations' commits are synced");

        // A group of twenty: every caller is answered only once a sync after the commit ended.
        const REQUESTS: usize = 20;
        let (release, first) = hold_the_writer(&store).await;
        let requests: Vec<_> = (0..REQUESTS)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    insert_tenant(&store, format!("t{n:02}")).await?;
                    Ok::<_, StoreError>(store.wal_syncs().unwrap())
                })
            })
            .collect();
        while store.queued() < REQUESTS {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for request in requests {
            let seen = request.await.unwrap().unwrap();
            assert!(seen > syncs, "answered before the WAL was synced");
        }
        let after = store.wal_syncs().unwrap();
        assert!(
            (syncs + 1..=syncs + 2).contains(&after),
            "two groups take one or two syncs, not one per write: {syncs} -> {after}"
        );
        syncs = after;

        // A transaction of its own (metadata, administration) waits for the sync in `commit`.
        let tx = store.begin().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.wal_syncs(), Some(syncs + 1));
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The per-entity indexes hold one tenant's entries, and a statement can use them only if it
    /// names the tenant as a literal (`sql::entity_rows`): with the tenant bound alone, SQLite
    /// cannot match the index's `WHERE` when it plans, and would read the whole entity.
    #[tokio::test]
    async fn statements_over_an_entity_reach_its_indexes() {
        let (dir, store, definition) = store_with_indexes(
            "plans.db",
            serde_json::json!({
                "name": "contact",
                "fields": [
                    {"name": "stage", "type": "picklist", "options": ["lead", "customer"], "indexed": true},
                    {"name": "amount", "type": "decimal"}
                ],
                "indexes": [{"fields": ["stage", "amount"]}]
            }),
        )
        .await;
        let tenant = PLAN_TENANT;
        // Plans are the same on any connection; the write pool is an sqlx pool.
        let Pools::Sqlite { write: read, .. } = &store.pools else {
            unreachable!("a SQLite store")
        };
        let binds = [
            SqlValue::Text(tenant.to_owned()),
            SqlValue::Text("lead".to_owned()),
        ];
        let binds = &binds;
        let plan = |from: String, condition: String| {
            let sql = format!("SELECT count(*) FROM {from} WHERE {condition}");
            async move { query_plan(read, &sql, binds).await }
        };
        let field = |name: &str| Dialect::Sqlite.field_expr(definition.field(name).unwrap());
        let (stage, amount) = (field("stage"), field("amount"));
        let scoped = sql::entity_rows(Dialect::Sqlite, tenant, 7);
        let bound_only = "tenant_id = $1 AND entity_id = 7".to_owned();
        // A filter on the indexed field can seek its index; with the tenant bound alone, the
        // index is unusable (`INDEXED BY` makes the planner say so instead of choosing another).
        let filter = |scope: &str| format!("{scope} AND deleted_at IS NULL AND {stage} = $2");
        let by_stage = "records INDEXED BY rx_7_stage".to_owned();
        let found = plan(by_stage.clone(), filter(&scoped)).await.unwrap();
        assert!(found.contains("USING INDEX rx_7_stage"), "{found}");
        let refused = plan(by_stage, filter(&bound_only)).await.unwrap_err();
        assert!(
            refused.to_string().contains("no query solution"),
            "{refused}"
        );
        // The same for a grouping through the composite index, as aggregations name it.
        let composite = definition.indexes[0].index_name(7);
        let grouping = |scope: &str| {
            format!(
                "{scope} AND deleted_at IS NULL AND owner_id <> $2 AND {amount} > 0 GROUP BY {stage}"
            )
        };
        let hinted = format!("records INDEXED BY {composite}");
        let found = plan(hinted.clone(), grouping(&scoped)).await.unwrap();
        assert!(found.contains(&composite), "{found}");
        let refused = plan(hinted, grouping(&bound_only)).await.unwrap_err();
        assert!(
            refused.to_string().contains("no query solution"),
            "{refused}"
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// An aggregation SQLite answers by sorting reads its values from the index in a subquery
    /// of their own (`aggregate::Plan::apart`): the sorter then gets those values, not the
    /// record's body. A grouping the index's order answers needs no sort.
    #[tokio::test]
    async fn an_aggregation_that_sorts_reads_its_values_from_the_index() {
        use crate::records::aggregate::{self, AggregateParams, Compile};
        use sqlx::Row;
        let (dir, store, definition) = store_with_indexes(
            "aggregate.db",
            serde_json::json!({
                "name": "case",
                "fields": [
                    {"name": "status", "type": "picklist", "options": ["open", "closed"], "indexed": true},
                    {"name": "priority", "type": "picklist", "options": ["low", "high"]}
                ],
                "indexes": [{"fields": ["status", "priority"]}]
            }),
        )
        .await;
        let tenant = PLAN_TENANT;
        // Plans are the same on any connection; the write pool is an sqlx pool.
        let Pools::Sqlite { write: read, .. } = &store.pools else {
            unreachable!("a SQLite store")
        };
        let compile = |group_by: &str, filter: Option<&str>| {
            let params = AggregateParams {
                group_by: Some(group_by.to_owned()),
                filter: filter.map(str::to_owned),
                ..AggregateParams::default()
            };
            Compile {
                dialect: Dialect::Sqlite,
                tenant,
                entity_id: 7,
                definition: &definition,
                owners: None,
                params: &params,
                groups: aggregate::parse_groups(params.group_by.as_deref()).unwrap(),
                measures: aggregate::parse_measures(None).unwrap(),
                through: Default::default(),
                offset: 0,
            }
            .plan()
            .unwrap()
        };
        // (opcode, p1, p2) of each instruction, and the query plan's lines.
        let explain = |sql: String, binds: Vec<SqlValue>| async move {
            let rows = bind_all(sqlx::query(&format!("EXPLAIN {sql}")), &binds)
                .fetch_all(read)
                .await
                .unwrap();
            let program: Vec<(String, i64, i64)> = rows
                .iter()
                .map(|row| (row.get(1), row.get(2), row.get(3)))
                .collect();
            let plan = query_plan(read, &sql, &binds).await.unwrap();
            (program, plan)
        };
        let root: i64 =
            sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = 'records'")
                .fetch_one(read)
                .await
                .unwrap();
        let reads_records = |program: &[(String, i64, i64)]| {
            let cursors: Vec<i64> = program
                .iter()
                .filter(|(opcode, _, page)| opcode == "OpenRead" && *page == root)
                .map(|(_, cursor, _)| *cursor)
                .collect();
            program
                .iter()
                .any(|(opcode, cursor, _)| opcode == "Column" && cursors.contains(cursor))
        };
        let binds = |plan: &aggregate::Plan| {
            let mut binds = plan.binds.clone();
            binds[0] = SqlValue::Text(tenant.to_owned());
            binds
        };

        // Open cases by priority: the composite index answers the filter and holds the
        // priorities, in status order; grouping them sorts.
        let by_priority = compile("priority", Some("status in ('open', 'closed')"));
        let (program, plan) = explain(by_priority.sql.clone(), binds(&by_priority)).await;
        assert!(plan.contains("USE TEMP B-TREE FOR GROUP BY"), "{plan}");
        assert!(reads_records(&program), "merged, the sorter reads the body");
        let apart = by_priority
            .apart
            .clone()
            .expect("SQLite groups have a statement apart");
        let (program, plan) = explain(apart, binds(&by_priority)).await;
        assert!(plan.contains("USING INDEX rc_7_"), "{plan}");
        assert!(!reads_records(&program), "{program:?}");

        // Cases by status: the index's order is the groups' order; nothing sorts, and the store
        // keeps the merged statement.
        let by_status = compile("status", None);
        let (_, plan) = explain(by_status.sql.clone(), binds(&by_status)).await;
        assert!(plan.contains("USING INDEX rx_7_status"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
