//! Calls herald makes to other systems, shared by every feature that makes
//! them (webhook deliveries, pings, action calls, scheduled runs): the
//! pooled client, what an answer means, and how a call is signed.

mod answer;
pub mod client;
mod sign;

pub use self::answer::{Failure, judge};
pub use self::sign::{Signer, new_secret};
