//! The gate's side of chat retention: whether a lesson room's chat is kept (the school's
//! choice, asked when the room's lesson starts), and one writer task that stores and deletes
//! kept messages in the order the lesson produced them, off the signaling path.
//!
//! The queue to the writer is bounded: a database that stalls costs kept messages (each one
//! counted and logged), never memory or a lesson's latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use classroom_domain::{Db, KeptLesson, NewKeptMessage};
use classroom_signaling::lesson::wire::ChatMessage;
use classroom_signaling::token::Role;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Messages and deletions waiting for the writer; beyond this they are dropped.
pub const QUEUE: usize = 4096;
/// Rooms whose lesson the writer remembers; the memory is emptied when it grows past this.
const ROOMS_REMEMBERED: usize = 1024;

enum Job {
    Keep {
        room: String,
        message: ChatMessage,
        identity: String,
    },
    Delete {
        room: String,
        message_id: String,
    },
    /// Answered once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct KeeperMetrics {
    kept: AtomicU64,
    deleted: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl KeeperMetrics {
    /// (kept, deleted, dropped because the queue was full, failed in the database)
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.kept.load(Ordering::Relaxed),
            self.deleted.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (kept, deleted, dropped, failed) = self.counts();
        let _ = writeln!(
            out,
            "# HELP classroom_chat_kept_total Lesson chat messages of schools that keep chat: \
             stored, deleted by a teacher, dropped (writer queue full), failed (database)\n\
             # TYPE classroom_chat_kept_total counter\n\
             classroom_chat_kept_total{{outcome=\"stored\"}} {kept}\n\
             classroom_chat_kept_total{{outcome=\"deleted\"}} {deleted}\n\
             classroom_chat_kept_total{{outcome=\"dropped\"}} {dropped}\n\
             classroom_chat_kept_total{{outcome=\"failed\"}} {failed}"
        );
    }
}

pub struct ChatKeeper {
    db: Db,
    jobs: mpsc::Sender<Job>,
    pub metrics: Arc<KeeperMetrics>,
}

impl ChatKeeper {
    /// Must be called inside a tokio runtime: it starts the writer, which ends when the keeper
    /// is dropped.
    pub fn new(db: Db) -> ChatKeeper {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let metrics = Arc::new(KeeperMetrics::default());
        tokio::spawn(write(db.clone(), queue, metrics.clone()));
        ChatKeeper { db, jobs, metrics }
    }

    /// Whether `room`'s chat is kept now; on doubt (a database error), not.
    pub async fn keeps(&self, room: &str) -> bool {
        match classroom_domain::keeping_room(&self.db, room).await {
            Ok(k) => k.is_some(),
            Err(e) => {
                warn!(
                    room,
                    "chat retention: cannot read the school's choice, not keeping: {e}"
                );
                false
            }
        }
    }

    pub fn keep(&self, room: &str, message: &ChatMessage, identity: &str) {
        self.queue(Job::Keep {
            room: room.to_owned(),
            message: message.clone(),
            identity: identity.to_owned(),
        });
    }

    pub fn delete(&self, room: &str, message_id: &str) {
        self.queue(Job::Delete {
            room: room.to_owned(),
            message_id: message_id.to_owned(),
        });
    }

    /// Waits until everything queued so far is written (shutdown, tests).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    fn queue(&self, job: Job) {
        if let Err(e) = self.jobs.try_send(job) {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "its queue is full",
                mpsc::error::TrySendError::Closed(_) => "it has stopped",
            };
            warn!("chat retention: the writer cannot take a message, {why}; not kept");
        }
    }
}

async fn write(db: Db, mut jobs: mpsc::Receiver<Job>, metrics: Arc<KeeperMetrics>) {
    // Room → its lesson and school: signaling asked whether to keep when the lesson started,
    // so the writer only needs to know where a room's messages go.
    let mut rooms: HashMap<String, KeptLesson> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        let (room, result) = match job {
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Job::Keep {
                room,
                message,
                identity,
            } => {
                let Some(lesson) = lesson_of(&db, &mut rooms, &room).await else {
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let m = NewKeptMessage {
                    message_id: &message.message_id,
                    sender_id: &identity,
                    sender_name: &message.name,
                    sender_role: role_name(message.role),
                    addressee: message.to.label(),
                    text: &message.text,
                    sent_at: i64::try_from(message.at_ms / 1000).unwrap_or(i64::MAX),
                };
                let r = classroom_domain::keep_message(&db, &lesson, &m).await;
                if r.is_ok() {
                    metrics.kept.fetch_add(1, Ordering::Relaxed);
                }
                (room, r.map(|_| ()))
            }
            Job::Delete { room, message_id } => {
                let Some(lesson) = lesson_of(&db, &mut rooms, &room).await else {
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let r = classroom_domain::delete_kept_message(&db, &lesson.lesson_id, &message_id)
                    .await;
                if let Ok(true) = r {
                    metrics.deleted.fetch_add(1, Ordering::Relaxed);
                }
                (room, r.map(|_| ()))
            }
        };
        if let Err(e) = result {
            metrics.failed.fetch_add(1, Ordering::Relaxed);
            warn!(room, "chat retention: cannot write to the database: {e}");
        }
    }
}

async fn lesson_of(
    db: &Db,
    rooms: &mut HashMap<String, KeptLesson>,
    room: &str,
) -> Option<KeptLesson> {
    if let Some(k) = rooms.get(room) {
        return Some(k.clone());
    }
    let found = async {
        let Some(lesson) = classroom_domain::lesson_by_media_room(db, room).await? else {
            return Ok(None);
        };
        let school = classroom_domain::class_school(db, &lesson.class_id).await?;
        Ok::<_, classroom_domain::DbError>(school.map(|school_id| KeptLesson {
            lesson_id: lesson.id,
            school_id,
        }))
    }
    .await;
    match found {
        Ok(Some(k)) => {
            if rooms.len() >= ROOMS_REMEMBERED {
                rooms.clear();
            }
            rooms.insert(room.to_owned(), k.clone());
            Some(k)
        }
        Ok(None) => {
            warn!(
                room,
                "chat retention: the room is no lesson of a school; not kept"
            );
            None
        }
        Err(e) => {
            warn!(room, "chat retention: cannot find the room's lesson: {e}");
            None
        }
    }
}

/// The role as the protocol writes it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Teacher => "teacher",
        Role::Student => "student",
        Role::Observer => "observer",
        Role::PartnerLecturer => "partner_lecturer",
        Role::PartnerLink => "partner_link",
    }
}
