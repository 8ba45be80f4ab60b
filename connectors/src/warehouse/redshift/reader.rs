//! Reads: rows out of Data API statements, cut into pages with their safe cursor points.
//!
//! A Data API result is capped (100 MB on Redshift), so a read with a cursor is split into
//! statements of at most `chunk_rows` rows, each `WHERE cursor > :last ORDER BY cursor LIMIT n`.
//! Rows sharing a cursor value may straddle two chunks, so when a chunk is full the rows of its
//! last value are held back and read whole by one more statement (`WHERE cursor = :value`), and
//! the next chunk starts after that value: no row is read twice or missed. A read without a
//! cursor has no order to split by and is one statement.

use std::sync::Arc;

use aws_sdk_redshiftdata::types::Field;
use ferry_core::value::{column_index, Column, Value};
use tokio::sync::mpsc;

use super::statement::{self, ResultPages};
use super::{columns_of, decode, from_clause, quote_ident, types, RedshiftWarehouse};
use crate::warehouse::{Page, Pager, ReadRequest, ReadSummary, WarehouseError};

/// The rows of one finished statement, one result page in memory at a time.
struct Rows {
    pages: ResultPages,
    columns: Arc<[Column]>,
    buffered: std::vec::IntoIter<Vec<Field>>,
}

impl Rows {
    /// Runs `sql` to its end and fetches the first result page (which names the columns). The
    /// statement is cancelled if this future is dropped before it ended.
    async fn open(
        wh: &RedshiftWarehouse,
        sql: &str,
        parameters: &[(String, String)],
    ) -> Result<Rows, WarehouseError> {
        let client = wh.client().await?;
        let mut running =
            statement::submit(client, &wh.options, &wh.context, sql, parameters).await?;
        let finished = running.wait(&wh.settings.poll).await?;
        let mut pages = ResultPages::new(client, &wh.context, &finished);
        let first = pages.next().await?.ok_or_else(|| {
            WarehouseError::Query(format!("statement {} returned no result", finished.id))
        })?;
        let columns = columns_of(first.columns.as_deref(), &finished.id)?;
        Ok(Rows {
            pages,
            columns,
            buffered: first.records.into_iter(),
        })
    }

    async fn next(&mut self) -> Result<Option<Vec<Value>>, WarehouseError> {
        loop {
            if let Some(record) = self.buffered.next() {
                return decode(&record, &self.columns).map(Some);
            }
            match self.pages.next().await? {
                Some(page) => self.buffered = page.records.into_iter(),
                None => return Ok(None),
            }
        }
    }
}

/// Pages rows into the consumer's channel.
struct Sink {
    pager: Option<Pager>,
    out: mpsc::Sender<Page>,
    page_size: usize,
    cursor_column: Option<String>,
    summary: ReadSummary,
}

impl Sink {
    /// Starts paging with the first statement's columns; the cursor column's index.
    fn start(&mut self, columns: &Arc<[Column]>) -> Result<Option<usize>, WarehouseError> {
        let index = match &self.cursor_column {
            Some(name) => {
                Some(
                    column_index(columns, name).ok_or_else(|| WarehouseError::NotFound {
                        object: format!("cursor column '{name}'"),
                        message: "the source has no such column".into(),
                    })?,
                )
            }
            None => None,
        };
        if self.pager.is_none() {
            self.pager = Some(Pager::new(columns.clone(), index, self.page_size));
        }
        Ok(index)
    }

    async fn push(&mut self, row: Vec<Value>) -> Result<(), WarehouseError> {
        if let Some(full) = self.pager.as_mut().and_then(|p| p.push(row)) {
            self.send(full).await?;
        }
        Ok(())
    }

    async fn send(&mut self, page: Page) -> Result<(), WarehouseError> {
        self.summary.rows += page.batch.len() as u64;
        self.summary.pages += 1;
        self.out
            .send(page)
            .await
            .map_err(|_| WarehouseError::Stopped)
    }

    async fn finish(mut self) -> Result<ReadSummary, WarehouseError> {
        if let Some(last) = self.pager.take().and_then(Pager::finish) {
            self.send(last).await?;
        }
        Ok(self.summary)
    }
}

/// How a cursor read's statement selects rows.
enum Bound<'a> {
    After(Option<&'a Value>),
    Equal(&'a Value),
}

fn cursor_sql(
    from: &str,
    column: &str,
    bound: Bound<'_>,
    limit: Option<usize>,
) -> Result<(String, Vec<(String, String)>), WarehouseError> {
    let col = format!("ferry_src.{}", quote_ident(column));
    let mut sql = format!("SELECT * FROM {from} WHERE {col} IS NOT NULL");
    let mut parameters = Vec::new();
    let mut bind = |value: &Value, op: &str, sql: &mut String| {
        let text = types::parameter_text(value)
            .ok_or_else(|| WarehouseError::Config(format!("{value:?} cannot be a cursor value")))?;
        sql.push_str(&format!(" AND {col} {op} :ferry_cursor"));
        parameters.push(("ferry_cursor".to_owned(), text));
        Ok::<_, WarehouseError>(())
    };
    match bound {
        Bound::After(None) => {}
        Bound::After(Some(value)) => bind(value, ">", &mut sql)?,
        Bound::Equal(value) => bind(value, "=", &mut sql)?,
    }
    sql.push_str(&format!(" ORDER BY {col}"));
    if let Some(limit) = limit {
        // A number Ferry chose, printed as one: nothing from outside is spliced.
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Ok((sql, parameters))
}

pub(super) async fn read(
    wh: &RedshiftWarehouse,
    request: &ReadRequest,
    out: mpsc::Sender<Page>,
) -> Result<ReadSummary, WarehouseError> {
    let from = from_clause(&request.source)?;
    let mut sink = Sink {
        pager: None,
        out,
        page_size: request.page_size,
        cursor_column: request.cursor.as_ref().map(|c| c.column.clone()),
        summary: ReadSummary::default(),
    };
    let Some(cursor) = &request.cursor else {
        let mut rows = Rows::open(wh, &format!("SELECT * FROM {from}"), &[]).await?;
        sink.start(&rows.columns)?;
        while let Some(row) = rows.next().await? {
            sink.push(row).await?;
        }
        return sink.finish().await;
    };
    let chunk_rows = wh.settings.chunk_rows.max(1);
    let mut after = cursor.after.clone();
    loop {
        let (sql, parameters) = cursor_sql(
            &from,
            &cursor.column,
            Bound::After(after.as_ref()),
            Some(chunk_rows),
        )?;
        let mut rows = Rows::open(wh, &sql, &parameters).await?;
        let Some(ci) = sink.start(&rows.columns)? else {
            return Err(WarehouseError::Config(
                "a cursor read needs its cursor column".into(),
            ));
        };
        // The rows of the latest cursor value, held until a greater value shows they are all here.
        let mut group: Vec<Vec<Value>> = Vec::new();
        let mut count = 0usize;
        while let Some(row) = rows.next().await? {
            count += 1;
            if group.first().is_some_and(|g| g[ci] != row[ci]) {
                for held in group.drain(..) {
                    sink.push(held).await?;
                }
            }
            group.push(row);
        }
        if count < chunk_rows {
            for held in group {
                sink.push(held).await?;
            }
            return sink.finish().await;
        }
        // A full chunk: its last value may go on in the next one, so read that value whole.
        let Some(value) = group.first().map(|g| g[ci].clone()) else {
            return sink.finish().await;
        };
        drop(group);
        let (sql, parameters) = cursor_sql(&from, &cursor.column, Bound::Equal(&value), None)?;
        let mut ties = Rows::open(wh, &sql, &parameters).await?;
        while let Some(row) = ties.next().await? {
            sink.push(row).await?;
        }
        after = Some(value);
    }
}
