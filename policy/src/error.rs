//! Validation errors: each names the file, line and column of the offending
//! value and what is wrong with it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("{0}")]
    Syntax(String),
    #[error("unsupported policy version {0}: this gateway reads version 1")]
    Version(i64),
    #[error("unknown function {name:?}{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    UnknownFunctionName {
        name: String,
        suggestion: Option<String>,
    },
    #[error(
        "function code {0} is not a request: codes are 1..=127 (128 and above are exception responses)"
    )]
    BadFunctionCode(i64),
    #[error("function {function} appears twice in this conduit (first on line {first_line})")]
    DuplicateFunction { function: u8, first_line: usize },
    #[error("{what} {value} is outside {min}..={max}")]
    OutOfRange {
        what: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error(
        "{text:?} looks like a Modbus data-model reference; addresses here are 0-based protocol addresses (what is on the wire): {hint}"
    )]
    DataModelNotation { text: String, hint: String },
    #[error(
        "cannot read {text:?} as an address or range: write \"START-END\", \"ADDRESS\" or a number"
    )]
    BadRange { text: String },
    #[error("inverted range {start}-{end}: the start is after the end")]
    InvertedRange { start: u32, end: u32 },
    #[error("ranges {a} and {b} overlap")]
    OverlappingRanges { a: String, b: String },
    #[error("{count} ranges after joining adjacent ones; at most {max} per list")]
    TooManyRanges { count: usize, max: usize },
    #[error("function {function} ({name}) takes {wanted}")]
    RuleShape {
        function: u8,
        name: &'static str,
        wanted: &'static str,
    },
    #[error("unknown {what} {name:?}{}", known.as_ref().map(|k| format!(" (known: {k})")).unwrap_or_default())]
    UnknownName {
        what: &'static str,
        name: String,
        known: Option<String>,
    },
    #[error("duplicate {what} name {name:?} (first on line {first_line})")]
    DuplicateName {
        what: &'static str,
        name: String,
        first_line: usize,
    },
    #[error("{0}")]
    BadAddress(String),
    #[error("{net} has host bits set; did you mean {fixed}?")]
    HostBits { net: String, fixed: String },
    #[error("{what} {addr} is not inside zone {zone:?} ({networks})")]
    OutsideZone {
        what: &'static str,
        addr: String,
        zone: String,
        networks: String,
    },
    #[error("unit id {unit} is not one of asset {asset:?}'s unit ids")]
    UnitNotOnAsset { unit: i64, asset: String },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{what} must be one of {allowed}, not {value:?}")]
    BadWord {
        what: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error(
        "source {source_net} to asset {asset:?} is already conduit {other:?}: a connection must belong to one conduit"
    )]
    AmbiguousConduit {
        source_net: String,
        asset: String,
        other: String,
    },
    #[error("more than {max} {what}")]
    TooMany { what: &'static str, max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub kind: ErrorKind,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.kind
        )
    }
}

impl std::error::Error for PolicyError {}

/// Every error found in one policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.0)
    }
}

/// Writes one item per line (no trailing newline): error lists.
pub fn write_lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl std::error::Error for PolicyErrors {}

/// Turns byte offsets into 1-based line and column (in characters).
pub struct Positions<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Positions<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            source,
            line_starts,
        }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}
