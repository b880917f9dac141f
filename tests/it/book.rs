//! The book is product: every chapter in SUMMARY.md exists and says something, every snapshot
//! it includes exists (and the include skips exactly insta's header), every internal link
//! resolves, and mdbook builds it into a page per chapter.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require, scratch};

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src")
}

/// The chapter files SUMMARY.md links to, in order.
fn chapters() -> Vec<String> {
    let summary = std::fs::read_to_string(book_src().join("SUMMARY.md")).unwrap();
    summary
        .lines()
        .filter_map(|l| l.split_once("](").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_string()))
        .collect()
}

#[test]
fn every_chapter_exists_and_has_content() {
    let chapters = chapters();
    assert!(chapters.len() >= 4, "{chapters:?}");
    for c in &chapters {
        let text =
            std::fs::read_to_string(book_src().join(c)).unwrap_or_else(|e| panic!("{c}: {e}"));
        let words = text.split_whitespace().count();
        assert!(words > 100, "{c} has only {words} words");
        assert!(text.starts_with("# "), "{c} starts with its title");
    }
}

#[test]
fn snapshot_includes_exist_and_skip_the_header() {
    for c in chapters() {
        let text = std::fs::read_to_string(book_src().join(&c)).unwrap();
        for include in text.split("{{#include ").skip(1) {
            let spec = include.split("}}").next().unwrap();
            let (path, range) = spec
                .split_once(".snap:")
                .map(|(p, r)| (format!("{p}.snap"), r))
                .unwrap_or((spec.to_string(), ""));
            let file = book_src().join(&path);
            let snap =
                std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{c}: {path}: {e}"));
            if path.ends_with(".snap") {
                let start: usize = range
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .unwrap_or_else(|_| panic!("{c}: {spec}: give a start line"));
                let lines: Vec<&str> = snap.lines().collect();
                assert_eq!(
                    lines.get(start - 2),
                    Some(&"---"),
                    "{c}: {spec} must start right after the snapshot header"
                );
            }
        }
    }
}

#[test]
fn internal_links_resolve() {
    for c in chapters() {
        let text = std::fs::read_to_string(book_src().join(&c)).unwrap();
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap();
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            assert!(
                book_src().join(file).is_file(),
                "{c} links to missing {target}"
            );
        }
    }
}

#[test]
fn mdbook_builds_a_page_per_chapter() {
    let Some(mdbook) = require("mdbook") else {
        return;
    };
    let out = std::fs::canonicalize(scratch("book")).unwrap();
    let status = Command::new(mdbook)
        .args(["build", "-d"])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("book"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for c in chapters() {
        let page = out.join(c.replace(".md", ".html"));
        let html =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            !html.contains("{{#include"),
            "{c}: an include was not resolved"
        );
    }
}

/// Every snapshot is some chapter's example: an output nobody shows is an output nobody reads.
#[test]
fn every_snapshot_is_shown_in_the_book() {
    let mut book = String::new();
    for c in chapters() {
        book.push_str(&std::fs::read_to_string(book_src().join(&c)).unwrap());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".snap") {
            assert!(
                book.contains(&format!("snapshots/{name}")),
                "{name} is not in the book"
            );
        }
    }
}
