//! Running statements on the PostgreSQL server behind the stand-in, and turning its results
//! into Data API fields with Redshift's type names.

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use futures_util::TryStreamExt;
use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Column, NoTls};

use crate::config::{Login, PostgresTarget};
use crate::protocol::{ColumnMeta, Field};

/// A finished statement's output.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Columns when the statement returns rows (a SELECT, or DML with RETURNING).
    pub columns: Option<Vec<ColumnMeta>>,
    pub rows: Vec<Vec<Field>>,
    /// Rows returned, or rows affected by DML.
    pub row_count: i64,
    pub size: i64,
}

/// A PostgreSQL error as Redshift reports it in `Error`: `ERROR: …` / `FATAL: …`.
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            message
        }
    }
}

/// Opens a session as `login`; the connection task ends when the client is dropped.
pub async fn connect(
    target: &PostgresTarget,
    database: &str,
    login: &Login,
) -> Result<Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(database)
        .user(&login.username)
        .password(&login.password)
        .application_name("ferry-redshift-standin");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| describe_error(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "stand-in postgres connection ended");
        }
    });
    // Redshift sessions run in UTC unless told otherwise.
    client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(|e| describe_error(&e))?;
    Ok(client)
}

/// Runs one statement with its `$n` values bound as text (the server converts them to the
/// types it infers, as Redshift converts its string parameters).
pub async fn run(client: &Client, sql: &str, values: &[String]) -> Result<Output, String> {
    let statement = client.prepare(sql).await.map_err(|e| describe_error(&e))?;
    let params: Vec<TextParam<'_>> = values.iter().map(|v| TextParam(v)).collect();
    if statement.columns().is_empty() {
        let affected = client
            .execute_raw(&statement, params.iter())
            .await
            .map_err(|e| describe_error(&e))?;
        return Ok(Output {
            columns: None,
            rows: Vec::new(),
            row_count: i64::try_from(affected).unwrap_or(i64::MAX),
            size: 0,
        });
    }
    let columns: Vec<ColumnMeta> = statement.columns().iter().map(column_meta).collect();
    let stream = client
        .query_raw(&statement, params.iter())
        .await
        .map_err(|e| describe_error(&e))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut size = 0i64;
    while let Some(row) = stream.try_next().await.map_err(|e| describe_error(&e))? {
        let mut fields = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let cell: Cell = row
                .try_get(i)
                .map_err(|e| format!("ERROR: column '{}': {e}", statement.columns()[i].name()))?;
            size += cell.0.size() as i64;
            fields.push(cell.0);
        }
        rows.push(fields);
    }
    Ok(Output {
        row_count: rows.len() as i64,
        columns: Some(columns),
        rows,
        size,
    })
}

/// Redshift's name for a PostgreSQL type: `text` is Redshift's `varchar`, `jsonb` stands in for
/// `super`, `bytea` for `varbyte`.
pub fn redshift_type_name(ty: &Type) -> String {
    match *ty {
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::UUID => "varchar".into(),
        Type::JSON | Type::JSONB => "super".into(),
        Type::BYTEA => "varbyte".into(),
        _ => ty.name().to_owned(),
    }
}

fn column_meta(c: &Column) -> ColumnMeta {
    let ty = c.type_();
    ColumnMeta {
        name: c.name().to_owned(),
        type_name: redshift_type_name(ty),
        is_signed: matches!(
            *ty,
            Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC
        ),
    }
}

/// A parameter sent in text format, whatever type the server inferred for it.
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A result cell decoded from PostgreSQL's binary format into the field Redshift would send.
struct Cell(Field);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let field = match *ty {
            Type::BOOL => Field::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Field::Long(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Field::Long(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Field::Long(i64::from_sql(ty, raw)?),
            Type::OID => Field::Long(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Field::Double(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Field::Double(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Field::Text(numeric_text(raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Field::Text(String::from_sql(ty, raw)?)
            }
            Type::BYTEA => Field::Blob(raw.to_vec()),
            Type::UUID => Field::Text(uuid::Uuid::from_sql(ty, raw)?.hyphenated().to_string()),
            Type::DATE => Field::Text(NaiveDate::from_sql(ty, raw)?.format("%Y-%m-%d").to_string()),
            Type::TIME => Field::Text(pg_time(&NaiveTime::from_sql(ty, raw)?)),
            Type::TIMESTAMP => Field::Text(pg_timestamp(&NaiveDateTime::from_sql(ty, raw)?)),
            Type::TIMESTAMPTZ => {
                let t = DateTime::<Utc>::from_sql(ty, raw)?;
                Field::Text(format!("{}+00", pg_timestamp(&t.naive_utc())))
            }
            // SUPER values come back as compact JSON text.
            Type::JSON | Type::JSONB => {
                Field::Text(serde_json::Value::from_sql(ty, raw)?.to_string())
            }
            _ => {
                return Err(format!(
                    "the stand-in cannot return values of type {}; cast the column in the SQL",
                    ty.name()
                )
                .into())
            }
        };
        Ok(Cell(field))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Field::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `HH:MM:SS[.ffffff]`, trailing zeros of the fraction dropped, as PostgreSQL and Redshift print.
fn pg_time(t: &NaiveTime) -> String {
    let mut s = t.format("%H:%M:%S%.6f").to_string();
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

fn pg_timestamp(t: &NaiveDateTime) -> String {
    format!("{} {}", t.format("%Y-%m-%d"), pg_time(&t.time()))
}

/// PostgreSQL's binary `numeric` (base-10000 digits with weight, sign and display scale) as the
/// text `numeric_out` prints.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|k| word(8 + 2 * k))
        .collect::<Result<Vec<u16>, _>>()?;
    let digit = |k: i32| -> u16 {
        if k >= 0 && (k as usize) < digits.len() {
            digits[k as usize]
        } else {
            0
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            let d = digit(k);
            if k == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut k = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(k)));
            k += 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut raw = Vec::new();
        for w in [ndigits.len() as u16, weight as u16, sign, dscale] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        for d in ndigits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_print_as_postgres_prints_them() {
        // 12345678.5000 = [1234, 5678, 5000] weight 1, scale 4
        assert_eq!(
            numeric_text(&numeric(&[1234, 5678, 5000], 1, 0, 4)).unwrap(),
            "12345678.5000"
        );
        // -0.0012 = [12] weight -1, scale 4
        assert_eq!(
            numeric_text(&numeric(&[12], -1, 0x4000, 4)).unwrap(),
            "-0.0012"
        );
        assert_eq!(numeric_text(&numeric(&[], 0, 0, 2)).unwrap(), "0.00");
        // 10000 = [1] weight 1
        assert_eq!(numeric_text(&numeric(&[1], 1, 0, 0)).unwrap(), "10000");
        assert_eq!(numeric_text(&numeric(&[], 0, 0xC000, 0)).unwrap(), "NaN");
    }

    #[test]
    fn times_drop_trailing_zeros() {
        let t = NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 120_000)
            .unwrap();
        assert_eq!(pg_timestamp(&t), "2024-01-02 03:04:05.12");
        assert_eq!(
            pg_time(&NaiveTime::from_hms_opt(1, 2, 3).unwrap()),
            "01:02:03"
        );
    }
}
