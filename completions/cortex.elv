
use builtin;
use str;

set edit:completion:arg-completer[cortex] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'cortex'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'cortex'= {
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run a neuron: the HTTP API on :31313 and metrics on :31314'
            cand chat 'Ask a model something, or chat interactively'
            cand status 'Show the neuron''s devices, memory budget and models'
            cand models 'List the models a neuron serves (aliases, state, size)'
            cand load 'Load a model now (instead of on its first request)'
            cand unload 'Unload a model (refused while it serves requests)'
            cand pin 'Keep a model loaded: never evicted, never unloaded when idle'
            cand unpin 'Let a pinned model be evicted and idle-unloaded again'
            cand pull 'Download a model into the models directory'
            cand completions 'Print a shell completion script'
            cand man 'Write man pages, one per subcommand'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'cortex;serve'= {
            cand -c 'cortex.toml to read (default: none, built-in defaults)'
            cand --config 'cortex.toml to read (default: none, built-in defaults)'
            cand --listen 'HTTP API address (OpenAI + Anthropic) [default: 127.0.0.1:31313]'
            cand --metrics-listen 'Prometheus /metrics address [default: 127.0.0.1:31314]'
            cand --models-dir 'Directory of model files to serve [default: $CORTEX_HOME/models or the data directory]'
            cand -m 'Also serve this GGUF file or safetensors directory (repeatable)'
            cand --model 'Also serve this GGUF file or safetensors directory (repeatable)'
            cand --models-config 'models.toml with sources, priorities, pins, keep-alives and aliases'
            cand --memory-budget 'Memory models may use on this node, e.g. 300MiB or 8GiB [default: 75% of RAM less 512MiB]'
            cand --eviction 'Which models to evict first when a load does not fit'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;chat'= {
            cand -s 'System message that opens the conversation'
            cand --system 'System message that opens the conversation'
            cand --max-tokens 'Most tokens in each answer'
            cand -t 'Sampling temperature; 0 is greedy (the same answer every time)'
            cand --temperature 'Sampling temperature; 0 is greedy (the same answer every time)'
            cand --seed 'Seed for sampling, for repeatable answers at temperature > 0'
            cand --models-dir 'Models directory for the in-process neuron [default: $CORTEX_HOME/models]'
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;status'= {
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print the neuron''s JSON (one document) instead of tables'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;models'= {
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print the neuron''s JSON (one document) instead of a table'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;load'= {
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print the neuron''s JSON answer on stdout'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;unload'= {
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print the neuron''s JSON answer on stdout'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;pin'= {
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print the neuron''s JSON answer on stdout'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;unpin'= {
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print the neuron''s JSON answer on stdout'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;pull'= {
            cand --file 'File to fetch from the repository (GGUF); catalogue models need none'
            cand --models-dir 'Where to put it [default: $CORTEX_HOME/models or the data directory]'
            cand -q 'No progress or status lines on stderr'
            cand --quiet 'No progress or status lines on stderr'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;completions'= {
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;man'= {
            cand --dir 'Directory to write the pages into'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;help'= {
            cand serve 'Run a neuron: the HTTP API on :31313 and metrics on :31314'
            cand chat 'Ask a model something, or chat interactively'
            cand status 'Show the neuron''s devices, memory budget and models'
            cand models 'List the models a neuron serves (aliases, state, size)'
            cand load 'Load a model now (instead of on its first request)'
            cand unload 'Unload a model (refused while it serves requests)'
            cand pin 'Keep a model loaded: never evicted, never unloaded when idle'
            cand unpin 'Let a pinned model be evicted and idle-unloaded again'
            cand pull 'Download a model into the models directory'
            cand completions 'Print a shell completion script'
            cand man 'Write man pages, one per subcommand'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'cortex;help;serve'= {
        }
        &'cortex;help;chat'= {
        }
        &'cortex;help;status'= {
        }
        &'cortex;help;models'= {
        }
        &'cortex;help;load'= {
        }
        &'cortex;help;unload'= {
        }
        &'cortex;help;pin'= {
        }
        &'cortex;help;unpin'= {
        }
        &'cortex;help;pull'= {
        }
        &'cortex;help;completions'= {
        }
        &'cortex;help;man'= {
        }
        &'cortex;help;help'= {
        }
    ]
    $completions[$command]
}
