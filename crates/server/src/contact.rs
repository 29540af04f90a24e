//! A customer's contact details for alerts: the e-mail address and the anti-phishing code
//! the customer chose (shown in every e-mail we send them, so a phishing mail without it
//! stands out). Sealed with `crypto::seal` under the personal-data key and bound to the
//! customer before they reach the store; opened only by whoever sends the e-mail.

use serde::{Deserialize, Serialize};
use strongroom_crypto::seal::{open, seal, KeyEncryptionKey};
use uuid::Uuid;

/// What is sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub email: String,
    pub anti_phishing_code: Option<String>,
}

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact").finish_non_exhaustive()
    }
}

fn aad(customer_id: Uuid) -> Vec<u8> {
    format!("customer/{customer_id}/contact").into_bytes()
}

/// Seal `c` for `customer_id`.
pub fn seal_contact(
    kek: &dyn KeyEncryptionKey,
    customer_id: Uuid,
    c: &Contact,
    env: &dyn strongroom_core::Env,
) -> Result<Vec<u8>, String> {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(c).map_err(|e| e.to_string())?);
    seal(kek, &plain, &aad(customer_id), env).map_err(|e| e.to_string())
}

/// Open what [`seal_contact`] made for the same customer.
pub fn open_contact(
    kek: &dyn KeyEncryptionKey,
    customer_id: Uuid,
    sealed: &[u8],
) -> Result<Contact, String> {
    let plain = open(kek, sealed, &aad(customer_id)).map_err(|e| e.to_string())?;
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

/// `c***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((user, domain)) => {
            format!("{}***@{domain}", user.chars().next().map(String::from).unwrap_or_default())
        }
        None => "***".into(),
    }
}
