//! The AWS CLI's `--output text` format, a port of awscli 1.46.3's `awscli/text.py`.
//!
//! The AWS CLI walks the response depth first. A dict prints its scalar values
//! on one tab-separated line (keys sorted), prefixed with the upper-cased key it
//! was found under, then recurses into its non-scalar values in key order. A
//! list of scalars prints one line per element under that key, or a single
//! tab-separated line at the top level. Scalars are printed with Python's
//! `str()`, which [`python_str`] reproduces.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// `value` as `aws ... --output text` prints it (`text.format_text`).
pub fn render(value: &Value) -> String {
    let mut out = String::new();
    write_item(&mut out, value, None, None);
    out
}

/// Python's `str(value)` for a JSON value decoded by `json.loads`: `None`,
/// `True`/`False`, integers as is, floats as `repr(float)`, strings raw, and
/// lists/dicts as their Python `repr` (the AWS CLI prints those when a key is
/// scalar in one list element but not in another).
pub fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(number) => number_str(number),
        Value::String(text) => text.clone(),
        Value::Array(_) | Value::Object(_) => python_repr(value),
    }
}

/// Whether the AWS CLI treats `value` as a scalar (`not isinstance(v, (dict, list))`).
pub(super) fn is_scalar(value: &Value) -> bool {
    !(value.is_array() || value.is_object())
}

/// `_format_text`: dispatch on the item's type; `identifier` is the key the
/// item was found under, `scalar_keys` the shared columns of a list of dicts.
fn write_item(
    out: &mut String,
    item: &Value,
    identifier: Option<&str>,
    scalar_keys: Option<&[String]>,
) {
    match item {
        Value::Object(map) => write_dict(out, map, identifier, scalar_keys),
        Value::Array(items) => write_list(out, items, identifier),
        scalar => {
            out.push_str(&python_str(scalar));
            out.push('\n');
        }
    }
}

/// `_format_list`: a list holding dicts prints every element against the
/// union of the dicts' scalar keys, so the columns line up; a list holding
/// lists prints its scalars first, then each nested list; anything else is a
/// list of scalars.
fn write_list(out: &mut String, items: &[Value], identifier: Option<&str>) {
    if items.iter().any(Value::is_object) {
        let keys = all_scalar_keys(items);
        for item in items {
            write_item(out, item, identifier, Some(&keys));
        }
    } else if items.iter().any(Value::is_array) {
        let (scalars, nested): (Vec<&Value>, Vec<&Value>) =
            items.iter().partition(|item| is_scalar(item));
        if !scalars.is_empty() {
            write_scalar_list(out, &scalars, identifier);
        }
        for item in nested {
            write_item(out, item, identifier, None);
        }
    } else if !items.is_empty() {
        write_scalar_list(out, &items.iter().collect::<Vec<_>>(), identifier);
    }
}

/// `_format_scalar_list`: one `IDENTIFIER<TAB>value` line per element, or,
/// for a bare (top-level) list, all elements on one tab-separated line.
fn write_scalar_list(out: &mut String, elements: &[&Value], identifier: Option<&str>) {
    match identifier {
        Some(identifier) => {
            let identifier = identifier.to_uppercase();
            for element in elements {
                let _ = writeln!(out, "{identifier}\t{}", python_str(element));
            }
        }
        None => {
            let line: Vec<String> = elements.iter().map(|element| python_str(element)).collect();
            out.push_str(&line.join("\t"));
            out.push('\n');
        }
    }
}

/// `_format_dict`: the scalar values on one line (prefixed with the
/// upper-cased identifier, if any), then each non-scalar value under its key.
fn write_dict(
    out: &mut String,
    map: &Map<String, Value>,
    identifier: Option<&str>,
    scalar_keys: Option<&[String]>,
) {
    let (scalars, nested) = partition_dict(map, scalar_keys);
    if !scalars.is_empty() {
        if let Some(identifier) = identifier {
            out.push_str(&identifier.to_uppercase());
            out.push('\t');
        }
        out.push_str(&scalars.join("\t"));
        out.push('\n');
    }
    for (key, value) in nested {
        write_item(out, value, Some(key), None);
    }
}

/// `_all_scalar_keys`: the sorted keys that hold a scalar in any dict of the
/// list. (Python raises on non-dict elements here; they are skipped instead.)
fn all_scalar_keys(items: &[Value]) -> Vec<String> {
    let keys: BTreeSet<&String> = items
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|map| {
            map.iter()
                .filter(|(_, value)| is_scalar(value))
                .map(|(key, _)| key)
        })
        .collect();
    keys.into_iter().cloned().collect()
}

/// `_partition_dict`: the printed scalar values and the `(key, value)` pairs
/// to recurse into, both in key order. With `scalar_keys` (inside a list of
/// dicts) every listed key yields a column, `""` when absent, and only the
/// remaining keys are recursed into.
fn partition_dict<'a>(
    map: &'a Map<String, Value>,
    scalar_keys: Option<&[String]>,
) -> (Vec<String>, Vec<(&'a str, &'a Value)>) {
    let mut entries: Vec<(&'a str, &'a Value)> = map
        .iter()
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    match scalar_keys {
        None => {
            let (scalars, nested): (Vec<_>, Vec<_>) =
                entries.into_iter().partition(|(_, value)| is_scalar(value));
            (
                scalars
                    .into_iter()
                    .map(|(_, value)| python_str(value))
                    .collect(),
                nested,
            )
        }
        Some(keys) => {
            let scalars = keys
                .iter()
                .map(|key| map.get(key).map_or_else(String::new, python_str))
                .collect();
            entries.retain(|(key, _)| !keys.iter().any(|scalar_key| scalar_key == key));
            (scalars, entries)
        }
    }
}

/// Python's `str()` of a number: integers verbatim, floats via [`float_repr`].
fn number_str(number: &Number) -> String {
    match number.as_f64() {
        Some(float) if number.is_f64() => float_repr(float),
        _ => number.to_string(),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed
/// notation when the decimal exponent is in -4..16 (always with a fractional
/// part, `1.0`), otherwise as `d.ddde±XX` (`1e+16`, `1e-05`).
fn float_repr(float: f64) -> String {
    // Rust's `{:e}` yields the same shortest round-trip digits, e.g. `-1.5e-7`.
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa
        .strip_prefix('-')
        .map_or(("", mantissa), |unsigned| ("-", unsigned));
    let digits = mantissa.replace('.', "");
    if !(-4..16).contains(&exponent) {
        let mut chars = digits.chars();
        let first = chars.next().unwrap_or('0');
        let rest = chars.as_str();
        let point = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{point}{rest}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        )
    } else if let Ok(leading) = usize::try_from(exponent) {
        let integer_digits = leading + 1;
        match digits.split_at_checked(integer_digits) {
            Some((integer, fraction)) if !fraction.is_empty() => {
                format!("{sign}{integer}.{fraction}")
            }
            _ => format!("{sign}{digits:0<integer_digits$}.0"),
        }
    } else {
        let zeros = "0".repeat(exponent.unsigned_abs() as usize - 1);
        format!("{sign}0.{zeros}{digits}")
    }
}

/// Python's `repr()` of a decoded JSON value, as nested inside a list or dict.
fn python_repr(value: &Value) -> String {
    match value {
        Value::String(text) => string_repr(text),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", string_repr(key), python_repr(value)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        scalar => python_str(scalar),
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` but no `"`;
/// backslash, the quote, `\t`, `\n`, `\r` escaped; unprintable characters as
/// `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
fn string_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character: false for control,
/// separator (except the space), format and private-use characters. The
/// format/private-use ranges are Unicode 14's (CPython 3.11); unassigned code
/// points, which Python also treats as unprintable, count as printable here.
fn is_printable(c: char) -> bool {
    const FORMAT_OR_PRIVATE_USE: [(u32, u32); 21] = [
        (0xAD, 0xAD),
        (0x600, 0x605),
        (0x61C, 0x61C),
        (0x6DD, 0x6DD),
        (0x70F, 0x70F),
        (0x890, 0x891),
        (0x8E2, 0x8E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0xE000, 0xF8FF),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x13438),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE007F),
        (0xF0000, 0x10FFFD),
    ];
    let code = u32::from(c);
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || FORMAT_OR_PRIVATE_USE
                .iter()
                .any(|&(low, high)| (low..=high).contains(&code)))
}

// The goldens are what awscli 1.46.3's own formatter prints (venv /tmp/awsvenv):
//   python -c 'import io,json,sys; from awscli.text import format_text
//   out = io.StringIO(); format_text(json.loads(sys.argv[1]), out)
//   sys.stdout.write(out.getvalue())' "$JSON"
// and, for `python_str`, `print(str(json.loads(sys.argv[1])))`.
#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::cli) const FULL_RESPONSE: &str = r#"{"documentSource": "https://s3.amazonaws.com/bucket/job.json", "job": {
    "jobArn": "arn:aws:iot:us-east-1:123456789012:job/full-job",
    "jobId": "full-job",
    "targetSelection": "SNAPSHOT",
    "status": "IN_PROGRESS",
    "forceCanceled": false,
    "reasonCode": "ROLLBACK",
    "comment": "bad batch",
    "targets": ["arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"],
    "description": "firmware 2.0",
    "presignedUrlConfig": {"roleArn": "arn:aws:iam::123456789012:role/jobs", "expiresInSec": 3600},
    "jobExecutionsRolloutConfig": {"maximumPerMinute": 100, "exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 1.5, "rateIncreaseCriteria": {"numberOfNotifiedThings": 10, "numberOfSucceededThings": 8}}},
    "abortConfig": {"criteriaList": [{"failureType": "TIMED_OUT", "action": "CANCEL", "thresholdPercentage": 10.99, "minNumberOfExecutedThings": 5}]},
    "createdAt": 1560787022.733,
    "lastUpdatedAt": 1560787026.294,
    "completedAt": 1560790000.001,
    "jobProcessDetails": {"processingTargets": ["arn:aws:iot:us-east-1:123456789012:thing/pi"], "numberOfCanceledThings": 1, "numberOfSucceededThings": 2, "numberOfFailedThings": 3, "numberOfRejectedThings": 4, "numberOfQueuedThings": 5, "numberOfInProgressThings": 6, "numberOfRemovedThings": 7, "numberOfTimedOutThings": 8},
    "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
    "namespaceId": "greengrass",
    "jobTemplateArn": "arn:aws:iot:us-east-1:123456789012:jobtemplate/ota",
    "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]},
    "documentParameters": {"firmwareUrl": "s3://bucket/fw.bin"},
    "isConcurrent": true,
    "schedulingConfig": {"startTime": "2030-01-01T10:00", "endTime": "2030-01-02T10:00", "endBehavior": "STOP_ROLLOUT", "maintenanceWindows": [{"startTime": "cron(0 0 ? * MON *)", "durationInMinutes": 60}]},
    "scheduledJobRollouts": [{"startTime": "2030-01-06T00:00"}],
    "destinationPackageVersions": ["arn:aws:iot:us-east-1:123456789012:package/fw/version/2.0"]
}}"#;

    pub(in crate::cli) const DOCS_EXAMPLE: &str = r#"{"job": {
    "jobArn": "arn:aws:iot:us-west-2:123456789012:job/example-job-01",
    "jobId": "example-job-01",
    "targetSelection": "SNAPSHOT",
    "status": "IN_PROGRESS",
    "targets": ["arn:aws:iot:us-west-2:123456789012:thing/MyRaspberryPi"],
    "description": "example job test",
    "presignedUrlConfig": {},
    "jobExecutionsRolloutConfig": {},
    "createdAt": 1560787022.733,
    "lastUpdatedAt": 1560787026.294,
    "jobProcessDetails": {"numberOfCanceledThings": 0, "numberOfSucceededThings": 0, "numberOfFailedThings": 0, "numberOfRejectedThings": 0, "numberOfQueuedThings": 1, "numberOfInProgressThings": 0, "numberOfRemovedThings": 0, "numberOfTimedOutThings": 0},
    "timeoutConfig": {}
}}"#;

    pub(in crate::cli) const NON_ASCII_RESPONSE: &str = r#"{"job": {
    "jobId": "fw-2",
    "description": "Firmware für Geräte ✓ 固件",
    "status": "QUEUED",
    "タグ": {"名前": "値"}
}}"#;

    fn text(json: &str) -> String {
        render(&serde_json::from_str(json).expect("test JSON"))
    }

    const FULL_TEXT: &str = r#"https://s3.amazonaws.com/bucket/job.json
JOB	bad batch	1560790000.001	1560787022.733	firmware 2.0	False	True	arn:aws:iot:us-east-1:123456789012:job/full-job	full-job	arn:aws:iot:us-east-1:123456789012:jobtemplate/ota	1560787026.294	greengrass	ROLLBACK	IN_PROGRESS	SNAPSHOT
CRITERIALIST	CANCEL	TIMED_OUT	5	10.99
DESTINATIONPACKAGEVERSIONS	arn:aws:iot:us-east-1:123456789012:package/fw/version/2.0
DOCUMENTPARAMETERS	s3://bucket/fw.bin
CRITERIALIST	FAILED	2
JOBEXECUTIONSROLLOUTCONFIG	100
EXPONENTIALRATE	5	1.5
RATEINCREASECRITERIA	10	8
JOBPROCESSDETAILS	1	3	6	5	4	7	2	8
PROCESSINGTARGETS	arn:aws:iot:us-east-1:123456789012:thing/pi
PRESIGNEDURLCONFIG	3600	arn:aws:iam::123456789012:role/jobs
SCHEDULEDJOBROLLOUTS	2030-01-06T00:00
SCHEDULINGCONFIG	STOP_ROLLOUT	2030-01-02T10:00	2030-01-01T10:00
MAINTENANCEWINDOWS	60	cron(0 0 ? * MON *)
TARGETS	arn:aws:iot:us-east-1:123456789012:thinggroup/fleet
TIMEOUTCONFIG	30
"#;

    const DOCS_TEXT: &str = r#"JOB	1560787022.733	example job test	arn:aws:iot:us-west-2:123456789012:job/example-job-01	example-job-01	1560787026.294	IN_PROGRESS	SNAPSHOT
JOBPROCESSDETAILS	0	0	0	1	0	0	0	0
TARGETS	arn:aws:iot:us-west-2:123456789012:thing/MyRaspberryPi
"#;

    const NON_ASCII_TEXT: &str = r#"JOB	Firmware für Geräte ✓ 固件	fw-2	QUEUED
タグ	値
"#;

    #[test]
    fn full_describe_job_response() {
        assert_eq!(text(FULL_RESPONSE), FULL_TEXT);
    }

    #[test]
    fn aws_docs_example_with_empty_objects() {
        assert_eq!(text(DOCS_EXAMPLE), DOCS_TEXT);
    }

    #[test]
    fn non_ascii_text_is_printed_raw() {
        assert_eq!(text(NON_ASCII_RESPONSE), NON_ASCII_TEXT);
    }

    /// `--query` results: scalars, floats, lists, multiselect lists and hashes.
    const QUERIES: &[(&str, &str)] = &[
        (
            r#""full-job""#,
            r#"full-job
"#,
        ),
        (
            r#"3600"#, r#"3600
"#,
        ),
        (
            r#"10.99"#,
            r#"10.99
"#,
        ),
        (
            r#"1.5"#, r#"1.5
"#,
        ),
        (
            r#"1560787022.733"#,
            r#"1560787022.733
"#,
        ),
        (
            r#"1560787022.0"#,
            r#"1560787022.0
"#,
        ),
        (
            r#"1e16"#,
            r#"1e+16
"#,
        ),
        (
            r#"0.00001"#,
            r#"1e-05
"#,
        ),
        (
            r#"-0.0"#, r#"-0.0
"#,
        ),
        (
            r#"true"#, r#"True
"#,
        ),
        (
            r#"false"#,
            r#"False
"#,
        ),
        (
            r#"null"#, r#"None
"#,
        ),
        (
            r#"["arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"]"#,
            r#"arn:aws:iot:us-east-1:123456789012:thinggroup/fleet
"#,
        ),
        (
            r#"["a", "b", 3, null]"#,
            r#"a	b	3	None
"#,
        ),
        (
            r#"[["a", "IN_PROGRESS"]]"#,
            r#"a	IN_PROGRESS
"#,
        ),
        (
            r#"[["a", "IN_PROGRESS"], ["b", "QUEUED"]]"#,
            r#"a	IN_PROGRESS
b	QUEUED
"#,
        ),
        (
            r#"{"id": "x", "status": "IN_PROGRESS", "done": 2}"#,
            r#"2	x	IN_PROGRESS
"#,
        ),
        (
            r#"[{"failureType": "FAILED", "numberOfRetries": 2}, {"failureType": "TIMED_OUT", "action": "CANCEL", "numberOfRetries": 0}]"#,
            r#"	FAILED	2
CANCEL	TIMED_OUT	0
"#,
        ),
        (r#"[]"#, r#""#),
        (r#"{}"#, r#""#),
        (
            r#"[10.99, 1.5, 1560787022.733, 1560787022.0, 1e16, 0.00001]"#,
            r#"10.99	1.5	1560787022.733	1560787022.0	1e+16	1e-05
"#,
        ),
        (
            r#"["a", ["b", "c"], "d", [["e"]]]"#,
            r#"a	d
b	c
e
"#,
        ),
        (
            r#"{"jobs": [{"jobId": "a", "targets": ["t1", "t2"]}, {"jobId": "b"}]}"#,
            r#"JOBS	a
TARGETS	t1
TARGETS	t2
JOBS	b
"#,
        ),
        (
            r#"{"größe": ["a"], "empty": {}, "none": []}"#,
            r#"GRÖSSE	a
"#,
        ),
        (
            r#"[{"a": 1}, {"a": {"b": "it's", "c": [null, true, 1.0, "x\ny\u0007\u00e9\u00a0"], "d": "say \"hi\" it's"}}]"#,
            r#"1
{'b': "it's", 'c': [None, True, 1.0, 'x\ny\x07é\xa0'], 'd': 'say "hi" it\'s'}
"#,
        ),
    ];

    #[test]
    fn query_results() {
        for (json, expected) in QUERIES {
            assert_eq!(text(json), *expected, "{json}");
        }
    }

    /// awscli raises `AttributeError` on a list mixing dicts and other values
    /// (`_all_scalar_keys` calls `.items()` on each); here the other values
    /// are printed as they would be on their own.
    #[test]
    fn lists_mixing_dicts_and_other_values_still_render() {
        assert_eq!(text(r#"[{"a": 1}, "x", [2, 3]]"#), "1\nx\n2\t3\n");
    }

    #[test]
    fn python_str_matches_python() {
        let cases = [
            (r#"0.30000000000000004"#, r#"0.30000000000000004"#),
            (r#"1e15"#, r#"1000000000000000.0"#),
            (r#"0.0001"#, r#"0.0001"#),
            (r#"123456789012345680.0"#, r#"1.2345678901234568e+17"#),
            (r#"5e-324"#, r#"5e-324"#),
            (r#"1.7976931348623157e308"#, r#"1.7976931348623157e+308"#),
            (r#"-1.5e-7"#, r#"-1.5e-07"#),
            (r#"2.5"#, r#"2.5"#),
            (r#"100.0"#, r#"100.0"#),
            (r#"-0.0"#, r#"-0.0"#),
            (r#"0"#, r#"0"#),
            (r#"-7"#, r#"-7"#),
            (r#"18446744073709551615"#, r#"18446744073709551615"#),
            (r#"1E+2"#, r#"100.0"#),
            (r#"9999999999999998.0"#, r#"9999999999999998.0"#),
            (r#"12.5e-5"#, r#"0.000125"#),
            (r#"[]"#, r#"[]"#),
            (r#"{}"#, r#"{}"#),
            (
                r#"[1, 2.0, "a", null, false, {"k": []}]"#,
                r#"[1, 2.0, 'a', None, False, {'k': []}]"#,
            ),
            (r#""plain""#, r#"plain"#),
            (
                r#"["tab\there", "back\\slash", "\u001b[0m", "\u2028", "\u00ad", "\ue000", "\ud83d\ude00", "\u3000", "caf\u00e9", "\u0085"]"#,
                r#"['tab\there', 'back\\slash', '\x1b[0m', '\u2028', '\xad', '\ue000', '😀', '\u3000', 'café', '\x85']"#,
            ),
            (
                r#"{"it's": "say \"hi\"", "q": "\"", "both": "'\""}"#,
                r#"{"it's": 'say "hi"', 'q': '"', 'both': '\'"'}"#,
            ),
        ];
        for (json, expected) in cases {
            let value: Value = serde_json::from_str(json).expect("test JSON");
            assert_eq!(python_str(&value), expected, "{json}");
        }
    }
}
