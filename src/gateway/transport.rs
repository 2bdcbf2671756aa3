//! What both adapters share on the wire: the HTTP client, the per-account pacer, and the one
//! retry function (the only place that uses the `backoff` crate, so replacing it stays a
//! one-file change; see docs/RELIABILITY.md, supply chain, on RUSTSEC-2025-0012).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::GatewayError;

/// One HTTP client for the whole process: rustls with the OS trust store (reqwest 0.13's
/// default). Certificate verification is always on; there is no setting to turn it off.
/// Timeouts are set per request by each adapter from its account settings.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, GatewayError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("payrecon/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| GatewayError::Transport {
            gateway: "http",
            detail: format!("cannot build HTTP client: {e}"),
            timed_out: false,
        })
}

/// Spaces calls to one merchant account evenly so that no window of the gateway's limits is
/// ever exceeded.
///
/// Why not a token bucket (e.g. `governor`) with a burst: QFPay allows 100 requests/s *and*
/// 400/min per merchant (docs/PROTOCOLS.md §Q6). A bucket that lets 400 calls burst and then refills
/// would allow up to ~800 calls in some 60-second window and earn HTTP 429s. Even spacing at
/// `max(1 s / per_second, 60 s / per_minute)` never exceeds either limit in any window, and
/// is also the fastest schedule a sustained backlog can have (calls ÷ rate). It runs on
/// `tokio::time`, so tests can drive it with a paused clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    next_slot: Arc<Mutex<Option<Instant>>>,
    gate: Arc<std::sync::Mutex<Option<CallGate>>>,
}

/// Whether a call may still leave once its slot has come: the engine's lane sets one while it
/// holds the account, so that a call queued for its slot (or a retry) is withheld once the lane
/// may have lost the account, e.g. after the process was stalled past its lease.
#[derive(Clone)]
pub struct CallGate(Arc<dyn Fn() -> bool + Send + Sync>);

impl CallGate {
    pub fn new(open: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(open))
    }
}

impl std::fmt::Debug for CallGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallGate")
    }
}

impl Pacer {
    pub fn new(per_second: u32, per_minute: u32) -> Self {
        let a = Duration::from_secs(1) / per_second.max(1);
        let b = Duration::from_secs(60) / per_minute.max(1);
        // 1 % slower than the limit: a call sent a little after its slot (a busy runtime, a
        // lane taking over the pace from another process) followed by one sent on time must
        // not put limit + 1 calls into one window (measured: 401 in a minute without it).
        let interval = a.max(b);
        Self {
            interval: interval + interval / 100,
            next_slot: Arc::new(Mutex::new(None)),
            gate: Arc::default(),
        }
    }

    /// A pacer that never waits (benchmarks with limits off, tests of other things).
    pub fn unlimited() -> Self {
        Self {
            interval: Duration::ZERO,
            next_slot: Arc::new(Mutex::new(None)),
            gate: Arc::default(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The first instant the next call may be made, once any call was made.
    pub async fn next_slot(&self) -> Option<Instant> {
        *self.next_slot.lock().await
    }

    /// No slot before `at`: the pace another process kept for the same account goes on here
    /// (the lane that takes an account over starts where the previous holder's pacer was).
    pub async fn not_before(&self, at: Instant) {
        let mut next = self.next_slot.lock().await;
        *next = Some(next.map_or(at, |n| n.max(at)));
    }

    /// Sets (or clears) the gate every call must pass once its slot has come.
    pub fn set_gate(&self, gate: Option<CallGate>) {
        *self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = gate;
    }

    /// Waits for this caller's slot (slots are handed out in call order), then asks the gate.
    /// `false`: the call must not be made ([`super::GatewayError::Withheld`]).
    #[must_use]
    pub async fn acquire(&self) -> bool {
        if !self.interval.is_zero() {
            let slot = {
                let mut next = self.next_slot.lock().await;
                let now = Instant::now();
                let slot = next.map_or(now, |n| n.max(now));
                *next = Some(slot + self.interval);
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
        let gate = self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        gate.is_none_or(|g| (g.0)())
    }
}

/// Bounds for retrying one call.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_elapsed: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max_interval: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

/// Runs `op` until it succeeds, fails permanently, or the budget runs out.
///
/// Retried inside the call: transport errors, timeouts and HTTP 5xx (`HttpStatus`), and rate
/// limiting when the gateway says how long to wait (`Retry-After`, at most `max_interval`).
/// Everything else is returned at once: a bad signature or a malformed body is not made better
/// by asking again within milliseconds, and the caller's schedule retries later anyway.
pub async fn with_retries<T, F, Fut>(budget: RetryBudget, mut op: F) -> Result<T, GatewayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, GatewayError>>,
{
    let policy = backoff::ExponentialBackoff {
        initial_interval: budget.initial,
        max_interval: budget.max_interval,
        max_elapsed_time: Some(budget.max_elapsed),
        ..backoff::ExponentialBackoff::default()
    };
    backoff::future::retry_notify(
        policy,
        || {
            let fut = op();
            async move {
                fut.await.map_err(|e| match &e {
                    GatewayError::Transport { .. } => backoff::Error::transient(e),
                    GatewayError::HttpStatus { status, .. } if *status >= 500 => {
                        backoff::Error::transient(e)
                    }
                    GatewayError::RateLimited {
                        retry_after: Some(wait),
                        ..
                    } if *wait <= budget.max_interval => {
                        let wait = *wait;
                        backoff::Error::retry_after(e, wait)
                    }
                    _ => backoff::Error::permanent(e),
                })
            }
        },
        |e: GatewayError, wait: Duration| {
            tracing::debug!(error = %e, ?wait, "gateway call failed; retrying");
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn four_hundred_and_one_calls_take_a_full_minute_at_qfpay_limits() {
        let pacer = Pacer::new(100, 400);
        let start = Instant::now();
        for _ in 0..400 {
            assert!(pacer.acquire().await);
        }
        // 400 calls evenly spread, 1 % slower than 150 ms apart (tokio's timer rounds each
        // wake-up to the millisecond) ...
        let near = |micros: u64| {
            let e = start.elapsed();
            e >= Duration::from_micros(micros) && e < Duration::from_micros(micros + 1_000)
        };
        assert!(near(151_500 * 399), "{:?}", start.elapsed());
        assert!(pacer.acquire().await);
        // ... and the 401st more than a full minute after the first, with room to spare for
        // a first call that left a little late.
        assert!(near(151_500 * 400), "{:?}", start.elapsed());
        assert!(start.elapsed() >= Duration::from_secs(60) + Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let calls = AtomicU32::new(0);
        let out = with_retries(RetryBudget::default(), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(GatewayError::HttpStatus {
                        gateway: "t",
                        status: 503,
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), 2);

        let calls = AtomicU32::new(0);
        let out: Result<(), _> = with_retries(RetryBudget::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(GatewayError::BadSignature { gateway: "t" }) }
        })
        .await;
        assert!(matches!(out, Err(GatewayError::BadSignature { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_withholds_a_call_already_waiting_for_its_slot() {
        let pacer = Pacer::new(1, 60);
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = open.clone();
        pacer.set_gate(Some(CallGate::new(move || {
            flag.load(std::sync::atomic::Ordering::SeqCst)
        })));
        assert!(pacer.acquire().await);
        // The next slot is a second away; the gate closes while the caller waits for it.
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        open.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(!waiting.await.unwrap(), "withheld at its slot");
        pacer.set_gate(None);
        assert!(pacer.acquire().await);
    }
}
