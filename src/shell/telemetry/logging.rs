//! Logging set-up: a format and a level filter in; a global `tracing` subscriber writing one line
//! per event to stderr out (stdout stays free for command output such as `mandate crds`).

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line with the event's fields at the top level (the default: what log
    /// pipelines parse).
    #[default]
    Json,
    /// Human-readable lines for a terminal.
    Text,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        })
    }
}

impl FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(LoggingError::ParseFormat {
                format: s.to_owned(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log format {format:?} is unknown: use json or text")]
    ParseFormat { format: String },
    #[error(
        "log level {level:?} is not a valid filter (e.g. info, mandate=debug,kube=warn): {source}"
    )]
    ParseLevel {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("installing the global log subscriber (already installed?): {0}")]
    InstallSubscriber(String),
}

/// Installs the process-wide subscriber. `level` is an `EnvFilter` directive string such as
/// `info` or `mandate=debug,kube=warn`. Fails if a subscriber is already installed.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let filter = EnvFilter::try_new(level).map_err(|source| LoggingError::ParseLevel {
        level: level.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|error| LoggingError::InstallSubscriber(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_json_and_text_case_insensitively() {
        assert_eq!("JSON".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>().ok(), Some(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn an_invalid_level_is_refused_before_anything_is_installed() {
        let error = init_logging(LogFormat::Json, "mandate=loud").err();
        assert!(
            matches!(error, Some(LoggingError::ParseLevel { .. })),
            "{error:?}"
        );
    }
}
