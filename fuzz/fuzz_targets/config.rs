//! An operator's files: cortex.toml and models.toml parse to a config or to errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cortex_neuron::config::Config::parse(text, std::path::Path::new("cortex.toml"));
    if let Err(errors) = cortex_neuron::lifecycle::catalogue::ModelsFile::parse(text, "models.toml") {
        assert!(!errors.is_empty(), "a rejected models.toml names at least one error");
    }
});
