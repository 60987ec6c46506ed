//! Reading Prometheus text exposition.

/// Sum of the values of every series named `name` whose labels contain all
/// of `labels` (`key="value"`). `None` when no such series exists.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = split_series(line) else {
            continue;
        };
        let (series_name, series_labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        if !labels
            .iter()
            .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        let v: f64 = value.parse().unwrap_or(f64::NAN);
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// Splits `name{labels} value [timestamp]` into series and value.
fn split_series(line: &str) -> Option<(&str, &str)> {
    let end_of_series = match line.find('{') {
        Some(open) => open + line[open..].find('}')? + 1,
        None => line.find(char::is_whitespace)?,
    };
    let series = &line[..end_of_series];
    let value = line[end_of_series..].split_whitespace().next()?;
    Some((series, value))
}

#[test]
fn parses_series() {
    let text = "# HELP x y\nwsgate_a{type=\"ping\"} 3\nwsgate_a{type=\"pong\"} 4\nwsgate_b 1.5\n";
    assert_eq!(metric_sum(text, "wsgate_a", &[("type", "ping")]), Some(3.0));
    assert_eq!(metric_sum(text, "wsgate_a", &[]), Some(7.0));
    assert_eq!(metric_sum(text, "wsgate_b", &[]), Some(1.5));
    assert_eq!(metric_sum(text, "wsgate_c", &[]), None);
}
