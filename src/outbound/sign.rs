//! Signing outbound calls per Standard Webhooks, and making their secrets.

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// Signs deliveries per Standard Webhooks: the key is decoded and the
/// HMAC keyed once per delivery run, not once per event.
pub struct Signer(hmac::Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &str) -> Signer {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap_or_default();
        Signer(hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    /// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_secret;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            Signer::new(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(valid_secret(&new_secret()));
        assert!(!valid_secret("whsec_short") && !valid_secret("nope"));
    }
}
