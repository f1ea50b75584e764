//! The metric names in a dashboard's PromQL queries, and the sample names
//! a `/metrics` page serves: enough of both languages to compare them.

use std::collections::BTreeSet;

/// Aggregation operators: names that are followed by `by (…)` or `(`, never
/// metrics.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Modifiers followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// The metric names `expr` selects. What is not a metric name is taken out:
/// strings, label matchers `{…}`, range and subquery selectors `[…]`,
/// comments, numbers and durations, Grafana variables (`$x`, `${x}`),
/// function and aggregation names, the label lists of `by`, `without`,
/// `on`, `ignoring`, `group_left` and `group_right`, and keywords.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    assert!(
        !expr.contains("__name__"),
        "selecting metrics by __name__ is not understood: {expr}"
    );
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i = match c {
            '"' | '\'' | '`' => after_string(&chars, i),
            '{' => after_closing(&chars, i, '{', '}'),
            '[' => after_closing(&chars, i, '[', ']'),
            '#' => chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n),
            '$' if chars.get(i + 1) == Some(&'{') => after_closing(&chars, i + 1, '{', '}'),
            '$' => skip_while(&chars, i + 1, is_name_char),
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                skip_number(&chars, i)
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = skip_while(&chars, i, is_name_char);
                let word: String = chars[i..end].iter().collect();
                let next = skip_while(&chars, end, char::is_whitespace);
                let opens = chars.get(next) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if opens {
                        after_closing(&chars, next, '(', ')')
                    } else {
                        end
                    }
                } else {
                    let keyword = AGGREGATIONS.contains(&lower.as_str())
                        || KEYWORDS.contains(&lower.as_str());
                    if !keyword && !opens {
                        names.insert(word);
                    }
                    end
                }
            }
            _ => i + 1,
        };
    }
    names
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

fn skip_while(chars: &[char], from: usize, keep: impl Fn(char) -> bool) -> usize {
    chars[from..]
        .iter()
        .position(|&c| !keep(c))
        .map_or(chars.len(), |n| from + n)
}

/// Past a number or a duration: `0.99`, `1e-3`, `0x1f`, `5m`, `1h30m`.
fn skip_number(chars: &[char], from: usize) -> usize {
    let mut i = from;
    while i < chars.len() {
        let c = chars[i];
        let exponent_sign = matches!(c, '+' | '-') && matches!(chars[i - 1], 'e' | 'E');
        if c.is_ascii_alphanumeric() || c == '.' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Past the string that starts at `from` (its quote character closes it;
/// `\` escapes inside `"` and `'`).
fn after_string(chars: &[char], from: usize) -> usize {
    let quote = chars[from];
    let mut i = from + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    panic!("an unclosed string in {}", chars.iter().collect::<String>())
}

/// Past the bracket that closes the one at `from`, strings inside skipped.
fn after_closing(chars: &[char], from: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = after_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("an unclosed {open} in {}", chars.iter().collect::<String>())
}

/// The sample names of a Prometheus or OpenMetrics text page: the first
/// word of every line that is not a comment (`name{labels} value` or
/// `name value`).
pub fn sample_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            line[..end].to_owned()
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn finds_the_metrics_and_nothing_else() {
    let cases: &[(&str, &[&str])] = &[
        ("up", &["up"]),
        (
            r#"sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{instance=~"$instance"}[$__rate_interval]))"#,
            &["grpc_server_handled_total"],
        ),
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{l="}[x]", m!~'a|b'}[5m])))"#,
            &["a_seconds_bucket"],
        ),
        (
            "sum by (code) (rate(errors_total{code!=\"OK\"}[1m]))\n/ ignoring (code) group_left\nsum(rate(calls_total[1m]))",
            &["errors_total", "calls_total"],
        ),
        (
            "max without (pod) (x:recorded offset 1h30m) > bool 1e-3 and on(instance) y # why\n",
            &["x:recorded", "y"],
        ),
        (
            "rate(a_total[5m:30s]) * ${scale} + $var - 0x1F",
            &["a_total"],
        ),
        (
            "sum(rate(requests_total[1m])) by (job)",
            &["requests_total"],
        ),
    ];
    for (expr, expected) in cases {
        assert_eq!(metric_names(expr), set(expected), "{expr}");
    }
}

#[test]
fn reads_sample_names() {
    let page = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1 2\"} 3\n\
                b 1.5\nh_bucket{le=\"+Inf\"} 2\n# EOF\n";
    assert_eq!(sample_names(page), set(&["a_total", "b", "h_bucket"]));
}
