//! What `check` tells: a table of the budgets on stdout and, with `--junit`,
//! JUnit XML with one test case per budget for CI systems to show.

use std::fmt::Write;
use std::time::Duration;

use quick_xml::escape::escape;

use super::judge::Verdict;

pub fn table(verdicts: &[Verdict]) -> String {
    let headers = ["BUDGET", "MEASURED", "LIMIT", "RESULT"];
    let width = |column: fn(&Verdict) -> &str, header: &str| {
        verdicts
            .iter()
            .map(|v| column(v).chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let budget_width = width(|v| &v.budget, headers[0]);
    let measured_width = width(|v| &v.measured, headers[1]);
    let limit_width = width(|v| &v.limit, headers[2]);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<budget_width$}  {:>measured_width$}  {:>limit_width$}  {}",
        headers[0], headers[1], headers[2], headers[3]
    );
    for verdict in verdicts {
        let _ = writeln!(
            out,
            "{:<budget_width$}  {:>measured_width$}  {:>limit_width$}  {}",
            verdict.budget,
            verdict.measured,
            verdict.limit,
            if verdict.passed { "pass" } else { "FAIL" }
        );
        for detail in &verdict.details {
            let _ = writeln!(out, "    {detail}");
        }
    }
    let failed = verdicts.iter().filter(|v| !v.passed).count();
    let _ = writeln!(out, "{} of {} budgets exceeded", failed, verdicts.len());
    out
}

/// XML 1.0 cannot hold most control characters, escaped or not.
fn xml_text(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    escape(kept.as_str()).into_owned()
}

/// `command_failure`: COMMAND's non-zero status, a failed test case of its own.
pub fn junit(verdicts: &[Verdict], command_failure: Option<i32>, duration: Duration) -> String {
    let tests = verdicts.len() + usize::from(command_failure.is_some());
    let failures =
        verdicts.iter().filter(|v| !v.passed).count() + usize::from(command_failure.is_some());
    let time = format!("{:.3}", duration.as_secs_f64());
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"clockprof check\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">"
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"clock budgets\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\">"
    );
    if let Some(status) = command_failure {
        let _ = writeln!(
            xml,
            "    <testcase classname=\"clockprof.check\" name=\"COMMAND exits 0\">\n      <failure type=\"command\" message=\"COMMAND exited with status {status}\"/>\n    </testcase>"
        );
    }
    for verdict in verdicts {
        let name = xml_text(&verdict.budget);
        if verdict.passed {
            let _ = writeln!(
                xml,
                "    <testcase classname=\"clockprof.budget\" name=\"{name}\">\n      <system-out>{}</system-out>\n    </testcase>",
                xml_text(&verdict.message)
            );
            continue;
        }
        let mut body = verdict.message.clone();
        for detail in &verdict.details {
            body.push('\n');
            body.push_str(detail);
        }
        let _ = writeln!(
            xml,
            "    <testcase classname=\"clockprof.budget\" name=\"{name}\">\n      <failure type=\"over budget\" message=\"{}\">{}</failure>\n    </testcase>",
            xml_text(&verdict.message),
            xml_text(&body)
        );
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::{Reader, XmlVersion};

    fn verdict(budget: &str, passed: bool) -> Verdict {
        Verdict {
            budget: budget.into(),
            measured: "20000".into(),
            limit: "1000".into(),
            passed,
            message: format!("stacks with a frame matching `{budget}` made 20000 clock reads, over the limit of 1000"),
            details: vec!["a <detail> & \"more\"\u{1}".into()],
        }
    }

    /// (element name, attributes) of every start tag; panics on malformed XML.
    fn elements(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().check_end_names = true;
        let mut out = Vec::new();
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) | Event::Empty(e) => {
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            (
                                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                                a.normalized_value(XmlVersion::Explicit1_0)
                                    .unwrap()
                                    .into_owned(),
                            )
                        })
                        .collect();
                    out.push((
                        String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                        attrs,
                    ));
                }
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    #[test]
    fn one_test_case_per_budget_with_failure_message() {
        let verdicts = [
            verdict("max fixture_hot=1000", false),
            verdict("max <warm>&\"x\"=5", true),
        ];
        let xml = junit(&verdicts, None, Duration::from_millis(1500));
        let elements = elements(&xml);
        let cases: Vec<&Vec<(String, String)>> = elements
            .iter()
            .filter(|(name, _)| name == "testcase")
            .map(|(_, attrs)| attrs)
            .collect();
        assert_eq!(cases.len(), 2);
        assert!(cases[1].contains(&("name".into(), "max <warm>&\"x\"=5".into())));
        let failures: Vec<&Vec<(String, String)>> = elements
            .iter()
            .filter(|(name, _)| name == "failure")
            .map(|(_, attrs)| attrs)
            .collect();
        assert_eq!(failures.len(), 1);
        let message = &failures[0].iter().find(|(k, _)| k == "message").unwrap().1;
        assert_eq!(
            message,
            "stacks with a frame matching `max fixture_hot=1000` made 20000 clock reads, over the limit of 1000"
        );
        let suite = &elements.iter().find(|(n, _)| n == "testsuite").unwrap().1;
        assert!(suite.contains(&("tests".into(), "2".into())));
        assert!(suite.contains(&("failures".into(), "1".into())));
        assert!(suite.contains(&("time".into(), "1.500".into())));
    }

    #[test]
    fn failing_command_is_a_failed_case() {
        let xml = junit(&[verdict("max a=1", true)], Some(7), Duration::ZERO);
        let elements = elements(&xml);
        assert_eq!(elements.iter().filter(|(n, _)| n == "testcase").count(), 2);
        let failure = &elements.iter().find(|(n, _)| n == "failure").unwrap().1;
        assert!(failure.contains(&("message".into(), "COMMAND exited with status 7".into())));
    }

    #[test]
    fn table_lists_budget_value_limit_and_result() {
        let text = table(&[
            verdict("max fixture_hot=1000", false),
            verdict("max b=1", true),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["BUDGET", "MEASURED", "LIMIT", "RESULT"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["max", "fixture_hot=1000", "20000", "1000", "FAIL"]
        );
        assert!(lines[2].trim_start().starts_with("a <detail>"));
        assert!(lines[3].ends_with("pass"));
        assert_eq!(lines.last().unwrap(), &"1 of 2 budgets exceeded");
    }
}
