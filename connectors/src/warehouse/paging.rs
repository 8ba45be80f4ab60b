//! Cutting a row stream into pages, with each page's safe cursor point.

use std::sync::Arc;

use ferry_core::value::{Column, RowBatch, Value};

use super::Page;

/// Collects rows (already in ascending cursor order when there is a cursor) into pages of
/// `page_size` rows.
///
/// A page is only released when the row after it is known (or the stream ended), because its
/// [`Page::complete_through`] depends on that next row: rows sharing a cursor value may straddle
/// two pages, and committing that value after the first one would lose the rest on a restart.
/// So a page's `complete_through` is
///
/// - its last row's cursor value when the next row's value differs (is greater), or when it is
///   the final page;
/// - else the greatest value in the page below that last value (all its rows are in this page
///   or earlier ones, since rows arrive in order);
/// - else (the whole page shares one value that continues into the next page) the previous
///   page's `complete_through`.
pub struct Pager {
    columns: Arc<[Column]>,
    cursor: Option<usize>,
    page_size: usize,
    rows: Vec<Vec<Value>>,
    committed: Option<Value>,
}

impl Pager {
    /// `cursor` is the index of the cursor column in `columns`, if the read has one.
    pub fn new(columns: Arc<[Column]>, cursor: Option<usize>, page_size: usize) -> Self {
        let page_size = page_size.max(1);
        Self {
            columns,
            cursor,
            page_size,
            rows: Vec::with_capacity(page_size),
            committed: None,
        }
    }

    pub fn columns(&self) -> &Arc<[Column]> {
        &self.columns
    }

    /// Adds a row; returns the previous page when it is full and now known to be followed by
    /// `row`.
    pub fn push(&mut self, row: Vec<Value>) -> Option<Page> {
        let page = if self.rows.len() >= self.page_size {
            Some(self.cut(Some(&row)))
        } else {
            None
        };
        self.rows.push(row);
        page
    }

    /// The last page, if any rows are left.
    pub fn finish(mut self) -> Option<Page> {
        if self.rows.is_empty() {
            None
        } else {
            Some(self.cut(None))
        }
    }

    fn cut(&mut self, next: Option<&Vec<Value>>) -> Page {
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(self.page_size));
        if let Some(ci) = self.cursor {
            let last = rows.last().map(|r| &r[ci]);
            let through = match (last, next) {
                (Some(last), Some(next)) if next[ci] == *last => rows
                    .iter()
                    .rev()
                    .map(|r| &r[ci])
                    .find(|v| *v != last)
                    .cloned(),
                (Some(last), _) => Some(last.clone()),
                (None, _) => None,
            };
            if through.is_some() {
                self.committed = through;
            }
        }
        Page {
            batch: RowBatch::new(self.columns.clone(), rows),
            complete_through: self.committed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::value::ColumnKind;

    fn pages(values: &[i64], page_size: usize) -> Vec<(Vec<i64>, Option<Value>)> {
        let columns: Arc<[Column]> = vec![Column::new("t", ColumnKind::Int)].into();
        let mut pager = Pager::new(columns, Some(0), page_size);
        let mut out = Vec::new();
        let mut take = |p: Page| {
            let ids = p
                .batch
                .rows
                .iter()
                .map(|r| match r[0] {
                    Value::Int(i) => i,
                    _ => unreachable!(),
                })
                .collect();
            out.push((ids, p.complete_through));
        };
        for v in values {
            if let Some(p) = pager.push(vec![Value::Int(*v)]) {
                take(p);
            }
        }
        if let Some(p) = pager.finish() {
            take(p);
        }
        out
    }

    #[test]
    fn ties_across_pages_hold_back_the_cursor() {
        let got = pages(&[1, 2, 2, 2, 2, 2, 2, 3], 3);
        assert_eq!(got[0], (vec![1, 2, 2], Some(Value::Int(1))));
        // All 2s, and more 2s follow: the previous safe point stays.
        assert_eq!(got[1], (vec![2, 2, 2], Some(Value::Int(1))));
        assert_eq!(got[2], (vec![2, 3], Some(Value::Int(3))));
        assert_eq!(got.len(), 3);
        let got = pages(&[1, 2, 2, 2, 2, 2, 3, 4], 3);
        assert_eq!(got[1], (vec![2, 2, 2], Some(Value::Int(2))));
    }

    #[test]
    fn distinct_values_commit_each_page() {
        let got = pages(&[1, 2, 3, 4, 5], 2);
        let through: Vec<_> = got.iter().map(|p| p.1.clone()).collect();
        assert_eq!(
            through,
            vec![
                Some(Value::Int(2)),
                Some(Value::Int(4)),
                Some(Value::Int(5))
            ]
        );
        // A full last page is only released by `finish`, with its own last value.
        let got = pages(&[1, 1, 2, 2], 2);
        assert_eq!(got[0].1, Some(Value::Int(1)));
        assert_eq!(got[1].1, Some(Value::Int(2)));
        // The very first page all ties: nothing is safe yet.
        let got = pages(&[7, 7, 7, 8], 2);
        assert_eq!(got[0].1, None);
        assert_eq!(got[1].1, Some(Value::Int(8)));
        assert!(pages(&[], 2).is_empty());
    }
}
