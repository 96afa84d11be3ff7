//! The one error type startup speaks: a sentence for the operator.
//!
//! Every way startup can fail (bad config, this host missing from the host table, a topic
//! that does not exist, brokers that do not answer) ends the process with exactly one line
//! that says what is wrong, where, and what to do. Carrying a finished sentence, rather
//! than a tree of error enums, keeps that promise easy to keep and easy to test.

use std::fmt;

/// A startup failure, already phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError(String);

impl StartupError {
    pub(crate) fn new(sentence: impl Into<String>) -> Self {
        StartupError(sentence.into())
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}
