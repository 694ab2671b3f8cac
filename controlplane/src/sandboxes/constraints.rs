//! Where a sandbox may go besides room and provider: the pools its team may use and
//! the label constraints of its request (`region=eu`, `disk!=hdd`), and, when they
//! leave no worker, the explanation of what excluded what.

use std::collections::BTreeMap;
use std::fmt;

use crate::fleet::labels::{self, Labels};

/// The most constraints one request carries.
pub const MAX_CONSTRAINTS: usize = 32;

/// How many worker ids an explanation lists per group before it counts the rest.
const LISTED_IDS: usize = 5;

/// One placement constraint on a worker's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `key=value`: the worker's label `key` is `value`.
    Equals { key: String, value: String },
    /// `key!=value`: the worker has no label `key`, or another value.
    NotEquals { key: String, value: String },
}

impl Constraint {
    /// `key=value` or `key!=value`, key and value as labels have them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (key, value, equals) = if let Some((key, value)) = text.split_once("!=") {
            (key, value, false)
        } else if let Some((key, value)) = text.split_once('=') {
            (key, value, true)
        } else {
            return Err(format!(
                "constraint {text:?} is not key=value or key!=value"
            ));
        };
        let bad = |reason: String| format!("constraint {text:?}: {reason}");
        labels::validate_label_key(key).map_err(bad)?;
        labels::validate_label_value(key, value).map_err(bad)?;
        let (key, value) = (key.to_owned(), value.to_owned());
        Ok(if equals {
            Self::Equals { key, value }
        } else {
            Self::NotEquals { key, value }
        })
    }

    /// Every constraint of a request.
    pub fn parse_all(texts: &[String]) -> Result<Vec<Self>, String> {
        if texts.len() > MAX_CONSTRAINTS {
            return Err(format!(
                "{} constraints are more than the {MAX_CONSTRAINTS} a request may carry",
                texts.len()
            ));
        }
        texts.iter().map(|text| Self::parse(text)).collect()
    }

    pub fn key(&self) -> &str {
        match self {
            Self::Equals { key, .. } | Self::NotEquals { key, .. } => key,
        }
    }

    /// Whether a worker with `labels` meets it.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::Equals { key, value } => labels.get(key) == Some(value),
            Self::NotEquals { key, value } => labels.get(key) != Some(value),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equals { key, value } => write!(f, "{key}={value}"),
            Self::NotEquals { key, value } => write!(f, "{key}!={value}"),
        }
    }
}

/// What placement needs to know of a worker to apply pools and constraints.
#[derive(Debug, Clone, Copy)]
pub struct Placeable<'a> {
    pub id: &'a str,
    pub pool: &'a str,
    pub labels: &'a Labels,
}

/// Whether a worker in `pool` with `labels` may take a sandbox restricted to `pools`
/// (empty: any) under `constraints`.
pub fn eligible(pools: &[String], constraints: &[Constraint], pool: &str, labels: &Labels) -> bool {
    (pools.is_empty() || pools.iter().any(|p| p == pool))
        && constraints.iter().all(|c| c.matches(labels))
}

/// Why none of `workers` is eligible, or `None` when one is: the team's pools against
/// every worker, then each constraint against the workers in those pools, each naming
/// the workers it excluded, grouped by what they have. Worker ids are listed in the
/// order given.
pub fn exclusions(
    pools: &[String],
    constraints: &[Constraint],
    workers: &[Placeable<'_>],
) -> Option<String> {
    if workers
        .iter()
        .any(|w| eligible(pools, constraints, w.pool, w.labels))
    {
        return None;
    }
    let mut reasons = Vec::new();
    let in_pools: Vec<&Placeable<'_>> = if pools.is_empty() {
        workers.iter().collect()
    } else {
        let (inside, outside): (Vec<&Placeable<'_>>, Vec<&Placeable<'_>>) = workers
            .iter()
            .partition(|w| pools.iter().any(|p| p == w.pool));
        if !outside.is_empty() {
            let groups = group(
                outside
                    .iter()
                    .map(|w| (format!("in pool {}", w.pool), w.id)),
            );
            reasons.push(format!(
                "team pools [{}] excluded {} ({})",
                pools.join(", "),
                workers_count(outside.len()),
                describe(&groups, GroupOrder::IdsFirst)
            ));
        }
        inside
    };
    for constraint in constraints {
        let excluded: Vec<&&Placeable<'_>> = in_pools
            .iter()
            .filter(|w| !constraint.matches(w.labels))
            .collect();
        if excluded.is_empty() {
            continue;
        }
        let key = constraint.key();
        let groups = group(excluded.iter().map(|w| {
            let has = match w.labels.get(key) {
                Some(value) => format!("{key}={value}"),
                None => format!("no {key}"),
            };
            (has, w.id)
        }));
        reasons.push(format!(
            "constraint {constraint} excluded {} ({})",
            workers_count(excluded.len()),
            describe(&groups, GroupOrder::WhatFirst)
        ));
    }
    if reasons.is_empty() {
        // nothing online to exclude
        return None;
    }
    Some(format!("no eligible worker: {}", reasons.join("; ")))
}

fn workers_count(count: usize) -> String {
    if count == 1 {
        "1 worker".to_owned()
    } else {
        format!("{count} workers")
    }
}

/// Worker ids by what they have, in order of first appearance.
fn group<'a>(items: impl Iterator<Item = (String, &'a str)>) -> Vec<(String, Vec<&'a str>)> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (what, id) in items {
        match index.get(&what) {
            Some(&at) => groups[at].1.push(id),
            None => {
                index.insert(what.clone(), groups.len());
                groups.push((what, vec![id]));
            }
        }
    }
    groups
}

enum GroupOrder {
    /// `w1, w2 in pool us`
    IdsFirst,
    /// `region=eu on w1, w2`
    WhatFirst,
}

fn describe(groups: &[(String, Vec<&str>)], order: GroupOrder) -> String {
    let parts: Vec<String> = groups
        .iter()
        .map(|(what, ids)| {
            let mut listed = ids
                .iter()
                .take(LISTED_IDS)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if ids.len() > LISTED_IDS {
                listed.push_str(&format!(" and {} more", ids.len() - LISTED_IDS));
            }
            match order {
                GroupOrder::IdsFirst => format!("{listed} {what}"),
                GroupOrder::WhatFirst => format!("{what} on {listed}"),
            }
        })
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(text: &str) -> Constraint {
        Constraint::parse(text).unwrap()
    }

    #[test]
    fn constraints_parse_equal_and_not_equal() {
        assert_eq!(
            parse("region=eu"),
            Constraint::Equals {
                key: "region".into(),
                value: "eu".into()
            }
        );
        assert_eq!(
            parse("disk!=hdd"),
            Constraint::NotEquals {
                key: "disk".into(),
                value: "hdd".into()
            }
        );
        assert_eq!(parse("berth.dev/gpu=").to_string(), "berth.dev/gpu=");
        for text in ["region=eu", "disk!=hdd", "a.b/c-d=x_y.z"] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn bad_constraints_are_named() {
        for bad in [
            "region",
            "=eu",
            "!=eu",
            "region==eu",
            "region=e u",
            " region=eu",
            "re gion=eu",
            "region=eu/west",
            "",
        ] {
            let err = Constraint::parse(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(Constraint::parse_all(&many).unwrap_err().contains("33"));
        let some = vec!["region=eu".to_owned(), "disk!=hdd".to_owned()];
        assert_eq!(Constraint::parse_all(&some).unwrap().len(), 2);
    }

    #[test]
    fn constraints_match_labels() {
        let eu_ssd = labels(&[("region", "eu"), ("disk", "ssd")]);
        let bare = labels(&[]);
        assert!(parse("region=eu").matches(&eu_ssd));
        assert!(!parse("region=us").matches(&eu_ssd));
        assert!(!parse("region=eu").matches(&bare));
        assert!(parse("disk!=hdd").matches(&eu_ssd));
        assert!(!parse("disk!=ssd").matches(&eu_ssd));
        // absent is not equal
        assert!(parse("disk!=hdd").matches(&bare));
    }

    #[test]
    fn eligibility_needs_the_pool_and_every_constraint() {
        let eu = labels(&[("region", "eu")]);
        let pools = vec!["eu".to_owned()];
        assert!(eligible(&[], &[], "default", &eu));
        assert!(eligible(&pools, &[], "eu", &eu));
        assert!(!eligible(&pools, &[], "us", &eu));
        assert!(eligible(&[], &[parse("region=eu")], "us", &eu));
        assert!(!eligible(
            &pools,
            &[parse("region=eu"), parse("region!=eu")],
            "eu",
            &eu
        ));
    }

    #[test]
    fn exclusions_name_what_excluded_which_workers() {
        let eu = labels(&[("region", "eu")]);
        let us = labels(&[("region", "us")]);
        let bare = labels(&[]);
        let workers = [
            Placeable {
                id: "w1",
                pool: "default",
                labels: &eu,
            },
            Placeable {
                id: "w2",
                pool: "us",
                labels: &us,
            },
            Placeable {
                id: "w3",
                pool: "eu",
                labels: &eu,
            },
            Placeable {
                id: "w4",
                pool: "eu",
                labels: &bare,
            },
        ];
        let pools = vec!["eu".to_owned()];
        assert_eq!(
            exclusions(&pools, &[parse("region=us")], &workers).unwrap(),
            "no eligible worker: team pools [eu] excluded 2 workers (w1 in pool default; \
             w2 in pool us); constraint region=us excluded 2 workers (region=eu on w3; \
             no region on w4)"
        );
        assert_eq!(
            exclusions(&[], &[parse("region=asia")], &workers).unwrap(),
            "no eligible worker: constraint region=asia excluded 4 workers (region=eu on \
             w1, w3; region=us on w2; no region on w4)"
        );
        assert_eq!(
            exclusions(&["asia".to_owned()], &[], &workers).unwrap(),
            "no eligible worker: team pools [asia] excluded 4 workers (w1 in pool default; \
             w2 in pool us; w3, w4 in pool eu)"
        );
        // a constraint that excludes nobody is not mentioned
        assert_eq!(
            exclusions(&[], &[parse("disk!=hdd"), parse("region=mars")], &workers).unwrap(),
            "no eligible worker: constraint region=mars excluded 4 workers (region=eu on \
             w1, w3; region=us on w2; no region on w4)"
        );
        // somewhere to go: nothing to explain
        assert_eq!(exclusions(&pools, &[parse("region=eu")], &workers), None);
        assert_eq!(exclusions(&[], &[], &workers), None);
        assert_eq!(exclusions(&pools, &[], &[]), None);
    }

    #[test]
    fn long_lists_are_cut_short() {
        let eu = labels(&[("region", "eu")]);
        let ids: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
        let workers: Vec<Placeable<'_>> = ids
            .iter()
            .map(|id| Placeable {
                id,
                pool: "default",
                labels: &eu,
            })
            .collect();
        assert_eq!(
            exclusions(&[], &[parse("region=us")], &workers).unwrap(),
            "no eligible worker: constraint region=us excluded 8 workers (region=eu on \
             w0, w1, w2, w3, w4 and 3 more)"
        );
    }
}
