//! The one error type of loading: an artifact that is missing, corrupt, or does not match its pair.

use std::fmt;

/// An artifact file is missing, corrupt, or does not match its pair.
///
/// The message always names the file and says what is wrong (and, where there is one, what to
/// do), like `ArtifactError` of the Python runtime and of the JavaScript runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactError(pub String);

impl ArtifactError {
    /// `"{file}: {what}"`.
    pub fn at(file: impl fmt::Display, what: impl fmt::Display) -> Self {
        ArtifactError(format!("{file}: {what}"))
    }
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArtifactError {}
