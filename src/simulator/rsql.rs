//! A small RSQL parser for the simulator's `filter` parameter, as the Jamf Pro API reads it.
//!
//! Grammar: `or := and ((',' | ' or ') and)*`, `and := term ((';' | ' and ') term)*`,
//! `term := '(' or ')' | field op value`, with ops `== != < <= > >= =lt= =le= =gt= =ge= =in= =out=`
//! and values bare or quoted with `"` or `'`. `*` in an `==` string value is a wildcard.
//! [`within`] narrows a listing to the id range a filter's top-level terms allow.

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp {
        field: String,
        op: Op,
        values: Vec<String>,
    },
}

impl Expr {
    /// The ids a record can have and still match: what the top level (or its `;` terms) says
    /// about `field`, as an inclusive range. Lets a listing read only that part of a fleet
    /// kept in id order, as Jamf's database reads an index, instead of testing every record.
    pub fn int_range(&self, field: &str) -> std::ops::RangeInclusive<i64> {
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        let terms = match self {
            Expr::And(parts) => parts.as_slice(),
            other => std::slice::from_ref(other),
        };
        for term in terms {
            let Expr::Cmp {
                field: f,
                op,
                values,
            } = term
            else {
                continue;
            };
            let [v] = values.as_slice() else {
                continue;
            };
            if f != field {
                continue;
            }
            let Ok(v) = v.trim().parse::<i64>() else {
                continue;
            };
            match op {
                Op::Gt => lo = lo.max(v.saturating_add(1)),
                Op::Ge => lo = lo.max(v),
                Op::Lt => hi = hi.min(v.saturating_sub(1)),
                Op::Le => hi = hi.min(v),
                Op::Eq => (lo, hi) = (lo.max(v), hi.min(v)),
                _ => {}
            }
        }
        lo..=hi
    }
}

/// The records of `by_id` that `filter` can match by its bounds on `field` (their id): all of
/// them without a filter or without bounds.
pub fn within<'a, T>(
    by_id: &'a std::collections::BTreeMap<i64, T>,
    filter: Option<&Expr>,
    field: &str,
) -> impl Iterator<Item = &'a T> {
    let ids = filter.map_or(i64::MIN..=i64::MAX, |e| e.int_range(field));
    // `BTreeMap::range` panics on an inverted range, which contradictory bounds give.
    (!ids.is_empty())
        .then(|| by_id.range(ids))
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
}

pub fn parse(input: &str) -> Result<Expr, String> {
    let mut p = Parser {
        s: input.as_bytes(),
        i: 0,
    };
    let e = p.or()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected input at position {}", p.i));
    }
    Ok(e)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        // Only as a separate word, surrounded by whitespace.
        let start = self.i;
        if start == 0 || !self.s[start - 1].is_ascii_whitespace() {
            return false;
        }
        let w = word.as_bytes();
        if self.s.len() > start + w.len()
            && self.s[start..start + w.len()].eq_ignore_ascii_case(w)
            && self.s[start + w.len()].is_ascii_whitespace()
        {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.and()?];
        loop {
            self.ws();
            if self.peek() == Some(b',') {
                self.i += 1;
            } else if !self.eat_word("or") {
                break;
            }
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.term()?];
        loop {
            self.ws();
            if self.peek() == Some(b';') {
                self.i += 1;
            } else if !self.eat_word("and") {
                break;
            }
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn term(&mut self) -> Result<Expr, String> {
        self.ws();
        if self.peek() == Some(b'(') {
            self.i += 1;
            let e = self.or()?;
            self.ws();
            if self.peek() != Some(b')') {
                return Err("missing ')'".into());
            }
            self.i += 1;
            return Ok(e);
        }
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        if start == self.i {
            return Err(format!("expected a field name at position {start}"));
        }
        let field = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        let op = self.op()?;
        let values = if matches!(op, Op::In | Op::Out) {
            self.ws();
            if self.peek() != Some(b'(') {
                return Err("=in= needs a list in parentheses".into());
            }
            self.i += 1;
            let mut vals = vec![self.value()?];
            loop {
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        vals.push(self.value()?);
                    }
                    Some(b')') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err("unterminated list".into()),
                }
            }
            vals
        } else {
            vec![self.value()?]
        };
        Ok(Expr::Cmp { field, op, values })
    }

    fn op(&mut self) -> Result<Op, String> {
        const OPS: &[(&str, Op)] = &[
            ("=out=", Op::Out),
            ("=in=", Op::In),
            ("=lt=", Op::Lt),
            ("=le=", Op::Le),
            ("=gt=", Op::Gt),
            ("=ge=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        for (text, op) in OPS {
            if self.s[self.i..].starts_with(text.as_bytes()) {
                self.i += text.len();
                return Ok(op.clone());
            }
        }
        Err(format!(
            "expected a comparison operator at position {}",
            self.i
        ))
    }

    fn value(&mut self) -> Result<String, String> {
        self.ws();
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.i += 1;
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c == q {
                        let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                        self.i += 1;
                        return Ok(v);
                    }
                    self.i += 1;
                }
                Err("unterminated quoted value".into())
            }
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b';' | b',' | b'(' | b')') || c.is_ascii_whitespace() {
                        break;
                    }
                    self.i += 1;
                }
                if start == self.i {
                    return Err(format!("expected a value at position {start}"));
                }
                Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_range_comes_from_the_top_level_terms_only() -> Result<(), String> {
        let e = parse(r#"general.reportDate>="2026-01-01T00:00:00Z";id>"100";id<=250"#)?;
        assert_eq!(e.int_range("id"), 101..=250);
        // Under an `or` a bound says nothing about every match.
        let e = parse("id>100,id<5")?;
        assert_eq!(e.int_range("id"), i64::MIN..=i64::MAX);
        let e = parse("id==7;id>7")?;
        assert!(e.int_range("id").is_empty());
        let e = parse("id=in=(1,2);id<x")?;
        assert_eq!(e.int_range("id"), i64::MIN..=i64::MAX);

        let by_id: std::collections::BTreeMap<i64, i64> = (1..=10).map(|i| (i, i)).collect();
        let ids = |filter: &str| -> Result<Vec<i64>, String> {
            Ok(within(&by_id, Some(&parse(filter)?), "id")
                .copied()
                .collect())
        };
        assert_eq!(ids("id>3;id<=5")?, vec![4, 5]);
        assert_eq!(ids("id==7;id>7")?, Vec::<i64>::new(), "no panic, nothing");
        assert_eq!(within(&by_id, None, "id").count(), 10);
        Ok(())
    }

    #[test]
    fn parses_delta_filter() {
        let e = parse(r#"general.reportDate>="2026-11-22T00:00:00.000Z";id>"42""#);
        assert_eq!(
            e,
            Ok(Expr::And(vec![
                Expr::Cmp {
                    field: "general.reportDate".into(),
                    op: Op::Ge,
                    values: vec!["2026-11-22T00:00:00.000Z".into()]
                },
                Expr::Cmp {
                    field: "id".into(),
                    op: Op::Gt,
                    values: vec!["42".into()]
                },
            ]))
        );
    }

    #[test]
    fn parses_or_in_and_words() {
        assert!(matches!(
            parse("id=in=(1,2,3) or general.name==foo*"),
            Ok(Expr::Or(_))
        ));
        assert!(matches!(
            parse("(id=gt=1 and id=lt=5),id==9"),
            Ok(Expr::Or(_))
        ));
        assert!(parse("id>").is_err());
        assert!(parse("id~1").is_err());
        assert!(parse("id==\"1").is_err());
    }
}
