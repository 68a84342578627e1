//! `cargo xtask lint`: the import layers of profiler/src. Every `.rs` file there is
//! a node of a graph and every import of one file by another an edge; the check
//! fails on a circle of files (a strongly connected component of more than one
//! file) and on a file importing a file of a higher layer than its own (LAYERS).
//!
//! What counts as an import of file B by file A:
//! - every path starting with `crate::` (or a macro's `$crate::`) anywhere in A's
//!   code, in a `use` or inline (`crate::host::printable::folded(x)`), a grouped use
//!   (`use crate::{a::b, c::{d, e}}`) expanded to one path per leaf;
//! - every path starting with `super::` (`super::x`, `super::super::y`), resolved
//!   from the module it is written in: A's own module, or a module inline in A
//!   (the `super::*` of A's `mod tests { .. }` is A itself);
//! - such a path names the file of its LONGEST module prefix that is a file: module
//!   `a::b` is `a/b.rs` or `a/b/mod.rs`, the crate root `lib.rs` (or
//!   `main.rs`, the binary's root, which only calls the library); so
//!   `crate::symbolize::frames::Frame` is `symbolize/frames.rs` when that file
//!   exists, else `symbolize.rs` or `symbolize/mod.rs`.
//!
//! Not imports: comments (`//`, `//!`, `///`, `/* */`) and string and char literals
//! (raw ones too), blanked before the scan; a path back into the file itself; the
//! path of a `pub(in crate::a)`, which restricts who may see an item and uses
//! nothing; and a module's paths into its own parts. A parent owns its parts: its
//! `mod child;`, its relative `child::` and `self::` paths, and equally a
//! `crate::a::child::` or (from its `mod tests`) `super::child::` path of `a`'s
//! file into a module below `a`, are no edge, so a mod.rs that declares its
//! children and re-exports or tests them is no circle, while a child's `super::` or
//! `crate::` path up to its parent is an edge. (So lib.rs, the parent of every
//! module, has no edges; being the top layer it needs none.) Code under
//! `#[cfg(test)]` counts like the rest: tests keep to the layers too. Not seen:
//! `#[path]` attributes and paths a macro pastes together.
//!
//! A small scanner rather than `syn`: blanking comments and literals, counting
//! braces and reading paths is all the check needs, it adds no dependency, and it
//! still reads a file that is mid-edit and would not parse.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::workspace;

/// The checked tree, relative to the workspace root; reports name files with it.
const SRC_DIR: &str = "profiler/src/";

/// One layer of LAYERS.
pub struct Layer {
    /// Top-level files (`say.rs`) and folders (`host/`) of profiler/src. A folder
    /// also holds the module file beside it (`host/` holds `host.rs`).
    pub holds: &'static [&'static str],
    /// What the layer is, for the reader of the table.
    #[allow(dead_code)]
    pub what: &'static str,
}

/// The layers of profiler/src, lowest first; a layer's number is its place in
/// this list, and a file belongs to the first entry that holds it. A file may
/// import files of its own layer or lower ones, never higher.
///
/// The order is the way the data goes: the words every stage shares, then the
/// host, the processes and their mappings, the probes that sample them, the
/// collection of the kernel's maps, unwinding and naming the stacks, a session
/// tying one run together, the profiles counted from it and the exporters that
/// write them; the commands drive all of that, check builds on record, the CLI
/// hands each command its config, and lib.rs only starts the CLI (main.rs,
/// the binary, calls it). Each stage
/// knows what feeds it and nothing of what it feeds, so a file that needs a
/// higher layer is in the wrong place (or the thing it needs is).
pub const LAYERS: &[Layer] = &[
    Layer {
        holds: &["sources.rs", "attachment.rs", "say.rs", "version.rs"],
        what: "vocabulary every stage shares",
    },
    Layer {
        holds: &["host/"],
        what: "facts of the host, safe opening of user files",
    },
    Layer {
        holds: &["proc_tracker/"],
        what: "every process's mappings and lives",
    },
    Layer {
        holds: &["probes/"],
        what: "load, attach, the attach queue",
    },
    Layer {
        holds: &["collect/"],
        what: "drain the kernel maps (generations)",
    },
    Layer {
        holds: &["unwind/", "symbolize/"],
        what: "unwinding copied stacks; naming frames",
    },
    Layer {
        holds: &["session/"],
        what: "one run: probes, tracker, COMMAND together",
    },
    Layer {
        holds: &["aggregate/"],
        what: "profiles: counts per stack, stack scaling",
    },
    Layer {
        holds: &["export/"],
        what: "one exporter per format",
    },
    Layer {
        holds: &["record/", "doctor/", "top/", "serve/"],
        what: "the commands",
    },
    Layer {
        holds: &["check/"],
        what: "check and diff (reuse record)",
    },
    Layer {
        holds: &["cli.rs", "fuzz/"],
        what: "parses and hands a config down; the parsers' fuzz targets (tests only)",
    },
    Layer {
        holds: &["lib.rs", "main.rs"],
        what: "the crate roots: the library, and the binary that calls it",
    },
];

/// The files that are the crate's root module: the library's, where every
/// module is declared, and the binary's (which declares none). A path that
/// names no file names the first of them present.
const CRATE_ROOTS: &[&str] = &["lib.rs", "main.rs"];

/// What one check of a tree found.
#[derive(Debug)]
pub struct Report {
    pub files: usize,
    /// Edges of the graph: pairs of files, however many lines make each.
    pub imports: usize,
    /// One entry per violation, in the words `cargo xtask lint` prints; a circle's
    /// entry lists its edges on indented lines below its first.
    pub violations: Vec<String>,
    circles: usize,
    upward: usize,
    unplaced: usize,
}

impl Report {
    pub fn summary(&self) -> String {
        let counts = format!("{} files, {} imports", self.files, self.imports);
        if self.violations.is_empty() {
            return format!("layers: {counts}, no circle, none upward");
        }
        format!(
            "layers: FAILED: {counts}: {} circle(s), {} upward import(s), {} file(s) in no layer",
            self.circles, self.upward, self.unplaced
        )
    }
}

/// `cargo xtask lint`: checks profiler/src and prints every violation, then the
/// summary. Ok(false) when there was a violation.
pub fn run() -> Result<bool> {
    let src = workspace::root().join(SRC_DIR);
    let mut tree = BTreeMap::new();
    read_tree(&src, &src, &mut tree)?;
    let report = check(&tree, LAYERS);
    for violation in &report.violations {
        println!("{violation}");
    }
    println!("{}", report.summary());
    Ok(report.violations.is_empty())
}

/// Every `.rs` file under `dir`, keyed by its path relative to `root` with `/`.
fn read_tree(root: &Path, dir: &Path, tree: &mut BTreeMap<String, String>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("could not list {}", dir.display()))?
            .path();
        if path.is_dir() {
            read_tree(root, &path, tree)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let relative = path.strip_prefix(root).expect("read_tree walks below root");
            let key = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            tree.insert(key, text);
        }
    }
    Ok(())
}

/// One line of a file that makes an edge: the line and the path written there
/// (a grouped use's leaf spelt out whole).
#[derive(Debug, Clone, PartialEq)]
struct Site {
    line: usize,
    path: String,
}

/// Checks `tree` (path relative to profiler/src -> source text) against `layers`.
pub fn check(tree: &BTreeMap<String, String>, layers: &[Layer]) -> Report {
    let edges = graph(tree);
    let mut violations = Vec::new();

    let placed: BTreeMap<&str, (usize, &str)> = tree
        .keys()
        .filter_map(|file| Some((file.as_str(), layer_of(file, layers)?)))
        .collect();
    let unplaced: Vec<&String> = tree
        .keys()
        .filter(|file| !placed.contains_key(file.as_str()))
        .collect();
    for file in &unplaced {
        violations.push(format!(
            "{SRC_DIR}{file} is in no layer; add it to xtask/src/layers.rs"
        ));
    }

    let circles = circles(tree, &edges);
    for circle in &circles {
        let mut text = format!(
            "import circle of {} files: {}",
            circle.len(),
            circle
                .iter()
                .map(|f| format!("{SRC_DIR}{f}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for ((from, to), sites) in &edges {
            if circle.contains(from) && circle.contains(to) {
                text.push_str("\n    ");
                text.push_str(&describe_edge(from, to, sites));
            }
        }
        violations.push(text);
    }

    let mut upward = 0;
    for ((from, to), sites) in &edges {
        let (Some(&(from_layer, from_entry)), Some(&(to_layer, to_entry))) =
            (placed.get(from.as_str()), placed.get(to.as_str()))
        else {
            continue;
        };
        if to_layer > from_layer {
            upward += 1;
            violations.push(format!(
                "upward import, layer {from_layer} ({from_entry}) -> layer {to_layer} ({to_entry}): {}",
                describe_edge(from, to, sites)
            ));
        }
    }

    Report {
        files: tree.len(),
        imports: edges.len(),
        violations,
        circles: circles.len(),
        upward,
        unplaced: unplaced.len(),
    }
}

/// `profiler/src/a.rs:3 crate::b::X -> profiler/src/b.rs (also lines 7, 9)`.
fn describe_edge(from: &str, to: &str, sites: &[Site]) -> String {
    let first = &sites[0];
    let mut text = format!(
        "{SRC_DIR}{from}:{} {} -> {SRC_DIR}{to}",
        first.line, first.path
    );
    if sites.len() > 1 {
        let mut lines: Vec<usize> = sites[1..].iter().map(|s| s.line).collect();
        lines.dedup();
        let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
        text.push_str(&format!(
            " (also line{} {})",
            if lines.len() > 1 { "s" } else { "" },
            lines.join(", ")
        ));
    }
    text
}

/// The layer of `file` and the table entry that holds it.
fn layer_of<'a>(file: &str, layers: &'a [Layer]) -> Option<(usize, &'a str)> {
    layers.iter().enumerate().find_map(|(n, layer)| {
        let entry = layer
            .holds
            .iter()
            .find(|entry| match entry.strip_suffix('/') {
                Some(dir) => file.starts_with(*entry) || file == format!("{dir}.rs"),
                None => file == **entry,
            })?;
        Some((n, *entry))
    })
}

/// The edges of `tree`: (importing file, imported file) -> the lines that make it,
/// in file order.
fn graph(tree: &BTreeMap<String, String>) -> BTreeMap<(String, String), Vec<Site>> {
    let files: BTreeSet<&str> = tree.keys().map(String::as_str).collect();
    let mut edges: BTreeMap<(String, String), Vec<Site>> = BTreeMap::new();
    for (file, text) in tree {
        let module = module_of(file);
        for path in paths_in(&module, text) {
            let Some(target) = path.module.and_then(|m| file_of(&files, &m)) else {
                continue;
            };
            // The file itself, or one of its own parts.
            let own_part = module_of(&target).starts_with(&module);
            if !own_part {
                edges
                    .entry((file.clone(), target))
                    .or_default()
                    .push(path.site);
            }
        }
    }
    edges
}

/// The module a file is: `a/b.rs` and `a/b/mod.rs` are `a::b`, `lib.rs` (and
/// `main.rs`) the root.
fn module_of(file: &str) -> Vec<String> {
    if CRATE_ROOTS.contains(&file) {
        return Vec::new();
    }
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    stem.split('/').map(str::to_owned).collect()
}

/// The file of the longest prefix of `module` that is a file of the tree.
fn file_of(files: &BTreeSet<&str>, module: &[String]) -> Option<String> {
    for len in (1..=module.len()).rev() {
        let stem = module[..len].join("/");
        for candidate in [format!("{stem}.rs"), format!("{stem}/mod.rs")] {
            if !CRATE_ROOTS.contains(&candidate.as_str()) && files.contains(candidate.as_str()) {
                return Some(candidate);
            }
        }
    }
    CRATE_ROOTS
        .iter()
        .find(|root| files.contains(**root))
        .map(|root| root.to_string())
}

/// The strongly connected components of more than one file (Tarjan), each sorted,
/// in the order of their first file.
fn circles(
    tree: &BTreeMap<String, String>,
    edges: &BTreeMap<(String, String), Vec<Site>>,
) -> Vec<BTreeSet<String>> {
    struct Tarjan<'a> {
        next: Vec<Vec<usize>>,
        names: Vec<&'a str>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        found: Vec<BTreeSet<String>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for w in self.next[v].clone() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(index) if self.on_stack[w] => self.low[v] = self.low[v].min(index),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = BTreeSet::new();
                loop {
                    let w = self.stack.pop().expect("v is on the stack");
                    self.on_stack[w] = false;
                    component.insert(self.names[w].to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }

    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    let number: BTreeMap<&str, usize> = names.iter().enumerate().map(|(n, f)| (*f, n)).collect();
    let mut next = vec![Vec::new(); names.len()];
    for (from, to) in edges.keys() {
        next[number[from.as_str()]].push(number[to.as_str()]);
    }
    let count = names.len();
    let mut tarjan = Tarjan {
        next,
        names,
        index: vec![None; count],
        low: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        counter: 0,
        found: Vec::new(),
    };
    for v in 0..count {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    let mut found = tarjan.found;
    found.sort();
    found
}

/// A `crate::` or `super::` path of a file: where it is, and the module it names
/// (None when its `super`s climb above the crate root).
#[derive(Debug)]
struct FoundPath {
    site: Site,
    module: Option<Vec<String>>,
}

/// Every `crate::`/`super::` path in `text`, the source of module `module`.
fn paths_in(module: &[String], text: &str) -> Vec<FoundPath> {
    let blanked = blank_comments_and_literals(text);
    let toks = tokens(&blanked);
    let mut found = Vec::new();
    let mut depth: usize = 0;
    // Modules inline in the file (`mod tests { .. }`) around the scan: name, and
    // the brace depth inside them.
    let mut inline: Vec<(&str, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match toks[i].tok {
            Tok::Word("mod") => {
                if let (Some(Tok::Word(name)), Some(Tok::Open)) =
                    (tok_at(&toks, i + 1), tok_at(&toks, i + 2))
                {
                    inline.push((name, depth + 1));
                }
            }
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                while inline.last().is_some_and(|&(_, inside)| inside > depth) {
                    inline.pop();
                }
            }
            Tok::Word("crate" | "super")
                if tok_at(&toks, i + 1) == Some(Tok::PathSep)
                    && (i == 0 || toks[i - 1].tok != Tok::PathSep)
                    && !is_visibility_path(&toks, i) =>
            {
                let here: Vec<String> = module
                    .iter()
                    .cloned()
                    .chain(inline.iter().map(|&(name, _)| name.to_owned()))
                    .collect();
                let mut leaves = Vec::new();
                i = use_tree(&toks, i, &mut Vec::new(), &mut leaves);
                for (segments, line) in leaves {
                    found.push(FoundPath {
                        module: absolute(&here, &segments),
                        site: Site {
                            line,
                            path: spell(&segments),
                        },
                    });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Is the path at `i` the `crate::a` of a `pub(in crate::a)`?
fn is_visibility_path(toks: &[Token], i: usize) -> bool {
    i >= 3
        && toks[i - 1].tok == Tok::Word("in")
        && toks[i - 2].tok == Tok::Punct('(')
        && toks[i - 3].tok == Tok::Word("pub")
}

/// The module `segments` name, read from module `here`.
fn absolute(here: &[String], segments: &[&str]) -> Option<Vec<String>> {
    let mut module = here.to_vec();
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            "crate" if n == 0 => module.clear(),
            "super" => {
                module.pop()?;
            }
            "self" => {}
            "*" => break,
            name => module.push(name.to_owned()),
        }
    }
    Some(module)
}

/// The path as it would be written alone: `crate::a::b`, `super::c::*`.
fn spell(segments: &[&str]) -> String {
    let end = if segments.len() > 1 && segments.last() == Some(&"self") {
        segments.len() - 1
    } else {
        segments.len()
    };
    segments[..end].join("::")
}

/// Reads the use tree or path at `toks[i]`: `a::b`, `a::{b, c::{d, e}}`, `a::*`,
/// with `prefix` the segments of the groups around it. Pushes one leaf (segments,
/// line of its last segment) per path it spells and returns the index after it.
/// A path ends at whatever is not a name, `::`, group or glob (`::<T>`, `(`, `!`).
fn use_tree<'a>(
    toks: &[Token<'a>],
    mut i: usize,
    prefix: &mut Vec<&'a str>,
    leaves: &mut Vec<(Vec<&'a str>, usize)>,
) -> usize {
    let base = prefix.len();
    let mut line = toks.get(i).map_or(0, |t| t.line);
    loop {
        match tok_at(toks, i) {
            Some(Tok::Word(name)) => {
                prefix.push(name);
                line = toks[i].line;
                i += 1;
                if tok_at(toks, i) == Some(Tok::PathSep) {
                    i += 1;
                    continue;
                }
                leaves.push((prefix.clone(), line));
            }
            Some(Tok::Star) => {
                prefix.push("*");
                leaves.push((prefix.clone(), toks[i].line));
                i += 1;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match tok_at(toks, i) {
                        Some(Tok::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Comma) => i += 1,
                        Some(Tok::Word(_) | Tok::Star | Tok::Open) => {
                            i = use_tree(toks, i, prefix, leaves);
                            if tok_at(toks, i) == Some(Tok::Word("as")) {
                                i += 2;
                            }
                        }
                        // Not a use group after all: leave the rest to the scan.
                        _ => break,
                    }
                }
            }
            // `crate::<`, `super::(`..: the path so far.
            _ => {
                if prefix.len() > base {
                    leaves.push((prefix.clone(), line));
                }
            }
        }
        break;
    }
    prefix.truncate(base);
    i
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Punct(char),
}

#[derive(Debug)]
struct Token<'a> {
    tok: Tok<'a>,
    line: usize,
}

fn tok_at<'a>(toks: &[Token<'a>], i: usize) -> Option<Tok<'a>> {
    toks.get(i).map(|t| t.tok)
}

fn is_word_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// The words (names, keywords, numbers) and punctuation of blanked source, with
/// their 1-based lines.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut toks = Vec::new();
    let mut line = 1;
    let mut chars = text.char_indices().peekable();
    while let Some((start, ch)) = chars.next() {
        let tok = match ch {
            '\n' => {
                line += 1;
                continue;
            }
            ch if ch.is_whitespace() => continue,
            ch if is_word_char(ch) => {
                let mut end = start + ch.len_utf8();
                while let Some(&(at, next)) = chars.peek() {
                    if !is_word_char(next) {
                        break;
                    }
                    end = at + next.len_utf8();
                    chars.next();
                }
                Tok::Word(&text[start..end])
            }
            ':' if chars.peek().is_some_and(|&(_, next)| next == ':') => {
                chars.next();
                Tok::PathSep
            }
            '{' => Tok::Open,
            '}' => Tok::Close,
            ',' => Tok::Comma,
            '*' => Tok::Star,
            other => Tok::Punct(other),
        };
        toks.push(Token { tok, line });
    }
    toks
}

/// `text` with comments and string, byte string and char literals (raw ones too)
/// turned into spaces, newlines kept so lines still count. Lifetimes stay.
fn blank_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let end = match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => c[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |n| i + n),
            '/' if c.get(i + 1) == Some(&'*') => block_comment_end(&c, i),
            '"' => string_end(&c, i + 1),
            '\'' => match char_literal_end(&c, i) {
                Some(end) => end,
                None => {
                    out.push('\'');
                    i += 1;
                    continue;
                }
            },
            ch if is_word_char(ch) => {
                let word_end = c[i..]
                    .iter()
                    .position(|&ch| !is_word_char(ch))
                    .map_or(c.len(), |n| i + n);
                let word: String = c[i..word_end].iter().collect();
                let raw = matches!(word.as_str(), "r" | "br" | "cr");
                match raw.then(|| raw_string_end(&c, word_end)).flatten() {
                    Some(end) => end,
                    None => {
                        out.push_str(&word);
                        i = word_end;
                        continue;
                    }
                }
            }
            ch => {
                out.push(ch);
                i += 1;
                continue;
            }
        };
        for &ch in &c[i..end] {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
        i = end;
    }
    out
}

/// The end of the (nesting) block comment opening at `c[start]`.
fn block_comment_end(c: &[char], start: usize) -> usize {
    let mut depth: usize = 0;
    let mut i = start;
    while i + 1 < c.len() {
        if c[i] == '/' && c[i + 1] == '*' {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c[i + 1] == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// The end of the string whose text starts at `c[from]`, after its opening `"`.
fn string_end(c: &[char], from: usize) -> usize {
    let mut i = from;
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// The end of a raw string whose `#`s or `"` start at `c[from]` (right after its
/// `r`), or None when none starts there (`r#name` is a raw identifier).
fn raw_string_end(c: &[char], from: usize) -> Option<usize> {
    let hashes = c[from..].iter().take_while(|&&ch| ch == '#').count();
    if c.get(from + hashes) != Some(&'"') {
        return None;
    }
    let mut i = from + hashes + 1;
    while i < c.len() {
        if c[i] == '"'
            && c[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&ch| ch == '#')
                .count()
                == hashes
        {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(c.len())
}

/// The end of the char literal opening at `c[start]` (`'x'`, `'\n'`, `'\u{1F600}'`),
/// or None when the `'` starts a lifetime or label.
fn char_literal_end(c: &[char], start: usize) -> Option<usize> {
    match c.get(start + 1) {
        Some('\\') => {
            // Past the backslash and the char it escapes (which may be a `'`).
            let from = (start + 3).min(c.len());
            let close = c[from..].iter().position(|&ch| ch == '\'')?;
            Some(from + close + 1)
        }
        Some(_) if c.get(start + 2) == Some(&'\'') => Some(start + 3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_LAYERS: &[Layer] = &[
        Layer {
            holds: &["words.rs"],
            what: "",
        },
        Layer {
            holds: &["host/"],
            what: "",
        },
        Layer {
            holds: &["session/", "export/"],
            what: "",
        },
        Layer {
            holds: &["main.rs"],
            what: "",
        },
    ];

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    }

    /// Every import site as `from:line path -> to`.
    fn imports(files: &[(&str, &str)]) -> Vec<String> {
        graph(&tree(files))
            .into_iter()
            .flat_map(|((from, to), sites)| {
                sites
                    .into_iter()
                    .map(move |s| format!("{from}:{} {} -> {to}", s.line, s.path))
            })
            .collect()
    }

    fn violations(files: &[(&str, &str)]) -> Vec<String> {
        check(&tree(files), TEST_LAYERS).violations
    }

    #[test]
    fn grouped_use_is_expanded_to_one_path_per_leaf() {
        let files = [
            ("main.rs", ""),
            ("words.rs", ""),
            ("host/mod.rs", ""),
            ("host/facts.rs", ""),
            ("host/open.rs", ""),
            (
                "session/mod.rs",
                "use crate::{\n    words::Word,\n    host::{facts::Facts, open::{self, open_file as open}},\n};\n",
            ),
        ];
        assert_eq!(
            imports(&files),
            [
                "session/mod.rs:3 crate::host::facts::Facts -> host/facts.rs",
                "session/mod.rs:3 crate::host::open -> host/open.rs",
                "session/mod.rs:3 crate::host::open::open_file -> host/open.rs",
                "session/mod.rs:2 crate::words::Word -> words.rs",
            ]
        );
    }

    #[test]
    fn with_a_library_lib_rs_is_the_root_and_main_rs_imports_nothing() {
        let files = [
            (
                "lib.rs",
                "mod export;\npub fn main() { crate::export::run(); }\n",
            ),
            ("main.rs", "fn main() {\n    clockprof::main()\n}\n"),
            ("export.rs", "fn f() { crate::main(); }"),
        ];
        assert_eq!(imports(&files), ["export.rs:1 crate::main -> lib.rs"]);
        assert_eq!(
            layer_of("lib.rs", LAYERS),
            Some((LAYERS.len() - 1, "lib.rs"))
        );
    }

    #[test]
    fn longest_module_prefix_that_is_a_file_is_the_target() {
        let files = [
            ("main.rs", "struct Cli;"),
            ("export.rs", ""),
            ("export/svg.rs", "fn f() { crate::Cli; }"),
            ("session/mod.rs", ""),
            ("session/frames.rs", ""),
            (
                "words.rs",
                "fn f() {\n    crate::session::frames::Frame::new();\n    \
                 crate::session::Session::<u8>::run();\n    crate::export::svg::write!(x);\n    \
                 let _ = crate::export::Format::Svg;\n}\n",
            ),
        ];
        assert_eq!(
            imports(&files),
            [
                "export/svg.rs:1 crate::Cli -> main.rs",
                "words.rs:5 crate::export::Format::Svg -> export.rs",
                "words.rs:4 crate::export::svg::write -> export/svg.rs",
                "words.rs:2 crate::session::frames::Frame::new -> session/frames.rs",
                "words.rs:3 crate::session::Session -> session/mod.rs",
            ]
        );
    }

    #[test]
    fn super_is_read_from_the_module_it_is_written_in() {
        let files = [
            ("main.rs", ""),
            ("words.rs", ""),
            ("host/mod.rs", "use super::words::Word;\n"),
            ("host/facts.rs", ""),
            (
                "host/open.rs",
                "use super::facts::Facts;\nuse super::super::words;\n\
                 #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::facts::probe;\n}\n\
                 fn after() { super::Host::new(); }\n",
            ),
        ];
        assert_eq!(
            imports(&files),
            [
                "host/mod.rs:1 super::words::Word -> words.rs",
                "host/open.rs:1 super::facts::Facts -> host/facts.rs",
                "host/open.rs:6 super::super::facts::probe -> host/facts.rs",
                "host/open.rs:8 super::Host::new -> host/mod.rs",
                "host/open.rs:2 super::super::words -> words.rs",
            ]
        );
    }

    #[test]
    fn comments_strings_and_visibility_are_not_imports() {
        let text = r####"//! crate::session::a
/// crate::session::b
// crate::session::c
/* crate::session::d /* nested */ crate::session::e */
pub(in crate::session) fn f<'a>(x: &'a str) -> &'a str {
    let _ = "crate::session::f \" crate::session::g";
    let _ = r#"crate::session::h "quoted" "#;
    let _ = br##"crate::session::i"##;
    let _ = ('"', '{', '\'', b'"');
    crate::words::counted(x)
}
"####;
        let files = [
            ("main.rs", ""),
            ("words.rs", ""),
            ("session/mod.rs", ""),
            ("host/x.rs", text),
        ];
        assert_eq!(
            imports(&files),
            ["host/x.rs:10 crate::words::counted -> words.rs"]
        );
    }

    #[test]
    fn circle_is_reported_with_the_lines_of_its_edges() {
        let files = [
            ("main.rs", ""),
            ("host/a.rs", "use crate::host::b::B;\n"),
            ("host/b.rs", "\nuse super::c;\nfn f() { super::c::g(); }\n"),
            ("host/c.rs", "fn g() { crate::host::a::A::new() }\n"),
            ("host/d.rs", "use super::a::A;\n"),
        ];
        assert_eq!(
            violations(&files),
            [
                "import circle of 3 files: profiler/src/host/a.rs, profiler/src/host/b.rs, \
              profiler/src/host/c.rs\n    \
              profiler/src/host/a.rs:1 crate::host::b::B -> profiler/src/host/b.rs\n    \
              profiler/src/host/b.rs:2 super::c -> profiler/src/host/c.rs (also line 3)\n    \
              profiler/src/host/c.rs:1 crate::host::a::A::new -> profiler/src/host/a.rs"
            ]
        );
    }

    #[test]
    fn upward_import_is_reported() {
        let files = [
            ("main.rs", "use crate::session::Session;\n"),
            ("words.rs", ""),
            ("session/mod.rs", "use crate::words;\n"),
            (
                "host/facts.rs",
                "use crate::words::Word;\n\nfn f() { crate::session::Session::new() }\n",
            ),
        ];
        assert_eq!(
            violations(&files),
            ["upward import, layer 1 (host/) -> layer 2 (session/): \
              profiler/src/host/facts.rs:3 crate::session::Session::new -> profiler/src/session/mod.rs"]
        );
        let report = check(&tree(&files), TEST_LAYERS);
        assert_eq!(
            report.summary(),
            "layers: FAILED: 4 files, 3 imports: 0 circle(s), 1 upward import(s), 0 file(s) in no layer"
        );
    }

    #[test]
    fn file_outside_the_table_is_reported() {
        let files = [
            ("main.rs", ""),
            ("words.rs", ""),
            ("stray.rs", "use crate::words;"),
            ("hostile/x.rs", ""),
        ];
        assert_eq!(
            violations(&files),
            [
                "profiler/src/hostile/x.rs is in no layer; add it to xtask/src/layers.rs",
                "profiler/src/stray.rs is in no layer; add it to xtask/src/layers.rs",
            ]
        );
    }

    #[test]
    fn mod_rs_declaring_and_reexporting_children_is_no_circle() {
        let files = [
            (
                "main.rs",
                "mod host;\nuse host::Facts;\nuse crate::host::open;\n",
            ),
            (
                "host/mod.rs",
                "mod facts;\nmod open;\npub use facts::Facts;\npub use self::open::open_file;\n\
                 pub(crate) const SHARED: u8 = 1;\nfn f() { crate::host::open::g() }\n\
                 mod tests {\n    use super::facts::sample;\n}\n",
            ),
            ("host/facts.rs", "use super::SHARED;\n"),
            ("host/open.rs", "use crate::host::SHARED;\n"),
        ];
        assert_eq!(
            imports(&files),
            [
                "host/facts.rs:1 super::SHARED -> host/mod.rs",
                "host/open.rs:1 crate::host::SHARED -> host/mod.rs",
            ]
        );
        let report = check(&tree(&files), TEST_LAYERS);
        assert_eq!(report.violations, Vec::<String>::new());
        assert_eq!(
            report.summary(),
            "layers: 4 files, 2 imports, no circle, none upward"
        );
    }

    #[test]
    fn a_folder_entry_holds_the_module_file_beside_it() {
        assert_eq!(layer_of("host.rs", TEST_LAYERS), Some((1, "host/")));
        assert_eq!(layer_of("host/x/y.rs", TEST_LAYERS), Some((1, "host/")));
        assert_eq!(layer_of("hosts.rs", TEST_LAYERS), None);
        assert_eq!(layer_of("words.rs", TEST_LAYERS), Some((0, "words.rs")));
    }

    #[test]
    fn the_layer_table_names_each_entry_once() {
        let entries: Vec<&str> = LAYERS
            .iter()
            .flat_map(|l| l.holds.iter().copied())
            .collect();
        let unique: BTreeSet<&str> = entries.iter().copied().collect();
        assert_eq!(entries.len(), unique.len());
        assert_eq!(
            layer_of("main.rs", LAYERS),
            Some((LAYERS.len() - 1, "main.rs"))
        );
    }
}
