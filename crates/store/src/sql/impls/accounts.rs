//! Customers' sealed contact details and account-security records (auth records).

use super::*;

#[async_trait]
impl AccountStore for SqlStore {
    async fn set_customer_contact(
        &self,
        ctx: &WriteCtx,
        customer_id: Uuid,
        sealed: Vec<u8>,
    ) -> Result<()> {
        let job = job(move |w, ctx| {
            let s = sealed.clone();
            Box::pin(async move { risk::stage_contact(w, ctx, customer_id, s).await })
        });
        self.submit(ctx, None, job).await.map(|_| ())
    }

    async fn customer_contact(&self, customer_id: Uuid) -> Result<Option<Vec<u8>>> {
        self.read_contact(customer_id).await
    }

    async fn auth_record(&self, kind: &str, id: &str) -> Result<Option<AuthRecord>> {
        self.read_auth(kind, id).await
    }

    async fn auth_record_by_lookup(&self, kind: &str, lookup: &str) -> Result<Option<AuthRecord>> {
        self.read_auth_by_lookup(kind, lookup).await
    }

    async fn auth_records(&self, kind: &str, owner: &str) -> Result<Vec<AuthRecord>> {
        self.read_auth_owned(kind, owner).await
    }

    async fn all_auth_records(&self, kind: &str) -> Result<Vec<AuthRecord>> {
        self.read_auth_kind(kind).await
    }

    async fn customer_contacts(&self) -> Result<Vec<(Uuid, Vec<u8>)>> {
        self.read_contacts().await
    }

    async fn write_auth(
        &self,
        ctx: &WriteCtx,
        action: &str,
        subject: &str,
        writes: Vec<AuthWrite>,
    ) -> Result<Vec<AuthRecord>> {
        let (action, subject) = (action.to_owned(), subject.to_owned());
        let job = job(move |w, ctx| {
            let (a, s, ws) = (action.clone(), subject.clone(), writes.clone());
            Box::pin(async move { auth::stage_write(w, ctx, a, s, ws).await })
        });
        self.submit(ctx, None, job).await.and_then(from_json)
    }
}
