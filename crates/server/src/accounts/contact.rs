//! A customer's alert e-mail and anti-phishing code, set by the exchange's backend: sealed
//! by `crate::contact`; a changed address is a security change on the customer's account.

use super::*;
use crate::auth::WRITERS;
use crate::extract::{path_id, Write, WriteBody};
use strongroom_store::Role;

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetContact {
    pub email: String,
    /// A phrase of 4 to 32 characters shown in every e-mail to the customer.
    pub anti_phishing_code: Option<String>,
}

impl std::fmt::Debug for SetContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetContact").finish_non_exhaustive()
    }
}

impl WriteBody for SetContact {
    const ROLES: &'static [Role] = WRITERS;
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    /// Masked: the full address is never returned.
    pub email: String,
    pub anti_phishing_code_set: bool,
}

/// Set a customer's alert e-mail and anti-phishing code (sealed at rest).
#[utoipa::path(post, path = "/v1/customers/{id}/contact", tag = "customers", security(("token" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), request_body = SetContact,
    responses((status = 200, body = ContactView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn set_contact(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Write<SetContact>,
) -> Result<Json<ContactView>, ApiError> {
    let id = path_id(id)?;
    let b = &req.body;
    let email_ok = b.email.len() <= 254
        && b.email.split_once('@').is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
        && !b.email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !email_ok {
        return Err(ApiError::bad_request("invalid_email", "not an e-mail address"));
    }
    if let Some(code) = &b.anti_phishing_code {
        let n = code.chars().count();
        if !(4..=32).contains(&n) || code.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_anti_phishing_code",
                "the anti-phishing code is 4 to 32 printable characters",
            ));
        }
    }
    let kek = state.personal_data_key().ok_or_else(|| {
        ApiError::unavailable("no personal-data key is configured: contact details cannot be kept")
    })?;
    state.store().get_customer(id).await?;
    // A changed address is a security change for a customer with an account.
    let changed = match state.store().customer_contact(id).await? {
        Some(old) => crate::contact::open_contact(kek.as_ref(), id, &old)
            .map(|c| c.email != b.email)
            .unwrap_or(true),
        None => false,
    };
    if changed {
        external_security_change(&state, id, "e-mail address", &req.ctx).await?;
    }
    let contact = crate::contact::Contact {
        email: b.email.clone(),
        anti_phishing_code: b.anti_phishing_code.clone(),
    };
    let sealed = crate::contact::seal_contact(kek.as_ref(), id, &contact, state.env())
        .map_err(ApiError::internal)?;
    state.store().set_customer_contact(&req.ctx, id, sealed).await?;
    Ok(Json(ContactView {
        email: crate::contact::mask_email(&contact.email),
        anti_phishing_code_set: contact.anti_phishing_code.is_some(),
    }))
}
