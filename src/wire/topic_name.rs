//! Kafka's rules for topic names, checked at startup instead of at the first produce.

/// Kafka's limit on a topic name's length.
const MAX_TOPIC_LEN: usize = 249;

fn legal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a whole topic name.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || name == "." || name == ".." {
        return Err(format!(
            "\"{name}\" is not a valid Kafka topic name (1 to {MAX_TOPIC_LEN} characters, not \".\" or \"..\")"
        ));
    }
    check_chars(name)
}

/// Checks a reply-topic suffix, which becomes part of a topic name.
pub fn check_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() {
        return Err("the reply-topic suffix is empty".to_string());
    }
    check_chars(suffix)
}

fn check_chars(name: &str) -> Result<(), String> {
    match name.chars().find(|c| !legal_char(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "\"{name}\" has the character '{c}', but Kafka topic names allow only ASCII letters, digits, '.', '_' and '-'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        assert!(check("payment_response_prod1").is_ok());
        assert!(check("payment_request-dlt").is_ok());
    }

    #[test]
    fn rejects_illegal_names() {
        assert!(check("").is_err());
        assert!(check("..").is_err());
        assert!(check("a b").is_err());
        assert!(check(&"x".repeat(250)).is_err());
        assert!(check_suffix("").is_err());
        assert!(check_suffix("a:b").is_err());
    }
}
