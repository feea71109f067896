use std::fmt;

use rand::Rng;

/// Crockford's base32 alphabet: no I, L, O or U, so references survive being read aloud or retyped.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_CHARS: usize = 8;

/// A ticket reference such as `SUP-7K3M9QXD`: a prefix and 40 random bits, neither sequential nor
/// guessable (drawn from the operating system's CSPRNG via `rand::thread_rng`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference(String);

impl Reference {
    pub fn generate(prefix: &str) -> Reference {
        let mut rng = rand::thread_rng();
        let mut s = String::with_capacity(prefix.len() + 1 + RANDOM_CHARS);
        s.push_str(prefix);
        s.push('-');
        for _ in 0..RANDOM_CHARS {
            s.push(CROCKFORD[rng.gen_range(0..32)] as char);
        }
        Reference(s)
    }

    /// Accepts what [`Reference::generate`] makes, with any configured prefix; refuses anything else
    /// before it reaches a query.
    pub fn parse(s: &str) -> Option<Reference> {
        let (prefix, random) = s.rsplit_once('-')?;
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 10
            && prefix.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let random_ok = random.len() == RANDOM_CHARS && random.bytes().all(|b| CROCKFORD.contains(&b));
        (prefix_ok && random_ok).then(|| Reference(s.to_owned()))
    }

    /// The same prefix with new random characters, for the rare collision.
    pub fn regenerate(&self) -> Reference {
        let prefix = self.0.rsplit_once('-').map_or("SUP", |(p, _)| p);
        Reference::generate(prefix)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_references_parse_and_differ() {
        let refs: HashSet<String> = (0..10_000).map(|_| Reference::generate("LV").0).collect();
        assert_eq!(refs.len(), 10_000);
        for r in refs.iter().take(100) {
            assert!(r.starts_with("LV-"));
            assert_eq!(Reference::parse(r).unwrap().as_str(), r);
        }
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "SUP",
            "SUP-",
            "SUP-1234567",
            "SUP-123456789",
            "sup-12345678",
            "SUP-1234567I",
            "SUP-12345678'",
            "-12345678",
        ] {
            assert!(Reference::parse(bad).is_none(), "{bad}");
        }
    }
}
