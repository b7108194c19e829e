//! What a prefetch run shows while it works (indicatif, on stderr, only on a
//! terminal): the phase with its steps done out of all, and the bytes fetched out of
//! those to fetch.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: MultiProgress,
    steps: ProgressBar,
    bytes: ProgressBar,
}

impl Progress {
    /// Bars drawn on stderr when `visible`, else nothing is drawn.
    pub fn new(visible: bool) -> Progress {
        let bars = MultiProgress::new();
        if !visible {
            bars.set_draw_target(ProgressDrawTarget::hidden());
        }
        let steps = bars.add(
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
        );
        let bytes = bars.add(
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
        );
        Progress { bars, steps, bytes }
    }

    /// A new phase of `len` steps.
    pub fn phase(&self, name: &str, len: u64) {
        self.steps.set_prefix(name.to_string());
        self.steps.set_length(len);
        self.steps.set_position(0);
        self.steps.set_message("");
    }

    /// What the current phase is working on.
    pub fn message(&self, msg: impl Into<String>) {
        self.steps.set_message(msg.into());
    }

    pub fn step(&self) {
        self.steps.inc(1);
    }

    /// The phase that moves bytes: `count` steps, `total` bytes.
    pub fn bytes(&self, name: &str, count: u64, total: u64) {
        self.phase(name, count);
        self.bytes.set_prefix("bytes");
        self.bytes.set_length(total);
        self.bytes.set_position(0);
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.inc(n);
    }

    /// A line above the bars (what a planning step found).
    pub fn note(&self, line: &str) {
        let _ = self.bars.println(line);
    }

    /// A warning the operator must see now, before the work it warns about: above the
    /// bars on a terminal, else on stderr.
    pub fn warn(&self, line: &str) {
        if self.bars.is_hidden() {
            eprintln!("pullgate: warning: {line}");
        } else {
            let _ = self.bars.println(format!("warning: {line}"));
        }
    }

    pub fn finish(&self) {
        self.steps.finish_and_clear();
        self.bytes.finish_and_clear();
    }
}
