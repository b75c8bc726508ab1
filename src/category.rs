//! The categories of error lines (API.md): what kind of fault a line
//! records, so the reader knows whom to call. Every part of herald that
//! judges a failure speaks them, so they sit under all of it.

use serde_repr::{Deserialize_repr, Serialize_repr};

/// What kind of fault an error line records, so the reader knows whom to call.
/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Category {
    /// The counterpart failed or could not be reached.
    External = 0,
    /// Something is set up wrong (credentials, URLs, unknown resources).
    Configuration = 1,
    /// The data did not fit (bad fields, rejected payloads).
    Mapping = 2,
    /// herald's own fault.
    Technical = 3,
    /// A consequence of an earlier failure.
    Cascade = 4,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::External => "external",
            Category::Configuration => "configuration",
            Category::Mapping => "mapping",
            Category::Technical => "technical",
            Category::Cascade => "cascade",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        [
            Category::External,
            Category::Configuration,
            Category::Mapping,
            Category::Technical,
            Category::Cascade,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}
