//! Reads a NAB folder: the 58 series, the labelled windows as row ranges, and the cost profiles.
//!
//! Layout (NAB v1.1): `data/<category>/<file>.csv` with `timestamp,value`,
//! `labels/combined_windows.json` and `config/profiles.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What can go wrong while reading the corpus; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file's content does not have the NAB layout.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One cost profile: the weight of an early detection, of a miss and of a false alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name as NAB spells it (`standard`, `reward_low_FP_rate`, `reward_low_FN_rate`).
    pub name: String,
    /// Weight of a detection at a window's first row.
    pub tp_weight: f64,
    /// Cost of a window with no detection.
    pub fn_weight: f64,
    /// Cost of a detection far from any window.
    pub fp_weight: f64,
}

impl Profile {
    /// The three profiles of NAB v1.1, in the order NAB reports them.
    pub fn standard_three() -> Vec<Profile> {
        let p = |name: &str, tp, fn_, fp| Profile {
            name: name.into(),
            tp_weight: tp,
            fn_weight: fn_,
            fp_weight: fp,
        };
        vec![
            p("standard", 1.0, 1.0, 0.11),
            p("reward_low_FP_rate", 1.0, 1.0, 0.22),
            p("reward_low_FN_rate", 1.0, 2.0, 0.11),
        ]
    }
}

/// One series of the corpus with its labelled windows.
#[derive(Debug, Clone)]
pub struct CorpusFile {
    /// Category folder, e.g. `realKnownCause`.
    pub category: String,
    /// File name without `.csv`, e.g. `nyc_taxi`.
    pub name: String,
    /// Timestamps exactly as written in the file.
    pub timestamps: Vec<String>,
    /// Values.
    pub values: Vec<f64>,
    /// Labelled windows as inclusive row ranges `[first, last]`, in time order.
    pub windows: Vec<[usize; 2]>,
}

impl CorpusFile {
    /// `category/name.csv`, the key of the label file.
    pub fn relative_path(&self) -> String {
        format!("{}/{}.csv", self.category, self.name)
    }

    /// Rows that take no part in scoring: `min(floor(0.15 N), 750)`.
    pub fn probationary_rows(&self) -> usize {
        probationary_rows(self.values.len())
    }

    /// Whether row `i` lies in a labelled window.
    pub fn label_of(&self, i: usize) -> bool {
        self.windows.iter().any(|w| w[0] <= i && i <= w[1])
    }
}

/// NAB's probationary length for a file of `rows` rows.
pub fn probationary_rows(rows: usize) -> usize {
    ((rows as f64 * 0.15).floor() as usize).min(750)
}

/// The whole corpus, files sorted by relative path.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The root folder.
    pub root: PathBuf,
    /// The files.
    pub files: Vec<CorpusFile>,
    /// The cost profiles from `config/profiles.json`.
    pub profiles: Vec<Profile>,
}

impl Corpus {
    /// Reads `root` (a NAB checkout: `data/`, `labels/`, `config/`).
    pub fn load(root: &Path) -> Result<Self, CorpusError> {
        let labels_path = root.join("labels/combined_windows.json");
        let labels: BTreeMap<String, Vec<[String; 2]>> = serde_json::from_str(&read(&labels_path)?)
            .map_err(|e| CorpusError::Format {
                path: labels_path.display().to_string(),
                reason: e.to_string(),
            })?;
        let profiles = read_profiles(&root.join("config/profiles.json"))?;
        let mut files = Vec::with_capacity(labels.len());
        for (relative, windows) in &labels {
            let path = root.join("data").join(relative);
            let (category, file_name) =
                relative
                    .split_once('/')
                    .ok_or_else(|| CorpusError::Format {
                        path: labels_path.display().to_string(),
                        reason: format!("label key {relative:?} is not category/file.csv"),
                    })?;
            let (timestamps, values) = read_series(&path)?;
            let windows = windows
                .iter()
                .map(|[start, end]| {
                    let find = |stamp: &str| {
                        let stamp = stamp.strip_suffix(".000000").unwrap_or(stamp);
                        timestamps.iter().position(|t| t == stamp).ok_or_else(|| {
                            CorpusError::Format {
                                path: path.display().to_string(),
                                reason: format!("labelled window bound {stamp:?} is not a row"),
                            }
                        })
                    };
                    Ok([find(start)?, find(end)?])
                })
                .collect::<Result<Vec<_>, CorpusError>>()?;
            files.push(CorpusFile {
                category: category.to_string(),
                name: file_name.trim_end_matches(".csv").to_string(),
                timestamps,
                values,
                windows,
            });
        }
        if files.is_empty() {
            return Err(CorpusError::Format {
                path: labels_path.display().to_string(),
                reason: "no files are labelled".into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            files,
            profiles,
        })
    }

    /// Number of labelled windows in the corpus.
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }
}

fn read(path: &Path) -> Result<String, CorpusError> {
    std::fs::read_to_string(path).map_err(|source| CorpusError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_profiles(path: &Path) -> Result<Vec<Profile>, CorpusError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "CostMatrix")]
        cost: Cost,
    }
    #[derive(serde::Deserialize)]
    struct Cost {
        #[serde(rename = "tpWeight")]
        tp: f64,
        #[serde(rename = "fnWeight")]
        fn_: f64,
        #[serde(rename = "fpWeight")]
        fp: f64,
    }
    let entries: BTreeMap<String, Entry> =
        serde_json::from_str(&read(path)?).map_err(|e| CorpusError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    // Report in NAB's usual order; any extra profile follows by name.
    let mut profiles: Vec<Profile> = Vec::new();
    for known in Profile::standard_three() {
        if let Some(entry) = entries.get(&known.name) {
            profiles.push(Profile {
                name: known.name,
                tp_weight: entry.cost.tp,
                fn_weight: entry.cost.fn_,
                fp_weight: entry.cost.fp,
            });
        }
    }
    for (name, entry) in &entries {
        if !profiles.iter().any(|p| &p.name == name) {
            profiles.push(Profile {
                name: name.clone(),
                tp_weight: entry.cost.tp,
                fn_weight: entry.cost.fn_,
                fp_weight: entry.cost.fp,
            });
        }
    }
    Ok(profiles)
}

/// Reads a two-column CSV (`timestamp,<number>`), returning the timestamps as written.
pub fn read_series(path: &Path) -> Result<(Vec<String>, Vec<f64>), CorpusError> {
    let text = read(path)?;
    let mut timestamps = Vec::new();
    let mut values = Vec::new();
    for (line_number, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(',');
        let (Some(stamp), Some(value)) = (fields.next(), fields.next()) else {
            return Err(CorpusError::Format {
                path: path.display().to_string(),
                reason: format!("line {}: expected `timestamp,value`", line_number + 1),
            });
        };
        let value: f64 = value.trim().parse().map_err(|_| CorpusError::Format {
            path: path.display().to_string(),
            reason: format!("line {}: {value:?} is not a number", line_number + 1),
        })?;
        timestamps.push(stamp.trim().to_string());
        values.push(value);
    }
    Ok((timestamps, values))
}
