//! The decision log's errors: one enum per operation (write, query, verify, export, prune), each keeping its cause,
//! and the crate-internal [`Fault`] that the shared helpers return and every operation's error is made from.

use std::sync::Arc;

/// What the database or the file system reported. Shared and cheap to clone, because one failed batch answers
/// every record that was in it; two causes are equal only when they are the same report.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Cause(Arc::from(e.into()))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cause {}

fn prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}

/// Why a helper shared by several log operations failed; each operation turns it into its own error.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Fault {
    #[error("decision log: database: {}{source}", prefix(context))]
    Database { context: String, source: Cause },
    #[error("decision log: {}{source}", prefix(context))]
    Io { context: String, source: Cause },
    #[error("decision log: invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("decision log: corrupt row at seq {seq}: {reason}")]
    Corrupt { seq: i64, reason: String },
    #[error("decision log: {0} not found")]
    NotFound(String),
}

impl Fault {
    /// A file-system (or encoding) failure while doing `context` (empty when the cause says it all).
    pub(crate) fn io(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Fault::Io {
            context: context.into(),
            source: Cause::new(source),
        }
    }
}

impl Fault {
    /// Whether SQLite reported the file as damaged (not a database, malformed, truncated), rather than busy or
    /// unreadable: verification reports that as a finding, not as an error.
    pub(crate) fn is_damage(&self) -> bool {
        let Fault::Database { source, .. } = self else {
            return matches!(self, Fault::Corrupt { .. });
        };
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*source.0);
        while let Some(e) = cur {
            if let Some(rusqlite::Error::SqliteFailure(f, _)) = e.downcast_ref::<rusqlite::Error>()
            {
                return matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                );
            }
            cur = e.source();
        }
        false
    }
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Database {
            context: String::new(),
            source: Cause::new(e),
        }
    }
}

impl From<crate::store::StoreError> for Fault {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound(what) => Fault::NotFound(what),
            other => Fault::Database {
                context: String::new(),
                source: Cause::new(other),
            },
        }
    }
}

impl From<std::io::Error> for Fault {
    fn from(e: std::io::Error) -> Self {
        Fault::io("", e)
    }
}

/// Defines one operation's error: the variants every operation shares (with the same messages), the
/// operation's own, and the conversion from [`Fault`].
macro_rules! log_error {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            /// The database reported an error.
            #[error("decision log: database: {}{source}", prefix(context))]
            Database {
                /// What was being done (empty when the cause says it all).
                context: String,
                /// What the database reported.
                #[source]
                source: Cause,
            },
            /// Reading or writing a file failed.
            #[error("decision log: {}{source}", prefix(context))]
            Io {
                /// What was being done (empty when the cause says it all).
                context: String,
                /// What the file system reported.
                #[source]
                source: Cause,
            },
            /// A record, filter, file or manifest is not valid.
            #[error("decision log: invalid {what}: {reason}")]
            Invalid {
                /// What was invalid (a field, a record, a file).
                what: String,
                /// Why.
                reason: String,
            },
            /// A stored row could not be decoded.
            #[error("decision log: corrupt row at seq {seq}: {reason}")]
            Corrupt {
                /// The row's seq.
                seq: i64,
                /// What was wrong.
                reason: String,
            },
            /// The database file does not exist.
            #[error("decision log: {0} not found")]
            NotFound(String),
            $($(#[$vmeta])* $variant,)*
        }

        impl From<Fault> for $name {
            fn from(f: Fault) -> Self {
                match f {
                    Fault::Database { context, source } => $name::Database { context, source },
                    Fault::Io { context, source } => $name::Io { context, source },
                    Fault::Invalid { what, reason } => $name::Invalid { what, reason },
                    Fault::Corrupt { seq, reason } => $name::Corrupt { seq, reason },
                    Fault::NotFound(what) => $name::NotFound(what),
                }
            }
        }

        impl From<rusqlite::Error> for $name {
            fn from(e: rusqlite::Error) -> Self {
                Fault::from(e).into()
            }
        }

        impl From<std::io::Error> for $name {
            fn from(e: std::io::Error) -> Self {
                Fault::from(e).into()
            }
        }
    };
}

log_error! {
    /// Why the [`super::LogWriter`] could not start, take a record or commit it.
    WriteError {
        /// The queue was full and the writer is configured to fail closed.
        #[error("decision log: queue full")]
        QueueFull,
        /// The writer has shut down (or its thread died); the record was not logged.
        #[error("decision log: writer is closed")]
        Closed,
    }
}

log_error! {
    /// Why a query, count or tail of the log failed ([`super::query`], [`super::count`], [`super::tail`],
    /// [`super::journal_pending`]).
    QueryError {}
}

log_error! {
    /// Why the log's chain could not be checked ([`super::verify_store`]); a chain that does not verify is a
    /// report, not an error.
    VerifyError {}
}

log_error! {
    /// Why an export, or the check of an exported file, failed ([`super::export`], [`super::export_to_file`],
    /// [`super::check_export_target`], [`super::verify_export`]).
    ExportError {}
}

log_error! {
    /// Why an anchor key or anchors file could not be read or written ([`super::AnchorKey`],
    /// [`super::latest_anchor`], [`super::load_public_key`]).
    AnchorError {}
}

log_error! {
    /// Why [`super::prune`] removed nothing.
    PruneError {}
}
