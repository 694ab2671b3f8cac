//! Just enough of the Prometheus text format to read one histogram series out of the
//! control plane's `/metrics`, and to tell what happened to it between two scrapes.

/// One histogram series: cumulative bucket counts by upper bound, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (le, cumulative count), in ascending `le`; `+Inf` is `f64::INFINITY`.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The series `name` whose labels include `label="value"`; empty when absent.
    pub fn parse(text: &str, name: &str, label: (&str, &str)) -> Self {
        let wanted = format!("{}=\"{}\"", label.0, label.1);
        let mut histogram = Self::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (metric, labels) = match series.split_once('{') {
                Some((metric, labels)) => (metric, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            if !labels.split(',').any(|l| l == wanted) {
                continue;
            }
            match metric.strip_prefix(name) {
                Some("_bucket") => {
                    let le = labels
                        .split(',')
                        .find_map(|l| l.strip_prefix("le=\""))
                        .map(|l| l.trim_end_matches('"'));
                    let bound = match le {
                        Some("+Inf") => f64::INFINITY,
                        Some(bound) => match bound.parse() {
                            Ok(bound) => bound,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    histogram.buckets.push((bound, value));
                }
                Some("_sum") => histogram.sum = value,
                Some("_count") => histogram.count = value,
                _ => {}
            }
        }
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        histogram
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map(|(_, c)| *c)
                .unwrap_or(0.0)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, count)| (*le, count - before(*le)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): the quantile is at
    /// most this.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(le, _)| *le)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP berth_mesh_request_duration_seconds Mesh calls.
# TYPE berth_mesh_request_duration_seconds histogram
berth_mesh_request_duration_seconds_sum{method="Heartbeat"} 0.5
berth_mesh_request_duration_seconds_count{method="Heartbeat"} 100
berth_mesh_request_duration_seconds_bucket{le="0.0005",method="Heartbeat"} 60
berth_mesh_request_duration_seconds_bucket{le="0.001",method="Heartbeat"} 98
berth_mesh_request_duration_seconds_bucket{le="+Inf",method="Heartbeat"} 100
berth_mesh_request_duration_seconds_sum{method="Enroll"} 9
berth_mesh_request_duration_seconds_count{method="Enroll"} 3
"#;

    #[test]
    fn one_series_is_read_by_label() {
        let h = Histogram::parse(
            TEXT,
            "berth_mesh_request_duration_seconds",
            ("method", "Heartbeat"),
        );
        assert_eq!(h.count, 100.0);
        assert_eq!(h.sum, 0.5);
        assert_eq!(h.buckets.len(), 3);
        assert_eq!(h.mean(), Some(0.005));
        assert_eq!(h.quantile_bound(0.5), Some(0.0005));
        assert_eq!(h.quantile_bound(0.9), Some(0.001));
        assert_eq!(h.quantile_bound(0.99), Some(f64::INFINITY));
        let missing = Histogram::parse(
            TEXT,
            "berth_mesh_request_duration_seconds",
            ("method", "Renew"),
        );
        assert_eq!(missing, Histogram::default());
        assert_eq!(missing.mean(), None);
    }

    #[test]
    fn differences_between_scrapes() {
        let earlier = Histogram::parse(
            TEXT,
            "berth_mesh_request_duration_seconds",
            ("method", "Heartbeat"),
        );
        let later_text = TEXT
            .replace("} 0.5", "} 0.7")
            .replace("} 100", "} 150")
            .replace("} 98", "} 148");
        let later = Histogram::parse(
            &later_text,
            "berth_mesh_request_duration_seconds",
            ("method", "Heartbeat"),
        );
        let window = later.since(&earlier);
        assert_eq!(window.count, 50.0);
        assert!((window.sum - 0.2).abs() < 1e-9);
        assert_eq!(window.quantile_bound(0.5), Some(0.001));
    }
}
