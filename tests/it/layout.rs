//! The module graphs of the library (`src/`) and of the load generator
//! (`bench/anytls-bench/`, crate root `main.rs`) have no import cycles, and their
//! top-level modules follow the layers written in their crate roots.
//!
//! Every file under the crate's directory is read, every path it names (`use crate::a::b`, `super::c`,
//! `crate::d::e(..)` in code, with `{..}` groups expanded) is resolved to the module
//! that defines it, and the reference becomes an edge between the two sibling modules
//! under their closest common parent: `session::stream` naming `crate::pool::dial`
//! is the edge `session -> pool`, and `session::stream` naming `super::uot` is
//! `stream -> uot` inside `session`. A module naming its own ancestor or descendant
//! adds no edge. Any cycle among siblings fails the test, with the path of files.
//! A top-level module naming one of its own or a higher layer of the crate root's
//! `# Layers` list (src/lib.rs, bench/anytls-bench/main.rs) fails it too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root, e.g. `["session", "stream"]`.
type ModulePath = Vec<String>;

fn module_of(root: &Path, file: &Path) -> ModulePath {
    let relative = file
        .strip_prefix(root)
        .expect("file under the crate's root");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and string literals, so doc links and
/// messages are not taken for imports.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('x', '\n') or a lifetime ('a): skip only literals.
                let rest: String = chars.clone().take(3).collect();
                let literal = rest.starts_with('\\')
                    || rest.chars().nth(1) == Some('\'')
                    || rest.starts_with('"');
                if literal {
                    let mut escaped = false;
                    for c in chars.by_ref() {
                        if !escaped && c == '\'' {
                            break;
                        }
                        escaped = !escaped && c == '\\';
                    }
                }
                out.push('\'');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = format!("{prefix}{}", &tree[..open]);
        let inner = &tree[open + 1..tree.rfind('}').expect("balanced braces")];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &head, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &head, out);
    } else if !tree.is_empty() {
        out.push(format!("{prefix}{tree}"));
    }
}

/// Every path a file's code names, as written (`crate::..`, `super::..`, `self::..`).
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        let tree: String = rest[..end].split_whitespace().collect();
        expand(&tree, "", &mut paths);
        rest = &rest[end..];
    }
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            paths.push(tail[..end].trim_end_matches(':').to_owned());
            rest = &tail[end..];
        }
    }
    paths
}

/// The module a path written in `from` lands in (the longest known module prefix).
fn resolve(from: &ModulePath, path: &str, modules: &BTreeSet<ModulePath>) -> Option<ModulePath> {
    let mut parts = path.split("::").filter(|p| !p.is_empty());
    let mut base: ModulePath = match parts.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => {
            // Both `a/b.rs` and `a/b/mod.rs` are module `a::b`, whose `super` is `a`.
            let mut parent = from.clone();
            parent.pop();
            parent
        }
        _ => return None,
    };
    for part in parts {
        if part == "super" {
            base.pop();
            continue;
        }
        let mut next = base.clone();
        next.push(part.to_owned());
        if modules.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// The sibling-module edges of one crate.
struct Graph {
    /// parent module -> (child -> the children it names)
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// (parent, child, named child) -> the file and path that make the edge
    witnesses: BTreeMap<(String, String, String), String>,
}

/// The graph of the crate whose module files lie under `root`.
fn graph_of(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<ModulePath> = files.iter().map(|f| module_of(root, f)).collect();
    let mut graph = Graph {
        edges: BTreeMap::new(),
        witnesses: BTreeMap::new(),
    };
    for file in &files {
        let from = module_of(root, file);
        let text = std::fs::read_to_string(file).expect("readable source");
        for path in named_paths(&code_only(&text)) {
            let Some(to) = resolve(&from, &path, &modules) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // an ancestor or a descendant
            }
            let parent = from[..common].join("::");
            let (a, b) = (from[common].clone(), to[common].clone());
            graph
                .witnesses
                .entry((parent.clone(), a.clone(), b.clone()))
                .or_insert_with(|| format!("{} names {path}", file.display()));
            graph
                .edges
                .entry(parent)
                .or_default()
                .entry(a)
                .or_default()
                .insert(b);
        }
    }
    assert!(
        graph.edges.get("").is_some_and(|top| top.len() > 5),
        "the checker found too few edges under {} to be reading the sources: {:?}",
        root.display(),
        graph.edges
    );
    graph
}

/// One cycle among the children of each parent that has one, with the files
/// that make its edges.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut cycles = Vec::new();
    for (parent, edges) in &graph.edges {
        if let Some(cycle) = find_cycle(edges) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| graph.witnesses[&(parent.clone(), w[0].clone(), w[1].clone())].clone())
                .collect();
            let scope = if parent.is_empty() { "crate" } else { parent };
            cycles.push(format!(
                "in {scope}: {}\n    {}",
                cycle.join(" -> "),
                steps.join("\n    ")
            ));
        }
    }
    cycles
}

/// Every top-level module that names one of its own or a higher layer, or is
/// in no layer of the crate root `root_file`.
fn against_layers(graph: &Graph, root_file: &Path) -> Vec<String> {
    let layers = layers_of(&std::fs::read_to_string(root_file).expect("readable crate root"));
    let root_name = root_file.display();
    let mut wrong_way = Vec::new();
    for (from, names) in &graph.edges[""] {
        let Some(&from_layer) = layers.get(from) else {
            wrong_way.push(format!("{from} is in no layer of {root_name}"));
            continue;
        };
        for to in names {
            match layers.get(to) {
                Some(&to_layer) if to_layer < from_layer => {}
                Some(&to_layer) => wrong_way.push(format!(
                    "{from} (layer {from_layer}) names {to} (layer {to_layer}): {}",
                    graph.witnesses[&(String::new(), from.clone(), to.clone())]
                )),
                None => wrong_way.push(format!("{to} is in no layer of {root_name}")),
            }
        }
    }
    wrong_way
}

/// Fails on an import cycle among sibling modules of the crate under `root`,
/// and on a top-level module naming another against the `# Layers` of
/// `root_file`.
fn check_crate(root: &Path, root_file: &str) {
    let graph = graph_of(root);
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles under {}:\n{}",
        root.display(),
        cycles.join("\n")
    );
    let root_file = root.join(root_file);
    let wrong_way = against_layers(&graph, &root_file);
    assert!(
        wrong_way.is_empty(),
        "dependencies against the layers of {}:\n{}",
        root_file.display(),
        wrong_way.join("\n")
    );
}

#[test]
fn no_import_cycles_between_sibling_modules_and_top_level_ones_follow_the_layers() {
    check_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "lib.rs");
}

#[test]
fn bench_has_no_import_cycles_and_its_top_level_modules_follow_the_layers() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/anytls-bench");
    check_crate(&bench, "main.rs");
}

/// The layer of each top-level module, from a crate root's `# Layers` list
/// (`//! N. `a`, `b``).
fn layers_of(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    let section = lib
        .split("# Layers")
        .nth(1)
        .expect("the crate root has a # Layers section");
    for line in section.lines().skip(1).map_while(|l| l.strip_prefix("//!")) {
        let Some((number, names)) = line.trim().split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.parse::<usize>() else {
            continue;
        };
        for name in names.split(',') {
            layers.insert(name.trim().trim_matches('`').to_owned(), layer);
        }
    }
    assert!(
        layers.len() > 5,
        "too few modules in the layers: {layers:?}"
    );
    layers
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
    let layers = layers_of(
        "//! # Layers\n//!\n//! 1. `a`, `b`\n//! 2. `c`\n//! 3. `d`, `e`, `f`\nfn x() {}",
    );
    assert_eq!(layers["b"], 1);
    assert_eq!(layers["f"], 3);
    let mut paths = Vec::new();
    expand("crate::{a::B, c::{d, e::F}}", "", &mut paths);
    assert_eq!(paths, ["crate::a::B", "crate::c::d", "crate::c::e::F"]);
}
