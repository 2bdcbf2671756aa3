//! Asking ECPay about one unit of an account's due payments, each answer handed to the lane as
//! it arrives: one call per order (ECPay has no batch
//! query), never sooner than `first_query_after` after the order was created (seed 003) unless
//! ECPay notified a result for it (then at once: the docs say to verify a notified result with
//! QueryTrade), and none while the account is paused after an HTTP 403.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;

use super::{Answer, Delivery, PassContext, Sink};
use crate::config::EcpayAccount;
use crate::gateway::ecpay::EcpayClient;
use crate::ledger::Claimed;

/// Asks about `members` and hands each answer to `sink` as it arrives (postponed members
/// first, together). Returns the calls spent.
pub(crate) async fn check(
    ctx: &PassContext<'_>,
    client: &EcpayClient,
    account: &EcpayAccount,
    claimed: &[Claimed],
    members: &[usize],
    sink: Sink,
) -> u64 {
    let first_after = chrono::Duration::from_std(account.first_query_after).unwrap_or_default();
    let mut postponed = Vec::new();
    let mut ask = Vec::new();
    let paused_for = client
        .paused_until()
        .map(|until| until.saturating_duration_since(tokio::time::Instant::now()));
    for &i in members {
        let not_before = match claimed[i].notified_at {
            Some(_) => claimed[i].created_at,
            None => claimed[i].created_at + first_after,
        };
        if let Some(wait) = paused_for {
            postponed.push((
                i,
                ctx.now + chrono::Duration::from_std(wait).unwrap_or_default(),
            ));
        } else if ctx.now < not_before {
            postponed.push((i, not_before));
        } else {
            ask.push(i);
        }
    }
    if !postponed.is_empty() {
        let _ = sink.send(Delivery {
            postponed,
            ..Delivery::default()
        });
    }
    futures::stream::iter(ask)
        .take_while(|_| std::future::ready(ctx.may_call()))
        .map(|i| async move {
            let c = &claimed[i];
            let answer = match client.query(&c.out_trade_no, c.provider_ref.as_ref()).await {
                Ok(obs) => Answer::seen(obs, Utc::now()),
                Err(e) => Answer::failed(Arc::new(e), Utc::now()),
            };
            (i, answer)
        })
        .buffer_unordered(ctx.concurrency)
        .fold(0, |calls, (i, answer)| {
            let _ = sink.send(Delivery::answers(HashMap::from([(i, answer)])));
            std::future::ready(calls + 1)
        })
        .await
}
