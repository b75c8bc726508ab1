//! The base context every request handler and job handler shares: the
//! store, the clock, the metrics, the accounts, the outbound client and the
//! settings in force. It knows no feature: a feature's own state (the calls
//! being made, the runs going, the publisher) is made by its descriptor and
//! found here by its type ([`App::state`]).

use std::any::Any;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use crate::auth::{Account, Auth};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbound::client::HttpClient;
use crate::store::Store;

/// A feature's state, as its descriptor makes it.
pub type State = Arc<dyn Any + Send + Sync>;

pub struct App {
    pub store: Store,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// The pooled outbound client (deliveries, pings, calls, runs).
    pub http: HttpClient,
    /// The settings in force; replaced whole when SIGHUP reloads the file.
    settings: RwLock<Arc<Config>>,
    /// Set once the store is open and the workers run (`/readyz`).
    pub ready: AtomicBool,
    /// Set when shutdown begins: new work is refused with 503.
    pub draining: AtomicBool,
    /// The generated admin, when no accounts are configured.
    bootstrap: Option<Account>,
    /// Each feature's state, found by its type; made once at start.
    states: Vec<State>,
}

/// The base services an [`App`] is made of.
pub struct Base {
    pub store: Store,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub http: HttpClient,
    pub config: Config,
    pub bootstrap: Option<Account>,
}

impl App {
    pub fn new(base: Base, states: impl IntoIterator<Item = State>) -> App {
        let states = states.into_iter().collect();
        App {
            auth: Auth::new(accounts_of(&base.config, base.bootstrap.as_ref())),
            store: base.store,
            clock: base.clock,
            metrics: base.metrics,
            http: base.http,
            settings: RwLock::new(Arc::new(base.config)),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            bootstrap: base.bootstrap,
            states,
        }
    }

    pub fn settings(&self) -> Arc<Config> {
        self.settings.read().unwrap().clone()
    }

    /// The state of type `T` that a feature's descriptor made.
    pub fn state<T: Any + Send + Sync>(&self) -> &T {
        self.states
            .iter()
            .find_map(|s| s.downcast_ref())
            .unwrap_or_else(|| panic!("no feature made a {}", std::any::type_name::<T>()))
    }

    /// Puts a reloaded config in force: the accounts and every setting that
    /// can change while running. Settings that need a restart are named in
    /// the log and kept. Returns (old, new) for the features' reload hooks.
    pub fn reload(&self, new: Config) -> (Arc<Config>, Arc<Config>) {
        let old = self.settings();
        let mut needs_restart = Vec::new();
        if new.server.listen != old.server.listen {
            needs_restart.push("server.listen");
        }
        if new.server.tls != old.server.tls {
            needs_restart.push("server.tls_cert/tls_key");
        }
        if new.storage.dir != old.storage.dir || new.storage.max_size != old.storage.max_size {
            needs_restart.push("storage.dir/max_size");
        }
        if new.storage.cache_size != old.storage.cache_size {
            needs_restart.push("storage.cache_size");
        }
        if new.server.body_timeout != old.server.body_timeout
            || new.server.max_connections != old.server.max_connections
        {
            needs_restart.push("server.body_timeout/max_connections");
        }
        if new.webhooks.ca_file != old.webhooks.ca_file || new.webhooks.max_per_host != old.webhooks.max_per_host {
            needs_restart.push("webhooks.ca_file/max_per_host");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(settings = ?needs_restart, "changed settings take effect at the next restart");
        }
        self.auth.replace(accounts_of(&new, self.bootstrap.as_ref()));
        let mut keep = new;
        keep.server.listen = old.server.listen;
        keep.server.tls = old.server.tls.clone();
        keep.server.body_timeout = old.server.body_timeout;
        keep.server.max_connections = old.server.max_connections;
        keep.storage.dir = old.storage.dir.clone();
        keep.storage.max_size = old.storage.max_size;
        keep.storage.cache_size = old.storage.cache_size;
        keep.webhooks.ca_file = old.webhooks.ca_file.clone();
        keep.webhooks.max_per_host = old.webhooks.max_per_host;
        let new = Arc::new(keep);
        *self.settings.write().unwrap() = new.clone();
        tracing::info!(accounts = self.auth.accounts().len(), "configuration reloaded");
        (old, new)
    }
}

fn accounts_of(config: &Config, bootstrap: Option<&Account>) -> Vec<Account> {
    if config.accounts.is_empty() {
        bootstrap.into_iter().cloned().collect()
    } else {
        config.accounts.iter().map(Account::from).collect()
    }
}
