//! Layered, validated configuration: built-in defaults (`config/default.toml`, compiled in) →
//! the file given by `--config` or `PAYRECON_CONFIG` → environment `PAYRECON__SECTION__KEY`.
//!
//! Loading never stops at the first problem: [`load`] returns every problem with its field, and
//! `payrecon config check` prints them one per line. This module builds typed settings; the
//! adapters and the ledger receive those and never read the environment themselves.

mod api;
mod ecpay;
mod env;
mod ledger;
mod problems;
mod qfpay;
mod raw;
mod secret;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api::{ApiSettings, DEFAULT_LISTEN};
pub use ecpay::{EcpayAccount, EcpayQueryApi};
pub use ledger::{LedgerSettings, LedgerStore, PgSettings, postgres_target};
pub use problems::Problem;
pub use qfpay::{CloseMethod, QfpayAccount, SignType};

use crate::domain::{AccountName, Provider};
use problems::Problems;
use raw::RawSettings;

/// The built-in defaults, the first configuration layer.
pub const DEFAULTS_TOML: &str = include_str!("../../config/default.toml");

/// The exit code for configuration errors (`EX_CONFIG` from sysexits.h).
pub const EX_CONFIG: u8 = 78;

#[derive(Debug, Clone)]
pub struct Settings {
    pub ledger: LedgerSettings,
    pub schedule: ScheduleSettings,
    pub reconcile: ReconcileSettings,
    pub reversal: ReversalSettings,
    pub log: LogSettings,
    /// The HTTP listener of `payrecon run`, when configured.
    pub api: Option<ApiSettings>,
    pub accounts: Vec<Account>,
    /// The file layered over the defaults, if any (for messages).
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// 6-field cron (seconds first), already checked to parse.
    pub reconcile: String,
    pub sweep: String,
    /// The scheduled sweep reads every closed window twice: when it closes, and again once it
    /// is this old, to catch what happens to payments later (refunds, late cancels).
    pub sweep_look_back: Duration,
    /// The daemon ends (exit 75, EX_TEMPFAIL) after this many reconcile passes in a row have
    /// failed, so that the service manager restarts it and a person is alerted.
    pub max_failed_passes: u32,
}

#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// The account lease's time-to-live; a lane renews it every third of it.
    pub lease: Duration,
    /// How long a one-off pass or sweep waits for an account another process works.
    pub lane_wait: Duration,
    pub chunk_size: u32,
    pub concurrency: u32,
    pub give_up_after: Duration,
}

pub use crate::domain::ReversalMode;

#[derive(Debug, Clone)]
pub struct ReversalSettings {
    pub mode: ReversalMode,
    pub cpm_in_progress_limit: Duration,
    pub default_expiry: Duration,
    pub expiry_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// A configured gateway account.
#[derive(Debug, Clone)]
pub enum Account {
    Qfpay(QfpayAccount),
    Ecpay(EcpayAccount),
}

impl Account {
    pub fn name(&self) -> &AccountName {
        match self {
            Account::Qfpay(a) => &a.name,
            Account::Ecpay(a) => &a.name,
        }
    }
    pub fn provider(&self) -> Provider {
        match self {
            Account::Qfpay(_) => Provider::Qfpay,
            Account::Ecpay(_) => Provider::Ecpay,
        }
    }
    /// Whether a notification for an order the ledger lacks registers it.
    pub fn registers_from_notifications(&self) -> bool {
        match self {
            Account::Qfpay(a) => a.register_from_notifications,
            Account::Ecpay(a) => a.register_from_notifications,
        }
    }
}

impl Settings {
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name().as_str() == name)
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(String),
    #[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// One line per problem, for `config check`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Load(m) => vec![m.clone()],
            ConfigError::Invalid(ps) => ps.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Loads defaults → `file` → environment, then validates everything.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULTS_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let (account_overrides, environment) = env::split_environment();
    let load_error = |e: config::ConfigError| ConfigError::Load(e.to_string());
    let layered = builder
        .add_source(
            config::Environment::with_prefix("PAYRECON")
                .prefix_separator("__")
                .separator("__")
                .source(Some(environment)),
        )
        .build()
        .map_err(load_error)?;
    let mut raw: RawSettings = layered.clone().try_deserialize().map_err(load_error)?;
    if !account_overrides.is_empty() {
        let names: Vec<Option<String>> = raw.accounts.iter().map(|a| a.name.clone()).collect();
        let mut builder = config::Config::builder().add_source(layered);
        for (path, value) in
            env::resolve(&account_overrides, &names).map_err(ConfigError::Invalid)?
        {
            builder = builder.set_override(path, value).map_err(load_error)?;
        }
        raw = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(load_error)?;
    }
    validate(raw, file.map(Path::to_path_buf))
}

fn cron(p: &mut Problems<'_>, key: &str, value: Option<&String>) -> String {
    let Some(expr) = p.required(key, value) else {
        return String::new();
    };
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&expr);
    if let Err(e) = parsed {
        p.add(
            key,
            format!("{expr:?} is not a 6-field cron expression (sec min hour dom month dow): {e}"),
        );
    }
    expr
}

fn validate(raw: RawSettings, source: Option<PathBuf>) -> Result<Settings, ConfigError> {
    let mut list = Vec::new();

    let mut p = Problems::new("ledger", &mut list);
    let ledger = ledger::validate(&raw.ledger, &mut p);

    let mut p = Problems::new("schedule", &mut list);
    let schedule = ScheduleSettings {
        reconcile: cron(&mut p, "reconcile", raw.schedule.reconcile.as_ref()),
        sweep: cron(&mut p, "sweep", raw.schedule.sweep.as_ref()),
        sweep_look_back: p.duration(
            "sweep_look_back",
            raw.schedule.sweep_look_back.as_ref(),
            Duration::from_secs(7 * 86400),
        ),
        max_failed_passes: p.count(
            "max_failed_passes",
            raw.schedule.max_failed_passes,
            10,
            100_000,
        ),
    };

    let mut p = Problems::new("reconcile", &mut list);
    let r = &raw.reconcile;
    let reconcile = ReconcileSettings {
        lease: {
            let lease = p.duration("lease", r.lease.as_ref(), Duration::from_secs(60));
            // A lane renews its lease every third of it and stops calling within a third of
            // its end: below a second that leaves no time for one call and one renewal.
            if lease < Duration::from_secs(1) {
                p.add(
                    "lease",
                    "must be at least 1s (a lane renews it every third of it)",
                );
            }
            lease
        },
        lane_wait: p.duration("lane_wait", r.lane_wait.as_ref(), Duration::from_secs(10)),
        chunk_size: p.count("chunk_size", r.chunk_size, 500, 100_000),
        concurrency: p.count("concurrency", r.concurrency, 4, 64),
        give_up_after: p.duration(
            "give_up_after",
            r.give_up_after.as_ref(),
            Duration::from_secs(3 * 86400),
        ),
    };

    let mut p = Problems::new("reversal", &mut list);
    let v = &raw.reversal;
    let reversal = ReversalSettings {
        mode: p.choice(
            "mode",
            v.mode.as_ref(),
            &[
                ("auto", ReversalMode::Auto),
                ("dry-run", ReversalMode::DryRun),
                ("off", ReversalMode::Off),
            ],
            ReversalMode::Auto,
        ),
        cpm_in_progress_limit: p.duration(
            "cpm_in_progress_limit",
            v.cpm_in_progress_limit.as_ref(),
            Duration::from_secs(120),
        ),
        default_expiry: p.duration(
            "default_expiry",
            v.default_expiry.as_ref(),
            Duration::from_secs(1800),
        ),
        expiry_grace: p.duration(
            "expiry_grace",
            v.expiry_grace.as_ref(),
            Duration::from_secs(300),
        ),
    };

    let mut p = Problems::new("log", &mut list);
    let log = LogSettings {
        level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
        format: p.choice(
            "format",
            raw.log.format.as_ref(),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        ),
    };

    let mut p = Problems::new("api", &mut list);
    let api = api::validate(&raw.api, &mut p);

    let mut accounts = Vec::new();
    let mut seen = HashSet::new();
    for (i, a) in raw.accounts.iter().enumerate() {
        // The label only helps find the account; an absurdly long name is cut, not echoed
        // whole into every problem line (its own problem says it is too long).
        let label: String = match a.name.as_deref() {
            None => "?".into(),
            Some(n) if n.chars().count() > 64 => {
                format!("{}…", n.chars().take(64).collect::<String>())
            }
            Some(n) => n.into(),
        };
        let mut p = Problems::new(format!("accounts[{i}] ({label})"), &mut list);
        let name = match p
            .required("name", a.name.as_ref())
            .map(|n| AccountName::parse(&n))
        {
            Some(Ok(n)) => {
                if !seen.insert(n.clone()) {
                    p.add("name", format!("duplicate account name {:?}", n.as_str()));
                }
                Some(n)
            }
            Some(Err(e)) => {
                p.add("name", e.to_string());
                None
            }
            None => None,
        };
        let provider = match p
            .required("provider", a.provider.as_ref())
            .map(|s| s.parse::<Provider>())
        {
            Some(Ok(pr)) => Some(pr),
            Some(Err(e)) => {
                p.add("provider", e.to_string());
                None
            }
            None => None,
        };
        let (Some(name), Some(provider)) = (name, provider) else {
            continue;
        };
        for key in a.foreign_keys(provider) {
            p.add(key, format!("is not a {provider} setting"));
        }
        let account = match provider {
            Provider::Qfpay => qfpay::validate(name, a, &mut p).map(Account::Qfpay),
            Provider::Ecpay => ecpay::validate(name, a, &mut p)
                .inspect(|e| e.check_horizons(reconcile.give_up_after, &mut p))
                .map(Account::Ecpay),
        };
        accounts.extend(account);
    }

    match ledger {
        Some(ledger) if list.is_empty() => Ok(Settings {
            ledger,
            schedule,
            reconcile,
            reversal,
            log,
            api,
            accounts,
            source,
        }),
        _ => Err(ConfigError::Invalid(list)),
    }
}
