//! Import files: `.jsonl` (one JSON object per line) or `.csv` (a header row with the same
//! column names). The whole file is validated before anything is written.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::record::{RecordFields, RowError, validate_record};
use crate::config::Settings;
use crate::ledger::NewPayment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Jsonl,
    Csv,
}

impl FileFormat {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
            "csv" => Some(FileFormat::Csv),
            _ => None,
        }
    }
}

fn file_error(line: usize, reason: impl Into<String>) -> RowError {
    RowError {
        line,
        field: "record".into(),
        reason: reason.into(),
    }
}

/// Reads records with their line numbers and hands each to `sink` as soon as it is read (so
/// a big file is never held as parsed JSON); malformed lines become errors, not panics.
fn jsonl_records(
    reader: impl BufRead,
    errors: &mut Vec<RowError>,
    sink: &mut dyn FnMut(usize, RecordFields, &mut Vec<RowError>),
) {
    for (i, chunk) in reader.split(b'\n').enumerate() {
        let line = i + 1;
        let bytes = match chunk {
            Ok(b) => b,
            Err(e) => {
                errors.push(file_error(line, format!("cannot read: {e}")));
                break;
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            errors.push(file_error(line, "not valid UTF-8"));
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => sink(line, map.into_iter().collect(), errors),
            Ok(_) => errors.push(file_error(line, "must be a JSON object")),
            Err(e) => errors.push(file_error(line, format!("not valid JSON: {e}"))),
        }
    }
}

fn csv_records(
    reader: impl std::io::Read,
    errors: &mut Vec<RowError>,
    sink: &mut dyn FnMut(usize, RecordFields, &mut Vec<RowError>),
) {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers: Vec<String> = match rdr.byte_headers() {
        Ok(h) => h
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect(),
        Err(e) => {
            errors.push(file_error(1, format!("cannot read the header row: {e}")));
            return;
        }
    };
    let mut record = csv::ByteRecord::new();
    loop {
        let line = rdr.position().line() as usize;
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line() as usize);
                errors.push(file_error(line, format!("malformed CSV: {e}")));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line() as usize);
        let mut fields = RecordFields::new();
        let mut bad_utf8 = false;
        for (name, cell) in headers.iter().zip(record.iter()) {
            match std::str::from_utf8(cell) {
                Ok(s) => {
                    fields.insert(name.clone(), Value::String(s.to_string()));
                }
                Err(_) => {
                    errors.push(RowError {
                        line,
                        field: name.clone(),
                        reason: "not valid UTF-8".into(),
                    });
                    bad_utf8 = true;
                }
            }
        }
        if !bad_utf8 {
            sink(line, fields, errors);
        }
    }
}

/// Reads and validates a whole import file. `Err` carries every problem found; nothing is
/// returned (and so nothing is written) unless the whole file is good.
pub fn read_file(
    path: &Path,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<(usize, NewPayment)>, Vec<RowError>> {
    let format = FileFormat::from_path(path).ok_or_else(|| {
        vec![file_error(
            0,
            format!(
                "{}: unknown file type (expected .jsonl or .csv)",
                path.display()
            ),
        )]
    })?;
    let file = std::fs::File::open(path).map_err(|e| {
        vec![file_error(
            0,
            format!("cannot open {}: {e}", path.display()),
        )]
    })?;
    let reader = std::io::BufReader::new(file);
    let mut errors = Vec::new();
    let mut payments = Vec::new();
    let mut first_line: HashMap<(String, &'static str, String), usize> = HashMap::new();
    // Each record is validated as it is read: only the validated payments are kept, never
    // the whole file as parsed JSON (a 100 MB file must not cost gigabytes).
    let mut accept = |line: usize, rec: RecordFields, errors: &mut Vec<RowError>| {
        match validate_record(&rec, line, settings, now) {
            Ok(p) => {
                let key = (
                    p.account.as_str().to_string(),
                    p.kind.as_str(),
                    p.out_trade_no.as_str().to_string(),
                );
                if let Some(first) = first_line.get(&key) {
                    errors.push(RowError {
                        line,
                        field: "out_trade_no".into(),
                        reason: format!(
                            "{:?} appears twice for account {} (first on line {first})",
                            key.2, key.0
                        ),
                    });
                } else {
                    first_line.insert(key, line);
                    // Once the file is known to be bad, keep only what finds more problems.
                    if errors.is_empty() {
                        payments.push((line, p));
                    } else if !payments.is_empty() {
                        payments = Vec::new();
                    }
                }
            }
            Err(e) => {
                errors.extend(e);
                payments = Vec::new();
            }
        }
    };
    match format {
        FileFormat::Jsonl => jsonl_records(reader, &mut errors, &mut accept),
        FileFormat::Csv => csv_records(reader, &mut errors, &mut accept),
    }
    if errors.is_empty() && payments.is_empty() {
        errors.push(file_error(0, format!("{}: no records", path.display())));
    }
    if errors.is_empty() {
        Ok(payments)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}
