//! Tells the user, on stderr, when the gateway answered from its cache
//! past the answer's lifetime (`x-cache: stale`, a batch item's `STALE`
//! cache kind): AWS could not be asked in time, or the answer is being
//! renewed. The output itself stays what the AWS CLI prints.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::pb;

/// Ids named in the note about a batch before it says "and N more".
const NAMED: usize = 5;

/// The note about a DescribeJob answer, if it was stale.
pub fn unary_note(job_id: &str, metadata: &MetadataMap) -> Option<String> {
    let header = |name| metadata.get(name).and_then(|v| v.to_str().ok());
    if header("x-cache") != Some("stale") {
        return None;
    }
    let age = header("x-cache-age-ms").and_then(|ms| ms.parse().ok());
    Some(format!(
        "Note: the gateway answered for job {job_id:?} from its cache, {} and past its \
         lifetime (x-cache: stale): AWS did not answer in time, or the answer is being renewed.",
        aged(age)
    ))
}

/// One note about a batch's stale items, if any.
pub fn batch_note(results: &[pb::JobResult]) -> Option<String> {
    use pb::cache_info::Source;
    let stale: Vec<_> = results
        .iter()
        .filter_map(|r| Some((&r.job_id, r.cache.filter(|c| c.source() == Source::Stale)?)))
        .collect();
    let oldest = stale.iter().map(|(_, cache)| cache.age_ms).max()?;
    let mut ids: Vec<String> = stale
        .iter()
        .take(NAMED)
        .map(|(id, _)| format!("{id:?}"))
        .collect();
    if stale.len() > NAMED {
        ids.push(format!("and {} more", stale.len() - NAMED));
    }
    Some(format!(
        "Note: the gateway answered {} of {} jobs from its cache past their lifetime (STALE, \
         the oldest {}): {}. AWS did not answer in time, or the answers are being renewed.",
        stale.len(),
        results.len(),
        aged(Some(oldest)),
        ids.join(", ")
    ))
}

/// "12.3 s old", from milliseconds.
fn aged(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.1} s old", Duration::from_millis(ms).as_secs_f64()),
        None => "of unknown age".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(job_id: &str, source: Option<pb::cache_info::Source>, age_ms: u64) -> pb::JobResult {
        pb::JobResult {
            job_id: job_id.into(),
            cache: source.map(|s| pb::CacheInfo {
                source: s as i32,
                age_ms,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_stale_answers_get_a_note() {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-cache", "hit".parse().unwrap());
        assert_eq!(unary_note("j", &metadata), None);
        metadata.insert("x-cache", "stale".parse().unwrap());
        metadata.insert("x-cache-age-ms", "12345".parse().unwrap());
        let note = unary_note("j", &metadata).unwrap();
        assert!(
            note.contains("\"j\"") && note.contains("12.3 s old"),
            "{note}"
        );
    }

    #[test]
    fn a_batch_gets_one_note_naming_its_stale_items() {
        use pb::cache_info::Source::*;
        let fresh = [item("a", Some(Hit), 10), item("b", None, 0)];
        assert_eq!(batch_note(&fresh), None);
        let mut results: Vec<_> = (0..8)
            .map(|i| item(&format!("s{i}"), Some(Stale), 1000 * i))
            .collect();
        results.push(item("a", Some(Miss), 0));
        let note = batch_note(&results).unwrap();
        assert!(note.contains("8 of 9 jobs"), "{note}");
        assert!(note.contains("the oldest 7.0 s old"), "{note}");
        assert!(note.contains("\"s4\", and 3 more"), "{note}");
    }
}
