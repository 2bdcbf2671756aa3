//! Time-window sweeps as a pager: one `/trade/v1/query` page per [`WindowPager::next_page`] call,
//! so memory does not grow with the size of the window (docs/PROTOCOLS.md §Q2.1).
//!
//! The window is split at calendar-month boundaries in the account's timezone, both times are
//! always sent, `page_size=100`, and a month is done when a page comes back short of the page
//! size the gateway says it used (there is no total count). Record order is undocumented, so a record inserted while we page can push an
//! earlier one onto the next page: records are deduplicated by `syssn` against the previous
//! page only (bounded memory); the ledger's idempotent apply absorbs anything older.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::client::QfpayClient;
use super::request::{self, Form, LocalWindow};
use super::response::{self, malformed};
use crate::domain::{Observation, PayType};
use crate::gateway::GatewayError;

/// A sweep: the half-open interval `[start, end)` and optional filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowQuery {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `pay_type` filter, sent as a comma list; empty = all pay types.
    pub pay_types: Vec<PayType>,
    /// `respcd` filter (one code); `None` = records of every status.
    pub respcd: Option<String>,
}

impl WindowQuery {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            start,
            end,
            pay_types: Vec::new(),
            respcd: None,
        }
    }
}

/// One page of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The month piece this page belongs to (provider-local, inclusive).
    pub window: LocalWindow,
    /// 1-based page number within that month piece.
    pub page: u32,
    /// Records of the page, minus those already returned on the previous page.
    pub observations: Vec<Observation>,
}

/// Walks a [`WindowQuery`] page by page. After an error the pager stays where it was, so calling
/// [`WindowPager::next_page`] again retries the same page.
#[derive(Debug)]
pub struct WindowPager<'a> {
    client: &'a QfpayClient,
    windows: Vec<LocalWindow>,
    filters: Form,
    index: usize,
    page: u32,
    previous: HashSet<String>,
}

impl<'a> WindowPager<'a> {
    pub(crate) fn new(client: &'a QfpayClient, query: WindowQuery) -> Self {
        let mut filters = Form::default();
        let pay_types: Vec<&str> = query.pay_types.iter().map(PayType::as_str).collect();
        filters
            .set("pay_type", pay_types.join(","))
            .set_opt("respcd", query.respcd.as_deref());
        Self {
            windows: request::month_windows(query.start, query.end, client.timezone()),
            client,
            filters,
            index: 0,
            page: 1,
            previous: HashSet::new(),
        }
    }

    /// Continues a sweep saved earlier: the next call reads `page` of month piece `index`
    /// (a cursor saved after each page makes a crashed sweep resume where it stopped).
    pub fn resume_at(mut self, index: usize, page: u32) -> Self {
        self.index = index;
        self.page = page.max(1);
        self
    }

    /// The month pieces this sweep will query, in order.
    pub fn windows(&self) -> &[LocalWindow] {
        &self.windows
    }

    /// The next page, or `None` when every month piece has been read to a short page.
    pub async fn next_page(&mut self) -> Result<Option<Page>, GatewayError> {
        let Some(window) = self.windows.get(self.index).copied() else {
            return Ok(None);
        };
        let mut form = self.filters.clone();
        form.set("start_time", window.start_time())
            .set("end_time", window.end_time())
            .set_opt("mchid", self.client.mchid());
        let answer = self.client.query_page(&form, self.page).await?;
        let page = self.page;
        let full = answer.is_full();
        let mut current = HashSet::new();
        let mut observations = Vec::with_capacity(answer.records.len());
        for rec in &answer.records {
            let obs = response::record_observation(rec);
            match obs.provider_ref.as_ref().map(|r| r.as_str().to_string()) {
                Some(id) if self.previous.contains(&id) || current.contains(&id) => {}
                Some(id) => {
                    current.insert(id);
                    observations.push(obs);
                }
                None => observations.push(obs),
            }
        }
        if full && observations.is_empty() {
            // A full page that only repeats the previous one: the server ignores `page`, and
            // paging on would never end.
            return Err(malformed(format!(
                "page {page} of {} repeats the previous page",
                window.start_time()
            )));
        }
        if full {
            self.page += 1;
            self.previous = current;
        } else {
            self.index += 1;
            self.page = 1;
            self.previous.clear();
        }
        Ok(Some(Page {
            window,
            page,
            observations,
        }))
    }
}
