//! Logging set-up shared by Oxbow's daemons and tools (netd, apid, ctr):
//! `tracing` lines on stderr, filtered by an environment variable; for
//! ctr made only when there is a first line to write ([`init_lazy`]).
//!
//! A plain level (`debug`), or no variable at all, becomes a level filter.
//! Only anything else (`netd::apply=trace,info`) goes through
//! `EnvFilter`, whose directive parser compiles regular expressions:
//! about 20 ms of every start of a process under emulation, which a
//! container's start pays in full.

use std::sync::OnceLock;

use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::util::SubscriberInitExt;

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

/// As [`init`], but with a plain level (or none) the formatting
/// subscriber is only built when the first event that passes the level
/// comes: a container's monitor logs nothing at `info` until its guest
/// runs, and building the subscriber (its registry, the writer, the
/// bridge from the `log` crate) is work, and pages of memory touched,
/// before the guest's start. Directives go through [`init`].
pub fn init_lazy(var: &str, default: LevelFilter, ansi: bool) {
    match filter_of(std::env::var(var).ok().as_deref(), default) {
        Filter::Level(level) => {
            let _ = Lazy {
                level,
                ansi,
                inner: OnceLock::new(),
            }
            .try_init();
        }
        Filter::Directives(_) => init(var, default, ansi),
    }
}

/// The subscriber [`init_lazy`] installs: it answers which events are
/// wanted from the level alone and hands everything else to the
/// formatting subscriber, made on first use.
struct Lazy {
    level: LevelFilter,
    ansi: bool,
    inner: OnceLock<Dispatch>,
}

impl Lazy {
    fn inner(&self) -> &Dispatch {
        self.inner.get_or_init(|| {
            Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(std::io::stderr)
                    .with_ansi(self.ansi)
                    .with_max_level(self.level)
                    .finish(),
            )
        })
    }
}

impl Subscriber for Lazy {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.level >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }

    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        self.inner().new_span(span)
    }

    fn record(&self, span: &span::Id, values: &span::Record<'_>) {
        self.inner().record(span, values)
    }

    fn record_follows_from(&self, span: &span::Id, follows: &span::Id) {
        self.inner().record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        self.inner().event(event)
    }

    fn enter(&self, span: &span::Id) {
        self.inner().enter(span)
    }

    fn exit(&self, span: &span::Id) {
        self.inner().exit(span)
    }

    fn clone_span(&self, id: &span::Id) -> span::Id {
        self.inner().clone_span(id)
    }

    fn try_close(&self, id: span::Id) -> bool {
        self.inner().try_close(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lazy_subscriber_is_built_by_the_first_wanted_event() {
        let d = Dispatch::new(Lazy {
            level: LevelFilter::INFO,
            ansi: false,
            inner: OnceLock::new(),
        });
        let built = || d.downcast_ref::<Lazy>().unwrap().inner.get().is_some();
        tracing::dispatcher::with_default(&d, || {
            tracing::debug!("below the level");
            assert!(!built(), "built for an event it does not want");
            tracing::info!("the lazy subscriber's first line");
            assert!(built());
        });
    }

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
