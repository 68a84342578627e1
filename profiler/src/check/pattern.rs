//! Which frames a budget's PATTERN names: a frame name, compared as it is, or
//! a shell glob (`*`, `?`, `[...]`). The exact comparison comes first so that
//! names holding glob characters, such as the clock reads'
//! `[syscall clock_gettime MONOTONIC]`, can be named as they are printed
//! (a glob over them escapes the bracket: `[[]syscall clock_gettime *]`).

use anyhow::{bail, Result};
use glob::{MatchOptions, Pattern};

#[derive(Clone, Debug)]
pub struct FramePattern {
    text: String,
    /// None when the text is not a valid glob: then only the exact name matches.
    glob: Option<Pattern>,
}

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    // Frame names are not paths: `*` also spans `/` and `::`.
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// glob's matcher recurses once per `*`, and backtracks over them: a
/// budget file's pattern of thousands could exhaust the stack or the time.
/// No frame needs more than a few.
const MAX_STARS: usize = 64;

impl FramePattern {
    pub fn new(text: &str) -> Result<FramePattern> {
        if text.is_empty() {
            bail!("a budget has an empty pattern; name a frame or a glob before `=`");
        }
        if text.matches('*').count() > MAX_STARS {
            bail!("a pattern may hold at most {MAX_STARS} `*`");
        }
        Ok(FramePattern {
            text: text.to_string(),
            glob: Pattern::new(text).ok(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Kernel frames carry `_[k]` in folded stacks; the bare function name
    /// names them as well.
    /// A clock system call's leaf names its cause last
    /// (`[syscall time direct]`); the leaf without it (`[syscall time]`, as
    /// budgets written before causes name it) names it as well.
    pub fn matches(&self, frame: &str) -> bool {
        let bare = frame.strip_suffix("_[k]");
        let without_cause = crate::sources::leaf_without_cause(frame);
        std::iter::once(frame)
            .chain(bare)
            .chain(without_cause.as_deref())
            .any(|name| {
                name == self.text
                    || self
                        .glob
                        .as_ref()
                        .is_some_and(|glob| glob.matches_with(name, OPTIONS))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_are_bounded() {
        let many = "*a".repeat(MAX_STARS + 1);
        let err = FramePattern::new(&many).unwrap_err().to_string();
        assert_eq!(err, "a pattern may hold at most 64 `*`");
        let most = FramePattern::new(&"*a".repeat(MAX_STARS)).unwrap();
        assert!(!most.matches(&"a".repeat(63)));
        assert!(most.matches(&"a".repeat(64)));
    }

    fn matches(pattern: &str, frame: &str) -> bool {
        FramePattern::new(pattern).unwrap().matches(frame)
    }

    #[test]
    fn a_leaf_is_named_with_or_without_its_cause() {
        assert!(matches("[syscall time]", "[syscall time direct]"));
        assert!(matches(
            "[syscall clock_gettime MONOTONIC]",
            "[syscall clock_gettime MONOTONIC vdso-fallback]"
        ));
        assert!(matches(
            "[syscall clock_gettime MONOTONIC vdso-fallback]",
            "[syscall clock_gettime MONOTONIC vdso-fallback]"
        ));
        assert!(!matches(
            "[syscall clock_gettime MONOTONIC direct]",
            "[syscall clock_gettime MONOTONIC vdso-fallback]"
        ));
        assert!(!matches("[syscall time]", "[syscall time nonsense]"));
    }

    #[test]
    fn exact_names_and_globs() {
        assert!(matches("fixture_hot", "fixture_hot"));
        assert!(!matches("fixture_hot", "fixture_hotter"));
        assert!(!matches("fixture_hot", "my_fixture_hot"));
        assert!(matches("fixture_*", "fixture_warm"));
        assert!(matches("fixture_?ot", "fixture_hot"));
        assert!(matches("*::rust_hot", "fixture_rust::rust_hot"));
        assert!(matches("std::*", "std::time::Instant::now"));
        assert!(matches("fixture_[hw]*", "fixture_warm"));
        assert!(!matches("fixture_[hw]*", "fixture_time"));
        assert!(!matches("Fixture_hot", "fixture_hot"));
    }

    #[test]
    fn bracketed_names_match_as_written() {
        // As a glob, `[syscall time]` is a one-character class; as a name, the leaf.
        assert!(matches("[syscall time]", "[syscall time]"));
        assert!(!matches("[syscall time]", "[syscall gettimeofday]"));
        // A glob over leaves escapes the bracket as `[[]`.
        assert!(matches(
            "[[]syscall clock_gettime *]",
            "[syscall clock_gettime MONOTONIC]"
        ));
        assert!(matches("[[]vdso *", "[vdso sample]"));
        // Not a valid glob (unclosed class): only the exact name matches.
        assert!(matches("[vdso", "[vdso"));
        assert!(!matches("[vdso", "[vdso sample]"));
    }

    #[test]
    fn kernel_frames_by_bare_or_folded_name() {
        assert!(matches("do_syscall_64", "do_syscall_64_[k]"));
        assert!(matches("do_syscall_64_[k]", "do_syscall_64_[k]"));
        assert!(matches("ktime_*", "ktime_get_[k]"));
        assert!(!matches("do_syscall_64", "do_syscall_64_x"));
    }

    #[test]
    fn empty_pattern_is_refused() {
        assert!(FramePattern::new("").is_err());
    }
}
