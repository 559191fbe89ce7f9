//! One device source per kind, chosen once from configuration and used by every path that
//! reads devices (a run's delta or full read, reconcile's listing and confirmations, webhook
//! refreshes), so every path stores the same shape of record and an unchanged device hashes
//! alike whichever path fetched it last.

mod computers;
mod keyset;
mod mobile;

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

pub(crate) use computers::ComputerSource;
pub(crate) use mobile::MobileDeviceSource;

use super::batch::{Batch, Fetched};
use super::error::RunError;
use super::run::Run;
use crate::domain::{Kind, Record};
use crate::jamf::JamfError;

/// Decodes one record as Jamf sent it, stamped with when it was requested.
pub(crate) type Decode<R> =
    fn(&serde_json::value::RawValue, DateTime<Utc>) -> Result<R, crate::jamf::RecordError>;

/// What a run reads: its state, since when (`None`: every device), and the writer to send
/// batches to.
pub(crate) struct Reading<'a, R> {
    pub run: &'a Run,
    pub since: Option<DateTime<Utc>>,
    pub tx: mpsc::Sender<Batch<R>>,
}

/// Where devices of one kind come from.
pub(crate) trait DeviceSource: Send + Sync {
    type Record: Record;

    /// Sends the records of every device changed since `reading.since` (every device with
    /// `None`) to the writer.
    fn read_changed(
        &self,
        reading: Reading<'_, Self::Record>,
    ) -> impl Future<Output = Result<(), RunError>> + Send;

    /// Every device id Jamf lists.
    fn list_ids(&self, run: &Run) -> impl Future<Output = Result<Vec<i64>, RunError>> + Send;

    /// These devices' current records, in the shape [`read_changed`](Self::read_changed)
    /// stores; devices Jamf does not have are `missing`.
    fn fetch(
        &self,
        ids: &[i64],
    ) -> impl Future<Output = Result<Fetched<Self::Record>, JamfError>> + Send;

    /// Of these ids, those Jamf answers 404 for on a direct request for the device. Only this
    /// confirms a deletion: a device a list request leaves out may be hidden by a listing
    /// glitch (a mis-scoped site), not gone.
    fn confirm_gone(&self, ids: &[i64])
        -> impl Future<Output = Result<Vec<i64>, JamfError>> + Send;
}

/// One source per kind. [`Sources::visit`] is the one place a kind picks its source: sync,
/// reconcile and refresh hand it their work.
pub(crate) struct Sources {
    pub computers: ComputerSource,
    pub mobiles: MobileDeviceSource,
}

/// Work done with whichever source serves a kind.
pub(crate) trait WithSource: Send {
    type Out;

    fn with<Src: DeviceSource>(
        self,
        kind: Kind,
        source: &Src,
    ) -> impl Future<Output = Self::Out> + Send;
}

impl Sources {
    /// Does `work` with the source of `kind`.
    pub(crate) async fn visit<W: WithSource>(&self, kind: Kind, work: W) -> W::Out {
        match kind {
            Kind::Computers => work.with(kind, &self.computers).await,
            Kind::MobileDevices => work.with(kind, &self.mobiles).await,
        }
    }
}

/// Runs a keyset id listing against a collector and returns every id, in order.
pub(crate) async fn collect_ids<L, Fut>(list: L) -> Result<Vec<i64>, RunError>
where
    L: FnOnce(mpsc::Sender<Vec<i64>>) -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    let (tx, mut rx) = mpsc::channel::<Vec<i64>>(4);
    let collect = async {
        let mut ids = Vec::new();
        while let Some(chunk) = rx.recv().await {
            ids.extend(chunk);
        }
        ids
    };
    let (listed, ids) = tokio::join!(list(tx), collect);
    listed.map(|()| ids)
}
