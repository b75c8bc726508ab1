//! External API actions (Enate "Trigger External API"): herald calls an
//! external system and waits for its answer on a callback URL, retrying
//! calls that fail and ending each action in a state a person can act on.
//!
//! In progress (issue 12): `rules` holds the state machine, `record` the
//! stored action and its API view; the store, the call and timeout jobs,
//! the routes and the callback follow.

pub mod record;
pub mod rules;
