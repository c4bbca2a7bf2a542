//! Invite links: the page for the role, with a join token in the query. Links are the only way
//! into a lesson, so they are what `classroom invite` and the startup banner print.

use classroom_signaling::token::Role;

pub use classroom_portal::page_for;

/// `{base}/teacher.html?token=...`. JWTs are base64url and dots, so the token needs no escaping.
pub fn link(base_url: &str, role: Role, token: &str) -> String {
    format!(
        "{}/{}?token={token}",
        base_url.trim_end_matches('/'),
        page_for(role)
    )
}

/// An identity for a person known only by name: readable in logs, and distinct for two pupils
/// with the same name, who would otherwise replace each other in the room.
pub fn default_identity(name: &str, role: Role) -> String {
    const MAX_SLUG: usize = 32;
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    // Names in other scripts leave no ASCII; the role still tells a reader who this is.
    let stem = if slug.is_empty() {
        role.to_string()
    } else {
        slug.to_owned()
    };
    format!("{stem}-{}", random_suffix())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    (0..6)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_open_the_role_page() {
        assert_eq!(
            link("http://h:1/", Role::Teacher, "a.b.c"),
            "http://h:1/teacher.html?token=a.b.c"
        );
        assert_eq!(
            link("https://x/p", Role::Student, "t"),
            "https://x/p/pupil.html?token=t"
        );
        assert_eq!(
            link("https://x", Role::Observer, "t"),
            "https://x/pupil.html?token=t"
        );
    }

    #[test]
    fn identities_are_slugs_with_a_random_suffix() {
        let id = default_identity("Tanaka  Sensei!", Role::Teacher);
        assert!(id.starts_with("tanaka-sensei-"), "{id}");
        assert_eq!(id.len(), "tanaka-sensei-".len() + 6);
        assert_ne!(
            default_identity("Sato", Role::Student),
            default_identity("Sato", Role::Student)
        );
        assert!(default_identity("佐藤", Role::Student).starts_with("student-"));
        assert!(default_identity(&"x".repeat(100), Role::Student).len() <= 32 + 7);
    }
}
