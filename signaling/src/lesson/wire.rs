//! The lesson's messages as they travel on `/ws` (docs/PROTOCOL.md, "Lesson").

use serde::{Deserialize, Serialize};

use crate::token::Role;

/// A lesson action a client sends. `v` and `id` are read by the protocol's decoder and are not
/// part of these.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    RaiseHand,
    /// Without `participant_id` (or with one's own): one's own hand; else a teacher's action.
    LowerHand {
        #[serde(default)]
        participant_id: Option<String>,
    },
    GrantFloor {
        participant_id: String,
        #[serde(default)]
        camera: bool,
    },
    /// Without `participant_id` (or with one's own): giving the floor back.
    RevokeFloor {
        #[serde(default)]
        participant_id: Option<String>,
    },
    Mute {
        participant_id: String,
    },
    MuteAll,
    /// Without `participant_id`: a pupil unmutes itself (only while speaking is open); with it,
    /// a teacher lifts someone's mute.
    Unmute {
        #[serde(default)]
        participant_id: Option<String>,
    },
    SetLesson {
        #[serde(default)]
        speaking: Option<Speaking>,
        #[serde(default)]
        cameras: Option<Cameras>,
        #[serde(default)]
        chat: Option<ChatPolicy>,
        #[serde(default)]
        last_n: Option<u32>,
    },
    /// `participant_id: null` (or absent) ends the spotlight.
    Spotlight {
        participant_id: Option<String>,
    },
    Chat {
        to: ChatTo,
        text: String,
    },
    DeleteChat {
        message_id: String,
    },
    QuickCheck {
        question: String,
        options: Vec<String>,
    },
    AnswerCheck {
        check_id: String,
        option: u32,
    },
    CloseCheck,
}

/// The message types of [`Action`], for the protocol's decoder.
pub const ACTION_TYPES: [&str; 14] = [
    "raise_hand",
    "lower_hand",
    "grant_floor",
    "revoke_floor",
    "mute",
    "mute_all",
    "unmute",
    "set_lesson",
    "spotlight",
    "chat",
    "delete_chat",
    "quick_check",
    "answer_check",
    "close_check",
];

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Speaking {
    /// Pupils are heard only while they hold the floor.
    #[default]
    ByPermission,
    /// Every pupil who is not muted is heard.
    Open,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Cameras {
    /// Pupils' cameras reach teachers only (children's homes).
    #[default]
    TeacherOnly,
    /// Pupils see the cameras of the last-N speakers, the floor and the spotlight.
    Class,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChatPolicy {
    #[default]
    Open,
    /// Pupils may write to the teacher only.
    TeacherOnly,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ChatTo {
    All,
    Teacher,
}

impl ChatTo {
    pub fn label(self) -> &'static str {
        match self {
            ChatTo::All => "all",
            ChatTo::Teacher => "teacher",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct HandEntry {
    pub participant_id: String,
    pub raised_at_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct FloorEntry {
    pub participant_id: String,
    pub camera: bool,
}

/// What the receiving participant itself may do and is.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
pub struct You {
    pub hand: bool,
    pub floor: bool,
    pub camera_to_class: bool,
    pub muted: bool,
    pub may_speak: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct QuickCheckView {
    pub check_id: String,
    pub question: String,
    pub options: Vec<String>,
    /// Pupils: their own answer (`null` until they answer); absent for teachers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_answer: Option<Option<u32>>,
    /// Teachers only: answers per option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Vec<u32>>,
    /// Teachers only: how many answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
}

/// `lesson_state`: the whole lesson as one participant may see it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct LessonState {
    pub speaking: Speaking,
    pub cameras: Cameras,
    pub chat: ChatPolicy,
    pub last_n: u8,
    pub spotlight: Option<String>,
    pub hands: Vec<HandEntry>,
    pub floor: Vec<FloorEntry>,
    pub muted: Vec<String>,
    pub you: You,
    pub quick_check: Option<QuickCheckView>,
}

/// One chat message as clients see it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub message_id: String,
    /// The sender's participant id when it wrote.
    pub from: String,
    pub name: String,
    pub role: Role,
    pub to: ChatTo,
    pub text: String,
    pub at_ms: u64,
}
