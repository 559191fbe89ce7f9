//! Which database errors are a record's and which are the database's.
//!
//! A write the database refuses *for its data* (a value it cannot hold, a constraint one row
//! breaks) is that record's problem: the write path isolates the record (`sync_failures`) and
//! stores the rest. Any other error (connection lost, disk full, no permission, a lock, a bug
//! in our SQL) is the database's and fails the run as it always did, so the cursor stays.
//!
//! The rule, by the error's code:
//! - PostgreSQL SQLSTATE classes `22` (data exception), `23` (integrity constraint violation)
//!   and `54` (program limit exceeded, e.g. an index row too large) are the record's; every
//!   other code (`08` connection, `53` resources, `57` operator intervention, `58` system,
//!   `42501` insufficient privilege, `40` serialization, `42` syntax…) is the database's;
//! - SQLite primary result codes `SQLITE_TOOBIG` (18), `SQLITE_CONSTRAINT` (19) and
//!   `SQLITE_MISMATCH` (20) are the record's; `SQLITE_FULL`, `SQLITE_IOERR`,
//!   `SQLITE_READONLY`, `SQLITE_BUSY` and every other code are the database's;
//! - an error that is not the database answering a statement (I/O, a pool timeout, a
//!   protocol error, a refused fence) is the database's.

use super::StoreError;

/// The database's message when `e` refuses a record for its data; `None` when the error is
/// the database's.
pub(crate) fn record_error(e: &StoreError) -> Option<String> {
    let StoreError::Sqlx(sqlx::Error::Database(db)) = e else {
        return None;
    };
    let code = db.code()?;
    // SQLSTATEs are often all digits too: which rule applies is the backend's.
    let theirs = if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        is_record_sqlstate(&code)
    } else {
        is_record_sqlite_code(&code)
    };
    theirs.then(|| db.message().to_string())
}

/// Whether a PostgreSQL SQLSTATE names a problem with the data written.
fn is_record_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "54"))
}

/// Whether a SQLite extended result code (in decimal) names a problem with the data written.
fn is_record_sqlite_code(code: &str) -> bool {
    // The extended codes keep the primary code in their low byte.
    code.parse::<u32>()
        .is_ok_and(|c| matches!(c & 0xff, 18..=20))
}

#[cfg(test)]
mod tests {
    use super::{is_record_sqlite_code, is_record_sqlstate};

    #[test]
    fn a_records_codes_are_told_from_the_databases() {
        for code in ["22021", "22P02", "22001", "23505", "23514", "54000"] {
            assert!(is_record_sqlstate(code), "{code} is the record's");
        }
        for code in [
            "08006", "53100", "53200", "57014", "57P01", "58030", "42501", "42601", "40001",
            "25P02", "XX000",
        ] {
            assert!(!is_record_sqlstate(code), "{code} is the database's");
        }
        // SQLite: TOOBIG, CONSTRAINT (and CONSTRAINT_UNIQUE, _TRIGGER), MISMATCH.
        for code in ["18", "19", "2067", "1811", "20"] {
            assert!(is_record_sqlite_code(code), "SQLite {code} is the record's");
        }
        // SQLite: FULL, IOERR (and IOERR_WRITE), READONLY, BUSY, LOCKED, CORRUPT.
        for code in ["13", "10", "778", "8", "5", "6", "11"] {
            assert!(
                !is_record_sqlite_code(code),
                "SQLite {code} is the database's"
            );
        }
    }
}
