//! Environment overrides: `PAYRECON__SECTION__KEY` for the plain sections (handled by the
//! `config` crate), and `PAYRECON__ACCOUNTS__<NAME>__<KEY>` for one account's key, which this
//! module resolves itself.
//!
//! The `config` crate reads `PAYRECON__ACCOUNTS__0__CLIENT_KEY` as a *map* `accounts.0` and then
//! cannot merge it with the file's `[[accounts]]` array ("invalid type: map, expected a
//! sequence"). Accounts are addressed by name, not by position: an account's place in the file
//! can change when another is added, and a key meant for one merchant must never reach another.
//! Names match ignoring case, with `_` standing for `-` (environment variable names are
//! conventionally upper case and many tools refuse `-`). An override can change an account's
//! keys, not create an account.

use std::collections::BTreeMap;

use super::problems::Problem;

const ACCOUNTS_PREFIX: &str = "PAYRECON__ACCOUNTS__";

/// One `PAYRECON__ACCOUNTS__<NAME>__<KEY>` variable.
#[derive(Debug)]
pub(crate) struct AccountOverride {
    /// The variable's name, for messages (never its value: it may be a secret).
    pub variable: String,
    pub account: String,
    /// The key path below the account, lower case, `.`-separated (`cancel_routes.800101`).
    pub key: String,
    pub value: String,
}

/// The `PAYRECON__…` variables split in two: the account overrides, and everything else
/// (for the `config` crate's environment source).
pub(crate) fn split_environment() -> (Vec<AccountOverride>, config::Map<String, String>) {
    let mut accounts = Vec::new();
    let mut rest = config::Map::new();
    for (name, value) in std::env::vars_os() {
        // A variable that is not Unicode cannot be ours (the config crate skips them too).
        let (Ok(name), Ok(value)) = (name.into_string(), value.into_string()) else {
            continue;
        };
        match name.to_ascii_uppercase().strip_prefix(ACCOUNTS_PREFIX) {
            Some(tail) => {
                let mut parts = tail.split("__");
                let account = parts.next().unwrap_or_default().to_string();
                let key = parts.collect::<Vec<_>>().join(".").to_ascii_lowercase();
                accounts.push(AccountOverride {
                    variable: name,
                    account,
                    key,
                    value,
                });
            }
            None => {
                rest.insert(name, value);
            }
        }
    }
    (accounts, rest)
}

fn env_form(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Maps each override to `accounts[i].key` given the configured account names (in file order),
/// or explains why it cannot apply.
pub(crate) fn resolve(
    overrides: &[AccountOverride],
    names: &[Option<String>],
) -> Result<BTreeMap<String, String>, Vec<Problem>> {
    let mut paths = BTreeMap::new();
    let mut problems = Vec::new();
    let supported = |o: &AccountOverride| {
        let key = if o.key.is_empty() {
            "<KEY>".to_string()
        } else {
            o.key.to_ascii_uppercase().replace('.', "__")
        };
        let example = names
            .iter()
            .flatten()
            .next()
            .map_or("<NAME>".to_string(), |n| env_form(n));
        format!(
            "per-account overrides name the account: PAYRECON__ACCOUNTS__<NAME>__{key} \
             (e.g. PAYRECON__ACCOUNTS__{example}__{key}); accounts cannot be added or \
             addressed by position from the environment"
        )
    };
    for o in overrides {
        let wanted = env_form(&o.account);
        let matches: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.as_deref().is_some_and(|n| env_form(n) == wanted))
            .map(|(i, _)| i)
            .collect();
        let message = match (matches.as_slice(), o.key.is_empty()) {
            (_, true) => format!("names no account key; {}", supported(o)),
            ([i], false) => {
                paths.insert(format!("accounts[{i}].{}", o.key), o.value.clone());
                continue;
            }
            ([], false) => {
                let known: Vec<String> = names.iter().flatten().map(|n| env_form(n)).collect();
                format!(
                    "no configured account is named {:?} (configured: {}); {}",
                    o.account,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                    supported(o)
                )
            }
            (_, false) => format!(
                "{:?} matches several accounts whose names differ only in case or '-'/'_'; \
                 rename one of them",
                o.account
            ),
        };
        problems.push(Problem {
            field: o.variable.clone(),
            message,
        });
    }
    if problems.is_empty() {
        Ok(paths)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(variable: &str, account: &str, key: &str) -> AccountOverride {
        AccountOverride {
            variable: variable.into(),
            account: account.into(),
            key: key.into(),
            value: "v".into(),
        }
    }

    fn names(n: &[&str]) -> Vec<Option<String>> {
        n.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn an_account_is_found_by_name_ignoring_case_and_dashes() {
        let paths = resolve(
            &[
                var(
                    "PAYRECON__ACCOUNTS__HK_MAIN__BATCH_SIZE",
                    "HK_MAIN",
                    "batch_size",
                ),
                var("PAYRECON__ACCOUNTS__TW__HASH_IV_FILE", "TW", "hash_iv_file"),
            ],
            &names(&["hk-main", "tw"]),
        )
        .unwrap();
        assert_eq!(
            paths.keys().collect::<Vec<_>>(),
            ["accounts[0].batch_size", "accounts[1].hash_iv_file"]
        );
    }

    #[test]
    fn a_position_an_unknown_name_or_an_ambiguous_one_is_a_problem_naming_the_variable() {
        let problems = resolve(
            &[
                var("PAYRECON__ACCOUNTS__0__CLIENT_KEY", "0", "client_key"),
                var("PAYRECON__ACCOUNTS__A_B__MCHID", "A_B", "mchid"),
                var("PAYRECON__ACCOUNTS__HK", "HK", ""),
            ],
            &names(&["a-b", "A_b", "hk"]),
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "PAYRECON__ACCOUNTS__0__CLIENT_KEY",
                "PAYRECON__ACCOUNTS__A_B__MCHID",
                "PAYRECON__ACCOUNTS__HK"
            ]
        );
        assert!(
            problems[0]
                .message
                .contains("PAYRECON__ACCOUNTS__A_B__CLIENT_KEY")
        );
        assert!(problems[1].message.contains("several accounts"));
        assert!(problems[2].message.contains("names no account key"));
    }
}
