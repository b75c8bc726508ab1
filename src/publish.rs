//! The publishing seam: a published event as the features that act on it
//! see it, and the signature of those that do (subscribers). `events`
//! stores and publishes; the features that subscribe (webhooks queue each
//! event, notifications plan pings) name themselves in their descriptors.
//! This module sits under both, so neither knows the other.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{StoreError, Txn};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: String,
    pub event: String,
    /// The `data` JSON exactly as published.
    pub data: String,
    pub created_at: i64,
    /// Who published it: integrations read only their own events.
    pub account: String,
    pub idempotency_key: Option<String>,
}

impl StoredEvent {
    /// `data` as accepted; `null` when none was given.
    pub fn data(&self) -> &str {
        if self.data.is_empty() { "null" } else { &self.data }
    }
}

/// One published event as the API answers it, and whether it is new.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: u64,
    pub event: StoredEvent,
    pub created: bool,
}

/// Acts on newly published events inside the commit that stores them
/// (webhooks queue them for delivery). Only events with `created` are new;
/// the others repeat an idempotency key.
pub type Subscriber = fn(&mut Txn, &[Published], &Config) -> Result<(), StoreError>;
