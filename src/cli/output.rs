//! Printing payment rows as an aligned table, a JSON array, or CSV.

use std::io::Write;

use clap::ValueEnum;

/// Appends one formatted line to a `String` (writing to a `String` cannot fail).
#[macro_export]
#[doc(hidden)]
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Prints `text` on stdout. A reader that went away (`| head`) is not an error.
pub fn emit(text: &str) -> Result<(), std::process::ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => {
            eprintln!("payrecon: cannot write the output: {e}");
            Err(std::process::ExitCode::FAILURE)
        }
    }
}

use crate::ledger::PaymentRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

const COLUMNS: [&str; 15] = [
    "id",
    "account",
    "provider",
    "kind",
    "out_trade_no",
    "provider_ref",
    "pay_type",
    "amount",
    "currency",
    "state",
    "provider_code",
    "attempts",
    "next_check_at",
    "created_at",
    "updated_at",
];

fn cells(p: &PaymentRow) -> [String; 15] {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    [
        p.id.to_string(),
        p.account.clone(),
        p.provider.clone(),
        p.kind.clone(),
        p.out_trade_no.clone(),
        opt(&p.provider_ref),
        opt(&p.pay_type),
        p.amount.to_string(),
        p.currency.clone(),
        p.state.clone(),
        opt(&p.provider_code),
        p.attempts.to_string(),
        opt(&p.next_check_at),
        p.created_at.clone(),
        p.updated_at.clone(),
    ]
}

/// Writes rows one at a time, so a large listing does not need memory for all of them.
/// The table is the exception: it needs every row to size its columns, so it is meant for
/// the screen (use csv or json for bulk exports).
#[derive(Debug)]
pub struct RowPrinter<W: Write> {
    format: Format,
    out: W,
    rows: usize,
    table: Vec<[String; 15]>,
}

impl<W: Write> RowPrinter<W> {
    pub fn new(format: Format, mut out: W) -> std::io::Result<Self> {
        match format {
            Format::Json => write!(out, "[")?,
            Format::Csv => writeln!(out, "{}", COLUMNS.join(","))?,
            Format::Table => {}
        }
        Ok(Self {
            format,
            out,
            rows: 0,
            table: Vec::new(),
        })
    }

    pub fn row(&mut self, p: PaymentRow) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                let sep = if self.rows == 0 { "\n" } else { ",\n" };
                write!(self.out, "{sep}{}", serde_json::to_string(&p)?)?;
            }
            Format::Csv => {
                let line: Vec<String> = cells(&p).iter().map(|c| csv_escape(c)).collect();
                writeln!(self.out, "{}", line.join(","))?;
            }
            Format::Table => self.table.push(cells(&p)),
        }
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<usize> {
        match self.format {
            Format::Json => writeln!(self.out, "{}]", if self.rows == 0 { "" } else { "\n" })?,
            Format::Csv => {}
            Format::Table => {
                // The table leaves out the least useful columns to fit a terminal.
                const SHOWN: [usize; 10] = [0, 1, 3, 4, 6, 7, 8, 9, 10, 12];
                let mut widths: Vec<usize> = SHOWN.iter().map(|&i| COLUMNS[i].len()).collect();
                for r in &self.table {
                    for (w, &i) in widths.iter_mut().zip(&SHOWN) {
                        *w = (*w).max(r[i].chars().count());
                    }
                }
                let line = |cells: Vec<&str>| {
                    cells
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_string()
                };
                writeln!(
                    self.out,
                    "{}",
                    line(SHOWN.iter().map(|&i| COLUMNS[i]).collect())
                )?;
                for r in &self.table {
                    writeln!(
                        self.out,
                        "{}",
                        line(SHOWN.iter().map(|&i| r[i].as_str()).collect())
                    )?;
                }
                writeln!(self.out, "({} payment(s))", self.rows)?;
            }
        }
        self.out.flush()?;
        Ok(self.rows)
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
