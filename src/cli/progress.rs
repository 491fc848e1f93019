//! Progress of a long command on stderr: an indicatif bar on a terminal; elsewhere (a log
//! file, CI, a wrapper program) a plain line every few seconds with what is done, the rate and
//! the time left, so a redirected run is never silent for minutes.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::output::errln;

/// Seconds between plain progress lines when stderr is not a terminal (default 5; the
/// `CONVLENS_PROGRESS_SECS` environment variable changes it).
const PLAIN_INTERVAL_ENV: &str = "CONVLENS_PROGRESS_SECS";

/// Progress of one task of `len` steps (the length may change as it becomes known).
pub struct Progress {
    inner: Inner,
}

enum Inner {
    Bar(indicatif::ProgressBar),
    Plain(Plain),
}

/// The off-terminal reporter.
struct Plain {
    what: String,
    len: u64,
    pos: u64,
    started: Instant,
    last_line: Instant,
    interval: Duration,
    /// Whether a line was printed (then a last one says the task finished).
    printed: bool,
}

impl Plain {
    fn line(&mut self, now: Instant) {
        let secs = now.duration_since(self.started).as_secs_f64();
        let rate = self.pos as f64 / secs.max(1e-9);
        let mut text = format!("{}: {}/{}", self.what, self.pos, self.len);
        if self.len > 0 {
            text += &format!(" ({:.0}%)", 100.0 * self.pos as f64 / self.len as f64);
        }
        if self.pos > 0 {
            text += &format!(", {rate:.1}/s");
            if self.len > self.pos {
                let left = (self.len - self.pos) as f64 / rate;
                text += &format!(", eta {}", duration_text(left));
            }
        }
        text += &format!(", {} elapsed", duration_text(secs));
        errln!("{text}");
        self.last_line = now;
        self.printed = true;
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_line) >= self.interval {
            self.line(now);
        }
    }
}

/// `75` -> `1m15s`, `4000` -> `1h06m`.
fn duration_text(secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn plain_interval() -> Duration {
    std::env::var(PLAIN_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

impl Progress {
    /// Progress of `what` over `len` steps, drawn as a bar on a terminal, as plain lines
    /// elsewhere.
    pub fn new(len: u64, what: &str) -> Progress {
        let inner = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(len);
            // The template is a constant; were it refused, the default style still draws.
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what.to_string());
            Inner::Bar(bar)
        } else {
            let now = Instant::now();
            Inner::Plain(Plain {
                what: what.to_string(),
                len,
                pos: 0,
                started: now,
                last_line: now,
                interval: plain_interval(),
                printed: false,
            })
        };
        Progress { inner }
    }

    /// What is being done.
    pub fn what(&self) -> String {
        match &self.inner {
            Inner::Bar(b) => b.prefix(),
            Inner::Plain(p) => p.what.clone(),
        }
    }

    /// The number of steps.
    pub fn length(&self) -> u64 {
        match &self.inner {
            Inner::Bar(b) => b.length().unwrap_or(0),
            Inner::Plain(p) => p.len,
        }
    }

    /// Starts over on another task (`what`, `len` steps).
    pub fn restart(&mut self, len: u64, what: &str) {
        match &mut self.inner {
            Inner::Bar(b) => {
                b.set_length(len);
                b.set_prefix(what.to_string());
                b.reset();
            }
            Inner::Plain(p) => {
                let now = Instant::now();
                p.what = what.to_string();
                p.len = len;
                p.pos = 0;
                p.started = now;
            }
        }
    }

    /// Sets the number of steps.
    pub fn set_length(&mut self, len: u64) {
        match &mut self.inner {
            Inner::Bar(b) => b.set_length(len),
            Inner::Plain(p) => p.len = len,
        }
    }

    /// Sets the steps done.
    pub fn set_position(&mut self, pos: u64) {
        match &mut self.inner {
            Inner::Bar(b) => b.set_position(pos),
            Inner::Plain(p) => {
                p.pos = pos;
                p.tick();
            }
        }
    }

    /// Adds `n` steps done.
    pub fn inc(&mut self, n: u64) {
        match &mut self.inner {
            Inner::Bar(b) => b.inc(n),
            Inner::Plain(p) => {
                p.pos += n;
                p.tick();
            }
        }
    }

    /// Runs `f` (which prints) with the bar hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner {
            Inner::Bar(b) => b.suspend(f),
            Inner::Plain(_) => f(),
        }
    }

    /// Ends the task: the bar is cleared; a plain reporter that printed anything says that it
    /// finished.
    pub fn finish(self) {
        match self.inner {
            Inner::Bar(b) => b.finish_and_clear(),
            Inner::Plain(mut p) if p.printed => p.line(Instant::now()),
            Inner::Plain(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_text(4.4), "4s");
        assert_eq!(duration_text(75.0), "1m15s");
        assert_eq!(duration_text(4000.0), "1h06m");
    }
}
