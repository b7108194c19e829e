//! Small inline SVG bar charts of one value a minute, with a text alternative (no
//! script, no external asset).

use maud::{Markup, html};

const WIDTH: u64 = 240;
const HEIGHT: u64 = 48;

/// A bar chart of `values` (one a minute, the oldest first), labelled `label`, with
/// `shown` rendering the largest value for the text alternative.
pub fn bars(label: &str, values: &[u64], shown: impl Fn(u64) -> String) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0);
    let last = values.last().copied().unwrap_or(0);
    let text = if values.is_empty() {
        format!("{label}: no samples yet")
    } else {
        format!(
            "{label}: {} minutes, the last {}, the highest {}",
            values.len(),
            shown(last),
            shown(max)
        )
    };
    let n = values.len().max(1) as u64;
    let slot = WIDTH / n.max(1);
    let bar = slot.saturating_sub(1).max(1);
    html! {
        figure.chart {
            svg role="img" aria-label=(text) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) {
                title { (text) }
                rect.frame x="0" y="0" width=(WIDTH) height=(HEIGHT) {}
                @for (i, v) in values.iter().enumerate() {
                    @let h = if max == 0 { 0 } else { (v * (HEIGHT - 2)).div_ceil(max) };
                    rect.bar x=(i as u64 * slot) y=(HEIGHT - h) width=(bar) height=(h) {}
                }
            }
            figcaption { (label) ": " (shown(last)) " in the last minute" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_bar_per_value_scaled_to_the_highest_and_a_text_alternative() {
        let svg = bars("Served", &[0, 5, 10], |v| format!("{v} B")).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert!(svg.contains("height=\"46\""), "the highest bar fills the chart: {svg}");
        assert!(svg.contains("aria-label=\"Served: 3 minutes, the last 10 B, the highest 10 B\""));
        let empty = bars("Served", &[], |v| v.to_string()).into_string();
        assert!(empty.contains("no samples yet"));
    }
}
