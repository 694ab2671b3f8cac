//! The mock provider's shell parser (every shell-mode exec line on a mock sandbox) and
//! the quoting that turns an exec's command and args into that line.
//!
//! Input: first byte 0: the rest is args separated by NUL, quoted with
//! `berth_proto::shell::shell_line` after `echo`; otherwise the rest is a shell line.
//!
//! Checks: nothing panics; a parsed line, printed back in canonical form by the
//! printer here, parses to the same commands (so the parser keeps everything it
//! accepts, and quoting, variables, operators and redirections are read one way
//! only); quoted args come back as exactly one literal word each.
#![no_main]

use berth_worker::fuzzing::{Command, Connector, Fd, Item, Part, Target, Word, parse_shell};
use libfuzzer_sys::fuzz_target;

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn print_word(word: &Word) -> String {
    if word.parts.is_empty() {
        // only a quoted word can be empty
        assert!(word.quoted);
        return "''".to_owned();
    }
    let mut out = String::new();
    for part in &word.parts {
        match part {
            Part::Literal(text) if word.quoted => out.push_str(&single_quoted(text)),
            Part::Literal(text) => out.push_str(text),
            Part::Var(name) if word.quoted => out.push_str(&format!("\"${{{name}}}\"")),
            Part::Var(name) => out.push_str(&format!("${{{name}}}")),
        }
    }
    out
}

fn fd(fd: Fd) -> &'static str {
    match fd {
        Fd::Stdout => "1",
        Fd::Stderr => "2",
    }
}

fn print_command(command: &Command) -> String {
    let mut out: Vec<String> = command.words.iter().map(print_word).collect();
    for redirect in &command.redirects {
        out.push(match &redirect.target {
            Target::Dup(to) => format!("{}>&{}", fd(redirect.fd), fd(*to)),
            Target::File { word, append } => format!(
                "{}>{} {}",
                fd(redirect.fd),
                if *append { ">" } else { "" },
                print_word(word)
            ),
        });
    }
    out.join(" ")
}

fn print(items: &[Item]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        match (i, item.connector) {
            (0, connector) => assert_eq!(connector, Connector::Always),
            (_, Connector::Always) => out.push_str(" ; "),
            (_, Connector::And) => out.push_str(" && "),
            (_, Connector::Or) => out.push_str(" || "),
        }
        out.push_str(&print_command(&item.command));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode == 0 {
        let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
        let line = berth_proto::shell::shell_line("echo", &args);
        let items = parse_shell(&line).expect("a quoted line parses");
        assert_eq!(items.len(), 1, "{line:?}");
        let words = &items[0].command.words;
        assert!(items[0].command.redirects.is_empty());
        assert_eq!(words.len(), args.len() + 1);
        for (word, arg) in words[1..].iter().zip(&args) {
            assert!(word.quoted);
            let literal: Vec<Part> = if arg.is_empty() {
                vec![]
            } else {
                vec![Part::Literal(arg.clone())]
            };
            assert_eq!(word.parts, literal, "{arg:?} in {line:?}");
        }
        return;
    }
    let Ok(items) = parse_shell(text) else { return };
    for item in &items {
        let command = &item.command;
        assert!(!command.words.is_empty() || !command.redirects.is_empty());
    }
    let printed = print(&items);
    let again = parse_shell(&printed)
        .unwrap_or_else(|err| panic!("{text:?} printed as {printed:?} does not parse: {err}"));
    assert_eq!(
        items, again,
        "{text:?} printed as {printed:?} parses otherwise"
    );
});
