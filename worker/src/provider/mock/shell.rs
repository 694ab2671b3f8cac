//! The mock shell's parser: a command line into a list of simple commands joined by
//! `;`, `&&` and `||`, each with words and redirections. Variables are kept as parts
//! of words and expanded when the command runs, so `cd` and `$?` see the state of the
//! moment.
//!
//! Supported: single quotes (literal), double quotes (`$VAR`, `${VAR}`, and the escapes
//! `\"`, `\\`, `\$`, `` \` ``), backslash escapes outside quotes, `$VAR`, `${VAR}`, `$?`,
//! newlines as `;`, `#` comments, and the redirections `>`, `>>`, `2>`, `2>>`, `>&2`,
//! `1>&2`, `2>&1`. Pipes, background jobs and input redirection are refused as syntax
//! errors rather than misread.

use std::fmt;

/// How a command is joined to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    /// First command, or after `;`: always runs.
    Always,
    /// After `&&`: runs if the last status is 0.
    And,
    /// After `||`: runs if the last status is not 0.
    Or,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub connector: Connector,
    pub command: Command,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
}

impl Command {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.redirects.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word {
    pub parts: Vec<Part>,
    /// Had quotes or escapes: kept even when it expands to nothing.
    pub quoted: bool,
}

impl Word {
    /// The word with variables looked up in `lookup`.
    pub fn expand(&self, lookup: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(name) => out.push_str(&lookup(name)),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Var(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub fd: Fd,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File {
        word: Word,
        append: bool,
    },
    /// `>&N`: to wherever the other descriptor points now.
    Dup(Fd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(String);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "syntax error: {}", self.0)
    }
}

fn error<T>(message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError(message.into()))
}

pub fn parse(line: &str) -> Result<Vec<Item>, SyntaxError> {
    let mut parser = Parser {
        chars: line.chars().collect(),
        pos: 0,
    };
    parser.list()
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    fn list(&mut self) -> Result<Vec<Item>, SyntaxError> {
        let mut items = Vec::new();
        let mut connector = Connector::Always;
        let mut command = Command::default();
        // The operator that ended the last command, if it needs a command after it.
        let mut dangling: Option<&'static str> = None;
        loop {
            while matches!(self.peek(), Some(' ' | '\t')) {
                self.pos += 1;
            }
            let Some(c) = self.peek() else { break };
            match c {
                ';' | '\n' | '&' | '|' => {
                    let (token, next) = self.operator()?;
                    if command.is_empty() {
                        if c == '\n' {
                            continue;
                        }
                        return error(format!("unexpected `{token}`"));
                    }
                    items.push(Item {
                        connector,
                        command: std::mem::take(&mut command),
                    });
                    connector = next;
                    dangling = (next != Connector::Always).then_some(token);
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '<' => return error("input redirection is not supported"),
                '>' => command.redirects.push(self.redirect()?),
                '1' | '2' if self.peek_at(1) == Some('>') => {
                    command.redirects.push(self.redirect()?);
                }
                _ => command.words.push(self.word()?),
            }
        }
        if !command.is_empty() {
            items.push(Item { connector, command });
        } else if let Some(token) = dangling {
            return error(format!("unexpected end of line after `{token}`"));
        }
        Ok(items)
    }

    fn operator(&mut self) -> Result<(&'static str, Connector), SyntaxError> {
        let first = self.bump();
        let doubled = self.peek() == first;
        match (first, doubled) {
            (Some(';'), false) => Ok((";", Connector::Always)),
            (Some('\n'), _) => Ok(("newline", Connector::Always)),
            (Some('&'), true) => {
                self.pos += 1;
                Ok(("&&", Connector::And))
            }
            (Some('|'), true) => {
                self.pos += 1;
                Ok(("||", Connector::Or))
            }
            (Some(';'), true) => error("unexpected `;;`"),
            (Some('&'), false) => error("background jobs (`&`) are not supported"),
            _ => error("pipes (`|`) are not supported"),
        }
    }

    fn redirect(&mut self) -> Result<Redirect, SyntaxError> {
        let fd = match self.peek() {
            Some('2') => Fd::Stderr,
            _ => Fd::Stdout,
        };
        if self.peek() != Some('>') {
            self.pos += 1;
        }
        self.pos += 1; // '>'
        let append = self.peek() == Some('>');
        if append {
            self.pos += 1;
        }
        if self.peek() == Some('&') {
            self.pos += 1;
            let target = match (self.bump(), append) {
                (Some('1'), false) => Fd::Stdout,
                (Some('2'), false) => Fd::Stderr,
                _ => return error("unsupported redirection (only >&1 and >&2)"),
            };
            return Ok(Redirect {
                fd,
                target: Target::Dup(target),
            });
        }
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        match self.peek() {
            None | Some(';' | '\n' | '&' | '|' | '<' | '>' | '#') => {
                error("a redirection needs a file name")
            }
            Some(_) => Ok(Redirect {
                fd,
                target: Target::File {
                    word: self.word()?,
                    append,
                },
            }),
        }
    }

    fn word(&mut self) -> Result<Word, SyntaxError> {
        let mut word = Word::default();
        let mut literal = String::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' => break,
                '\'' => {
                    self.pos += 1;
                    word.quoted = true;
                    loop {
                        match self.bump() {
                            None => return error("unterminated single quote"),
                            Some('\'') => break,
                            Some(c) => literal.push(c),
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    word.quoted = true;
                    loop {
                        match self.bump() {
                            None => return error("unterminated double quote"),
                            Some('"') => break,
                            Some('\\') => match self.peek() {
                                Some(c @ ('"' | '\\' | '$' | '`')) => {
                                    self.pos += 1;
                                    literal.push(c);
                                }
                                _ => literal.push('\\'),
                            },
                            Some('$') => self.dollar(&mut word, &mut literal)?,
                            Some(c) => literal.push(c),
                        }
                    }
                }
                '\\' => {
                    self.pos += 1;
                    word.quoted = true;
                    match self.bump() {
                        Some('\n') => {}
                        Some(c) => literal.push(c),
                        None => literal.push('\\'),
                    }
                }
                '$' => {
                    self.pos += 1;
                    self.dollar(&mut word, &mut literal)?;
                }
                c => {
                    self.pos += 1;
                    literal.push(c);
                }
            }
        }
        if !literal.is_empty() {
            word.parts.push(Part::Literal(literal));
        }
        Ok(word)
    }

    /// After a `$`: a variable, or a literal `$` when no name follows.
    fn dollar(&mut self, word: &mut Word, literal: &mut String) -> Result<(), SyntaxError> {
        let name = match self.peek() {
            Some('{') => {
                self.pos += 1;
                let mut name = String::new();
                loop {
                    match self.bump() {
                        None => return error("unterminated `${`"),
                        Some('}') => break,
                        Some(c) => name.push(c),
                    }
                }
                if !is_name(&name) && name != "?" {
                    return error(format!("bad substitution `${{{name}}}`"));
                }
                name
            }
            Some('?') => {
                self.pos += 1;
                "?".to_owned()
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let mut name = String::new();
                while let Some(c) = self
                    .peek()
                    .filter(|c| *c == '_' || c.is_ascii_alphanumeric())
                {
                    self.pos += 1;
                    name.push(c);
                }
                name
            }
            _ => {
                literal.push('$');
                return Ok(());
            }
        };
        if !literal.is_empty() {
            word.parts.push(Part::Literal(std::mem::take(literal)));
        }
        word.parts.push(Part::Var(name));
        Ok(())
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<String>> {
        parse(line)
            .unwrap()
            .iter()
            .map(|item| {
                let words = &item.command.words;
                words
                    .iter()
                    .map(|w| w.expand(|n| format!("<{n}>")))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn quotes_escapes_and_variables() {
        assert_eq!(
            words(r#"echo 'a b' "c $X d" e\ f"#),
            [["echo", "a b", "c <X> d", "e f"]]
        );
        assert_eq!(
            words(r#"echo "\"\\\$x\n" '$Y' ${Z}z $?"#),
            [["echo", r#""\$x\n"#, "$Y", "<Z>z", "<?>"]]
        );
        assert_eq!(words("echo $ 1$"), [["echo", "$", "1$"]]);
        assert_eq!(words("echo ''"), [["echo", ""]]);
    }

    #[test]
    fn lists_and_comments() {
        let items = parse("a; b && c || d # e\nf;").unwrap();
        let connectors: Vec<Connector> = items.iter().map(|item| item.connector).collect();
        use Connector::*;
        assert_eq!(connectors, [Always, Always, And, Or, Always]);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn redirections() {
        let items = parse("echo a>f 2>>g >&2 2>&1 1>&2").unwrap();
        let redirects = &items[0].command.redirects;
        assert_eq!(redirects.len(), 5);
        assert_eq!(redirects[0].fd, Fd::Stdout);
        assert!(matches!(
            &redirects[1].target,
            Target::File { append: true, .. }
        ));
        assert_eq!(redirects[1].fd, Fd::Stderr);
        assert_eq!(redirects[2].target, Target::Dup(Fd::Stderr));
        assert_eq!(redirects[3].fd, Fd::Stderr);
        assert_eq!(redirects[3].target, Target::Dup(Fd::Stdout));
        assert_eq!(redirects[4].fd, Fd::Stdout);
        assert_eq!(words("echo a2>f"), [["echo", "a2"]]);
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "echo 'a",
            "echo \"a",
            "echo a &&",
            "|| b",
            "; a",
            "a | b",
            "a &",
            "echo >",
            "a ;;",
            "echo ${",
            "echo ${1x}",
            "cat < f",
            "a >&3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
