//! Pools and labels: what a join token gives the worker that enrolls with it, and what
//! placement matches sandboxes against (a team's pools, a request's constraints in
//! `sandboxes::constraints`). Both are stored as text: the pool as its name, the
//! labels as a JSON object.

use std::collections::BTreeMap;

/// A worker's labels, key to value.
pub type Labels = BTreeMap<String, String>;

/// The pool of a worker whose join token named none.
pub const DEFAULT_POOL: &str = "default";

/// The most labels one worker carries.
pub const MAX_LABELS: usize = 32;

const MAX_NAME: usize = 63;

/// A pool name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn validate_pool(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pool {name:?} is not a valid pool name (lowercase letters, digits and '-', \
             starting with a letter or digit, at most {MAX_NAME} characters)"
        ))
    }
}

/// A label key: 1-63 of `[A-Za-z0-9._/-]`.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= MAX_NAME
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label key {key:?} is not valid (1-{MAX_NAME} of letters, digits, '.', '_', '/', '-')"
        ))
    }
}

/// The value of label `key`: at most 63 of `[A-Za-z0-9._-]`.
pub fn validate_label_value(key: &str, value: &str) -> Result<(), String> {
    let ok = value.len() <= MAX_NAME
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {key:?} has an invalid value {value:?} (at most {MAX_NAME} of letters, digits, '.', '_', '-')"
        ))
    }
}

/// Every key and value of `labels`, and their number.
pub fn validate_labels(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels are more than the {MAX_LABELS} a worker may carry",
            labels.len()
        ));
    }
    for (key, value) in labels {
        validate_label_key(key)?;
        validate_label_value(key, value)?;
    }
    Ok(())
}

/// `labels` as the store keeps them.
pub fn labels_to_json(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// Labels as the store keeps them; anything unreadable counts as none.
pub fn labels_from_json(json: &str) -> Labels {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_lowercase_dns_labels() {
        for ok in ["default", "eu", "eu-west-1", "0pool", &"a".repeat(63)] {
            validate_pool(ok).unwrap();
        }
        for bad in ["", "-eu", "EU", "eu_west", "eu west", "é", &"a".repeat(64)] {
            let err = validate_pool(bad).unwrap_err();
            assert!(err.contains("pool"), "{err}");
        }
    }

    #[test]
    fn label_keys_and_values_are_checked() {
        for ok in ["region", "disk.type", "berth.dev/gpu", "A_b-9"] {
            validate_label_key(ok).unwrap();
        }
        for bad in ["", "has space", "k=v", "k!", &"k".repeat(64)] {
            assert!(validate_label_key(bad).is_err(), "{bad:?}");
        }
        for ok in ["", "eu", "ssd.nvme_2-x", &"v".repeat(63)] {
            validate_label_value("k", ok).unwrap();
        }
        for bad in ["a/b", "a b", "a=b", &"v".repeat(64)] {
            let err = validate_label_value("k", bad).unwrap_err();
            assert!(err.contains("\"k\""), "{err}");
        }
    }

    #[test]
    fn labels_are_counted_and_each_named_when_bad() {
        let many: Labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate_labels(&many).unwrap_err().contains("33 labels"));
        let bad: Labels = [
            ("region".into(), "eu".into()),
            ("disk".into(), "s s d".into()),
        ]
        .into_iter()
        .collect();
        let err = validate_labels(&bad).unwrap_err();
        assert!(err.contains("disk") && err.contains("s s d"), "{err}");
    }

    #[test]
    fn labels_round_trip_through_their_stored_form() {
        let labels: Labels = [("region".into(), "eu".into())].into_iter().collect();
        assert_eq!(labels_to_json(&labels), r#"{"region":"eu"}"#);
        assert_eq!(labels_from_json(&labels_to_json(&labels)), labels);
        assert!(labels_from_json("not json").is_empty());
    }
}
