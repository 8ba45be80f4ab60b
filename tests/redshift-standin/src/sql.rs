//! Named parameters: the Data API's `:name` markers become PostgreSQL's `$n`, outside string
//! literals, quoted identifiers and comments, and never in a `::type` cast. Values are bound, so
//! a value is never spliced into SQL here either.

use std::collections::BTreeMap;

use crate::protocol::ApiError;

/// The SQL with `$n` markers, and the parameter values in `$n` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub sql: String,
    pub values: Vec<String>,
}

/// Replaces each `:name` with `$n` (the same name, the same `n`). Every marker needs a value and
/// every value a marker, as Redshift requires.
pub fn bind(sql: &str, parameters: &[(String, String)]) -> Result<Bound, ApiError> {
    let given: BTreeMap<&str, &str> = parameters
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if given.len() != parameters.len() {
        return Err(ApiError::validation("a parameter name is given twice"));
    }
    let mut order: Vec<&str> = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' => {
                // A literal or quoted identifier; a doubled quote stays inside.
                out.push(c);
                i += 1;
                while i < chars.len() {
                    out.push(chars[i]);
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            out.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                out.push_str("/*");
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    out.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    out.push_str("*/");
                    i += 2;
                }
            }
            ':' if next == Some(':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if next.is_some_and(|n| n.is_ascii_alphabetic() || n == '_') => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let Some((key, _)) = given.get_key_value(name.as_str()) else {
                    return Err(ApiError::validation(format!(
                        "The SQL uses the parameter :{name}, but Parameters has no value for it"
                    )));
                };
                let n = match order.iter().position(|o| o == key) {
                    Some(p) => p + 1,
                    None => {
                        order.push(key);
                        order.len()
                    }
                };
                out.push('$');
                out.push_str(&n.to_string());
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if let Some(unused) = given.keys().find(|k| !order.contains(k)) {
        return Err(ApiError::validation(format!(
            "Parameters has '{unused}', which the SQL does not use"
        )));
    }
    Ok(Bound {
        sql: out,
        values: order.iter().map(|k| given[k].to_owned()).collect(),
    })
}

/// The two Redshift-only constructs Ferry's connector sends, rewritten for PostgreSQL (the
/// only translation the stand-in does; everything else must already be valid on both):
///
/// - table attributes of `CREATE TABLE … AS`: `DISTKEY(…)`, `SORTKEY(…)` (also `COMPOUND` /
///   `INTERLEAVED`) and `DISTSTYLE <style>` are dropped (PostgreSQL has no distribution);
/// - `JSON_SERIALIZE(x)` (SUPER to its JSON text) becomes `CAST((x) AS text)` (`jsonb` plays
///   SUPER here, and prints its own normalised JSON).
pub fn translate(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // Closing parentheses of rewritten JSON_SERIALIZE calls still to come, by depth.
    let mut depth = 0usize;
    let mut closers: Vec<usize> = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let end = skip_quoted(&chars, i);
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        if c == '(' {
            depth += 1;
        } else if c == ')' {
            if closers.last() == Some(&depth) {
                closers.pop();
                out.push_str(") AS text)");
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            depth = depth.saturating_sub(1);
        }
        let word_start = (c.is_ascii_alphabetic() || c == '_')
            && (i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '_'));
        if word_start {
            let mut end = i;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            let word: String = chars[i..end]
                .iter()
                .collect::<String>()
                .to_ascii_uppercase();
            let after = skip_space(&chars, end);
            match word.as_str() {
                "DISTKEY" | "SORTKEY" if chars.get(after) == Some(&'(') => {
                    i = skip_space(&chars, skip_parens(&chars, after));
                    continue;
                }
                "COMPOUND" | "INTERLEAVED" => {
                    let next = word_at(&chars, after);
                    if next.eq_ignore_ascii_case("SORTKEY") {
                        i = after;
                        continue;
                    }
                }
                "DISTSTYLE" => {
                    let style = word_at(&chars, after);
                    i = skip_space(&chars, after + style.len());
                    continue;
                }
                "JSON_SERIALIZE" if chars.get(after) == Some(&'(') => {
                    out.push_str("CAST((");
                    depth += 1;
                    closers.push(depth);
                    i = after + 1;
                    continue;
                }
                _ => {}
            }
            out.push_str(&chars[i..end].iter().collect::<String>());
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The index after the quoted literal or identifier starting at `start`.
fn skip_quoted(chars: &[char], start: usize) -> usize {
    let q = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == q {
            if chars.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The index after the parenthesised group starting at `start` (an opening parenthesis).
fn skip_parens(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '\'' | '"' => {
                i = skip_quoted(chars, i);
                continue;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn word_at(chars: &[char], i: usize) -> String {
    chars[i.min(chars.len())..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn markers_become_positions_outside_quotes_comments_and_casts() {
        let b = bind(
            "SELECT ':x', \":y\", a::text -- :z\n FROM t WHERE a > :after AND b = :name /* :w */ AND c < :after",
            &p(&[("after", "5"), ("name", "o'k")]),
        )
        .unwrap();
        assert_eq!(
            b.sql,
            "SELECT ':x', \":y\", a::text -- :z\n FROM t WHERE a > $1 AND b = $2 /* :w */ AND c < $1"
        );
        assert_eq!(b.values, vec!["5".to_string(), "o'k".to_string()]);
        let b = bind("SELECT 'it''s :x' || :v", &p(&[("v", "1")])).unwrap();
        assert_eq!(b.sql, "SELECT 'it''s :x' || $1");
    }

    #[test]
    fn redshift_table_attributes_and_json_serialize_are_rewritten() {
        assert_eq!(
            translate("CREATE TABLE \"s\".\"t\" DISTKEY(\"_mp_key_hash\") SORTKEY(\"_mp_key_hash\") AS SELECT 1"),
            "CREATE TABLE \"s\".\"t\" AS SELECT 1"
        );
        assert_eq!(
            translate(
                "create table t diststyle even compound sortkey(a, b) as select 'DISTKEY(x)'"
            ),
            "create table t as select 'DISTKEY(x)'"
        );
        assert_eq!(
            translate("SELECT coalesce(JSON_SERIALIZE(src.\"p\") || chr(30), ''), json_serialize(f(x, (y)))"),
            "SELECT coalesce(CAST((src.\"p\") AS text) || chr(30), ''), CAST((f(x, (y))) AS text)"
        );
        let plain = "SELECT \"distkey\", sortkey_col FROM t WHERE a = ')'";
        assert_eq!(translate(plain), plain);
    }

    #[test]
    fn missing_and_unused_parameters_are_refused() {
        assert!(bind("SELECT :a", &[]).unwrap_err().message.contains(":a"));
        assert!(bind("SELECT 1", &p(&[("a", "1")]))
            .unwrap_err()
            .message
            .contains("'a'"));
        assert!(bind("SELECT :a", &p(&[("a", "1"), ("a", "2")])).is_err());
    }
}
