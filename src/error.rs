//! Error presentation shared by the CLI and the daemon.

use std::error::Error;

/// Joins an error and its sources into one line: `outer: cause: root cause`.
///
/// A source whose text already ends the message so far is skipped, so that
/// errors which repeat their cause are not printed twice.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to open {path}")]
    struct Open {
        path: &'static str,
        #[source]
        source: io::Error,
    }

    #[test]
    fn chain_joins_causes_on_one_line() {
        let error = Open {
            path: "/x",
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(chain(&error), "failed to open /x: no such file");
    }
}
