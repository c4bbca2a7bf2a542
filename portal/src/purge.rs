//! The periodic sweep of dead sign-in state: expired web sessions, and sign-in links that were
//! used or expired. Nothing it deletes could still sign anyone in (the checks compare expiry at
//! use), so the sweep only keeps the tables from growing with every sign-in.
//!
//! The same sweep applies the audit log's retention: entries older than it are deleted, so the
//! log holds a bounded stretch of history however much a school (or an attacker) makes it write.
//! And each school's chat retention: kept lesson chat older than the school's period is deleted,
//! at most [`CHAT_PURGE_BATCH`] × [`CHAT_PURGE_BATCHES`] messages a sweep.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use classroom_domain::{Db, Purged};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::chat_keeper::KeeperMetrics;
use crate::unix_now;

/// Kept chat messages deleted per statement, and statements per sweep: a sweep's work is
/// bounded, and a backlog (a school that shortened its period) is worked off sweep by sweep.
pub const CHAT_PURGE_BATCH: u32 = 500;
pub const CHAT_PURGE_BATCHES: u32 = 20;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PurgeMetrics {
    sessions: AtomicU64,
    signin_links: AtomicU64,
    audit_entries: AtomicU64,
    chat_messages: AtomicU64,
    failures: AtomicU64,
    /// The chat keeper's counters, rendered with these.
    keeper: Option<Arc<KeeperMetrics>>,
}

impl PurgeMetrics {
    /// Also renders the chat keeper's counters (`classroom_chat_kept_total`).
    pub fn with_chat_keeper(mut self, keeper: Arc<KeeperMetrics>) -> PurgeMetrics {
        self.keeper = Some(keeper);
        self
    }

    /// Kept chat messages removed so far for being older than their school's retention.
    pub fn chat_messages_removed(&self) -> u64 {
        self.chat_messages.load(Ordering::Relaxed)
    }

    fn add(&self, purged: Purged) {
        self.sessions.fetch_add(purged.sessions, Ordering::Relaxed);
        self.signin_links
            .fetch_add(purged.signin_links, Ordering::Relaxed);
    }

    /// Rows removed so far: (web sessions, sign-in links).
    pub fn removed(&self) -> (u64, u64) {
        (
            self.sessions.load(Ordering::Relaxed),
            self.signin_links.load(Ordering::Relaxed),
        )
    }

    /// Audit log entries removed so far for being older than the retention.
    pub fn audit_entries_removed(&self) -> u64 {
        self.audit_entries.load(Ordering::Relaxed)
    }

    /// Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let (sessions, links) = self.removed();
        let audit = self.audit_entries_removed();
        let chat = self.chat_messages_removed();
        let _ = writeln!(
            out,
            "# HELP classroom_purged_total Rows deleted by the purge: expired web sessions, spent \
             sign-in links, audit entries and kept chat messages past their retention\n\
             # TYPE classroom_purged_total counter\n\
             classroom_purged_total{{kind=\"web_session\"}} {sessions}\n\
             classroom_purged_total{{kind=\"signin_link\"}} {links}\n\
             classroom_purged_total{{kind=\"audit_entry\"}} {audit}\n\
             classroom_purged_total{{kind=\"chat_message\"}} {chat}"
        );
        if let Some(keeper) = &self.keeper {
            keeper.render(out);
        }
        let _ = writeln!(
            out,
            "# HELP classroom_purge_failures_total Sweeps that failed (database errors)\n\
             # TYPE classroom_purge_failures_total counter\n\
             classroom_purge_failures_total {}",
            self.failures.load(Ordering::Relaxed)
        );
    }
}

/// One sweep at `now`, counted; errors are logged, not returned, as the next sweep retries.
pub async fn purge_once(db: &Db, metrics: &PurgeMetrics, now: i64) -> Option<Purged> {
    match classroom_domain::purge_expired(db, now).await {
        Ok(purged) => {
            metrics.add(purged);
            if purged.total() > 0 {
                info!(
                    sessions = purged.sessions,
                    signin_links = purged.signin_links,
                    "purged expired sign-in state"
                );
            } else {
                debug!("purge: nothing expired");
            }
            Some(purged)
        }
        Err(e) => {
            metrics.failures.fetch_add(1, Ordering::Relaxed);
            warn!("purging expired sessions and sign-in links failed: {e}");
            None
        }
    }
}

/// Deletes audit entries written more than `retention` before `now`, counted; errors are
/// logged, as for [`purge_once`].
pub async fn purge_audit(
    db: &Db,
    metrics: &PurgeMetrics,
    now: i64,
    retention: Duration,
) -> Option<u64> {
    let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    match classroom_domain::purge_audit_before(db, now.saturating_sub(retention)).await {
        Ok(removed) => {
            metrics.audit_entries.fetch_add(removed, Ordering::Relaxed);
            if removed > 0 {
                info!(removed, "purged audit entries past their retention");
            }
            Some(removed)
        }
        Err(e) => {
            metrics.failures.fetch_add(1, Ordering::Relaxed);
            warn!("purging old audit entries failed: {e}");
            None
        }
    }
}

/// Deletes kept chat messages older than their school's retention at `now`, in batches, at most
/// [`CHAT_PURGE_BATCHES`] of them; counted, errors logged as for [`purge_once`].
pub async fn purge_chat(db: &Db, metrics: &PurgeMetrics, now: i64) -> Option<u64> {
    let mut removed = 0;
    for _ in 0..CHAT_PURGE_BATCHES {
        match classroom_domain::purge_kept_chat(db, now, CHAT_PURGE_BATCH).await {
            Ok(n) => {
                removed += n;
                metrics.chat_messages.fetch_add(n, Ordering::Relaxed);
                if n < u64::from(CHAT_PURGE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                metrics.failures.fetch_add(1, Ordering::Relaxed);
                warn!("purging kept chat past its retention failed: {e}");
                return None;
            }
        }
    }
    if removed > 0 {
        info!(removed, "purged kept chat past its school's retention");
    }
    Some(removed)
}

/// Sweeps at start and then every `every`, until the task is aborted (the server does that at
/// shutdown, before closing the database).
pub fn spawn(
    db: Db,
    metrics: Arc<PurgeMetrics>,
    every: Duration,
    audit_retention: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A machine that slept does not need the missed sweeps caught up one after another.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = unix_now();
            purge_once(&db, &metrics, now).await;
            purge_audit(&db, &metrics, now, audit_retention).await;
            purge_chat(&db, &metrics, now).await;
        }
    })
}
