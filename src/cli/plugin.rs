//! The kubectl plugin name: the program's name (`argv[0]`) in; the parsed command line out, with
//! usage and help naming `kubectl mandate` when the binary runs as `kubectl-mandate` (kubectl
//! runs plugins as `kubectl-<name>` from PATH: `ln -s mandate kubectl-mandate`). The commands
//! are the same either way.

use clap::{CommandFactory, FromArgMatches};

use super::Cli;

/// The file name kubectl looks up on PATH for `kubectl mandate`.
pub const PLUGIN_NAME: &str = "kubectl-mandate";

/// Whether `argv0` (a path or a bare name) names the kubectl plugin.
pub fn is_plugin(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.trim_end_matches(".exe") == PLUGIN_NAME)
}

/// Parses the process's arguments, exiting with clap's usage message on error (as
/// `Cli::parse` does).
pub fn parse() -> Cli {
    let plugin = std::env::args_os()
        .next()
        .is_some_and(|argv0| is_plugin(&argv0));
    let mut command = Cli::command();
    if plugin {
        command = command.bin_name("kubectl mandate");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name_wherever_it_lives() {
        assert!(is_plugin("kubectl-mandate".as_ref()));
        assert!(is_plugin("/usr/local/bin/kubectl-mandate".as_ref()));
        assert!(!is_plugin("/usr/local/bin/mandate".as_ref()));
        assert!(!is_plugin("kubectl-mandate-old".as_ref()));
    }
}
