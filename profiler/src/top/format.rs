//! Numbers as people read them at a glance: `1.2M`, `37.5%`, `1:05`, `▁▃█`.

use std::time::Duration;

/// A count or rate in at most five characters: `0`, `0.5`, `999`, `12.3k`, `1.2M`.
pub fn count(value: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    if value <= 0.0 {
        return "0".into();
    }
    // Rounding may carry into the next unit (999_950 is 1.0M, not 1000.0k).
    for (scale, unit) in UNITS {
        let scaled = value / scale;
        if scaled >= 100.0 - 0.05 && scaled.round() < 1000.0 {
            return format!("{:.0}{unit}", scaled);
        }
        if scaled >= 1.0 - 0.0005 && scaled.round() < 1000.0 {
            return format!("{:.1}{unit}", scaled);
        }
    }
    if value < 10.0 && value.fract() != 0.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A fraction from 0 to 1 as a percentage with one decimal.
pub fn share(fraction: f64) -> String {
    format!("{:.1}%", 100.0 * fraction.clamp(0.0, 1.0))
}

/// `M:SS`, or `H:MM:SS` past an hour.
pub fn duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

/// `values` (oldest first) drawn in `width` cells, newest on the right; each
/// cell shows the largest value it covers, so short bursts stay visible.
/// Zero is blank, so idle stretches read as gaps.
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if width == 0 {
        return String::new();
    }
    let cells: Vec<u64> = if values.len() <= width {
        values.to_vec()
    } else {
        (0..width)
            .map(|cell| {
                let start = cell * values.len() / width;
                let end = (cell + 1) * values.len() / width;
                values[start..end].iter().copied().max().unwrap_or(0)
            })
            .collect()
    };
    let max = cells.iter().copied().max().unwrap_or(0).max(1);
    let mut line = " ".repeat(width - cells.len());
    line.extend(cells.iter().map(|&v| match v {
        0 => ' ',
        v => BARS[((v as u128 * 8).div_ceil(max as u128) as usize).clamp(1, 8) - 1],
    }));
    line
}

/// `text` cut to `width` characters, with `…` where it was cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fit_five_characters() {
        let cases = [
            (0.0, "0"),
            (0.5, "0.5"),
            (7.0, "7"),
            (999.0, "999"),
            (1_000.0, "1.0k"),
            (1_234.0, "1.2k"),
            (12_345.0, "12.3k"),
            (123_456.0, "123k"),
            (999_499.0, "999k"),
            (999_950.0, "1.0M"),
            (1_234_567.0, "1.2M"),
            (98_760_000.0, "98.8M"),
            (2.5e9, "2.5G"),
        ];
        for (value, text) in cases {
            assert_eq!(count(value), text, "{value}");
        }
    }

    #[test]
    fn shares_and_durations() {
        assert_eq!(share(0.9994), "99.9%");
        assert_eq!(share(1.0), "100.0%");
        assert_eq!(share(0.0), "0.0%");
        assert_eq!(duration(Duration::from_secs(65)), "1:05");
        assert_eq!(duration(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn sparklines_scale_to_their_maximum_and_fit_their_width() {
        assert_eq!(sparkline(&[0, 1, 2, 4, 8], 5), " ▁▂▄█");
        // Fewer points than cells: right-aligned.
        assert_eq!(sparkline(&[8, 8], 4), "  ██");
        // More points than cells: the maximum of each stretch.
        assert_eq!(sparkline(&[0, 8, 0, 0, 0, 4], 3), "█ ▄");
        assert_eq!(sparkline(&[0, 0], 2), "  ");
        assert_eq!(sparkline(&[], 3), "   ");
    }

    #[test]
    fn truncates_with_an_ellipsis() {
        assert_eq!(truncate("fixture_spin", 20), "fixture_spin");
        assert_eq!(truncate("fixture_spin", 8), "fixture…");
        assert_eq!(truncate("abc", 0), "");
    }
}
