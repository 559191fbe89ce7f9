//! Parallel keyset ranges: one listing read over several connections at once, still by keyset.
//!
//! # Design
//! - **First page, then ranges.** The first page is read as before (ascending ids from the
//!   start). If it held every match (`totalCount`), that was the listing: one request. Else a
//!   probe (`page-size=1`, ids descending, same filter, cheapest section) gives the highest id,
//!   and the ids past the first page are split into as many spans as there are connections
//!   (but no more than there are pages left); each span is paged by keyset on its own
//!   (`id>"<last>";id<="<end>"` added to the filter).
//! - **Cut where the fleet is when many pages are likely.** When the run expects more than two
//!   pages (`Run::likely`: the stored fleet for a full listing, the last delta's count for a
//!   delta), every page is read in spans from the start: the first page no longer holds four
//!   connections idle for a page's time. The spans are cut where the stored devices sit
//!   (`Run::stored`: every page-th stored id), so a full listing of an unchanged fleet is whole
//!   pages per span with no probe at all; without that sample (a different page size) the
//!   probe goes first and gives the count as well. A wrong guess costs a few short pages.
//!   A first full sync into an empty table knows nothing: it probes first too.
//! - **Past the known top.** The open top span, once past the highest id known (stored or
//!   probed), is split as if the ids left were dense: new devices get the next ids.
//! - **Nothing skipped, nothing twice.** Spans are disjoint and cover every id past the first
//!   page: the top span has no end, since devices enrolled during the run get ids above the
//!   probed maximum. Within a span, keyset paging is skip-proof as before. A span is done when
//!   a page is empty or holds every match left in it: each answer's `totalCount` counts the
//!   matches left in that span.
//! - **Balance.** Static splits cannot know where the devices are (ids of deleted devices
//!   leave holes; a delta matches a few scattered devices). When a connection would go idle,
//!   the span with the most matches left (known from its last answer) is split in two by id,
//!   once its page has come back (a span is never split under a page in flight, so the page
//!   cannot cross the new boundary). A span with at most a page left is not split.
//! - **Ramp pages.** While pacing is in its slow start below the connections allowed, a span's
//!   next page asks for one record: the limit doubles per round trip, and a round trip of
//!   one-record pages costs a fraction of a full page's, so a cold start reaches five
//!   connections within a few tens of milliseconds instead of two or three full pages.
//!   An overloaded server slows these too: the first slow one ends slow start. Only a
//!   listing of more than two rounds of full pages at the full width ramps: below that the
//!   requests they add save no time.
//! - Pages go to the writer in the order they arrive; shrinking on timeouts and isolating a
//!   failing device work per span as they did for the one sequential listing.
//! - **Shrinking** ([`list_with_shrink`]): a page that times out (or answers 504) is asked
//!   for again at half the size from the same position, down to `sync.min_page_size`; good
//!   pages grow the size back.

use std::collections::VecDeque;
use std::future::Future;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::error::RunError;
use super::run::Run;
use crate::jamf::models::InventoryPage;
use crate::jamf::JamfError;
use crate::store::StoredIds;

/// Records a span's page asks for while pacing ramps up ([`Pager::ramping`]): the probe's
/// size, so these pages share its latency baseline (pacing's `probe` class).
const RAMP_PAGE: u32 = 1;

/// The ids one keyset span covers: above `after` (from the start when `None`), up to and
/// including `upto` (no end when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub after: Option<i64>,
    pub upto: Option<i64>,
}

/// One span being paged.
#[derive(Debug, Clone)]
struct Range {
    span: Span,
    /// For the open top span: the highest id known (probed or stored), the end used when
    /// splitting it.
    hint: i64,
    /// Matches left in the span, from its last answer (an estimate after a split).
    left: i64,
    busy: bool,
    done: bool,
}

impl Range {
    /// Splits the ids left in half: `self` keeps the lower half, the upper half is returned
    /// (and takes over the open end, if this was the top span). `None` when fewer than two ids
    /// are left to split.
    fn split(&mut self) -> Option<Range> {
        let lo = self.span.after.unwrap_or(0);
        // Matches left above `lo` need at least as many ids: past the probed (or stored)
        // maximum, the open span's new devices are split as if their ids were dense.
        let hi = self.span.upto.unwrap_or(self.hint.max(lo + self.left));
        if hi - lo < 2 {
            return None;
        }
        let mid = lo + (hi - lo) / 2;
        let upper = Range {
            span: Span {
                after: Some(mid),
                upto: self.span.upto,
            },
            hint: self.hint,
            left: self.left - self.left / 2,
            busy: false,
            done: false,
        };
        self.span.upto = Some(mid);
        self.left /= 2;
        Some(upper)
    }
}

/// What the probe found: the highest matching id (`None`: no match) and the match count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub top: Option<i64>,
    pub total: i64,
}

/// What one page of a span produced.
struct Step<T> {
    item: T,
    /// The highest id read (the span's new start).
    reached: Option<i64>,
    /// Matches left in the span after this page, when the answer said.
    left: Option<i64>,
    done: bool,
}

/// The spans `(after, top]` for `left` matches read `page` at a time, split into `parts`
/// with whole pages each as if the ids were evenly spread (then no span ends in a part-filled
/// page more than the listing itself needs); the last one open-ended.
fn initial_ranges(after: i64, top: i64, parts: usize, left: i64, page: u32) -> Vec<Range> {
    let ids = (top - after).max(1);
    let size = i64::from(page.max(1));
    whole_page_spans(Some(after), top, parts, left, page, |pages| {
        // The id where these pages' share of the matches ends, at an even spread.
        let matches = (pages * size).min(left) as i128;
        Some(after + (matches * ids as i128 / left.max(1) as i128) as i64)
    })
}

/// The spans for `left` matches read `page` at a time from `start` (the beginning when
/// `None`): up to `parts` spans of whole pages each, the last one open-ended; `hint` is the
/// highest id known. `end_after(n)` is the id the `n`-th page's last match is expected to have
/// (`None`: unknown). A cut that would not move past the one before (or reaches `hint`) is not
/// made: the next span takes those pages too.
fn whole_page_spans(
    start: Option<i64>,
    hint: i64,
    parts: usize,
    left: i64,
    page: u32,
    end_after: impl Fn(i64) -> Option<i64>,
) -> Vec<Range> {
    let page = i64::from(page.max(1));
    let pages = ((left + page - 1) / page).max(1);
    let parts = (parts.max(1) as i64).min(pages);
    let mut ranges = Vec::new();
    let mut after = start;
    let (mut pages_before, mut cut_at) = (0, 0);
    for i in 0..parts {
        pages_before += pages / parts + i64::from(i < pages % parts);
        let end = (i < parts - 1)
            .then(|| end_after(pages_before))
            .flatten()
            .filter(|e| *e < hint && after.is_none_or(|a| *e > a));
        if end.is_none() && i < parts - 1 {
            continue;
        }
        ranges.push(Range {
            span: Span { after, upto: end },
            hint,
            left: match end {
                Some(_) => (pages_before - cut_at) * page,
                None => (left - cut_at * page).max(0),
            },
            busy: false,
            done: false,
        });
        cut_at = pages_before;
        after = end;
    }
    ranges
}

/// The spans of the `left` matches past `after` (from the start when `None`) up to the
/// probed `top`: up to `width` of whole pages, or one open span when there is at most a page
/// or nothing to split by id.
fn spans_after(after: Option<i64>, top: i64, width: usize, left: i64, size: u32) -> Vec<Range> {
    let pages = (left + i64::from(size) - 1) / i64::from(size).max(1);
    let parts = (width.max(1) as i64).min(pages).max(1) as usize;
    let from = after.unwrap_or(0);
    if top > from && parts > 1 {
        initial_ranges(from, top, parts, left, size)
    } else {
        vec![Range {
            span: Span { after, upto: None },
            hint: top,
            left,
            busy: false,
            done: false,
        }]
    }
}

/// The spans for `likely` matches read `page` at a time, cut where the stored devices sit
/// (`stored`, sampled every `page` devices): up to `width` spans of whole pages each, the last
/// one open-ended. For a full listing the matches are the stored devices, so each span holds
/// exactly its pages; a delta's matches are taken to sit where the fleet does.
fn stored_spans(stored: &StoredIds, width: usize, likely: i64, page: u32) -> Vec<Range> {
    let size = i64::from(page.max(1));
    whole_page_spans(None, stored.max, width, likely, page, |pages| {
        // The stored device at the same share of the fleet as these pages' last match.
        let rank =
            (pages * size).min(likely) as i128 * stored.count as i128 / likely.max(1) as i128;
        let at = usize::try_from(rank / i128::from(size))
            .ok()?
            .checked_sub(1)?;
        stored.ids.get(at).copied()
    })
}

/// The range to split when a connection would go idle: the one with the most matches left,
/// if it has no page in flight and more than a page left. Ranges with a page in flight are
/// waited for (their answer comes within a page's time).
fn to_split(ranges: &[Range], page: u32) -> Option<usize> {
    let busiest = ranges
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.done)
        .max_by_key(|(_, r)| r.left)?;
    (!busiest.1.busy && busiest.1.left > i64::from(page)).then_some(busiest.0)
}

/// A listing read in spans: how [`read_ranges`] asks for a span's pages, what a page becomes
/// for the receiver, and how a stretch Jamf keeps failing on is read another way.
pub(crate) trait Pager: Sync {
    /// What one page becomes for the receiver.
    type Item: Send;

    /// One ascending page of a span, `size` records at most; `shrinkable` asks for a timeout at
    /// once, so the page can be asked for smaller.
    fn page(
        &self,
        span: Span,
        size: u32,
        shrinkable: bool,
    ) -> impl Future<Output = Result<InventoryPage, JamfError>> + Send;

    /// The highest id matching the listing's filter, and how many match.
    fn probe(&self) -> impl Future<Output = Result<Probe, JamfError>> + Send;

    /// A page as the receiver takes it; the highest id it covers.
    fn convert(&self, page: &InventoryPage) -> (Self::Item, Option<i64>);

    /// Whether pacing is still in its slow start below the connections allowed: pages are
    /// then asked at [`RAMP_PAGE`] records, as cheap as the probe, so the limit doubles per
    /// probe-sized round trip instead of per full page.
    fn ramping(&self) -> bool {
        false
    }

    /// Reads a stretch Jamf keeps failing on some other way (see [`Recovered`]); by default
    /// it cannot, and the run fails with the error.
    fn recover(
        &self,
        _span: Span,
        _size: u32,
        _error: JamfError,
    ) -> impl Future<Output = Result<Recovered<Self::Item>, RunError>> + Send {
        async { Ok(None) }
    }
}

/// Reads every page of a listing, up to `width` spans at once, sending each page's item to
/// `tx` as it arrives.
pub(crate) async fn read_ranges<P: Pager>(
    run: &Run,
    sizing: Sizing,
    width: usize,
    listing: &P,
    tx: &mpsc::Sender<P::Item>,
) -> Result<(), RunError> {
    run.check()?;
    let size = size_of(run, sizing);
    // Up to two pages, reading the first page before probing costs no extra round.
    let many = width > 1 && (run.likely() > 2 * i64::from(size) || run.unknown());
    // Ramp pages pay off only when the listing outlasts a few rounds of full pages: below
    // that they are requests added for no time saved.
    let worth_ramping = |records: i64| records > 2 * width as i64 * i64::from(size);
    let ramp;
    let mut ranges = match run.stored().filter(|s| s.step == size) {
        Some(stored) if many => {
            run.expect(run.likely());
            ramp = worth_ramping(run.likely());
            stored_spans(stored, width, run.likely(), size)
        }
        _ if many => {
            let probe = listing.probe().await?;
            run.expect(probe.total);
            ramp = worth_ramping(probe.total);
            match probe.top {
                Some(top) => spans_after(None, top, width, probe.total, size),
                None if probe.total == 0 => return Ok(()),
                // Matches without a readable id: one span from the start finds out.
                None => spans_after(None, 0, width, probe.total, size),
            }
        }
        _ => {
            let first = page(run, sizing, Span::default(), listing).await?;
            let (reached, left) = (first.reached, first.left.unwrap_or(0));
            tx.send(first.item)
                .await
                .map_err(|_| RunError::Other("the receiving side stopped".into()))?;
            if first.done {
                return Ok(());
            }
            let Some(reached) = reached else {
                return Err(RunError::Other("the first page has no readable id".into()));
            };
            ramp = worth_ramping(left);
            let pages_left = (left + i64::from(size) - 1) / i64::from(size).max(1);
            let top = if width > 1 && pages_left > 1 {
                listing.probe().await?.top.unwrap_or(reached)
            } else {
                reached
            };
            spans_after(Some(reached), top, width, left, size)
        }
    };
    tracing::debug!(spans = ?ranges, "reading the listing in spans");

    // Answers wait here for the receiver, while the pages on the wire keep being polled: a
    // page not polled could hold one of the connections the receiver needs (the detail
    // fetches fed by an id listing), and neither side would move.
    let mut queue: VecDeque<P::Item> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let width = width.max(1);
    loop {
        run.check()?;
        if queue.len() < width {
            // Split while connections would go idle, then give every ready span a page.
            while in_flight.len() + ranges.iter().filter(|r| !r.busy && !r.done).count() < width {
                let Some(i) = to_split(&ranges, size_of(run, sizing)) else {
                    break;
                };
                let Some(upper) = ranges[i].split() else {
                    break;
                };
                ranges.push(upper);
            }
            for (i, r) in ranges.iter_mut().enumerate() {
                if in_flight.len() >= width {
                    break;
                }
                if !r.busy && !r.done {
                    r.busy = true;
                    let span = r.span;
                    let sizing = if ramp && listing.ramping() {
                        Sizing::Fixed(RAMP_PAGE)
                    } else {
                        sizing
                    };
                    in_flight.push(async move { (i, page(run, sizing, span, listing).await) });
                }
            }
        }
        if in_flight.is_empty() && queue.is_empty() {
            return Ok(());
        }
        tokio::select! {
            permit = tx.reserve(), if !queue.is_empty() => {
                let permit = permit
                    .map_err(|_| RunError::Other("the receiving side stopped".into()))?;
                if let Some(item) = queue.pop_front() {
                    permit.send(item);
                }
            }
            Some((i, step)) = in_flight.next(), if !in_flight.is_empty() => {
                let step = step?;
                queue.push_back(step.item);
                let r = &mut ranges[i];
                r.busy = false;
                r.done = step.done;
                r.span.after = r.span.after.max(step.reached);
                r.left = step.left.unwrap_or(r.left);
            }
        }
    }
}

fn size_of(run: &Run, sizing: Sizing) -> u32 {
    match sizing {
        Sizing::Fixed(size) => size,
        Sizing::Adaptive => run.page_size(),
    }
}

/// One page of a span: shrunk on timeouts, the device behind a page that keeps failing
/// isolated by `recover`.
async fn page<P: Pager>(
    run: &Run,
    sizing: Sizing,
    span: Span,
    listing: &P,
) -> Result<Step<P::Item>, RunError> {
    let listed = match sizing {
        Sizing::Fixed(size) => listing.page(span, size, false).await,
        Sizing::Adaptive => {
            list_with_shrink(run, |size, shrinkable| listing.page(span, size, shrinkable)).await
        }
    };
    let page = match listed {
        Ok(page) => page,
        Err(e) if e.is_record_specific() => {
            let Some((item, max_id, last)) = listing
                .recover(span, size_of(run, sizing), e.clone())
                .await?
            else {
                return Err(RunError::from(e));
            };
            if span.after.max(max_id) == span.after {
                return Err(RunError::from(e));
            }
            return Ok(Step {
                item,
                reached: max_id,
                left: None,
                done: last,
            });
        }
        Err(e) => return Err(RunError::from(e)),
    };
    if span == Span::default() {
        run.expect(page.total_count);
    }
    let n = page.results.len() as i64;
    let (item, reached) = listing.convert(&page);
    if n > 0 && span.after.max(reached) == span.after {
        return Err(RunError::Other(format!(
            "cannot page past id {:?}: no record on the page has a readable id",
            span.after
        )));
    }
    tracing::debug!(
        ?span,
        page_records = n,
        left = page.total_count - n,
        "page done"
    );
    Ok(Step {
        item,
        reached,
        left: Some((page.total_count - n).max(0)),
        done: n == 0 || n >= page.total_count,
    })
}

/// How a keyset listing sizes its pages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sizing {
    /// The run's adaptive size: shrinks after a page timed out.
    Adaptive,
    /// Always this size (id listings at Jamf's maximum).
    Fixed(u32),
}

/// What to do with a page Jamf would not give: `recover(span, size, error)` reads that
/// stretch some other way and returns what goes to the receiver, the highest id it covers and
/// whether it was the span's last (`Ok(None)`: it cannot, the run fails with the error).
pub(crate) type Recovered<T> = Option<(T, Option<i64>, bool)>;

/// One list page at the run's current size; a page that times out, answers 504 or a plain 500
/// is asked for again at half the size from the same position. At the smallest size a 500
/// comes back (the caller isolates the device behind it); timeouts and 504s are retried
/// within the request's budget.
pub(crate) async fn list_with_shrink<L, Fut>(run: &Run, list: L) -> Result<InventoryPage, JamfError>
where
    L: Fn(u32, bool) -> Fut,
    Fut: Future<Output = Result<InventoryPage, JamfError>>,
{
    loop {
        let size = run.page_size();
        match list(size, true).await {
            Ok(page) => {
                run.grow();
                return Ok(page);
            }
            Err(e) if e.asks_for_smaller_pages() && size > run.min_page_size() => {
                let smaller = run.shrink();
                tracing::warn!(size, smaller, error = %e, "list page failed; asking for a smaller one");
            }
            Err(e) if e.asks_for_smaller_pages() && !e.is_record_specific() => {
                return list(size, false).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, RunKind};
    use crate::sync::run::{ListingHint, PageSizes, StopSignal};
    use std::sync::{Arc, Mutex};

    /// What the fake listing was asked: `None` for the probe, else the span.
    type Calls = Arc<Mutex<Vec<Option<Span>>>>;

    /// Reads ids `1..=n` through a fake listing with `likely` set; returns the calls in order
    /// and the ids received.
    async fn read_fake(n: i64, likely: i64) -> (Vec<Option<Span>>, Vec<i64>) {
        read_fake_ids((1..=n).collect(), likely, None).await
    }

    /// What the store would say about these stored ids, sampled every `step`.
    fn sample(ids: &[i64], step: u32) -> StoredIds {
        StoredIds {
            step,
            ids: ids
                .iter()
                .copied()
                .skip(step as usize - 1)
                .step_by(step as usize)
                .collect(),
            count: ids.len() as i64,
            max: ids.last().copied().unwrap_or(0),
        }
    }

    /// A listing of `ids` that records what it was asked.
    struct Fake<'a> {
        ids: &'a [i64],
        calls: Calls,
    }

    impl Pager for Fake<'_> {
        type Item = Vec<i64>;

        fn page(
            &self,
            span: Span,
            size: u32,
            _shrinkable: bool,
        ) -> impl Future<Output = Result<InventoryPage, JamfError>> + Send {
            self.calls.lock().map(|mut c| c.push(Some(span))).ok();
            let in_span =
                |id: i64| span.after.is_none_or(|a| id > a) && span.upto.is_none_or(|u| id <= u);
            let matching: Vec<i64> = self.ids.iter().copied().filter(|&i| in_span(i)).collect();
            let total = matching.len() as i64;
            let results = matching
                .iter()
                .take(size as usize)
                .filter_map(|id| {
                    serde_json::value::RawValue::from_string(format!("{{\"id\":\"{id}\"}}")).ok()
                })
                .collect();
            let page = InventoryPage {
                total_count: total,
                results,
                requested_at: chrono::Utc::now(),
            };
            async move {
                tokio::time::sleep(PAGE_TIME).await;
                Ok(page)
            }
        }

        fn probe(&self) -> impl Future<Output = Result<Probe, JamfError>> + Send {
            self.calls.lock().map(|mut c| c.push(None)).ok();
            let probe = Probe {
                top: self.ids.last().copied(),
                total: self.ids.len() as i64,
            };
            async move { Ok(probe) }
        }

        fn convert(&self, page: &InventoryPage) -> (Vec<i64>, Option<i64>) {
            crate::sync::batch::page_ids(page, "id")
        }
    }

    /// A fake page's time: long enough that every span has a page out before the first is
    /// back (with paused time, a listing's duration counts its rounds of pages).
    const PAGE_TIME: std::time::Duration = std::time::Duration::from_millis(5);

    /// Reads `ids` (ascending) through a fake listing, with `likely` and `stored` set.
    async fn read_fake_ids(
        ids: Vec<i64>,
        likely: i64,
        stored: Option<StoredIds>,
    ) -> (Vec<Option<Span>>, Vec<i64>) {
        let calls: Calls = Arc::default();
        let listing = Fake {
            ids: &ids,
            calls: calls.clone(),
        };
        let run = Run::new(
            Some(1),
            RunKind::Sync(Kind::Computers),
            "test",
            60,
            PageSizes { max: 100, min: 10 },
            Arc::new(StopSignal::default()),
            ListingHint {
                likely,
                stored,
                unknown: false,
            },
        );
        let (tx, mut rx) = mpsc::channel(4);
        let collect = async move {
            let mut got = Vec::new();
            while let Some(page) = rx.recv().await {
                got.extend(page);
            }
            got
        };
        let (read, mut got) = tokio::join!(
            async move {
                let r = read_ranges(&run, Sizing::Adaptive, 5, &listing, &tx).await;
                drop(tx);
                r
            },
            collect
        );
        if let Err(e) = read {
            panic!("listing failed: {e}");
        }
        got.sort_unstable();
        let calls = calls.lock().map(|c| c.clone()).unwrap_or_default();
        (calls, got)
    }

    #[tokio::test]
    async fn a_fleet_known_to_be_large_is_probed_first_and_read_in_spans_from_the_start() {
        let (calls, got) = read_fake(2000, 1990).await;
        assert_eq!(got, (1..=2000).collect::<Vec<_>>(), "every id once");
        assert_eq!(
            calls.first(),
            Some(&None),
            "the probe goes first: {calls:?}"
        );
        // The probe and twenty pages of 100: five spans of four pages, from the start.
        assert_eq!(calls.len(), 21, "{calls:?}");
        let first_five: Vec<Span> = calls[1..6].iter().flatten().copied().collect();
        assert_eq!(first_five.len(), 5);
        assert!(first_five
            .iter()
            .all(|s| s.after.is_some_and(|a| a % 400 == 0)));
        assert_eq!(first_five[0].after, Some(0));
    }

    #[tokio::test]
    async fn an_unknown_or_small_fleet_starts_with_its_first_page() {
        for likely in [0, 200] {
            let (calls, got) = read_fake(2000, likely).await;
            assert_eq!(got.len(), 2000);
            assert_eq!(calls.first(), Some(&Some(Span::default())), "{calls:?}");
            assert_eq!(calls.get(1), Some(&None), "then the probe: {calls:?}");
            assert_eq!(calls.len(), 21);
        }
        // One page that holds every match stays one request.
        let (calls, got) = read_fake(80, 0).await;
        assert_eq!((calls.len(), got.len()), (1, 80));
    }

    #[tokio::test]
    async fn a_probe_that_finds_nothing_ends_the_listing() {
        let (calls, got) = read_fake(0, 5000).await;
        assert_eq!(calls, vec![None]);
        assert!(got.is_empty());
    }

    fn covered(ranges: &[Range], id: i64) -> usize {
        ranges
            .iter()
            .filter(|r| r.span.after.is_none_or(|a| id > a) && r.span.upto.is_none_or(|u| id <= u))
            .count()
    }

    #[test]
    fn initial_spans_cover_every_id_past_the_first_page_once_and_the_top_is_open() {
        for (after, top, parts) in [
            (100, 20_000, 5),
            (100, 103, 5),
            (7, 8, 3),
            (0, 1_000_000, 4),
        ] {
            let ranges = initial_ranges(after, top, parts, 1000, 100);
            assert!(ranges.len() <= parts);
            assert_eq!(ranges.last().and_then(|r| r.span.upto), None);
            for id in [after + 1, (after + top) / 2 + 1, top, top + 1, top + 10_000] {
                assert_eq!(covered(&ranges, id), 1, "id {id} in {ranges:?}");
            }
            assert_eq!(covered(&ranges, after), 0);
        }
    }

    #[test]
    fn evenly_spread_ids_get_whole_pages_per_span() {
        // 1,900 matches over ids 101..=2000, pages of 100, five spans: 4+4+4+4+3 pages.
        let ranges = initial_ranges(100, 2000, 5, 1900, 100);
        let widths: Vec<i64> = ranges
            .iter()
            .map(|r| r.span.upto.unwrap_or(2000) - r.span.after.unwrap_or(0))
            .collect();
        assert_eq!(widths, vec![400, 400, 400, 400, 300]);
        // Fewer pages than connections: one span per page.
        assert_eq!(initial_ranges(100, 2000, 5, 150, 100).len(), 2);
    }

    #[test]
    fn splitting_keeps_the_cover_and_hands_the_open_end_up() {
        let mut ranges = initial_ranges(0, 1000, 2, 400, 10);
        for _ in 0..6 {
            let Some(i) = to_split(&ranges, 10) else {
                break;
            };
            let Some(upper) = ranges[i].split() else {
                panic!("span {i} is not splittable: {ranges:?}")
            };
            ranges.push(upper);
        }
        assert!(ranges.len() > 2);
        for id in 1..1100 {
            assert_eq!(covered(&ranges, id), 1, "id {id} in {ranges:?}");
        }
        assert_eq!(ranges.iter().filter(|r| r.span.upto.is_none()).count(), 1);
    }

    #[test]
    fn only_the_busiest_idle_span_with_more_than_a_page_left_is_split() {
        let mut ranges = initial_ranges(0, 1000, 2, 400, 10);
        ranges[0].left = 50;
        ranges[1].left = 300;
        assert_eq!(to_split(&ranges, 100), Some(1));
        // The busiest has a page in flight: wait for it rather than split a smaller one.
        ranges[1].busy = true;
        assert_eq!(to_split(&ranges, 100), None);
        ranges[1].busy = false;
        ranges[1].left = 100;
        assert_eq!(to_split(&ranges, 100), None, "a page or less left");
        // Past the probed maximum only new devices: split as if their ids were dense.
        let mut top = Range {
            span: Span {
                after: Some(1000),
                upto: None,
            },
            hint: 1000,
            left: 500,
            busy: false,
            done: false,
        };
        let upper = top.split().map(|r| r.span);
        assert_eq!(top.span.upto, Some(1250));
        assert_eq!(
            upper,
            Some(Span {
                after: Some(1250),
                upto: None
            })
        );
    }

    #[tokio::test]
    async fn a_stored_fleet_is_read_in_spans_cut_where_it_is_stored_without_a_probe() {
        // 2,000 devices with holes: ids crowd at the start and thin out (deleted devices).
        let ids: Vec<i64> = (1..=2000_i64).map(|i| i + (i * i) / 50).collect();
        let (calls, got) = read_fake_ids(ids.clone(), 2000, Some(sample(&ids, 100))).await;
        assert_eq!(got, ids, "every id once");
        assert!(calls.iter().all(Option::is_some), "no probe: {calls:?}");
        // Twenty pages of 100: five spans of exactly four pages, from the start.
        assert_eq!(calls.len(), 20, "{calls:?}");
        let starts: Vec<Option<i64>> = calls[..5].iter().flatten().map(|s| s.after).collect();
        let cuts: Vec<Option<i64>> = [None, Some(399), Some(799), Some(1199), Some(1599)]
            .iter()
            .map(|k| k.map(|k: usize| ids[k]))
            .collect();
        assert_eq!(starts, cuts);
        // A sample taken at another page size is not used: the probe goes first.
        let (calls, got) = read_fake_ids(ids.clone(), 2000, Some(sample(&ids, 50))).await;
        assert_eq!((calls.first(), got.len()), (Some(&None), 2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_grown_past_what_was_stored_is_still_read_once_in_parallel() {
        // 1,000 stored; 3,000 in Jamf now (new devices get higher ids), and a delta that
        // expects fewer than it finds.
        let ids: Vec<i64> = (1..=3000).collect();
        let stored = sample(&ids[..1000], 100);
        for likely in [1000, 300] {
            let t0 = tokio::time::Instant::now();
            let (calls, got) = read_fake_ids(ids.clone(), likely, Some(stored.clone())).await;
            let rounds = t0.elapsed().as_millis() / PAGE_TIME.as_millis();
            assert_eq!(got, ids, "every id once");
            assert!(calls.iter().all(Option::is_some), "no probe: {calls:?}");
            // 30 pages: six rounds of five at best. The open top span is split as its answers
            // tell how much is left, instead of its 20 pages read one after another.
            assert!(calls.len() <= 40, "{} requests", calls.len());
            assert!(rounds <= 10, "{rounds} rounds: {calls:?}");
        }
    }

    #[test]
    fn stored_spans_cover_every_id_once_and_the_top_is_open() {
        let ids: Vec<i64> = (1..=1000).map(|i| i * 7).collect();
        for (likely, width) in [(1000, 5), (1000, 3), (250, 5), (50_000, 5), (3, 5)] {
            let ranges = stored_spans(&sample(&ids, 100), width, likely, 100);
            assert!(!ranges.is_empty() && ranges.len() <= width);
            assert_eq!(ranges.last().and_then(|r| r.span.upto), None);
            assert_eq!(ranges[0].span.after, None);
            for id in [1, 7, 700, 701, 3500, 6999, 7000, 7001, 100_000] {
                assert_eq!(covered(&ranges, id), 1, "id {id} in {ranges:?}");
            }
            assert_eq!(ranges.iter().map(|r| r.left).sum::<i64>(), likely);
        }
        // Too few stored devices to cut: one open span.
        let one = stored_spans(&sample(&[5, 9], 100), 5, 1000, 100);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].span, Span::default());
    }
}
