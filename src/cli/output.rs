//! Printing answers as the AWS CLI does: `--query` (JMESPath) first, then
//! `--output json|yaml|text|table`.

use std::io::IsTerminal;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    CommandFailure,
    args::{Color, OutputFormat},
    input::ParamError,
    table, text,
};

/// A compiled `--query`.
pub struct Query(jmespath::Expression<'static>);

impl Query {
    /// Compiles `--query`; a bad expression is a parameter error.
    pub fn parse(expression: &str) -> Result<Self, ParamError> {
        jmespath::compile(expression)
            .map(Self)
            .map_err(|e| ParamError(format!("Bad value for --query {expression}: {e}")))
    }

    /// Applies the query. An object in the result keeps the key order of
    /// the object it came from (in `value`, or in a `{key: ...}` of the
    /// query), as in the AWS CLI: the JMESPath crate sorts keys.
    pub fn apply(&self, value: &Value) -> Result<Value, CommandFailure> {
        // Like the AWS CLI: a query that compiles but fails on the answer
        // (a function given the wrong type) is not a parameter error.
        let result = self
            .0
            .search(value)
            .map_err(|e| CommandFailure::Other(format!("--query failed on the answer: {e}")))?;
        let result = serde_json::to_value(&*result).map_err(|e| {
            CommandFailure::Other(format!("--query gave an unprintable result: {e}"))
        })?;
        let mut shapes = Vec::new();
        shapes_of_query(self.0.as_ast(), &mut shapes);
        shapes_of_value(value, &mut shapes);
        Ok(reorder(result, &shapes))
    }
}

/// The key lists of the objects a query builds (`{id: jobId, ...}`).
fn shapes_of_query(ast: &jmespath::ast::Ast, shapes: &mut Vec<Vec<String>>) {
    use jmespath::ast::Ast;
    match ast {
        Ast::MultiHash { elements, .. } => {
            shapes.push(elements.iter().map(|pair| pair.key.clone()).collect());
            for pair in elements {
                shapes_of_query(&pair.value, shapes);
            }
        }
        Ast::MultiList { elements, .. } | Ast::Function { args: elements, .. } => {
            elements.iter().for_each(|e| shapes_of_query(e, shapes));
        }
        Ast::Subexpr { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Comparison { lhs, rhs, .. }
        | Ast::Condition {
            predicate: lhs,
            then: rhs,
            ..
        } => {
            shapes_of_query(lhs, shapes);
            shapes_of_query(rhs, shapes);
        }
        Ast::Flatten { node, .. } | Ast::ObjectValues { node, .. } | Ast::Not { node, .. } => {
            shapes_of_query(node, shapes)
        }
        Ast::Expref { ast, .. } => shapes_of_query(ast, shapes),
        _ => {}
    }
}

/// The key lists of every object in the answer.
fn shapes_of_value(value: &Value, shapes: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            shapes.push(map.keys().cloned().collect());
            map.values().for_each(|v| shapes_of_value(v, shapes));
        }
        Value::Array(items) => items.iter().for_each(|v| shapes_of_value(v, shapes)),
        _ => {}
    }
}

/// Puts each object's keys in the order of the first shape with the same
/// keys (objects with no such shape keep the sorted order).
fn reorder(value: Value, shapes: &[Vec<String>]) -> Value {
    match value {
        Value::Object(mut map) => {
            let shape = shapes.iter().find(|shape| {
                shape.len() == map.len() && shape.iter().all(|k| map.contains_key(k))
            });
            let keys: Vec<String> = match shape {
                Some(shape) => shape.clone(),
                None => map.keys().cloned().collect(),
            };
            Value::Object(
                keys.into_iter()
                    .filter_map(|k| map.remove(&k).map(|v| (k, reorder(v, shapes))))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| reorder(v, shapes)).collect())
        }
        other => other,
    }
}

/// How to print: the format, the query, the table's title and colour.
pub struct Printer {
    /// `--output`.
    pub format: OutputFormat,
    /// `--query`, compiled.
    pub query: Option<Query>,
    /// The table's title: the operation's name, as the AWS CLI uses.
    pub title: &'static str,
    /// Whether table output is coloured.
    pub color: bool,
    /// The terminal's width for tables (80 when not a terminal, as the AWS CLI).
    pub width: usize,
}

impl Printer {
    /// A printer for stdout with the given options.
    pub fn stdout(
        format: OutputFormat,
        query: Option<Query>,
        color: Color,
        title: &'static str,
    ) -> Self {
        let terminal = std::io::stdout().is_terminal();
        let width = terminal
            .then(|| terminal_size::terminal_size_of(std::io::stdout()))
            .flatten()
            .map_or(80, |(w, _)| usize::from(w.0));
        Self {
            format,
            query,
            title,
            color: color.enabled(terminal),
            width,
        }
    }

    /// The text to print for `value` (empty when the AWS CLI prints nothing).
    pub fn render(&self, value: &Value) -> Result<String, CommandFailure> {
        let value = match &self.query {
            Some(query) => query.apply(value)?,
            None => value.clone(),
        };
        Ok(match self.format {
            OutputFormat::Json => json(&value),
            OutputFormat::Yaml => yaml(&value),
            OutputFormat::Text => text::render(&value),
            OutputFormat::Table => table::render(self.title, &value, self.width, self.color),
        })
    }
}

/// JSON indented by four spaces, as the AWS CLI prints it (and nothing for
/// an empty object, as it does).
pub fn json(value: &Value) -> String {
    if value.as_object().is_some_and(Map::is_empty) {
        return String::new();
    }
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a `Value` into memory cannot fail.
    let _ = value.serialize(&mut serializer);
    let mut text = String::from_utf8(out).unwrap_or_default();
    text.push('\n');
    text
}

/// YAML in block style, as AWS CLI v2 prints it.
pub fn yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(expression: &str, value: &Value) -> String {
        let q = Query::parse(expression).unwrap();
        serde_json::to_string(&q.apply(value).unwrap()).unwrap()
    }

    #[test]
    fn query_results_keep_the_answers_key_order() {
        let answer = json!({"job": {"jobId": "a", "status": "IN_PROGRESS", "comment": "c",
                                    "jobProcessDetails": {"numberOfQueuedThings": 1}}});
        assert_eq!(
            query("job", &answer),
            r#"{"jobId":"a","status":"IN_PROGRESS","comment":"c","jobProcessDetails":{"numberOfQueuedThings":1}}"#
        );
        assert_eq!(
            query("job.{z: jobId, a: status}", &answer),
            r#"{"z":"a","a":"IN_PROGRESS"}"#
        );
        assert_eq!(
            query("job.jobProcessDetails.numberOfQueuedThings", &answer),
            "1"
        );
        assert_eq!(
            query("job.[jobId, status]", &answer),
            r#"["a","IN_PROGRESS"]"#
        );
        assert_eq!(query("job.missing", &answer), "null");
        // Same key in two objects: each result keeps its own object's order.
        let nested = json!({"a": {"y": 1, "x": 2}, "b": {"x": 3, "z": 4, "y": 5}});
        assert_eq!(query("b", &nested), r#"{"x":3,"z":4,"y":5}"#);
    }

    #[test]
    fn bad_queries_are_parameter_errors() {
        let err = Query::parse("job.[").err().unwrap();
        assert!(
            err.0.starts_with("Bad value for --query job.["),
            "{}",
            err.0
        );
    }

    #[test]
    fn json_is_indented_like_the_aws_cli() {
        assert_eq!(
            json(&json!({"job": {"targets": ["a"], "presignedUrlConfig": {}, "n": 1.5}})),
            "{\n    \"job\": {\n        \"targets\": [\n            \"a\"\n        ],\n        \
             \"presignedUrlConfig\": {},\n        \"n\": 1.5\n    }\n}\n"
        );
        assert_eq!(json(&json!({})), "");
        assert_eq!(json(&Value::Null), "null\n");
    }
}
