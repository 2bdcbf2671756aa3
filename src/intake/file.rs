//! Import files: `.jsonl` (one JSON object per line) or `.csv` (a header row with the same
//! column names). The whole file is validated before anything is written.

use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::batch::BatchCheck;
use super::record::{RecordFields, RowError};
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
) -> std::io::Result<()> {
    for chunk in reader.split(b'\n').enumerate() {
        let (i, chunk) = chunk;
        let line = i + 1;
        let bytes = chunk?;
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
    Ok(())
}

fn csv_records(
    reader: impl std::io::Read,
    errors: &mut Vec<RowError>,
    sink: &mut dyn FnMut(usize, RecordFields, &mut Vec<RowError>),
) -> std::io::Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers: Vec<String> = match rdr.byte_headers() {
        Ok(h) => h
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect(),
        Err(e) => {
            return io_or(e, |e| {
                errors.push(file_error(1, format!("cannot read the header row: {e}")))
            });
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
                io_or(e, |e| {
                    errors.push(file_error(line, format!("malformed CSV: {e}")))
                })?;
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
    Ok(())
}

/// A csv error that is really the file failing to read becomes an I/O error (the file is
/// unreadable, not malformed); any other is handed to `report`.
fn io_or(e: csv::Error, report: impl FnOnce(csv::Error)) -> std::io::Result<()> {
    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => return Err(io),
            _ => unreachable!("checked above"),
        }
    }
    report(e);
    Ok(())
}

/// Why an import file was not accepted.
#[derive(Debug)]
pub enum ImportError {
    /// The file could not be opened or read (`EX_NOINPUT`): nothing in it was judged.
    Unreadable(std::io::Error),
    /// Every problem found in its records (`EX_DATAERR`).
    Invalid(Vec<RowError>),
}

/// Reads and validates a whole import file. `Err` carries every problem found; nothing is
/// returned (and so nothing is written) unless the whole file is good.
pub fn read_file(
    path: &Path,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<(usize, NewPayment)>, ImportError> {
    let format = FileFormat::from_path(path).ok_or_else(|| {
        ImportError::Invalid(vec![file_error(
            0,
            format!(
                "{}: unknown file type (expected .jsonl or .csv)",
                path.display()
            ),
        )])
    })?;
    let file = std::fs::File::open(path).map_err(ImportError::Unreadable)?;
    let reader = std::io::BufReader::new(file);
    let mut errors = Vec::new();
    let mut payments = Vec::new();
    let mut batch = BatchCheck::new(settings, now, "line");
    // Each record is validated as it is read: only the validated payments are kept, never
    // the whole file as parsed JSON (a 100 MB file must not cost gigabytes).
    let mut accept = |line: usize, rec: RecordFields, errors: &mut Vec<RowError>| {
        match batch.check(line, &rec) {
            Ok(p) => {
                // Once the file is known to be bad, keep only what finds more problems.
                if errors.is_empty() {
                    payments.push((line, p));
                } else if !payments.is_empty() {
                    payments = Vec::new();
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
    .map_err(ImportError::Unreadable)?;
    if errors.is_empty() && payments.is_empty() {
        errors.push(file_error(0, format!("{}: no records", path.display())));
    }
    if errors.is_empty() {
        Ok(payments)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ImportError::Invalid(errors))
    }
}
