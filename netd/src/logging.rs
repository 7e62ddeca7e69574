//! Logging set-up shared by Oxbow's daemons and tools (netd, apid, ctr):
//! `tracing` lines on stderr, filtered by an environment variable.
//!
//! A plain level (`debug`), or no variable at all, becomes a level filter.
//! Only anything else (`netd::apply=trace,info`) goes through
//! `EnvFilter`, whose directive parser compiles regular expressions:
//! about 20 ms of every start of a process under emulation, which a
//! container's start pays in full.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// What the value of the logging variable asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Filter {
    /// Everything up to this level.
    Level(LevelFilter),
    /// `EnvFilter` directives.
    Directives(String),
}

/// Reads the variable's value, `None` when it is unset: `default` then.
pub fn filter_of(value: Option<&str>, default: LevelFilter) -> Filter {
    match value.map(str::trim) {
        None | Some("") => Filter::Level(default),
        Some(v) => match v.parse::<LevelFilter>() {
            Ok(level) => Filter::Level(level),
            Err(_) => Filter::Directives(v.to_string()),
        },
    }
}

/// Installs the global subscriber: stderr, colours when `ansi`, filtered
/// by the variable `var`, or `default` when it is unset or does not parse.
pub fn init(var: &str, default: LevelFilter, ansi: bool) {
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match filter_of(std::env::var(var).ok().as_deref(), default) {
        Filter::Level(level) => fmt.with_max_level(level).init(),
        // Directives that do not parse give the default, as
        // `EnvFilter::try_from_env` with a fallback did.
        Filter::Directives(d) => match EnvFilter::try_new(d) {
            Ok(filter) => fmt.with_env_filter(filter).init(),
            Err(_) => fmt.with_max_level(default).init(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_levels_skip_the_directive_parser() {
        assert_eq!(
            filter_of(None, LevelFilter::INFO),
            Filter::Level(LevelFilter::INFO)
        );
        assert_eq!(
            filter_of(Some(""), LevelFilter::WARN),
            Filter::Level(LevelFilter::WARN)
        );
        assert_eq!(
            filter_of(Some("debug"), LevelFilter::INFO),
            Filter::Level(LevelFilter::DEBUG)
        );
        assert_eq!(
            filter_of(Some("TRACE"), LevelFilter::INFO),
            Filter::Level(LevelFilter::TRACE)
        );
        assert_eq!(
            filter_of(Some("netd::apply=trace,info"), LevelFilter::INFO),
            Filter::Directives("netd::apply=trace,info".into())
        );
    }
}
