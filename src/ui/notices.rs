//! What a button did, said on the page it leads back to. The message stays
//! here, under a random id that the redirect carries: a page shows only
//! text herald wrote (never text taken from its URL, which anyone can put
//! in a link), and only to the account that pressed the button.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages kept at once; the oldest go first.
const KEEP: usize = 64;
/// How long a message can be shown after its button was pressed.
const FOR: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Notices(Mutex<VecDeque<Notice>>);

struct Notice {
    id: String,
    account: String,
    /// Whether it did what the button says (green), or not (red).
    ok: bool,
    text: String,
    at: Instant,
}

impl Notices {
    /// Keeps what `account`'s button did; the id to show it by.
    pub fn put(&self, account: &str, ok: bool, text: String) -> String {
        let id = format!("{:016x}", rand::random::<u64>());
        let mut all = self.0.lock().unwrap();
        all.retain(|n| n.at.elapsed() < FOR);
        if all.len() == KEEP {
            all.pop_front();
        }
        all.push_back(Notice {
            id: id.clone(),
            account: account.to_string(),
            ok,
            text,
            at: Instant::now(),
        });
        id
    }

    /// What the button of `id` did, if `account` pressed it.
    pub fn get(&self, id: &str, account: &str) -> Option<(bool, String)> {
        let all = self.0.lock().unwrap();
        all.iter()
            .find(|n| n.id == id && n.account == account && n.at.elapsed() < FOR)
            .map(|n| (n.ok, n.text.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_shown_only_to_whoever_pressed_the_button() {
        let notices = Notices::default();
        let id = notices.put("tech", false, "action act_1: it failed again".into());
        assert_eq!(
            notices.get(&id, "tech"),
            Some((false, "action act_1: it failed again".into()))
        );
        assert_eq!(notices.get(&id, "ops"), None);
        assert_eq!(notices.get("Your gateway is hacked", "tech"), None);
        for i in 0..KEEP {
            notices.put("tech", true, format!("{i}"));
        }
        assert_eq!(notices.get(&id, "tech"), None, "the oldest went first");
    }
}
