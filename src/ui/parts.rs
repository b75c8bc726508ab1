//! The parts every page is made of: times as people read them, short ids,
//! and buttons that carry their CSRF token.

use std::sync::OnceLock;

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::auth::Account;
use crate::clock;
use crate::html::escape;

/// A time as the technician reads it: local (`general.timezone`), to the second.
pub(super) fn local(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    clock::from_ms(clock::shown(ms))
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// A duration for people: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
pub(super) fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => match (s / 86_400, s % 86_400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

/// An id shortened for a table (its start and end), the whole in a title.
pub(super) fn short(id: &str) -> String {
    let shown = if id.len() > 14 {
        format!("{}…{}", &id[..8], &id[id.len() - 4..])
    } else {
        id.to_string()
    };
    format!("<code title=\"{}\">{}</code>", escape(id), escape(&shown))
}

// ---- CSRF and the buttons ------------------------------------------------------

/// The key of the form tokens: made at start, so a restart makes old
/// pages' forms stale (they say so, and a reload fixes it).
pub(super) fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0; 32];
        rand::fill(&mut k);
        k
    })
}

/// The form token of `who`: an HMAC of the account's name and token hash.
/// Another site cannot read our pages, so it cannot know it; a changed
/// token invalidates the pages made for the old one.
pub(super) fn csrf(who: &Account) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key()).expect("HMAC takes any key length");
    mac.update(who.name.as_bytes());
    mac.update(b"\0");
    mac.update(who.token_sha256());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A button: a POST form to `action` with the caller's form token and the
/// page to come back to.
pub(super) fn button(who: &Account, action: &str, label: &str, back: &str, extra: &[(&str, &str)]) -> String {
    let mut hidden = String::new();
    for (k, v) in extra {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(k),
            escape(v)
        ));
    }
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"back\" value=\"{}\">{hidden}<button>{}</button></form>",
        escape(action),
        csrf(who),
        escape(back),
        escape(label)
    )
}

/// A form with text fields a person fills in (`name`, what to write), and
/// one button per choice (a button may send a `name=value` of its own).
pub(super) fn form_with(
    who: &Account,
    action: &str,
    back: &str,
    inputs: &[(&str, &str)],
    buttons: &[(&str, Option<(&str, &str)>)],
) -> String {
    let mut b = format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"back\" value=\"{}\">",
        escape(action),
        csrf(who),
        escape(back)
    );
    for (name, placeholder) in inputs {
        b.push_str(&format!(
            "<input type=\"text\" name=\"{n}\" placeholder=\"{p}\" aria-label=\"{p}\" maxlength=\"500\">",
            n = escape(name),
            p = escape(placeholder)
        ));
    }
    for (label, value) in buttons {
        match value {
            Some((k, v)) => b.push_str(&format!(
                "<button name=\"{}\" value=\"{}\">{}</button>",
                escape(k),
                escape(v),
                escape(label)
            )),
            None => b.push_str(&format!("<button>{}</button>", escape(label))),
        }
    }
    b.push_str("</form>");
    b
}

/// The buttons of a worklist step, as the page shows them.
pub(super) fn step_buttons(who: &Account, step: &crate::worklist::Step, back: &str) -> String {
    use crate::worklist::Step;
    let path = step.ui_path();
    let note = [("note", "note (optional)")];
    match step {
        Step::AcknowledgeExecution(_) | Step::AcknowledgeAction(_) => {
            form_with(who, &path, back, &note, &[("Acknowledge", None)])
        }
        Step::Run(_) => button(who, &path, "Run now", back, &[]),
        Step::Resolve(_) => form_with(
            who,
            &path,
            back,
            &note,
            &[
                ("Resolve: completed", Some(("resolution", "successfully_completed"))),
                (
                    "Resolve: not completed",
                    Some(("resolution", "unsuccessfully_completed")),
                ),
            ],
        ),
        Step::Assign(_) => form_with(
            who,
            &path,
            back,
            &[("queue", "queue"), ("assignee", "person")],
            &[("Assign", None)],
        ),
        Step::Retry(_) => button(who, &path, "Retry now", back, &[]),
        Step::Reactivate(_) => format!(
            "{}{}",
            button(who, &path, "Reactivate and replay the buffer", back, &[("replay", "1")]),
            button(who, &path, "Reactivate, discard the buffer", back, &[("replay", "0")])
        ),
        Step::ReactivateNotification(..) => button(who, &path, "Reactivate", back, &[]),
    }
}
