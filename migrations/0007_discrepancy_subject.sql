-- What a discrepancy that names no ledger payment is about (issue 16): the gateway record's
-- key (a QFPay syssn, else its out_trade_no) for `missing_in_ledger`, the record's raw text
-- for `unreadable_record`. Sweeps report such a finding once per (account, kind, subject);
-- before this column they searched `detail` with `instr`, a scan of every discrepancy for every
-- unknown record (quadratic in a sweep), and a key that was part of another key matched it.
ALTER TABLE discrepancies ADD COLUMN subject TEXT;

-- Rows written before this version carry their key only inside `detail`, in the two fixed
-- formats of src/reconcile/sweep_page.rs and sweep.rs; a row in neither keeps a NULL subject
-- (it can only be reported once more, never hide another finding).
UPDATE discrepancies
   SET subject = substr(detail, 7, instr(detail, ': gateway record (') - 7)
 WHERE payment_id IS NULL AND kind = 'missing_in_ledger'
   AND detail LIKE 'syssn %' AND instr(detail, ': gateway record (') > 7;
UPDATE discrepancies
   SET subject = substr(detail, 52)
 WHERE payment_id IS NULL AND kind = 'unreadable_record'
   AND substr(detail, 1, 51) = 'a record without a readable syssn or out_trade_no: ';

CREATE INDEX discrepancies_by_subject ON discrepancies (account, kind, subject)
    WHERE payment_id IS NULL;
