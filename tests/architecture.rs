//! The module graph: dependencies point one way.
//!
//! Reads every file under `src/`, collects the modules it names (`crate::…` paths and
//! `super::…` paths, outside `#[cfg(test)] mod tests` and comments), and checks two rules:
//!
//! 1. **Layers.** Each top-level module sits in a layer (below); a file may name only modules of
//!    its own top-level module or of lower layers.
//! 2. **No cycles between files**, where a folder's `mod.rs` and the files it declares count as
//!    one unit (`mod.rs` declares them and they extend its types, e.g. `impl Coordinator` split
//!    over `coordinator/*.rs`); between every other pair of files the arrows point one way.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph, file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. `cli` is the binary's code; `load` and `chaos` are its tools.
const LAYERS: &[&[&str]] = &[
    &["error", "clock", "telemetry"],
    &["config"],
    &["model"],
    &["events"],
    &["registry", "work"],
    &["store"],
    &["actors"],
    &["coordinator"],
    &["rpc"],
    &["mcp"],
    &["server", "client"],
    &["load"],
    &["chaos"],
    &["cli"],
];

type Module = Vec<String>;

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its unit-test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths that follow `prefix` (`crate::` or a run of `super::`): their segments.
fn paths_after(code: &str, prefix: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find(prefix) {
        let start = from + i;
        from = start + prefix.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut supers = 0;
        let mut rest = &code[from..];
        if prefix == "super::" {
            supers = 1;
            while let Some(r) = rest.strip_prefix("super::") {
                supers += 1;
                rest = r;
            }
        }
        for path in grouped(rest) {
            let segments = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            out.push((supers, segments));
        }
    }
    out
}

/// The path at the start of `rest`, or each path of a group: `a::b::X` → [`a::b::X`];
/// `{a::X, b::{Y, Z}}` → [`a::X`, `b::Y`, `b::Z`]; `a::{X, Y}` → [`a::X`, `a::Y`].
fn grouped(rest: &str) -> Vec<String> {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let head = &rest[..end];
    if !rest[end..].starts_with('{') || !(head.is_empty() || head.ends_with("::")) {
        return vec![head.to_string()];
    }
    // The group's body, up to its matching brace.
    let body = &rest[end + 1..];
    let mut depth = 1;
    let mut close = body.len();
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let body = &body[..close];
    // Split at top-level commas; each item is itself a path or a group.
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty() && *item != "self")
        .flat_map(|item| grouped(item).into_iter().map(|p| format!("{head}{p}")))
        .collect()
}

fn graph() -> (BTreeMap<Module, BTreeSet<Module>>, BTreeSet<Module>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let dirs: BTreeSet<Module> = modules
        .iter()
        .filter(|(_, f)| f.ends_with("mod.rs"))
        .map(|(m, _)| m.clone())
        .collect();
    let resolve = |path: Vec<String>| -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains_key(m))
    };
    // `crate::Coordinator` names the module `lib.rs` re-exports it from.
    let lib = code_of(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut reexports: BTreeMap<String, Module> = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let from = rest
            .split("::")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let names = rest.rsplit("::").next().unwrap_or_default();
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() && name != from {
                reexports.insert(name.to_string(), vec![from.clone()]);
            }
        }
    }
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let mut out = BTreeSet::new();
        for (_, segments) in paths_after(&code, "crate::") {
            if let Some(from) = segments.first().and_then(|name| reexports.get(name)) {
                out.insert(from.clone());
                continue;
            }
            out.extend(resolve(segments));
        }
        for (supers, segments) in paths_after(&code, "super::") {
            let Some(keep) = module.len().checked_sub(supers) else {
                continue;
            };
            let mut path: Module = module[..keep].to_vec();
            path.extend(segments);
            out.extend(resolve(path));
        }
        out.remove(module);
        out.remove(&Vec::new());
        edges.insert(module.clone(), out);
    }
    (edges, dirs)
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("/")
    }
}

/// A folder's `mod.rs` and the files it declares.
fn same_unit(a: &Module, b: &Module, dirs: &BTreeSet<Module>) -> bool {
    let parent_child =
        |p: &Module, c: &Module| c.len() == p.len() + 1 && c.starts_with(p) && dirs.contains(p);
    parent_child(a, b) || parent_child(b, a)
}

#[test]
fn every_module_names_only_lower_layers() {
    let (edges, _) = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(top) = from.first() else { continue };
        let from_layer = layer_of(top).unwrap_or_else(|| panic!("{top} is in no layer"));
        for to in tos {
            let to_top = &to[0];
            if to_top == top {
                continue;
            }
            let to_layer = layer_of(to_top).unwrap_or_else(|| panic!("{to_top} is in no layer"));
            if to_layer >= from_layer {
                wrong.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows pointing up or sideways: {wrong:#?}"
    );
}

#[test]
fn no_cycles_between_files() {
    let (edges, dirs) = graph();
    for (from, tos) in &edges {
        println!(
            "{} -> {}",
            name(from),
            tos.iter().map(name).collect::<Vec<_>>().join(" ")
        );
    }
    // Depth-first search for a back edge, skipping edges inside one unit.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&Module, Mark> = edges.keys().map(|m| (m, Mark::New)).collect();
    fn visit<'a>(
        m: &'a Module,
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        dirs: &BTreeSet<Module>,
        mark: &mut BTreeMap<&'a Module, Mark>,
        stack: &mut Vec<&'a Module>,
    ) -> Option<Vec<String>> {
        mark.insert(m, Mark::Open);
        stack.push(m);
        for to in &edges[m] {
            if same_unit(m, to, dirs) {
                continue;
            }
            match mark[to] {
                Mark::Open => {
                    let at = stack.iter().position(|s| *s == to).unwrap();
                    let mut cycle: Vec<String> = stack[at..].iter().map(|s| name(s)).collect();
                    cycle.push(name(to));
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(to, edges, dirs, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(m, Mark::Done);
        None
    }
    for m in edges.keys() {
        if mark[m] == Mark::New {
            let cycle = visit(m, &edges, &dirs, &mut mark, &mut Vec::new());
            assert!(cycle.is_none(), "a cycle: {}", cycle.unwrap().join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_arrows() {
    // The rules above pass vacuously if no edge is found; make sure the parse finds known ones.
    let (edges, _) = graph();
    let of = |m: &str| &edges[&m.split('/').map(String::from).collect::<Module>()];
    assert!(of("coordinator").contains(&vec!["actors".to_string()]));
    assert!(of("work/task").contains(&vec!["work".into(), "lease".into()]));
    assert!(of("coordinator/work").contains(&vec!["coordinator".to_string()]));
    // Through a re-export of lib.rs: `crate::ValidationError` is `error`'s.
    assert!(of("config").contains(&vec!["error".to_string()]));
    // Groups are read too.
    assert_eq!(
        grouped("{a::X, b::{Y, z::W}};"),
        ["a::X", "b::Y", "b::z::W"]
    );
    assert_eq!(grouped("a::{X, Y} = 1"), ["a::X", "a::Y"]);
}
