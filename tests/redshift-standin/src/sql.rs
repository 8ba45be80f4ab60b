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
    fn missing_and_unused_parameters_are_refused() {
        assert!(bind("SELECT :a", &[]).unwrap_err().message.contains(":a"));
        assert!(bind("SELECT 1", &p(&[("a", "1")]))
            .unwrap_err()
            .message
            .contains("'a'"));
        assert!(bind("SELECT :a", &p(&[("a", "1"), ("a", "2")])).is_err());
    }
}
