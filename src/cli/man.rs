//! `diskbeat man [--dir DIR]`: man pages generated from the command line definitions: `diskbeat.1`
//! and one page per subcommand (`diskbeat-status.1`, `diskbeat-vm-list.1`, ...).

use super::{Cli, CliError, CliResult, EXIT_OK};
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write man pages (section 1) for diskbeat and every subcommand.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without --dir, prints diskbeat.1 (the top page) on stdout. With --dir, writes diskbeat.1 and one
page per subcommand (diskbeat-mkfs.1, diskbeat-status.1, diskbeat-vm-protect.1, ...) into DIR,
replacing pages of the same names, and lists the files written on stdout.

Examples:
  diskbeat man | man -l -
  diskbeat man --dir /usr/local/share/man/man1 && mandb -q
  diskbeat man --dir target/man && man -l target/man/diskbeat-status.1

Exit status: 0 written, 1 a page could not be written.")]
pub struct Args {
    /// Directory to write every page into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> CliResult {
    let fail = |what: &str, e: std::io::Error| CliError::fail(format!("{what}: {e}"));
    let pages = pages().map_err(|e| fail("rendering the man pages", e))?;
    match &args.dir {
        None => {
            let (_, top) = &pages[0];
            let mut out = std::io::stdout().lock();
            out.write_all(top).and_then(|_| out.flush()).map_err(|e| fail("writing stdout", e))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| fail(&dir.display().to_string(), e))?;
            let mut listing = std::io::stdout().lock();
            for (name, page) in &pages {
                let path = dir.join(name);
                write_page(&path, page).map_err(|e| fail(&path.display().to_string(), e))?;
                // The listing is informative: a closed stdout (`| head`) must not stop the writing.
                let _ = writeln!(listing, "{}", path.display());
            }
        }
    }
    Ok(EXIT_OK)
}

/// Every page as (file name, roff text): the top command's first, then each subcommand's, depth
/// first. Built commands carry their full names (`diskbeat-vm-list`, synopsis `diskbeat vm list`).
pub fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    collect(&cmd, &mut out)?;
    Ok(out)
}

fn collect(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    // Every page names the program and version in its footer (a subcommand has no version of its own).
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("diskbeat {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page)?;
    out.push((man.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out)?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename: a reader never sees half a page.
fn write_page(path: &Path, page: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("1.tmp");
    std::fs::write(&tmp, page)?;
    std::fs::rename(&tmp, path)
}
