//! Glob patterns over sandbox paths, shared by every provider: `*` and `?` within one
//! segment, `**` for zero or more whole segments. Patterns are normalized absolute
//! paths (see `paths`); matching is on segments, so `*` never crosses a `/`.

/// The segments of a normalized path (`/` has none).
pub fn split(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .collect()
}

/// A compiled pattern: its segments and the directory below which matches can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern<'a> {
    segments: Vec<&'a str>,
    /// How many leading segments are literal (no `*` or `?`).
    literal: usize,
}

impl<'a> Pattern<'a> {
    pub fn new(pattern: &'a str) -> Self {
        let segments = split(pattern);
        let literal = segments
            .iter()
            .take_while(|segment| !segment.contains(['*', '?']))
            .count();
        Self { segments, literal }
    }

    /// The deepest directory every match lies in or is (the literal prefix).
    pub fn base(&self) -> String {
        format!("/{}", self.segments[..self.literal].join("/"))
    }

    /// How many segments below `base` a match can be, or `None` when `**` makes it
    /// unbounded.
    pub fn max_depth(&self) -> Option<usize> {
        if self.segments.contains(&"**") {
            None
        } else {
            Some(self.segments.len() - self.literal)
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match_segments(&self.segments, &split(path))
    }
}

/// `**` matches zero or more whole segments; other segments match one segment.
///
/// One pass per pattern segment over the path positions the pattern so far can have
/// reached, so the cost is pattern × path segments. (Trying every way each `**` could
/// split the path is exponential in the number of `**`: a client's pattern like
/// `/**/**/…/x` against a deep path the sandbox made would never finish.)
pub fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    // reached[n]: the pattern segments so far can match exactly the first n segments
    let mut reached = vec![false; path.len() + 1];
    reached[0] = true;
    for segment in pattern {
        let mut next = vec![false; path.len() + 1];
        if *segment == "**" {
            let mut any = false;
            for (n, slot) in next.iter_mut().enumerate() {
                any |= reached[n];
                *slot = any;
            }
        } else {
            for (n, name) in path.iter().enumerate() {
                next[n + 1] = reached[n] && match_segment(segment, name);
            }
        }
        if !next.contains(&true) {
            return false;
        }
        reached = next;
    }
    reached[path.len()]
}

/// `*` matches any run of characters, `?` exactly one, within a segment.
pub fn match_segment(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was and how much of `name` it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_match_like_a_shell() {
        assert!(match_segment("*.txt", "a.txt"));
        assert!(match_segment("a?c", "abc"));
        assert!(!match_segment("a?c", "ac"));
        assert!(match_segment("*", ""));
        assert!(match_segment("a*b*c", "axxbyyc"));
        assert!(!match_segment("a*b*c", "axxbyy"));
        assert!(match_segments(&["**"], &[]));
        assert!(match_segments(&["a", "**", "z"], &["a", "z"]));
        assert!(match_segments(&["a", "**", "z"], &["a", "b", "c", "z"]));
        assert!(!match_segments(&["a", "*"], &["a", "b", "c"]));
    }

    #[test]
    fn many_double_stars_against_a_deep_path_finish() {
        // every `**` used to try every split of the path: this never finished
        let pattern: Vec<&str> = std::iter::repeat_n("**", 40).chain(["x"]).collect();
        let path: Vec<&str> = std::iter::repeat_n("a", 200).collect();
        let started = std::time::Instant::now();
        assert!(!match_segments(&pattern, &path));
        let mut ending = path.clone();
        ending.push("x");
        assert!(match_segments(&pattern, &ending));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn patterns_know_their_base_and_depth() {
        let pattern = Pattern::new("/workspace/src/*.rs");
        assert_eq!(pattern.base(), "/workspace/src");
        assert_eq!(pattern.max_depth(), Some(1));
        assert!(pattern.matches("/workspace/src/main.rs"));
        assert!(!pattern.matches("/workspace/src/a/main.rs"));
        let deep = Pattern::new("/workspace/**/*.txt");
        assert_eq!(deep.base(), "/workspace");
        assert_eq!(deep.max_depth(), None);
        assert!(deep.matches("/workspace/a/b/c.txt"));
        assert_eq!(Pattern::new("/*").base(), "/");
    }
}
