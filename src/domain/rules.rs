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
    static JOB_ID: Name = Name::new(
        "the id of an AWS IoT job",
        "AWS IoT job ids",
        Some(MAX_JOB_ID_LEN),
        &['-', '_'],
    );
    JOB_ID.check(field, id)
}

/// One of AWS's name rules: 1 to `max` letters, digits and `extra`.
struct Name {
    /// What one such name is, for people.
    one: &'static str,
    /// What they are, in the plural.
    many: &'static str,
    /// The longest allowed, if AWS sets a limit.
    max: Option<usize>,
    /// Allowed besides ASCII letters and digits (all ASCII).
    extra: &'static [char],
    /// Whether each ASCII character is allowed.
    ascii: [bool; 128],
}

impl Name {
    /// The punctuation allowed, for people: `'-' or '_'`.
    fn punctuation(&self, word: &str) -> String {
        let quoted: Vec<String> = self.extra.iter().map(|c| format!("'{c}'")).collect();
        match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} {word} {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    const fn new(
        one: &'static str,
        many: &'static str,
        max: Option<usize>,
        extra: &'static [char],
    ) -> Self {
        let mut ascii = [false; 128];
        let mut c = 0;
        while c < 128 {
            ascii[c] = (c as u8).is_ascii_alphanumeric();
            c += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            assert!(extra[i].is_ascii(), "AWS's punctuation is ASCII");
            ascii[extra[i] as usize] = true;
            i += 1;
        }
        Self {
            one,
            many,
            max,
            extra,
            ascii,
        }
    }

    /// Whether `c` may appear in such a name (only ASCII may).
    fn allows(&self, c: char) -> bool {
        self.ascii.get(c as usize) == Some(&true)
    }

    fn check(&self, field: impl Display + Copy, value: &str) -> Result<(), FieldViolation> {
        let violation = |description: String| FieldViolation {
            field: field.to_string(),
            description,
        };
        // The messages are built only for a violation: a valid name, on
        // every call, costs no allocation.
        if value.is_empty() {
            let how_many = match self.max {
                Some(max) => format!("1 to {max}"),
                None => "1 or more".to_owned(),
            };
            return Err(violation(format!(
                "{field} is required: {} ({how_many} letters, digits, {})",
                self.one,
                self.punctuation("or")
            )));
        }
        // A name of allowed characters is ASCII, one byte each: the usual
        // case is one pass over its bytes against a table of ASCII.
        let plain = value.bytes().all(|b| self.allows(char::from(b)));
        if plain && self.max.is_none_or(|max| value.len() <= max) {
            return Ok(());
        }
        let len = value.chars().count();
        if let Some(max) = self.max
            && len > max
        {
            return Err(violation(format!(
                "{field} is {len} characters long; {} have at most {max}",
                self.many
            )));
        }
        if let Some((pos, bad)) = value.chars().enumerate().find(|&(_, c)| !self.allows(c)) {
            return Err(violation(format!(
                "{field} contains '{}' at position {}; {} use only letters, digits, {}",
                bad.escape_default(),
                pos + 1,
                self.many,
                self.punctuation("and")
            )));
        }
        Ok(())
    }
}

/// AWS IoT thing names are at most this long.
pub const MAX_THING_NAME_LEN: usize = 128;

/// Checks a thing name against AWS's rule: 1 to 128 characters of
/// `[a-zA-Z0-9:_-]`. `field` names it in a violation.
pub fn thing_name(field: impl Display + Copy, name: &str) -> Result<(), FieldViolation> {
    static THING_NAME: Name = Name::new(
        "the name of an AWS IoT thing",
        "AWS IoT thing names",
        Some(MAX_THING_NAME_LEN),
        &[':', '-', '_'],
    );
    THING_NAME.check(field, name)
}

/// Checks a job namespace against AWS's rule: letters, digits, `-` and
/// `_`, at least one (AWS sets no length).
pub fn namespace_id(field: impl Display + Copy, id: &str) -> Result<(), FieldViolation> {
    static NAMESPACE: Name = Name::new("a job namespace", "job namespaces", None, &['-', '_']);
    NAMESPACE.check(field, id)
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
        assert_eq!(
            empty.description,
            "job_id is required: the id of an AWS IoT job (1 to 64 letters, digits, '-' or '_')"
        );
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

    #[test]
    fn every_character_is_judged_as_aws_does() {
        // AWS: [a-zA-Z0-9_-] for job ids, [a-zA-Z0-9:_-] for thing names.
        for c in (0..=255u8)
            .map(char::from)
            .chain(['é', '\u{2013}', '\u{1F600}'])
        {
            let name = format!("a{c}b");
            let id_ok = c.is_ascii_alphanumeric() || c == '-' || c == '_';
            assert_eq!(job_id("job_id", &name).is_ok(), id_ok, "{c:?}");
            assert_eq!(
                thing_name("thing_name", &name).is_ok(),
                id_ok || c == ':',
                "{c:?}"
            );
        }
        // Lengths are in characters: 40 'é' (80 bytes) are not too long,
        // only not allowed.
        let accented = job_id("job_id", &"é".repeat(40)).unwrap_err();
        assert!(
            accented.description.contains("'\\u{e9}' at position 1"),
            "{}",
            accented.description
        );
    }
}
