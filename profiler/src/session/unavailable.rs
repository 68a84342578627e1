//! Why a source is skipped, as data: the session keeps it, and the summary,
//! the JSON output and the messages on stderr say it.

use std::fmt;

use crate::probes::Refusal;

/// Why a source this session was asked for records nothing here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The kernel refused every backend on every function the kernel
    /// source watches: per function, each backend's refusal.
    KernelRefusesAll(Vec<(String, Vec<Refusal>)>),
    /// The source has nothing to probe here (no Go program, a static
    /// COMMAND): the attach error's words.
    NothingToProbe(String),
}

impl Unavailable {
    /// Everything known of why: for the kernel source, each function's
    /// refusals, said once when every function was refused alike (what
    /// `doctor` says hook by hook). The JSON output's `unavailable`.
    pub fn detail(&self) -> String {
        match self {
            Unavailable::KernelRefusesAll(functions) => refusals_per_function(functions),
            Unavailable::NothingToProbe(why) => why.clone(),
        }
    }
}

/// One sentence: where the kernel refused, it points to `doctor` for the
/// refusals, which are long and the same for every function.
impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::KernelRefusesAll(_) => f.write_str(
                "this kernel refuses every hook for its functions (clockprof doctor says why)",
            ),
            Unavailable::NothingToProbe(why) => f.write_str(why),
        }
    }
}

/// `function: refusal, refusal; function: ...`, or the refusals alone when
/// every function had the same.
pub fn refusals_per_function(functions: &[(String, Vec<Refusal>)]) -> String {
    match functions {
        [(_, first), rest @ ..] if rest.iter().all(|(_, refusals)| refusals == first) => {
            Refusal::all_said(first)
        }
        _ => functions
            .iter()
            .map(|(function, refusals)| format!("{function}: {}", Refusal::all_said(refusals)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachment::Backend;
    use crate::probes::Errno;

    #[test]
    fn a_kernel_refusing_every_hook_is_one_sentence_and_the_detail_says_why() {
        let refused = vec![Refusal::KernelRefused {
            backend: Backend::Fentry,
            errno: Errno(libc::EPERM),
        }];
        let both = vec![
            ("ktime_get".to_string(), refused.clone()),
            ("ktime_get_ts64".to_string(), refused.clone()),
        ];
        let all = Unavailable::KernelRefusesAll(both);
        assert_eq!(
            all.to_string(),
            "this kernel refuses every hook for its functions (clockprof doctor says why)"
        );
        assert_eq!(
            all.detail(),
            "the kernel refused to load the fentry program (EPERM; no verifier output)"
        );
        let mut apart = refused.clone();
        apart.push(Refusal::NoKprobes);
        let differ = Unavailable::KernelRefusesAll(vec![
            ("ktime_get_mono_fast_ns".to_string(), apart),
            ("ktime_get".to_string(), refused),
        ]);
        assert_eq!(
            differ.detail(),
            "ktime_get_mono_fast_ns: the kernel refused to load the fentry program (EPERM; no verifier output), \
             this kernel has no kprobes; ktime_get: the kernel refused to load the fentry program (EPERM; no verifier output)"
        );
    }
}
