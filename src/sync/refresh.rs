//! Refreshing known devices by id (webhook events): fetch their current records through the
//! kind's source and write them through the store's newer-wins path, outside any run.
//!
//! An event is only ever a hint: whatever it said (inventory completed, unenrolled), what is
//! stored is what Jamf answers now. A device Jamf no longer has is marked deleted, as
//! reconcile marks confirmed deletions; a later copy requested from Jamf revives it. Every
//! request goes through the client's limiter, so refreshes and a running sync share Jamf's
//! five connections.

use tracing::Instrument;

use super::error::RunError;
use super::source::{DeviceSource, WithSource};
use super::Engine;
use crate::domain::Kind;
use crate::store::{Store, Write};

/// What a refresh did with each requested id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Fetched and handed to the store (changed, unchanged or stale).
    pub stored: Vec<i64>,
    /// A direct request for them answered 404: marked deleted.
    pub missing: Vec<i64>,
    /// Answered with a record that does not decode (logged and counted).
    pub failed: Vec<i64>,
    /// Of `stored`: new or changed rows.
    pub upserted: i64,
    /// Of `stored`: not written because the stored copy is newer.
    pub stale: i64,
}

impl<S: Store> Engine<S> {
    /// Fetches these devices now and writes them. A failed read fails the whole call and
    /// writes nothing; the caller retries later.
    pub async fn refresh(&self, kind: Kind, ids: &[i64]) -> Result<Refreshed, RunError> {
        struct Refresh<'a, S: Store>(&'a Engine<S>, &'a [i64]);
        impl<S: Store> WithSource for Refresh<'_, S> {
            type Out = Result<Refreshed, RunError>;
            async fn with<Src: DeviceSource>(self, kind: Kind, source: &Src) -> Self::Out {
                self.0.refresh_with(kind, source, self.1).await
            }
        }
        let span = tracing::info_span!(
            "refresh",
            instance = self.client.instance(),
            kind = kind.as_str(),
            devices = ids.len()
        );
        self.sources
            .visit(kind, Refresh(self, ids))
            .instrument(span)
            .await
    }

    async fn refresh_with<Src: DeviceSource>(
        &self,
        kind: Kind,
        source: &Src,
        ids: &[i64],
    ) -> Result<Refreshed, RunError> {
        let instance = self.client.instance();
        // The source chunks its requests; the caller (the webhook worker) chunks its batches.
        let got = source.fetch(ids).await?;
        let mut out = Refreshed::default();
        if !got.records.is_empty() {
            let outcome = self
                .store
                .write_devices(Write::guarded(instance, &got.records, &self.history))
                .await?;
            out.upserted = outcome.upserted;
            out.stale = outcome.stale;
        }
        // A device a list answer leaves out is deleted only when a direct request says 404.
        let mut gone = source.confirm_gone(&got.missing).await?;
        gone.extend(&got.gone);
        if !gone.is_empty() {
            self.store
                .mark_deleted(instance, kind, &gone, self.client.jamf_now(), &self.history)
                .await?;
        }
        out.stored = got
            .records
            .iter()
            .map(crate::domain::Record::jamf_id)
            .collect();
        out.missing = gone;
        out.failed = got.failed;
        Ok(out)
    }
}
