//! Accounts, tokens and roles.
//!
//! Tokens are never stored: the config holds their SHA-256 and requests are
//! checked by hashing what they present and comparing in constant time. A
//! source address that keeps presenting wrong credentials is answered `429`
//! for a while, which makes guessing pointless and keeps the log readable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AccountConfig;
pub use crate::config::Role;
use crate::store::{META_BLOBS, Store, StoreError};

/// Who may call a route of the API.
#[derive(Clone, Copy, PartialEq)]
pub enum Access {
    Public,
    /// Public unless `server.metrics_auth`.
    Metrics,
    Roles(&'static [Role]),
    /// These roles, or anyone with a link's single-purpose `token` in the
    /// query, which the handler checks.
    RolesOrLink(&'static [Role]),
}

/// The role groups of API.md's table.
pub const ALL: &[Role] = &[Role::Admin, Role::Integration, Role::Technician];
pub const PUBLISHERS: &[Role] = &[Role::Admin, Role::Integration];
pub const READERS: &[Role] = &[Role::Admin, Role::Technician];
pub const ADMIN: &[Role] = &[Role::Admin];

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    /// Where error mails go; the generated bootstrap admin has none.
    pub email: Option<String>,
    pub role: Role,
    token_sha256: [u8; 32],
}

impl Account {
    /// The SHA-256 of the account's token (what forms' CSRF tokens are bound to).
    pub fn token_sha256(&self) -> &[u8; 32] {
        &self.token_sha256
    }
}

impl From<&AccountConfig> for Account {
    fn from(a: &AccountConfig) -> Self {
        Account {
            name: a.name.clone(),
            email: Some(a.email.clone()),
            role: a.role,
            token_sha256: a.token_sha256,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum AuthError {
    /// No credentials: nobody to identify.
    Missing,
    /// Credentials that match no account.
    Wrong,
    /// Too many wrong credentials from this address lately: wrong ones are
    /// refused without a look for this long.
    RateLimited(Duration),
}

/// Wrong credentials from one address within [`WINDOW`] before it is
/// refused, unless `server.wrong_credentials` says otherwise.
#[cfg(test)]
const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
const LOCKOUT: Duration = Duration::from_secs(60);
/// Addresses remembered at most, so a scan from many addresses cannot grow memory.
const MAX_TRACKED: usize = 4096;

struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

pub struct Auth {
    /// Replaced whole on SIGHUP; readers clone the `Arc` and never wait long.
    accounts: RwLock<Arc<Vec<Account>>>,
    /// A `std` mutex: held for a map lookup, never across `.await`.
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Auth {
    pub fn new(accounts: Vec<Account>) -> Auth {
        Auth {
            accounts: RwLock::new(Arc::new(accounts)),
            failures: Mutex::default(),
        }
    }

    pub fn replace(&self, accounts: Vec<Account>) {
        *self.accounts.write().unwrap() = Arc::new(accounts);
    }

    pub fn accounts(&self) -> Arc<Vec<Account>> {
        self.accounts.read().unwrap().clone()
    }

    /// Checks an `Authorization` header value from `ip`. Correct credentials
    /// always pass: local programs share 127.0.0.1, and one of them with a
    /// wrong token must not lock the others out.
    /// The account `header` names; `max_wrong` wrong credentials a minute
    /// from `ip` lock it out for a while.
    pub fn authenticate(&self, header: Option<&str>, ip: IpAddr, max_wrong: u32) -> Result<Account, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let found = match credentials(header) {
            Some((name, token)) => self.find(name.as_deref(), &token),
            None => None,
        };
        found.ok_or_else(|| self.wrong(ip, max_wrong))
    }

    /// Counts a wrong credential from `ip` (a token, or the token of a link):
    /// `Wrong`, or `RateLimited` once too many came from there lately.
    pub fn wrong(&self, ip: IpAddr, max_wrong: u32) -> AuthError {
        let now = Instant::now();
        match self.locked(ip, now) {
            Some(left) => AuthError::RateLimited(left),
            None => {
                self.fail(ip, now, max_wrong);
                AuthError::Wrong
            }
        }
    }

    fn find(&self, name: Option<&str>, token: &str) -> Option<Account> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let accounts = self.accounts();
        // Compare against every account, so the time taken says nothing
        // about which one (if any) matched.
        let mut found = None;
        for a in accounts.iter() {
            let same = a.token_sha256.ct_eq(&hash);
            if bool::from(same) && name.is_none_or(|n| n == a.name) {
                found = Some(a.clone());
            }
        }
        found
    }

    /// How long `ip` stays locked, if it is.
    fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap();
        let until = failures.get(&ip).and_then(|f| f.locked_until)?;
        (now < until).then(|| until - now)
    }

    fn fail(&self, ip: IpAddr, now: Instant, max_wrong: u32) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| f.locked_until.is_some_and(|u| now < u) || now.duration_since(f.since) < WINDOW);
        }
        let f = failures.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(f.since) > WINDOW || f.locked_until.is_some_and(|u| now >= u) {
            *f = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= max_wrong {
            f.locked_until = Some(now + LOCKOUT);
            tracing::warn!(
                %ip,
                "too many wrong credentials; refusing further wrong ones from this address for {}s",
                LOCKOUT.as_secs()
            );
        }
    }
}

/// `Bearer TOKEN` gives (None, token); `Basic base64(name:token)` gives (Some(name), token).
fn credentials(header: &str) -> Option<(Option<String>, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some((None, rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, token) = text.split_once(':')?;
        return Some((Some(name.to_string()), token.to_string()));
    }
    None
}

/// A new token: 32 random bytes, URL-safe base64, with a recognisable prefix.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("hrl_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

const BOOTSTRAP_KEY: &str = "bootstrap.admin_sha256";
pub const BOOTSTRAP_FILE: &str = "admin.token";

/// With no accounts configured, herald makes one admin account so a
/// newcomer can try it at once. Only the token's hash is stored; the token
/// itself goes to `<dir>/admin.token` (mode 0600) on the first start.
pub async fn bootstrap_admin(store: &Store, dir: &Path) -> Result<Account, StoreError> {
    let existing = store.read(|r| {
        Ok(r.open_table(META_BLOBS)?
            .get(BOOTSTRAP_KEY)?
            .map(|v| v.value().to_vec()))
    })?;
    let path = dir.join(BOOTSTRAP_FILE);
    let hash: [u8; 32] = match existing.and_then(|v| v.try_into().ok()) {
        Some(hash) => {
            if path.exists() {
                tracing::info!(path = %path.display(), "no accounts configured; the generated admin token is in this file");
            } else {
                tracing::warn!(
                    path = %path.display(),
                    "no accounts configured and the generated admin token file was removed; \
                     configure [[accounts]] (see `herald token`)"
                );
            }
            hash
        }
        None => {
            let token = new_token();
            crate::store::write_durably(&path, format!("{token}\n").as_bytes()).map_err(|e| {
                StoreError::Corrupt("admin token file", format!("cannot write {}: {e}", path.display()))
            })?;
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            store
                .write(crate::store::Grows::No, move |txn| {
                    txn.open(META_BLOBS)?.insert(BOOTSTRAP_KEY, hash.as_slice())?;
                    Ok(())
                })
                .await?;
            tracing::info!(path = %path.display(), "no accounts configured; created an admin token in this file");
            hash
        }
    };
    Ok(Account {
        name: "admin".into(),
        email: None,
        role: Role::Admin,
        token_sha256: hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, token: &str, role: Role) -> Account {
        Account {
            name: name.into(),
            email: None,
            role,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        }
    }

    #[test]
    fn bearer_and_basic() {
        let auth = Auth::new(vec![
            account("ops", "s3cret", Role::Admin),
            account("erp", "other", Role::Integration),
        ]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            auth.authenticate(Some("Bearer s3cret"), ip, MAX_FAILURES).unwrap().name,
            "ops"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("erp:other");
        assert_eq!(
            auth.authenticate(Some(&format!("Basic {basic}")), ip, MAX_FAILURES)
                .unwrap()
                .name,
            "erp"
        );
        let wrong_name = base64::engine::general_purpose::STANDARD.encode("ops:other");
        assert_eq!(
            auth.authenticate(Some(&format!("Basic {wrong_name}")), ip, MAX_FAILURES),
            Err(AuthError::Wrong)
        );
        assert_eq!(auth.authenticate(None, ip, MAX_FAILURES), Err(AuthError::Missing));
    }

    #[test]
    fn repeated_failures_slow_wrong_credentials_only() {
        let auth = Auth::new(vec![account("ops", "s3cret", Role::Admin)]);
        let bad: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.authenticate(Some("Bearer nope"), bad, MAX_FAILURES),
                Err(AuthError::Wrong)
            );
        }
        assert!(matches!(
            auth.authenticate(Some("Bearer nope"), bad, MAX_FAILURES),
            Err(AuthError::RateLimited(left)) if left <= LOCKOUT && left > LOCKOUT / 2
        ));
        assert!(
            matches!(auth.wrong(bad, MAX_FAILURES), AuthError::RateLimited(_)),
            "a link's token counts too"
        );
        assert!(
            auth.authenticate(Some("Bearer s3cret"), bad, MAX_FAILURES).is_ok(),
            "correct credentials always pass"
        );
        let other: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            auth.authenticate(Some("Bearer nope"), other, MAX_FAILURES),
            Err(AuthError::Wrong)
        );
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.len() >= 4 + 43);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
