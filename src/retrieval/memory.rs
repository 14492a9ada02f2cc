//! In-memory stream (being written).
/// In-memory stream (being written).
#[derive(Debug, Clone, Default)]
pub struct InMemoryStream;
