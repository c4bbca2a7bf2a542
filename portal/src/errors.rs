//! How domain errors become HTTP answers: every conversion in one place, so a handler can use
//! `?` and the same failure always gets the same status and code.

use axum::http::StatusCode;
use classroom_domain::{DbError, LessonError, MintError, SetModeError, TeacherActionError};
use tracing::warn;

use crate::ApiError;

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        warn!("database error: {e}");
        ApiError::internal()
    }
}

impl From<TeacherActionError> for ApiError {
    fn from(e: TeacherActionError) -> Self {
        match e {
            TeacherActionError::NotTeacher => ApiError::forbidden(),
            TeacherActionError::NotEnrolled => {
                ApiError::bad_request("pupil: not enrolled in this lesson")
            }
            TeacherActionError::Db(e) => e.into(),
        }
    }
}

impl From<SetModeError> for ApiError {
    fn from(e: SetModeError) -> Self {
        match e {
            SetModeError::Denied(_) => ApiError::forbidden(),
            e @ (SetModeError::BadRange | SetModeError::RangeTooLong) => {
                ApiError::bad_request(format!("from/to: {e}"))
            }
            e @ SetModeError::ReasonTooLong => ApiError::bad_request(format!("reason: {e}")),
            e @ (SetModeError::CutoffPassed(_) | SetModeError::PastDate(_)) => {
                ApiError::new(StatusCode::CONFLICT, "cutoff_passed", e.to_string())
            }
            SetModeError::Db(e) => e.into(),
        }
    }
}

impl From<LessonError> for ApiError {
    fn from(e: LessonError) -> Self {
        match e {
            LessonError::Db(e) => e.into(),
            e @ (LessonError::MediaRoomTaken(_) | LessonError::DuplicateId(_)) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            e => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<MintError> for ApiError {
    fn from(e: MintError) -> Self {
        match e {
            MintError::UnknownPerson(_) => ApiError::not_found("person"),
            MintError::Disabled => ApiError::bad_request("person: the account is disabled"),
            MintError::Refused(why) => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("No sign-in link: {why}."),
            ),
            MintError::Db(e) => e.into(),
        }
    }
}
