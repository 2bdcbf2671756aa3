//! Printing payment rows as an aligned table, a JSON array, or CSV, and making text that came
//! from outside (order numbers, gateway messages and evidence) safe to print: CSV cells a
//! spreadsheet would run as a formula are defused, and terminal control characters are shown
//! escaped instead of being sent to the terminal.

use std::borrow::Cow;
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
            error_line!("payrecon: cannot write the output: {e}");
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
            Format::Csv => self.out.write_all(&csv_line(&cells(&p))?)?,
            Format::Table => {
                let mut row = cells(&p);
                // People read the table: the amount as money (7.77, beside its currency);
                // JSON and CSV keep integer minor units for programs.
                row[7] = crate::domain::format_major(p.amount, &p.currency);
                self.table.push(row.map(|c| printable(&c).into_owned()));
            }
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

/// One CSV record, quoted by the csv crate, with every cell defused.
fn csv_line(cells: &[String]) -> std::io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(cells.iter().map(|c| defuse_formula(c).into_owned()))?;
    w.into_inner().map_err(|e| e.into_error())
}

/// A cell that a spreadsheet would evaluate as a formula (it starts with `=`, `+`, `-`, `@`,
/// a tab or a carriage return) gets a leading `'`, the usual defence against CSV injection
/// (OWASP): order numbers and gateway text are chosen by others, and `=HYPERLINK(…)` in an
/// export must stay text. A plain number (`-5`) is not a formula and stays as it is.
pub fn defuse_formula(cell: &str) -> Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<i64>().is_err() {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// `text` with control characters (C0, DEL, C1 — ESC and CSI start terminal escape sequences)
/// written as visible escapes like `\u{1b}`, so text from a gateway or an import file cannot
/// move the cursor, retitle the window or hide lines when printed to a terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// The row with every text column passed through [`printable`].
pub fn printable_row(p: PaymentRow) -> PaymentRow {
    let text = |s: String| printable(&s).into_owned();
    let opt = |s: Option<String>| s.map(text);
    PaymentRow {
        account: text(p.account),
        provider: text(p.provider),
        kind: text(p.kind),
        out_trade_no: text(p.out_trade_no),
        provider_ref: opt(p.provider_ref),
        pay_type: opt(p.pay_type),
        currency: text(p.currency),
        state: text(p.state),
        provider_code: opt(p.provider_code),
        next_check_at: opt(p.next_check_at),
        created_at: text(p.created_at),
        updated_at: text(p.updated_at),
        ..p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused_and_numbers_kept() {
        for (cell, want) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1+2", "'+1+2"),
            ("-1+cmd", "'-1+cmd"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("-5", "-5"),
            ("A=1", "A=1"),
            ("", ""),
        ] {
            assert_eq!(defuse_formula(cell), want, "{cell:?}");
        }
    }

    fn listing(format: Format, amount: i64, currency: &str) -> String {
        let row = PaymentRow {
            id: 1,
            account: "hk".into(),
            provider: "qfpay".into(),
            kind: "payment".into(),
            out_trade_no: "A1".into(),
            provider_ref: None,
            original_ref: None,
            pay_type: Some("800101".into()),
            amount,
            currency: currency.into(),
            state: "pending".into(),
            provider_code: None,
            attempts: 0,
            next_check_at: None,
            created_at: "2026-11-22T10:00:00Z".into(),
            updated_at: "2026-11-22T10:00:00Z".into(),
        };
        let mut out = Vec::new();
        let mut printer = RowPrinter::new(format, &mut out).unwrap();
        printer.row(row).unwrap();
        printer.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_table_shows_money_and_json_and_csv_keep_minor_units() {
        let amount_and_currency = |table: &str| -> Vec<String> {
            let cells: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
            cells[5..7].iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            amount_and_currency(&listing(Format::Table, 777, "HKD")),
            ["7.77", "HKD"]
        );
        assert_eq!(
            amount_and_currency(&listing(Format::Table, 100, "TWD")),
            ["100", "TWD"]
        );
        assert!(listing(Format::Json, 777, "HKD").contains("\"amount\":777,"));
        assert!(listing(Format::Csv, 777, "HKD").contains(",777,HKD,"));
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("ok 交易成功"), "ok 交易成功");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("\u{9b}31m\n"), "\\u{9b}31m\\n");
    }
}
