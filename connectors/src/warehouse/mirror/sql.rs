//! Every statement Mirror runs in a warehouse, written from a [`MirrorDialect`]'s hooks. Pure:
//! no I/O, so each dialect's output is pinned by golden tests next to the dialect.
//!
//! Objects (all in the staging schema): a **snapshot** is the source's rows plus
//! `_mp_row_hash` (the row checksum of [`ferry_core::checksum`]) and, when rows are identified by
//! key columns, `_mp_key_hash` (the same checksum over the key columns only). A **changes** table
//! is the diff of two snapshots: one row per changed identity with its change type, a sequence
//! number (`_mp_change_seq`: deletes first, then updates, then inserts, each by identity hash),
//! and the old and new row hashes.
//!
//! A row's *identity* is its `_mp_key_hash` with key columns, else its `_mp_row_hash` (so rows
//! identical in every column collapse into one, and an update is a delete plus an insert). When
//! several rows share an identity, the one with the smallest row hash stands for it; the
//! changes table counts them (`_mp_new_rows`, `_mp_old_rows`) so the engine can report it.

use ferry_core::value::Column;

use super::{MirrorDialect, Statement};
use crate::warehouse::{ReadSource, WarehouseError};

pub const ROW_HASH: &str = "_mp_row_hash";
pub const KEY_HASH: &str = "_mp_key_hash";
pub const CHANGE_TYPE: &str = "_mp_change_type";
pub const CHANGE_SEQ: &str = "_mp_change_seq";
pub const NEW_HASH: &str = "_mp_new_hash";
pub const OLD_HASH: &str = "_mp_old_hash";
pub const NEW_ROWS: &str = "_mp_new_rows";
pub const OLD_ROWS: &str = "_mp_old_rows";
/// Orders change types in the diff (1 delete, 2 update, 3 insert); not stored.
const CHANGE_RANK: &str = "_mp_change_rank";
/// Picks one of several identical rows when reading changes; not stored.
const CHANGE_DUP: &str = "_mp_change_dup";

/// A snapshot table as the engine knows it.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRef<'a> {
    /// The table's name in the staging schema.
    pub name: &'a str,
    /// The source columns it holds, in order (the hash columns are not listed).
    pub columns: &'a [Column],
    /// The columns identifying a row; empty: the whole row.
    pub identity: &'a [String],
}

impl SnapshotRef<'_> {
    fn keyed(&self) -> bool {
        !self.identity.is_empty()
    }
}

/// Writes Mirror's statements for one staging schema.
#[derive(Debug, Clone, Copy)]
pub struct MirrorSql<'d> {
    dialect: &'d dyn MirrorDialect,
    schema: &'d str,
}

impl<'d> MirrorSql<'d> {
    pub fn new(dialect: &'d dyn MirrorDialect, schema: &'d str) -> Self {
        Self { dialect, schema }
    }

    pub fn schema(&self) -> &str {
        self.schema
    }

    fn q(&self, name: &str) -> String {
        self.dialect.quote_ident(name)
    }

    /// `"schema"."name"`.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{}", self.q(self.schema), self.q(name))
    }

    /// One row when the staging schema exists.
    pub fn schema_exists(&self) -> Statement {
        Statement::with_params(
            format!(
                "SELECT CAST(schema_name AS VARCHAR(128)) FROM information_schema.schemata WHERE schema_name = {}",
                self.dialect.bind_param(1)
            ),
            vec![self.schema.to_owned()],
        )
    }

    pub fn create_schema(&self) -> Statement {
        Statement::new(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            self.q(self.schema)
        ))
    }

    /// The names of the staging schema's tables (one text column).
    pub fn list_tables(&self) -> Statement {
        Statement::with_params(
            format!(
                "SELECT CAST(table_name AS VARCHAR(128)) FROM information_schema.tables WHERE table_schema = {}",
                self.dialect.bind_param(1)
            ),
            vec![self.schema.to_owned()],
        )
    }

    /// `ANALYZE` of a table Mirror just created, where the dialect needs it.
    pub fn analyze(&self, name: &str) -> Option<Statement> {
        self.dialect
            .analyze_after_create()
            .then(|| Statement::new(format!("ANALYZE {}", self.table(name))))
    }

    pub fn drop_table(&self, name: &str) -> Statement {
        Statement::new(format!("DROP TABLE IF EXISTS {}", self.table(name)))
    }

    /// The checksum expression of `names` (in that order) over the columns of `alias`: each
    /// value's canonical text followed by `chr(30)`, NULL as nothing, joined by `chr(31)`,
    /// trailing separators trimmed, MD5 in hex. A name that is not among `columns` counts as
    /// NULL.
    pub fn checksum<'n>(
        &self,
        alias: &str,
        columns: &[Column],
        names: impl IntoIterator<Item = &'n str>,
    ) -> String {
        let terms: Vec<String> = names
            .into_iter()
            .map(|name| match columns.iter().find(|c| c.name == name) {
                Some(column) => {
                    let expr = format!("{alias}.{}", self.q(&column.name));
                    format!(
                        "coalesce({} || chr(30), '')",
                        self.dialect.canonical_text(&expr, &column.kind)
                    )
                }
                None => "''".to_owned(),
            })
            .collect();
        if terms.is_empty() {
            return "md5('')".to_owned();
        }
        format!("md5(rtrim({}, chr(31)))", terms.join(" || chr(31) || "))
    }

    /// The identity hash of the rows of `snapshot` (aliased `alias`) under `identity`: the
    /// stored hash when the snapshot was taken with that identity, else computed from its
    /// columns (after the key columns were changed).
    fn identity_of(&self, alias: &str, snapshot: &SnapshotRef, identity: &[String]) -> String {
        if identity.is_empty() {
            format!("{alias}.{}", self.q(ROW_HASH))
        } else if snapshot.identity == identity {
            format!("{alias}.{}", self.q(KEY_HASH))
        } else {
            self.checksum(alias, snapshot.columns, identity.iter().map(String::as_str))
        }
    }

    /// Copies the source into a new snapshot table, with its hashes, in one statement.
    pub fn snapshot(
        &self,
        source: &ReadSource,
        snapshot: &SnapshotRef,
    ) -> Result<Statement, WarehouseError> {
        let from = match source {
            ReadSource::Table {
                schema: Some(schema),
                name,
            } => format!("{}.{}", self.q(schema), self.q(name)),
            ReadSource::Table { schema: None, name } => self.q(name),
            ReadSource::Sql(sql) => {
                let sql = sql.trim().trim_end_matches(';').trim();
                if sql.is_empty() {
                    return Err(WarehouseError::Config("the SQL query is empty".into()));
                }
                format!("({sql})")
            }
        };
        let row_hash = self.checksum(
            "src",
            snapshot.columns,
            snapshot.columns.iter().map(|c| c.name.as_str()),
        );
        let mut select = format!("src.*, {row_hash} AS {}", self.q(ROW_HASH));
        let identity_column = if snapshot.keyed() {
            let key_hash = self.checksum(
                "src",
                snapshot.columns,
                snapshot.identity.iter().map(String::as_str),
            );
            select.push_str(&format!(", {key_hash} AS {}", self.q(KEY_HASH)));
            KEY_HASH
        } else {
            ROW_HASH
        };
        let options = self
            .dialect
            .snapshot_table_options(&self.q(identity_column));
        let options = if options.is_empty() {
            String::new()
        } else {
            format!(" {options}")
        };
        Ok(Statement::new(format!(
            "CREATE TABLE {}{options} AS SELECT {select} FROM {from} AS src",
            self.table(snapshot.name)
        )))
    }

    /// One side of the diff: each identity of `snapshot` with its smallest row hash and its
    /// number of rows.
    fn grouped(&self, snapshot: &SnapshotRef, identity: &[String]) -> String {
        format!(
            "SELECT {} AS {key}, MIN(s.{row}) AS {row}, COUNT(*) AS {rows} FROM {} s GROUP BY 1",
            self.identity_of("s", snapshot, identity),
            self.table(snapshot.name),
            key = self.q(KEY_HASH),
            row = self.q(ROW_HASH),
            rows = self.q("_mp_rows"),
        )
    }

    /// Creates the changes table `changes` from `new` against `old` (every row of `new` is an
    /// insert when there is no previous snapshot). Rows are identified by `new`'s identity.
    pub fn diff(&self, new: &SnapshotRef, old: Option<&SnapshotRef>, changes: &str) -> Statement {
        let key = self.q(KEY_HASH);
        let row = self.q(ROW_HASH);
        let rows = self.q("_mp_rows");
        let (seq, kind, new_hash, old_hash, new_rows, old_rows) = (
            self.q(CHANGE_SEQ),
            self.q(CHANGE_TYPE),
            self.q(NEW_HASH),
            self.q(OLD_HASH),
            self.q(NEW_ROWS),
            self.q(OLD_ROWS),
        );
        let new_side = self.grouped(new, new.identity);
        let sql = match old {
            None => format!(
                "CREATE TABLE {table} AS SELECT ROW_NUMBER() OVER (ORDER BY n.{key}) AS {seq}, \
                 CAST('insert' AS VARCHAR(6)) AS {kind}, n.{key} AS {key}, n.{row} AS {new_hash}, \
                 CAST(NULL AS VARCHAR(32)) AS {old_hash}, n.{rows} AS {new_rows}, \
                 CAST(0 AS BIGINT) AS {old_rows} FROM ({new_side}) n",
                table = self.table(changes),
            ),
            Some(old) => {
                let old_side = self.grouped(old, new.identity);
                let rank = self.q(CHANGE_RANK);
                format!(
                    "CREATE TABLE {table} AS SELECT ROW_NUMBER() OVER (ORDER BY d.{rank}, d.{key}) AS {seq}, \
                     d.{kind}, d.{key}, d.{new_hash}, d.{old_hash}, d.{new_rows}, d.{old_rows} FROM (\
                     SELECT CASE WHEN o.{key} IS NULL THEN 3 WHEN n.{key} IS NULL THEN 1 ELSE 2 END AS {rank}, \
                     CAST(CASE WHEN o.{key} IS NULL THEN 'insert' WHEN n.{key} IS NULL THEN 'delete' ELSE 'update' END AS VARCHAR(6)) AS {kind}, \
                     COALESCE(n.{key}, o.{key}) AS {key}, n.{row} AS {new_hash}, o.{row} AS {old_hash}, \
                     COALESCE(n.{rows}, 0) AS {new_rows}, COALESCE(o.{rows}, 0) AS {old_rows} \
                     FROM ({new_side}) n FULL OUTER JOIN ({old_side}) o ON n.{key} = o.{key} \
                     WHERE n.{key} IS NULL OR o.{key} IS NULL OR n.{row} <> o.{row}) d",
                    table = self.table(changes),
                )
            }
        };
        Statement::new(sql)
    }

    /// `(change type, count)` rows of a changes table.
    pub fn change_counts(&self, changes: &str) -> Statement {
        Statement::new(format!(
            "SELECT {kind}, COUNT(*) FROM {} GROUP BY {kind}",
            self.table(changes),
            kind = self.q(CHANGE_TYPE)
        ))
    }

    /// How many changed identities have more than one row in either snapshot (one count).
    pub fn shared_identities(&self, changes: &str) -> Statement {
        Statement::new(format!(
            "SELECT COUNT(*) FROM {} WHERE {} > 1 OR {} > 1",
            self.table(changes),
            self.q(NEW_ROWS),
            self.q(OLD_ROWS)
        ))
    }

    /// Up to `limit` identity-column values of new rows whose identity is shared by several
    /// rows, for the run's warning.
    pub fn shared_identity_samples(
        &self,
        new: &SnapshotRef,
        changes: &str,
        limit: usize,
    ) -> Statement {
        let columns: Vec<String> = new
            .identity
            .iter()
            .map(|c| format!("CAST(n.{} AS VARCHAR(256))", self.q(c)))
            .collect();
        let columns = if columns.is_empty() {
            format!("n.{}", self.q(ROW_HASH))
        } else {
            columns.join(", ")
        };
        Statement::new(format!(
            "SELECT DISTINCT {columns} FROM {} c JOIN {} n ON {} = c.{key} WHERE c.{} > 1 LIMIT {limit}",
            self.table(changes),
            self.table(new.name),
            self.identity_of("n", new, new.identity),
            self.q(NEW_ROWS),
            key = self.q(KEY_HASH),
        ))
    }

    /// The query that reads the changed rows: `new`'s columns, then `_mp_change_type` and
    /// `_mp_change_seq`. Inserts and updates come from `new`, deletes from `old` (its columns
    /// projected onto `new`'s by name; a column it lacks, or holds with another type, is NULL).
    /// The reader adds `WHERE _mp_change_seq > :cursor ORDER BY _mp_change_seq`.
    /// `dedupe`: pick one row where several identical rows share an identity (needed only
    /// when [`Self::shared_identities`] is not zero; it costs a window over the changes).
    pub fn read_changes(
        &self,
        new: &SnapshotRef,
        old: Option<&SnapshotRef>,
        changes: &str,
        dedupe: bool,
    ) -> String {
        let (kind, seq, key, row) = (
            self.q(CHANGE_TYPE),
            self.q(CHANGE_SEQ),
            self.q(KEY_HASH),
            self.q(ROW_HASH),
        );
        let dup = self.q(CHANGE_DUP);
        let window = if dedupe {
            format!(", ROW_NUMBER() OVER (PARTITION BY c.{seq} ORDER BY c.{seq}) AS {dup}")
        } else {
            String::new()
        };
        let new_list: Vec<String> = new
            .columns
            .iter()
            .map(|c| format!("n.{}", self.q(&c.name)))
            .collect();
        let mut branches = vec![format!(
            "SELECT {cols}, c.{kind}, c.{seq}{window} FROM {changes} c JOIN {snap} n ON {ident} = c.{key} AND n.{row} = c.{new_hash} WHERE c.{kind} <> 'delete'",
            cols = new_list.join(", "),
            changes = self.table(changes),
            snap = self.table(new.name),
            ident = self.identity_of("n", new, new.identity),
            new_hash = self.q(NEW_HASH),
        )];
        if let Some(old) = old {
            let old_list: Vec<String> = new
                .columns
                .iter()
                .map(|c| {
                    let q = self.q(&c.name);
                    match old.columns.iter().find(|o| o.name == c.name) {
                        Some(o) if o.kind == c.kind => format!("o.{q}"),
                        _ => format!("NULL AS {q}"),
                    }
                })
                .collect();
            branches.push(format!(
                "SELECT {cols}, c.{kind}, c.{seq}{window} FROM {changes} c JOIN {snap} o ON {ident} = c.{key} AND o.{row} = c.{old_hash} WHERE c.{kind} = 'delete'",
                cols = old_list.join(", "),
                changes = self.table(changes),
                snap = self.table(old.name),
                ident = self.identity_of("o", old, new.identity),
                old_hash = self.q(OLD_HASH),
            ));
        }
        let union = branches.join(" UNION ALL ");
        if !dedupe {
            return union;
        }
        let outer: Vec<String> = new
            .columns
            .iter()
            .map(|c| format!("x.{}", self.q(&c.name)))
            .chain([format!("x.{kind}"), format!("x.{seq}")])
            .collect();
        format!(
            "SELECT {} FROM ({union}) x WHERE x.{dup} = 1",
            outer.join(", ")
        )
    }

    /// The source columns of a snapshot (for a lookup table's whole replacement).
    pub fn read_snapshot(&self, snapshot: &SnapshotRef) -> String {
        let list: Vec<String> = snapshot
            .columns
            .iter()
            .map(|c| format!("s.{}", self.q(&c.name)))
            .collect();
        format!(
            "SELECT {} FROM {} s",
            if list.is_empty() {
                "*".to_owned()
            } else {
                list.join(", ")
            },
            self.table(snapshot.name)
        )
    }
}
