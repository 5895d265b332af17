//! Reading a label column: which values mean "anomaly", decided once from
//! every value seen, and said out loud.
//!
//! - Every value a number: 0 and 1 are flags (1 = anomaly); other numbers
//!   could be flags or kind codes, so they are an error.
//! - Every value `true` / `false` (any case): `true` = anomaly.
//! - Every value a word: an empty cell or `normal` is normal; any other word
//!   is an anomaly of that kind.
//! - Numbers or booleans mixed with words: an error.
//!
//! An error lists the values seen; `--normal-values` then says which are
//! normal (every other value is an anomaly, of the kind it names).

use std::collections::BTreeMap;

/// How label values map to anomalies.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRule {
    /// What the rule is, for the terminal and the report.
    pub description: String,
    /// Each value seen, `None` if normal, else the anomaly's kind.
    kinds: BTreeMap<String, Option<String>>,
}

/// Interns the label of each row; the rule is chosen once all are seen.
#[derive(Debug, Default)]
pub struct LabelValues {
    ids: BTreeMap<String, u32>,
    names: Vec<String>,
    counts: Vec<usize>,
}

impl LabelValues {
    /// The id of `value` (counted).
    pub fn intern(&mut self, value: &str) -> u32 {
        let id = match self.ids.get(value) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.ids.insert(value.to_string(), id);
                self.names.push(value.to_string());
                self.counts.push(0);
                id
            }
        };
        self.counts[id as usize] += 1;
        id
    }

    /// The values seen with their counts, in value order.
    fn seen(&self) -> String {
        let listed: Vec<String> = self
            .ids
            .iter()
            .map(|(value, &id)| {
                let shown = if value.is_empty() { "(empty)" } else { value };
                format!("{shown:?} x{}", self.counts[id as usize])
            })
            .collect();
        listed.join(", ")
    }

    /// Chooses the rule (module docs); `normal` forces the normal values.
    pub fn rule(&self, column: &str, normal: Option<&[String]>) -> Result<LabelRule, String> {
        let values: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let non_empty: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
        let kinds = |is_normal: &dyn Fn(&str) -> bool| -> BTreeMap<String, Option<String>> {
            values
                .iter()
                .map(|&v| (v.to_string(), (!is_normal(v)).then(|| v.to_string())))
                .collect()
        };
        if let Some(normal) = normal {
            let described = format!(
                "column {column:?}: {} normal (as --normal-values says), any other value an anomaly of that kind; seen: {}",
                normal
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.seen()
            );
            return Ok(LabelRule {
                description: described,
                kinds: kinds(&|v| normal.iter().any(|n| n == v)),
            });
        }
        let number = |v: &str| v.parse::<f64>().ok();
        let boolean = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "true" | "false");
        let ambiguous = |why: &str| {
            Err(format!(
                "label column {column:?}: {why}; the values seen are {}. Say which values are normal with --normal-values (every other value is then an anomaly)",
                self.seen()
            ))
        };
        if non_empty.is_empty() {
            return Ok(LabelRule {
                description: format!("column {column:?}: every cell empty, so every row is normal"),
                kinds: kinds(&|_| true),
            });
        }
        if non_empty.iter().all(|v| number(v).is_some()) {
            if non_empty
                .iter()
                .all(|v| matches!(number(v), Some(n) if n == 0.0 || n == 1.0))
            {
                return Ok(LabelRule {
                    description: format!(
                        "column {column:?} as flags: 1 = anomaly, 0 (or empty) = normal; seen: {}",
                        self.seen()
                    ),
                    kinds: kinds(&|v| number(v) != Some(1.0)),
                });
            }
            return ambiguous("numbers other than 0 and 1 could be flags or kind codes");
        }
        if non_empty.iter().all(|v| boolean(v)) {
            return Ok(LabelRule {
                description: format!(
                    "column {column:?} as booleans: true = anomaly; seen: {}",
                    self.seen()
                ),
                kinds: kinds(&|v| !v.eq_ignore_ascii_case("true")),
            });
        }
        if non_empty.iter().any(|v| number(v).is_some() || boolean(v)) {
            return ambiguous("numbers or booleans mixed with words");
        }
        Ok(LabelRule {
            description: format!(
                "column {column:?} as anomaly kinds: empty or \"normal\" = normal, any other word = an anomaly of that kind; seen: {}",
                self.seen()
            ),
            kinds: kinds(&|v| v.is_empty() || v.eq_ignore_ascii_case("normal")),
        })
    }

    /// The kind of each id under `rule` (`None` = normal), indexed by id.
    pub fn kinds_by_id(&self, rule: &LabelRule) -> Vec<Option<String>> {
        self.names
            .iter()
            .map(|name| rule.kinds.get(name).cloned().flatten())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(cells: &[&str]) -> LabelValues {
        let mut values = LabelValues::default();
        for cell in cells {
            values.intern(cell);
        }
        values
    }

    fn anomalies(cells: &[&str], normal: Option<&[String]>) -> Result<Vec<bool>, String> {
        let values = values(cells);
        let rule = values.rule("label", normal)?;
        let kinds = values.kinds_by_id(&rule);
        let mut again = LabelValues::default();
        Ok(cells
            .iter()
            .map(|c| {
                let _ = again.intern(c);
                kinds[values.ids[*c] as usize].is_some()
            })
            .collect())
    }

    #[test]
    fn zero_one_flags_are_not_kinds() {
        // The bug this replaces: "0" counted as an anomaly kind.
        assert_eq!(
            anomalies(&["0", "0", "1", ""], None).unwrap(),
            [false, false, true, false]
        );
        let rule = values(&["0", "1"]).rule("label", None).unwrap();
        assert!(
            rule.description.contains("1 = anomaly"),
            "{}",
            rule.description
        );
    }

    #[test]
    fn booleans_and_kinds() {
        assert_eq!(
            anomalies(&["False", "TRUE", "false"], None).unwrap(),
            [false, true, false]
        );
        assert_eq!(
            anomalies(&["", "spike", "normal", "drift"], None).unwrap(),
            [false, true, false, true]
        );
    }

    #[test]
    fn values_that_could_mean_either_are_an_error_listing_them() {
        let error = anomalies(&["0", "1", "2"], None).unwrap_err();
        assert!(
            error.contains("\"2\" x1") && error.contains("--normal-values"),
            "{error}"
        );
        let error = anomalies(&["0", "spike"], None).unwrap_err();
        assert!(error.contains("mixed"), "{error}");
        let normal = vec!["0".to_string()];
        assert_eq!(
            anomalies(&["0", "1", "2"], Some(&normal)).unwrap(),
            [false, true, true]
        );
    }
}
