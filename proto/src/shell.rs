//! Shell quoting, shared by the worker (which turns an exec's command and arguments
//! into one `sh -c` line) and the control plane (which shows the same line in the
//! audit log), so both always agree on what was run.

/// `value` in single quotes, safe as one word of a POSIX shell line.
pub fn single_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `command` followed by every argument quoted: the line a shell-mode exec runs.
pub fn shell_line(command: &str, args: &[String]) -> String {
    let mut line = command.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&single_quote(arg));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arg_is_one_word() {
        let args = ["a b".to_owned(), "it's".to_owned(), "$HOME".to_owned()];
        assert_eq!(shell_line("echo", &args), r"echo 'a b' 'it'\''s' '$HOME'");
        assert_eq!(shell_line("ls -la", &[]), "ls -la");
    }
}
