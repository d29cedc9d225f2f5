//! Shell completion scripts, generated from the command line definition.

use std::io::Write;

use clap_complete::Shell;

/// Writes the completion script for `shell` to stdout (`promql-cli completions bash`).
pub fn print_completions(shell: Shell, cmd: &mut clap::Command) {
    let mut out = std::io::stdout().lock();
    write_completions(shell, cmd, &mut out);
    // A closed pipe is not worth reporting; `generate` itself panics on other write errors.
    let _ = out.flush();
}

/// Writes the completion script of `shell` for `cmd` to `out`.
fn write_completions(shell: Shell, cmd: &mut clap::Command, out: &mut dyn Write) {
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name()).to_owned();
    clap_complete::generate(shell, cmd, name, &mut BrokenPipeQuiet(out));
}

/// A writer that swallows a closed pipe: `clap_complete::generate` panics on any write
/// error, and `promql-cli completions bash | head` should not.
struct BrokenPipeQuiet<'a>(&'a mut dyn Write);

impl Write for BrokenPipeQuiet<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn script(shell: Shell) -> String {
        let mut cmd = crate::Cli::command();
        let mut out = Vec::new();
        write_completions(shell, &mut cmd, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_shell_names_the_binary_and_its_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let s = script(shell);
            assert!(s.contains("promql-cli"), "{shell}: {s}");
            for sub in ["query", "record", "serve", "parse", "test"] {
                assert!(s.contains(sub), "{shell} lacks {sub}");
            }
            assert!(s.contains("enable-feature"), "{shell} lacks --enable-feature");
        }
    }

    #[test]
    fn bash_script_completes_flags_of_query() {
        let s = script(Shell::Bash);
        assert!(s.contains("complete -F"), "no complete line");
        // The option list of `query`.
        assert!(
            s.lines().any(|l| l.contains("--step") && l.contains("--prometheus") && l.contains("--format")),
            "no query options"
        );
    }

    #[test]
    fn closed_pipe_is_quiet() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let mut cmd = crate::Cli::command();
        write_completions(Shell::Bash, &mut cmd, &mut Closed);
    }
}
