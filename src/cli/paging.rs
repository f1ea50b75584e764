//! The AWS CLI's pagination, for the listing commands: by default every
//! page, fetched one after another and printed as one result; `--page-size`
//! sets the items per AWS call; `--max-items` stops after that many and
//! prints a `NextToken` that `--starting-token` continues from; with
//! `--no-paginate` (or the API's own `--next-token`) one call, printed as
//! AWS answered it. The tokens are botocore's: base64 of the JSON
//! `{"nextToken": …, "boto_truncate_amount": …}`, so a token from the AWS
//! CLI continues here and the other way round.

use std::future::Future;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{CommandFailure, args::PagingArgs, input::ParamError, output::Printer};

/// Where a listing starts: AWS's token of the page, and how many of that
/// page's items an earlier listing already printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    /// AWS's `nextToken` of the first page to ask for.
    pub token: Option<String>,
    /// Items of that page to leave out.
    pub skip: usize,
}

/// Reads a `--starting-token`: botocore's encoding, or (as botocore still
/// accepts) AWS's own token as it is.
pub fn decode(text: &str) -> Start {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok());
    match decoded {
        Some(fields) => Start {
            token: fields
                .get("nextToken")
                .and_then(Value::as_str)
                .map(str::to_owned),
            skip: fields
                .get("boto_truncate_amount")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
        },
        None => {
            let mut parts: Vec<&str> = text.split("___").collect();
            let skip = match parts.len() {
                2 => parts.pop().and_then(|n| n.parse().ok()).unwrap_or(0),
                _ => 0,
            };
            let token = parts
                .first()
                .filter(|t| **t != "None")
                .map(|t| (*t).to_owned());
            Start { token, skip }
        }
    }
}

/// The `NextToken` the AWS CLI prints: AWS's token of the page to ask for
/// next and, when the listing stopped inside a page, how much of it was
/// printed; as Python's `json.dumps` writes it, in base64.
pub fn encode(token: Option<&str>, truncate: Option<usize>) -> String {
    let mut json = String::from("{\"nextToken\": ");
    match token {
        Some(token) => python_json_string(&mut json, token),
        None => json.push_str("null"),
    }
    if let Some(amount) = truncate {
        json.push_str(&format!(", \"boto_truncate_amount\": {amount}"));
    }
    json.push('}');
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// A string as `json.dumps` writes it (`ensure_ascii`).
fn python_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// How a listing command pages, from its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// One call with AWS's own `maxResults` and `nextToken`.
    Once {
        max_results: Option<i32>,
        next_token: Option<String>,
    },
    /// Every page, as the AWS CLI pages.
    All {
        page_size: Option<i32>,
        max_items: Option<usize>,
        start: Start,
    },
}

/// The paging the options ask for, refused as the AWS CLI refuses it.
pub fn paging(
    args: &PagingArgs,
    input_max_results: Option<i64>,
    input_next_token: Option<String>,
) -> Result<Paging, CommandFailure> {
    let max_results = args.max_results.or(input_max_results);
    let next_token = args.next_token.clone().or(input_next_token);
    let int = |name: &str, n: i64| {
        i32::try_from(n).map_err(|_| {
            CommandFailure::Param(ParamError(format!(
                "Parameter validation failed:\nInvalid value for parameter {name}, value: {n}"
            )))
        })
    };
    if args.no_paginate || next_token.is_some() {
        let given: Vec<&str> = [
            ("--max-items", args.max_items.is_some()),
            ("--page-size", args.page_size.is_some()),
            ("--starting-token", args.starting_token.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if !given.is_empty() {
            return Err(CommandFailure::Other(format!(
                "Error during pagination: Cannot specify --no-paginate along with pagination \
                 arguments: {}",
                given.join(", ")
            )));
        }
        return Ok(Paging::Once {
            max_results: max_results.map(|n| int("maxResults", n)).transpose()?,
            next_token,
        });
    }
    let page_size = args.page_size.or(max_results);
    let max_items = match args.max_items {
        Some(n) if n < 0 => {
            return Err(CommandFailure::Param(ParamError(format!(
                "--max-items {n}: expected 0 or more items"
            ))));
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    Ok(Paging::All {
        page_size: page_size.map(|n| int("maxResults", n)).transpose()?,
        max_items,
        start: args
            .starting_token
            .as_deref()
            .map(decode)
            .unwrap_or_default(),
    })
}

/// One page as AWS gave it: its items and AWS's token of the next.
pub struct Page {
    /// The page's items, as the AWS CLI prints them.
    pub items: Vec<Value>,
    /// AWS's `nextToken`.
    pub next_token: Option<String>,
}

/// A listing's pages after paging: what the AWS CLI prints.
pub struct Listed {
    /// The pages' items, each page as it was kept.
    pub pages: Vec<Vec<Value>>,
    /// The `NextToken` to continue with, when `--max-items` stopped it.
    pub resume: Option<String>,
}

/// Pages through a listing as botocore's paginator does, asking `fetch`
/// for each page (AWS's token, the page size).
pub async fn list<F, Fut>(
    page_size: Option<i32>,
    max_items: Option<usize>,
    start: Start,
    mut fetch: F,
) -> Result<Listed, CommandFailure>
where
    F: FnMut(Option<String>, Option<i32>) -> Fut,
    Fut: Future<Output = Result<Page, CommandFailure>>,
{
    let mut token = start.token.clone();
    let mut starting_truncation = start.skip;
    let mut first = true;
    let mut total = 0;
    let mut pages = Vec::new();
    let mut previous: Option<String> = None;
    loop {
        let page = fetch(token.clone(), page_size).await?;
        let mut items = page.items;
        if first {
            items.drain(..start.skip.min(items.len()));
            first = false;
        } else {
            starting_truncation = 0;
        }
        if let Some(max) = max_items
            && total + items.len() > max
        {
            let keep = max - total;
            items.truncate(keep);
            pages.push(items);
            let resume = encode(token.as_deref(), Some(keep + starting_truncation));
            return Ok(Listed {
                pages,
                resume: Some(resume),
            });
        }
        total += items.len();
        pages.push(items);
        let Some(next) = page.next_token else {
            return Ok(Listed {
                pages,
                resume: None,
            });
        };
        if max_items == Some(total) {
            return Ok(Listed {
                pages,
                resume: Some(encode(Some(&next), None)),
            });
        }
        if previous.as_deref() == Some(next.as_str()) {
            return Err(CommandFailure::Other(format!(
                "Error during pagination: The same next token was received twice: \
                 {{'nextToken': '{next}'}}"
            )));
        }
        previous = Some(next.clone());
        token = Some(next);
    }
}

/// What the AWS CLI prints for a paged listing under `key`: the whole
/// result for JSON, YAML and tables, and for text each page on its own,
/// then the `NextToken`.
pub fn render(printer: &Printer, key: &str, listed: Listed) -> Result<String, CommandFailure> {
    use super::args::OutputFormat;
    let object = |items: Vec<Value>| Map::from_iter([(key.to_owned(), Value::Array(items))]);
    if printer.format == OutputFormat::Text {
        let mut out = String::new();
        for items in listed.pages {
            out.push_str(&printer.render(&Value::Object(object(items)))?);
        }
        if let Some(resume) = listed.resume {
            let token = Map::from_iter([("NextToken".to_owned(), Value::from(resume))]);
            let wrapped = Map::from_iter([("NextToken".to_owned(), Value::Object(token))]);
            out.push_str(&printer.render(&Value::Object(wrapped))?);
        }
        return Ok(out);
    }
    let mut whole = object(listed.pages.into_iter().flatten().collect());
    if let Some(resume) = listed.resume {
        whole.insert("NextToken".into(), Value::from(resume));
    }
    printer.render(&Value::Object(whole))
}

/// What the AWS CLI prints for one page asked with `--no-paginate`.
pub fn render_once(printer: &Printer, key: &str, page: Page) -> Result<String, CommandFailure> {
    let mut out = Map::from_iter([(key.to_owned(), Value::Array(page.items))]);
    if let Some(token) = page.next_token {
        out.insert("nextToken".into(), Value::from(token));
    }
    printer.render(&Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_botocores() {
        // What the AWS CLI printed after two items of a first page.
        let aws_cli = "eyJuZXh0VG9rZW4iOiBudWxsLCAiYm90b190cnVuY2F0ZV9hbW91bnQiOiAyfQ==";
        assert_eq!(encode(None, Some(2)), aws_cli);
        assert_eq!(
            decode(aws_cli),
            Start {
                token: None,
                skip: 2
            }
        );
        let on_a_boundary = encode(Some("akAy"), None);
        assert_eq!(
            decode(&on_a_boundary),
            Start {
                token: Some("akAy".into()),
                skip: 0
            }
        );
        // Not botocore's encoding: AWS's own token, as botocore reads it.
        assert_eq!(
            decode("garbage"),
            Start {
                token: Some("garbage".into()),
                skip: 0
            }
        );
        assert_eq!(
            decode("tok___3"),
            Start {
                token: Some("tok".into()),
                skip: 3
            }
        );
    }

    #[test]
    fn tokens_escape_as_python_does() {
        let mut out = String::new();
        python_json_string(&mut out, "a\"b\\c\u{e9}\u{1f600}");
        assert_eq!(out, "\"a\\\"b\\\\c\\u00e9\\ud83d\\ude00\"");
    }
}
