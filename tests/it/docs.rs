//! The documentation agrees with the binaries: the flags block of
//! docs/operating.md names exactly the flags `anytls-server --help` lists, with
//! the same defaults where it states a plain one, and the client's section names
//! every flag of `anytls-client --help`.

use std::collections::{BTreeMap, BTreeSet};

/// Long flags of a `--help` text, each with its `[default: X]` if it has one.
fn help_flags(binary: &str) -> BTreeMap<String, Option<String>> {
    let output = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("  ") && trimmed.starts_with('-') {
            current = long_flags(trimmed.split("  ").next().unwrap_or(trimmed))
                .into_iter()
                .next();
            if let Some(flag) = &current {
                flags.insert(flag.clone(), None);
            }
        } else if let (Some(flag), Some(default)) = (&current, default_in(trimmed)) {
            flags.insert(flag.clone(), Some(default));
        }
    }
    flags.remove("--help");
    flags.remove("--version");
    flags
}

/// Every `--flag` token of `text`.
fn long_flags(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// The value of a `[default: X]` in `text`.
fn default_in(text: &str) -> Option<String> {
    let start = text.find("[default: ")? + "[default: ".len();
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

fn operating_guide() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md")).unwrap()
}

#[test]
fn the_flags_block_names_every_server_flag_with_its_default() {
    let help = help_flags(env!("CARGO_BIN_EXE_anytls-server"));
    let guide = operating_guide();
    let block = guide
        .split("## Flags")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("docs/operating.md has a flags block");
    let documented: BTreeSet<String> = block
        .lines()
        .flat_map(|line| long_flags(line.trim_start().split("  ").next().unwrap_or("")))
        .collect();
    let listed: BTreeSet<String> = help.keys().cloned().collect();
    assert_eq!(
        listed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "flags --help lists that the block does not"
    );
    assert_eq!(
        documented.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "flags the block names that --help does not list"
    );
    for line in block.lines() {
        let Some(flag) = long_flags(line.trim_start().split("  ").next().unwrap_or(""))
            .into_iter()
            .next()
        else {
            continue;
        };
        let Some(stated) = default_in(line).filter(|d| !d.contains([' ', ','])) else {
            continue;
        };
        assert_eq!(
            help[&flag].as_deref(),
            Some(stated.as_str()),
            "{flag}: the block says [default: {stated}]"
        );
    }
}

#[test]
fn the_client_section_names_every_client_flag() {
    let help = help_flags(env!("CARGO_BIN_EXE_anytls-client"));
    let guide = operating_guide();
    let section = guide
        .split("\n## Client\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/operating.md has a Client section");
    let named: BTreeSet<String> = long_flags(section).into_iter().collect();
    let missing: Vec<&String> = help.keys().filter(|flag| !named.contains(*flag)).collect();
    assert!(
        missing.is_empty(),
        "the Client section does not name {missing:?}"
    );
}
