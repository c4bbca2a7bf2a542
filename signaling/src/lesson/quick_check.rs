//! The quick check: one question with 2–4 answers, at most one open at a time.

use std::collections::HashMap;

use super::wire::QuickCheckView;

pub const MAX_QUESTION_CHARS: usize = 200;
pub const MAX_OPTION_CHARS: usize = 40;
pub const MIN_OPTIONS: usize = 2;
pub const MAX_OPTIONS: usize = 4;

#[derive(Debug, Clone)]
pub struct QuickCheck {
    pub check_id: String,
    question: String,
    options: Vec<String>,
    /// identity → option index. At most one per identity; a pupil may change it.
    answers: HashMap<String, u32>,
}

/// Checks a teacher's question; the error is the message for `bad_request`.
pub fn open(check_id: String, question: &str, options: &[String]) -> Result<QuickCheck, String> {
    let question = question.trim();
    let n = question.chars().count();
    if n == 0 || n > MAX_QUESTION_CHARS {
        return Err(format!(
            "the question must have 1 to {MAX_QUESTION_CHARS} characters, this one has {n}"
        ));
    }
    if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&options.len()) {
        return Err(format!(
            "a quick check has {MIN_OPTIONS} to {MAX_OPTIONS} options, this one has {}",
            options.len()
        ));
    }
    let mut cleaned = Vec::with_capacity(options.len());
    for (i, o) in options.iter().enumerate() {
        let o = o.trim();
        let n = o.chars().count();
        if n == 0 || n > MAX_OPTION_CHARS {
            return Err(format!(
                "option {i} must have 1 to {MAX_OPTION_CHARS} characters, it has {n}"
            ));
        }
        cleaned.push(o.to_owned());
    }
    Ok(QuickCheck {
        check_id,
        question: question.to_owned(),
        options: cleaned,
        answers: HashMap::new(),
    })
}

impl QuickCheck {
    /// Records `identity`'s answer; the error is the message for `bad_request`.
    pub fn answer(&mut self, identity: &str, option: u32) -> Result<(), String> {
        if option as usize >= self.options.len() {
            return Err(format!(
                "option {option} does not exist; this check has {} options, numbered from 0",
                self.options.len()
            ));
        }
        self.answers.insert(identity.to_owned(), option);
        Ok(())
    }

    /// The check as a teacher (tally) or a pupil (own answer) sees it.
    pub fn view(&self, identity: &str, teacher: bool) -> QuickCheckView {
        let (your_answer, tally, answered) = if teacher {
            let mut tally = vec![0u32; self.options.len()];
            for a in self.answers.values() {
                if let Some(t) = tally.get_mut(*a as usize) {
                    *t += 1;
                }
            }
            (None, Some(tally), Some(self.answers.len() as u32))
        } else {
            (Some(self.answers.get(identity).copied()), None, None)
        };
        QuickCheckView {
            check_id: self.check_id.clone(),
            question: self.question.clone(),
            options: self.options.clone(),
            your_answer,
            tally,
            answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn questions_and_options_are_bounded() {
        assert!(open("q1".into(), "わかった？", &opts(&["わかった", "もう一度"])).is_ok());
        assert!(open("q1".into(), " ", &opts(&["a", "b"])).is_err());
        assert!(open("q1".into(), &"x".repeat(201), &opts(&["a", "b"])).is_err());
        assert!(open("q1".into(), "q", &opts(&["a"])).is_err());
        assert!(open("q1".into(), "q", &opts(&["a", "b", "c", "d", "e"])).is_err());
        assert!(open("q1".into(), "q", &opts(&["a", ""])).is_err());
        assert!(open("q1".into(), "q", &opts(&["a", &"y".repeat(41)])).is_err());
    }

    #[test]
    fn one_answer_per_identity_and_the_tally_only_for_teachers() {
        let mut q = open("q1".into(), "q", &opts(&["a", "b"])).unwrap();
        q.answer("s1", 0).unwrap();
        q.answer("s1", 1).unwrap();
        q.answer("s2", 1).unwrap();
        assert!(q.answer("s3", 2).is_err());
        let t = q.view("t", true);
        assert_eq!(
            (t.tally, t.answered, t.your_answer),
            (Some(vec![0, 2]), Some(2), None)
        );
        let p = q.view("s1", false);
        assert_eq!(
            (p.tally, p.answered, p.your_answer),
            (None, None, Some(Some(1)))
        );
        assert_eq!(q.view("s9", false).your_answer, Some(None));
    }
}
