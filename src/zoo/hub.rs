//! Models named on the Hugging Face hub: `hf:ORG/REPO[/FILE][@REVISION]` (FILE defaults to
//! `model.safetensors`, REVISION to `main`). The download itself is behind the cargo feature
//! `hub` (off by default) and lands in the hub's usual cache (`$HF_HOME/hub`, by default
//! `~/.cache/huggingface/hub`), where a later run finds it without the network; the file is
//! then opened like any bare weights file (architecture detected from its tensors).

use std::path::PathBuf;

use crate::{Error, Result};

/// The prefix that marks a hub reference in a model name.
pub const PREFIX: &str = "hf:";
/// The file taken when the reference names none (timm's and most repos' weights).
pub const DEFAULT_FILE: &str = "model.safetensors";
/// The revision taken when the reference names none.
pub const DEFAULT_REVISION: &str = "main";

/// A parsed `hf:` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// `ORG/REPO`, e.g. `timm/resnet50.a1_in1k`.
    pub repo: String,
    /// The file inside the repository (may contain `/`).
    pub file: String,
    /// A branch, tag or commit.
    pub revision: String,
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}/{}@{}", self.repo, self.file, self.revision)
    }
}

/// Parses a model name: `None` when it does not start with [`PREFIX`], an error naming the
/// problem when it does but is malformed (no `ORG/REPO`, empty parts, `..`).
pub fn parse(name: &str) -> Option<Result<HubRef>> {
    let rest = name.strip_prefix(PREFIX)?;
    let bad = |why: &str| {
        Err(Error::Model(format!(
            "`{name}`: {why}; a hub model is named hf:ORG/REPO[/FILE][@REVISION], e.g. \
             hf:timm/resnet18.a1_in1k or hf:timm/resnet18.a1_in1k/model.safetensors"
        )))
    };
    let (path, revision) = match rest.rsplit_once('@') {
        Some((p, r)) => (p, r),
        None => (rest, DEFAULT_REVISION),
    };
    if revision.is_empty() {
        return Some(bad("empty revision after `@`"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 2 {
        return Some(bad("no ORG/REPO"));
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Some(bad("an empty, `.` or `..` path part"));
    }
    let file = if parts.len() > 2 {
        parts[2..].join("/")
    } else {
        DEFAULT_FILE.to_string()
    };
    Some(Ok(HubRef {
        repo: format!("{}/{}", parts[0], parts[1]),
        file,
        revision: revision.to_string(),
    }))
}

/// The local path of a hub file: from the cache when it is there, else downloaded into it
/// (with a progress bar). Errors name the reference.
#[cfg(feature = "hub")]
pub fn fetch(r: &HubRef) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    let fail = |e: hf_hub::api::sync::ApiError| Error::Model(format!("{r}: {e}"));
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(fail)?;
    api.repo(Repo::with_revision(
        r.repo.clone(),
        RepoType::Model,
        r.revision.clone(),
    ))
    .get(&r.file)
    .map_err(fail)
}

/// Without the `hub` feature: an error saying how to get the file.
#[cfg(not(feature = "hub"))]
pub fn fetch(r: &HubRef) -> Result<PathBuf> {
    Err(Error::Model(format!(
        "{r}: this convlens was built without the `hub` feature (rebuild with \
         `cargo build --release --features hub`), or download `{}` from the repository \
         `{}` yourself and pass its path",
        r.file, r.repo
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str) -> HubRef {
        parse(name).expect("a hub name").expect("well formed")
    }

    #[test]
    fn names_parse_with_defaults() {
        assert!(parse("resnet18").is_none());
        assert!(parse("models/hf:x/y").is_none());
        assert_eq!(
            ok("hf:timm/resnet18.a1_in1k"),
            HubRef {
                repo: "timm/resnet18.a1_in1k".into(),
                file: "model.safetensors".into(),
                revision: "main".into(),
            }
        );
        let r = ok("hf:org/repo/weights/pytorch_model.bin@v1.0");
        assert_eq!(
            (r.repo.as_str(), r.file.as_str(), r.revision.as_str()),
            ("org/repo", "weights/pytorch_model.bin", "v1.0")
        );
        assert_eq!(r.to_string(), "hf:org/repo/weights/pytorch_model.bin@v1.0");
    }

    #[test]
    fn malformed_names_say_what_is_wrong() {
        for (name, why) in [
            ("hf:", "no ORG/REPO"),
            ("hf:timm", "no ORG/REPO"),
            ("hf:timm//model.safetensors", "empty"),
            ("hf:timm/repo/../secret", "`..`"),
            ("hf:timm/repo@", "empty revision"),
        ] {
            let msg = parse(name).unwrap().unwrap_err().to_string();
            assert!(msg.contains(why) && msg.contains(name), "{name}: {msg}");
        }
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_feature_the_error_says_how_to_get_it() {
        let msg = fetch(&ok("hf:timm/resnet18.a1_in1k"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("--features hub") && msg.contains("timm/resnet18.a1_in1k"));
    }
}
