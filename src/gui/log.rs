//! The message log: notes, cancellations and errors with the time they happened. The status
//! bar shows the newest message until it is dismissed; the log keeps them all until cleared.

use std::time::{SystemTime, UNIX_EPOCH};

/// How serious a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something done (a figure written, a model saved).
    Note,
    /// A job the user stopped: neutral, not an error.
    Cancelled,
    /// Something failed.
    Error,
}

/// One message.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub level: Level,
    pub text: String,
}

impl Entry {
    /// `HH:MM:SS` (UTC).
    pub fn time(&self) -> String {
        let s = self.at % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// Every message of the session, newest last.
#[derive(Debug, Default)]
pub struct MessageLog {
    entries: Vec<Entry>,
    /// Messages before this index are dismissed from the status bar.
    seen: usize,
    /// Whether the log window is open.
    pub open: bool,
}

impl MessageLog {
    /// Adds a message.
    pub fn push(&mut self, level: Level, text: impl Into<String>) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.entries.push(Entry {
            at,
            level,
            text: text.into(),
        });
    }

    /// The newest message not dismissed.
    pub fn current(&self) -> Option<&Entry> {
        self.entries[self.seen..].last()
    }

    /// The newest error not dismissed.
    pub fn last_error(&self) -> Option<&str> {
        self.entries[self.seen..]
            .iter()
            .rev()
            .find(|e| e.level == Level::Error)
            .map(|e| e.text.as_str())
    }

    /// The newest note or cancellation not dismissed.
    pub fn last_note(&self) -> Option<&str> {
        self.entries[self.seen..]
            .iter()
            .rev()
            .find(|e| e.level != Level::Error)
            .map(|e| e.text.as_str())
    }

    /// Hides the messages so far from the status bar (they stay in the log).
    pub fn dismiss(&mut self) {
        self.seen = self.entries.len();
    }

    /// Empties the log.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.seen = 0;
    }

    /// All messages, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The status bar's part: the current message, dismiss, and the log button.
    /// The buttons come first and the message last, on one line cut to the width left (the
    /// whole text shows on hover and in the log window), so a long message never pushes the
    /// status bar taller than a line.
    pub fn status_ui(&mut self, ui: &mut egui::Ui) {
        let label = format!("Messages ({})", self.entries.len());
        if ui.small_button(label).clicked() {
            self.open = !self.open;
        }
        if let Some(e) = self.current().cloned() {
            if ui.small_button("dismiss").clicked() {
                self.dismiss();
            }
            entry_line(ui, &e, true);
        }
    }

    /// The log window, when open.
    pub fn window(&mut self, ctx: &egui::Context) {
        let mut open = self.open;
        let mut clear = false;
        egui::Window::new("Messages")
            .open(&mut open)
            .default_size([520.0, 300.0])
            .show(ctx, |ui| {
                if ui.button("Clear").clicked() {
                    clear = true;
                }
                ui.separator();
                egui::ScrollArea::vertical()
                    .stick_to_bottom(true)
                    .show(ui, |ui| {
                        if self.entries.is_empty() {
                            ui.label(egui::RichText::new("No messages.").weak());
                        }
                        for e in &self.entries {
                            ui.horizontal_wrapped(|ui| entry_line(ui, e, false));
                        }
                    });
            });
        if clear {
            self.clear();
        }
        self.open = open;
    }
}

/// `12:03:04  text`, errors in the error colour; `one_line`: the text cut to the width left
/// (whole on hover), else wrapped.
fn entry_line(ui: &mut egui::Ui, e: &Entry, one_line: bool) {
    ui.label(
        egui::RichText::new(format!("{} UTC", e.time()))
            .weak()
            .small(),
    );
    let text = egui::RichText::new(&e.text);
    let text = match e.level {
        Level::Error => text.color(ui.visuals().error_fg_color),
        Level::Cancelled => text.italics(),
        Level::Note => text,
    };
    let label = egui::Label::new(text).selectable(true);
    ui.add(if one_line {
        label.truncate()
    } else {
        label.wrap()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dismissed_messages_stay_dismissed_and_clear_empties() {
        let mut log = MessageLog::default();
        log.push(Level::Error, "bad folder");
        log.push(Level::Cancelled, "filters cancelled");
        assert_eq!(log.last_error(), Some("bad folder"));
        assert_eq!(log.current().unwrap().text, "filters cancelled");
        log.dismiss();
        assert_eq!(log.last_error(), None);
        assert!(log.current().is_none());
        assert_eq!(log.entries().len(), 2, "the log keeps them");
        log.push(Level::Note, "saved");
        assert_eq!(log.last_note(), Some("saved"));
        assert_eq!(
            log.last_error(),
            None,
            "a dismissed error does not come back"
        );
        log.clear();
        assert!(log.entries().is_empty() && log.current().is_none());
        let e = Entry {
            at: 3600 + 62,
            level: Level::Note,
            text: String::new(),
        };
        assert_eq!(e.time(), "01:01:02");
    }
}
