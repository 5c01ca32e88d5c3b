
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
            cand init 'Make the fleet CA that signs every node''s certificate'
            cand cert 'Sign node certificates with the fleet CA'
            cand bench 'Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels'
            cand devices 'Show this host''s RAM and GPUs and the device models would run on (no neuron needed)'
            cand debug 'Engine checks for developers (logits on a chosen device)'
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
            cand --name 'This node''s name in the fleet (turns the mesh on; needs NAME.crt from `cortex cert issue`)'
            cand --tls-dir 'Directory with ca.crt, NAME.crt and NAME.key [default: $CORTEX_HOME/tls]'
            cand --mesh-listen 'UDP address of the mesh''s QUIC endpoint [default: the --listen address]'
            cand --join 'Join the fleet through this peer''s mesh address (repeatable)'
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
            cand --on 'Act on this node of the fleet instead of the one answering'
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
            cand --on 'Act on this node of the fleet instead of the one answering'
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
            cand --on 'Act on this node of the fleet instead of the one answering'
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
            cand --on 'Act on this node of the fleet instead of the one answering'
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
        &'cortex;init'= {
            cand --dir 'Directory for ca.crt and ca.key [default: $CORTEX_HOME/tls or the data directory]'
            cand --force 'Replace an existing CA; certificates it signed are no longer trusted'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;cert'= {
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand issue 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'cortex;cert;issue'= {
            cand --dir 'Directory with the fleet CA; the node''s files go there too [default: $CORTEX_HOME/tls or the data directory]'
            cand --dns 'Another DNS name the node is reached by (repeatable)'
            cand --ip 'An IP address the node is reached at (repeatable)'
            cand --days 'Days the certificate stays valid'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;cert;help'= {
            cand issue 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'cortex;cert;help;issue'= {
        }
        &'cortex;cert;help;help'= {
        }
        &'cortex;bench'= {
            cand -c 'Concurrency levels, comma-separated: each runs --requests requests with at most this many in flight'
            cand --concurrency 'Concurrency levels, comma-separated: each runs --requests requests with at most this many in flight'
            cand -n 'Requests at each concurrency level'
            cand --requests 'Requests at each concurrency level'
            cand --prompt-tokens 'Rough prompt length in tokens (filler text; the report gives the neuron''s own count)'
            cand --max-tokens 'Most tokens in each answer'
            cand --api 'API to drive: openai (/v1/chat/completions) or anthropic (/v1/messages)'
            cand --probe 'Instead of load, ask each model this question once (not streamed, temperature 0) and print the answers side by side'
            cand --endpoint 'Neuron URL [default: http://127.0.0.1:31313]'
            cand --api-key 'API key, when the neuron requires one'
            cand --json 'Print one JSON document on stdout instead of a table'
            cand -q 'No progress bar on stderr'
            cand --quiet 'No progress bar on stderr'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;devices'= {
            cand -c 'cortex.toml whose [memory] settings the budget follows (default: built-in defaults)'
            cand --config 'cortex.toml whose [memory] settings the budget follows (default: built-in defaults)'
            cand --json 'Print one JSON document instead of a table'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;debug'= {
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand logits 'Print the last position''s logits for a prompt (greedy, no chat template)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'cortex;debug;logits'= {
            cand -m 'GGUF file or safetensors directory'
            cand --model 'GGUF file or safetensors directory'
            cand -p 'Text fed to the model as it is'
            cand --prompt 'Text fed to the model as it is'
            cand --device 'Device to compute on: cpu, cuda or cuda:N [default: what `cortex serve` would use]'
            cand --dtype 'What a safetensors model computes in: f32, bf16 or f16 [default: bf16 on a GPU, f32 on the CPU]'
            cand --json 'Print one JSON document with every logit instead of the top ten'
            cand -v 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand --verbose 'More log output (-v info, -vv debug); RUST_LOG overrides'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'cortex;debug;help'= {
            cand logits 'Print the last position''s logits for a prompt (greedy, no chat template)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'cortex;debug;help;logits'= {
        }
        &'cortex;debug;help;help'= {
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
            cand init 'Make the fleet CA that signs every node''s certificate'
            cand cert 'Sign node certificates with the fleet CA'
            cand bench 'Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels'
            cand devices 'Show this host''s RAM and GPUs and the device models would run on (no neuron needed)'
            cand debug 'Engine checks for developers (logits on a chosen device)'
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
        &'cortex;help;init'= {
        }
        &'cortex;help;cert'= {
            cand issue 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)'
        }
        &'cortex;help;cert;issue'= {
        }
        &'cortex;help;bench'= {
        }
        &'cortex;help;devices'= {
        }
        &'cortex;help;debug'= {
            cand logits 'Print the last position''s logits for a prompt (greedy, no chat template)'
        }
        &'cortex;help;debug;logits'= {
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
