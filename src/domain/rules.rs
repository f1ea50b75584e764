//! What AWS accepts, checked before AWS is asked: a question that breaks a
//! rule costs AWS nothing and tells the caller what to fix.

use std::fmt::Display;

/// AWS IoT job ids are at most this long.
pub const MAX_JOB_ID_LEN: usize = 64;

/// One reason a request field was rejected, reported as a BadRequest
/// field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, by its proto name.
    pub field: String,
    /// What is wrong and how to fix it, for a person.
    pub description: String,
}

/// Checks a job id against AWS's rule: 1 to 64 characters of `[a-zA-Z0-9_-]`.
/// `field` names it in a violation (formatted only if there is one).
pub fn job_id(field: impl Display + Copy, id: &str) -> Result<(), FieldViolation> {
    let violation = |description: String| FieldViolation {
        field: field.to_string(),
        description,
    };
    if id.is_empty() {
        return Err(violation(format!(
            "{field} is required: the id of an AWS IoT job (1 to {MAX_JOB_ID_LEN} letters, digits, '-' or '_')"
        )));
    }
    let len = id.chars().count();
    if len > MAX_JOB_ID_LEN {
        return Err(violation(format!(
            "{field} is {len} characters long; AWS IoT job ids have at most {MAX_JOB_ID_LEN}"
        )));
    }
    if let Some((pos, bad)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(violation(format!(
            "{field} contains '{}' at position {}; AWS IoT job ids use only letters, digits, '-' and '_'",
            bad.escape_default(),
            pos + 1
        )));
    }
    Ok(())
}

/// AWS IoT thing names are at most this long.
pub const MAX_THING_NAME_LEN: usize = 128;

/// Checks a thing name against AWS's rule: 1 to 128 characters of
/// `[a-zA-Z0-9:_-]`. `field` names it in a violation.
pub fn thing_name(field: impl Display + Copy, name: &str) -> Result<(), FieldViolation> {
    let violation = |description: String| FieldViolation {
        field: field.to_string(),
        description,
    };
    if name.is_empty() {
        return Err(violation(format!(
            "{field} is required: the name of an AWS IoT thing (1 to {MAX_THING_NAME_LEN} letters, digits, ':', '-' or '_')"
        )));
    }
    let len = name.chars().count();
    if len > MAX_THING_NAME_LEN {
        return Err(violation(format!(
            "{field} is {len} characters long; AWS IoT thing names have at most {MAX_THING_NAME_LEN}"
        )));
    }
    if let Some((pos, bad)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')))
    {
        return Err(violation(format!(
            "{field} contains '{}' at position {}; AWS IoT thing names use only letters, digits, ':', '-' and '_'",
            bad.escape_default(),
            pos + 1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_their_own_rule() {
        for name in ["a", "plant-7:line_2", &"t".repeat(128)] {
            assert_eq!(thing_name("thing_name", name), Ok(()), "{name}");
        }
        let long = thing_name("thing_name", &"t".repeat(129)).unwrap_err();
        assert!(
            long.description.contains("129 characters"),
            "{}",
            long.description
        );
        let slash = thing_name("thing_name", "a/b").unwrap_err();
        assert!(
            slash.description.contains("'/' at position 2"),
            "{}",
            slash.description
        );
        assert!(
            thing_name("thing_name", "")
                .unwrap_err()
                .description
                .contains("required")
        );
    }

    #[test]
    fn accepts_aws_shaped_ids() {
        for id in ["a", "firmware-rollout_2026", &"x".repeat(64)] {
            assert_eq!(job_id("job_id", id), Ok(()), "{id}");
        }
    }

    #[test]
    fn rejects_with_a_message_that_says_what_to_fix() {
        let empty = job_id("job_id", "").unwrap_err();
        assert!(
            empty.description.contains("required"),
            "{}",
            empty.description
        );

        let long = job_id("job_id", &"x".repeat(65)).unwrap_err();
        assert!(
            long.description.contains("65 characters"),
            "{}",
            long.description
        );

        let slash = job_id("job_id", "jobs/1").unwrap_err();
        assert!(
            slash.description.contains("'/' at position 5"),
            "{}",
            slash.description
        );

        let newline = job_id("job_id", "a\nb").unwrap_err();
        assert!(
            newline.description.contains("'\\n'"),
            "{}",
            newline.description
        );
        assert_eq!(newline.field, "job_id");
    }
}
