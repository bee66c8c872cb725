//! Manifests on disk for `mandate check`: files, directories (walked recursively for `.yaml`,
//! `.yml` and `.json`) or `-` (stdin) in; every Kubernetes object they hold, as JSON with the
//! place it came from, out. Multi-document YAML and `kind: List` are unpacked. Reads files;
//! decides nothing.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One object from a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `path#document` (documents count from 1), for messages.
    pub source: String,
    pub object: Value,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{place}: not valid YAML: {source}")]
    Parse {
        place: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{place}: not a Kubernetes object: a manifest needs apiVersion, kind and metadata")]
    NotAnObject { place: String },
    #[error("{path}: no manifests found (looked for .yaml, .yml and .json files)")]
    NoneFound { path: PathBuf },
}

/// Every object in `paths`, in the order given (directory entries sorted by name).
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: path.clone(),
                    source,
                })?;
            manifests.extend(parse("-", &text)?);
            continue;
        }
        let files = files_of(path)?;
        if files.is_empty() {
            return Err(ManifestError::NoneFound { path: path.clone() });
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                path: file.clone(),
                source,
            })?;
            manifests.extend(parse(&file.display().to_string(), &text)?);
        }
    }
    Ok(manifests)
}

/// The files under `path` (itself when it is a file), sorted.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let metadata = std::fs::metadata(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let child = entry.path();
        if child.is_dir() {
            files.extend(files_of(&child)?);
        } else if child
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            files.push(child);
        }
    }
    files.sort();
    Ok(files)
}

/// The objects of one YAML (or JSON) stream; empty documents are skipped.
pub fn parse(origin: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let place = format!("{origin}#{}", index + 1);
        let value = Value::deserialize(document).map_err(|source| ManifestError::Parse {
            place: place.clone(),
            source,
        })?;
        if value.is_null() {
            continue;
        }
        let is_object = value.get("apiVersion").is_some_and(Value::is_string)
            && value.get("kind").is_some_and(Value::is_string);
        if !is_object {
            return Err(ManifestError::NotAnObject { place });
        }
        if value["kind"] == "List" {
            for (i, item) in value["items"].as_array().into_iter().flatten().enumerate() {
                manifests.push(Manifest {
                    source: format!("{place}.items[{i}]"),
                    object: item.clone(),
                });
            }
        } else {
            manifests.push(Manifest {
                source: place,
                object: value,
            });
        }
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_numbered_from_one_and_empty_ones_and_lists_handled() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n";
        let manifests = parse("f.yaml", text).unwrap_or_default();
        let sources: Vec<&str> = manifests.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(sources, ["f.yaml#1", "f.yaml#3.items[0]"]);
    }

    #[test]
    fn a_document_that_is_no_object_is_an_error_naming_its_place() {
        let error = parse("f.yaml", "apiVersion: v1\nkind: Pod\n---\njust text\n")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "f.yaml#2: not a Kubernetes object: a manifest needs apiVersion, kind and metadata"
            )
        );
    }

    #[test]
    fn invalid_yaml_is_an_error_naming_its_place() {
        let error = parse("f.yaml", "kind: [unclosed\n")
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.starts_with("f.yaml#1: not valid YAML")));
    }
}
