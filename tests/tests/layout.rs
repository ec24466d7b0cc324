//! The layout holds: capability rooms in `operator/controllers/src/` never import each other (they share
//! only the runtime's handles), and the runtime knows no capability. Reads the source tree; no cluster.

use std::path::{Path, PathBuf};

const ROOMS: [&str; 8] = [
    "health", "failover", "tenancy", "backup", "secrets", "chaos", "drill", "database",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("operator")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Places in `file` that refer to room `other` as a module path (code, not comments): `crate::other`,
/// `super::super::other`, `azora_controllers::other`, and `other` inside a grouped `use crate::{...}`.
fn references(file: &Path, other: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let is_word_end = |rest: &str| {
        !rest
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    };
    let mut found = Vec::new();
    for prefix in ["crate::", "super::super::", "azora_controllers::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let start = at + i + prefix.len();
            let rest = &code[start..];
            if rest.starts_with(other) && is_word_end(&rest[other.len()..]) {
                found.push(format!("{}: {prefix}{other}", file.display()));
            } else if let Some(group) = rest.strip_prefix('{') {
                // A grouped import: look at its top-level items.
                let inner = group.split('}').next().unwrap_or_default();
                if inner.split(',').any(|item| {
                    let item = item.trim();
                    item.strip_prefix(other).is_some_and(is_word_end)
                }) {
                    found.push(format!("{}: {prefix}{{{other}…}}", file.display()));
                }
            }
            at = start;
        }
    }
    found
}

#[test]
fn capability_rooms_do_not_import_each_other() {
    let controllers = root().join("controllers").join("src");
    let mut found = Vec::new();
    let mut rooms_seen = 0;
    for room in ROOMS {
        let dir = controllers.join(room);
        if !dir.is_dir() {
            continue;
        }
        rooms_seen += 1;
        for file in rust_files(&dir) {
            for other in ROOMS.iter().filter(|o| **o != room) {
                found.extend(references(&file, other));
            }
        }
    }
    assert!(
        rooms_seen >= 6,
        "expected the capability rooms under {}",
        controllers.display()
    );
    assert!(found.is_empty(), "rooms import each other:\n{}", found.join("\n"));
}

#[test]
fn the_runtime_knows_no_capability() {
    let runtime = root().join("runtime");
    let manifest = std::fs::read_to_string(runtime.join("Cargo.toml")).unwrap_or_default();
    assert!(manifest.contains("azora-adapters"), "runtime manifest not found");
    assert!(
        !manifest.contains("azora-controllers"),
        "runtime depends on the controllers"
    );
    let mut found = Vec::new();
    for file in rust_files(&runtime.join("src")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("azora_controllers") {
            found.push(file.display().to_string());
        }
    }
    assert!(found.is_empty(), "runtime refers to the controllers: {found:?}");
}

#[test]
fn the_import_check_sees_an_import_between_rooms() {
    // The check itself must be able to fail: a file that imports another room is found.
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "use crate::failover::decide;\n// crate::tenancy in a comment is fine\nlet y = crate::failover_extra;\n\
         use crate::{health::x, tenancy_like};\nuse azora_controllers::{\n    backup::y,\n};\n",
    )
    .expect("write");
    assert_eq!(references(&f, "failover").len(), 1);
    assert!(references(&f, "tenancy").is_empty());
    assert_eq!(references(&f, "health").len(), 1, "grouped import");
    assert_eq!(references(&f, "backup").len(), 1, "grouped import across lines");
}
