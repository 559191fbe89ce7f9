//! Reading a Prometheus exposition: one way for every test.

/// A sample's value in a scrape: the first line of `name` carrying every label.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The daemon's `/metrics` (empty when it does not answer).
pub async fn scrape(d: &super::daemon::Endpoint) -> String {
    d.get("/metrics").await.map(|(_, b)| b).unwrap_or_default()
}
