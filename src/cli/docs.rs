//! `ckpt completions` and `ckpt man`: shell completions and man pages
//! generated from the command-line definitions.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory};

use super::{Cli, CommandResult, Failure};

/// Print a shell completion script.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ckpt completions bash > /usr/share/bash-completion/completions/ckpt\n  ckpt completions zsh > /usr/local/share/zsh/site-functions/_ckpt\n  ckpt completions fish > /usr/share/fish/vendor_completions.d/ckpt.fish"
)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

pub fn completions(args: CompletionsArgs) -> CommandResult {
    let mut command = Cli::command();
    // Rendered into memory first: clap_complete panics when a write fails,
    // and a closed pipe on stdout is not an error.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ckpt", &mut script);
    let _ = io::stdout().lock().write_all(&script);
    Ok(())
}

/// Print the ckpt(1) man page, or write one page per command into a directory.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ckpt man | man -l -\n  ckpt man --dir /usr/local/share/man/man1"
)]
pub struct ManArgs {
    /// Write ckpt.1 and ckpt-COMMAND.1 pages into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn man(args: ManArgs) -> CommandResult {
    let command = Cli::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("failed to render the man page")
                .map_err(Failure::failed)?;
            let _ = io::stdout().lock().write_all(&page);
            Ok(())
        }
        Some(dir) => write_pages(&command, &dir).map_err(Failure::failed),
    }
}

/// Writes `ckpt.1` and one page per visible subcommand into `dir`.
fn write_pages(command: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut pages = vec![("ckpt".to_string(), command.clone())];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ckpt-{}", sub.get_name());
        // clap names take static strings; a handful of page names leak once per call.
        let page_name: &'static str = Box::leak(name.clone().into_boxed_str());
        pages.push((name, sub.clone().name(page_name)));
    }
    for (name, page_command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(page_command)
            .render(&mut page)
            .with_context(|| format!("failed to render {name}.1"))?;
        std::fs::write(&path, page)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Renders the command-line reference (docs/cli.md) from the clap definitions.
#[cfg(test)]
fn reference_markdown() -> String {
    let mut command = Cli::command().term_width(100);
    command.build();
    let mut text = String::from(
        "# Command-line reference\n\n\
         Generated from `ckpt --help`; `CKPT_UPDATE_DOCS=1 cargo test --lib cli_reference` rewrites it.\n\n\
         Exit codes: 0 success, 1 the operation failed, 2 bad usage or input (an unknown\n\
         container, checkpoint or debug container, an invalid value). Errors print one line on\n\
         stderr, starting with `ckpt: `.\n",
    );
    append_help(&mut text, &mut command, "ckpt");
    text
}

#[cfg(test)]
fn append_help(text: &mut String, command: &mut clap::Command, path: &str) {
    let help = command.render_long_help().to_string();
    text.push_str(&format!(
        "\n## {path}\n\n```text\n{}\n```\n",
        help.trim_end()
    ));
    let names: Vec<String> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        if let Some(sub) = command.find_subcommand_mut(&name) {
            append_help(text, sub, &format!("{path} {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_reference_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
        let expected = reference_markdown();
        if std::env::var_os("CKPT_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == expected,
            "docs/cli.md is out of date; run CKPT_UPDATE_DOCS=1 cargo test --lib cli_reference"
        );
    }

    #[test]
    fn man_pages_cover_every_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        write_pages(&Cli::command(), dir.path()).unwrap();
        for name in [
            "ckpt",
            "ckpt-checkpoint",
            "ckpt-restore",
            "ckpt-debug",
            "ckpt-list",
        ] {
            let page = std::fs::read_to_string(dir.path().join(format!("{name}.1"))).unwrap();
            assert!(page.contains(".TH"), "{name}.1 is not a man page");
        }
        assert!(!dir.path().join("ckpt-__shim.1").exists());
    }

    #[test]
    fn every_command_help_has_an_example() {
        fn missing(command: &clap::Command, prefix: &str, out: &mut Vec<String>) {
            for sub in command
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                let name = format!("{prefix} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.contains("ckpt ") {
                    out.push(name.clone());
                }
                missing(sub, &name, out);
            }
        }
        let mut without_example = Vec::new();
        missing(&Cli::command(), "ckpt", &mut without_example);
        assert!(
            without_example.is_empty(),
            "no example in --help of: {without_example:?}"
        );
    }
}
