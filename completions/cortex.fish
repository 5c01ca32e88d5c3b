# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cortex_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_cortex_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cortex_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cortex_using_subcommand
    set -l cmd (__fish_cortex_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cortex -n "__fish_cortex_needs_command" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_needs_command" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_needs_command" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "serve" -d 'Run a neuron: the HTTP API on :31313 and metrics on :31314'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "chat" -d 'Ask a model something, or chat interactively'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "status" -d 'Show the neuron\'s devices, memory budget and models'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "models" -d 'List the models a neuron serves (aliases, state, size)'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "load" -d 'Load a model now (instead of on its first request)'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "unload" -d 'Unload a model (refused while it serves requests)'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "pin" -d 'Keep a model loaded: never evicted, never unloaded when idle'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "unpin" -d 'Let a pinned model be evicted and idle-unloaded again'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "pull" -d 'Download a model into the models directory'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "init" -d 'Make the fleet CA that signs every node\'s certificate'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "cert" -d 'Sign node certificates with the fleet CA'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "bench" -d 'Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "devices" -d 'Show this host\'s RAM and GPUs and the device models would run on (no neuron needed)'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "debug" -d 'Engine checks for developers (logits on a chosen device)'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "man" -d 'Write man pages, one per subcommand'
complete -c cortex -n "__fish_cortex_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cortex -n "__fish_cortex_using_subcommand serve" -s c -l config -d 'cortex.toml to read (default: none, built-in defaults)' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l listen -d 'HTTP API address (OpenAI + Anthropic) [default: 127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l metrics-listen -d 'Prometheus /metrics address [default: 127.0.0.1:31314]' -r
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l models-dir -d 'Directory of model files to serve [default: $CORTEX_HOME/models or the data directory]' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand serve" -s m -l model -d 'Also serve this GGUF file or safetensors directory (repeatable)' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l models-config -d 'models.toml with sources, priorities, pins, keep-alives and aliases' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l memory-budget -d 'Memory models may use on this node, e.g. 300MiB or 8GiB [default: 75% of RAM less 512MiB]' -r
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l name -d 'This node\'s name in the fleet (turns the mesh on; needs NAME.crt from `cortex cert issue`)' -r
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l tls-dir -d 'Directory with ca.crt, NAME.crt and NAME.key [default: $CORTEX_HOME/tls]' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l mesh-listen -d 'UDP address of the mesh\'s QUIC endpoint [default: the --listen address]' -r
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l join -d 'Join the fleet through this peer\'s mesh address (repeatable)' -r
complete -c cortex -n "__fish_cortex_using_subcommand serve" -l eviction -d 'Which models to evict first when a load does not fit' -r -f -a "lru\t''
priority\t''"
complete -c cortex -n "__fish_cortex_using_subcommand serve" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand serve" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand serve" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand chat" -s s -l system -d 'System message that opens the conversation' -r
complete -c cortex -n "__fish_cortex_using_subcommand chat" -l max-tokens -d 'Most tokens in each answer' -r
complete -c cortex -n "__fish_cortex_using_subcommand chat" -s t -l temperature -d 'Sampling temperature; 0 is greedy (the same answer every time)' -r
complete -c cortex -n "__fish_cortex_using_subcommand chat" -l seed -d 'Seed for sampling, for repeatable answers at temperature > 0' -r
complete -c cortex -n "__fish_cortex_using_subcommand chat" -l models-dir -d 'Models directory for the in-process neuron [default: $CORTEX_HOME/models]' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand chat" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand chat" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand chat" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand chat" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand chat" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand status" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand status" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand status" -l json -d 'Print the neuron\'s JSON (one document) instead of tables'
complete -c cortex -n "__fish_cortex_using_subcommand status" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand status" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand status" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand models" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand models" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand models" -l json -d 'Print the neuron\'s JSON (one document) instead of a table'
complete -c cortex -n "__fish_cortex_using_subcommand models" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand models" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand models" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand load" -l on -d 'Act on this node of the fleet instead of the one answering' -r
complete -c cortex -n "__fish_cortex_using_subcommand load" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand load" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand load" -l json -d 'Print the neuron\'s JSON answer on stdout'
complete -c cortex -n "__fish_cortex_using_subcommand load" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand load" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand load" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand unload" -l on -d 'Act on this node of the fleet instead of the one answering' -r
complete -c cortex -n "__fish_cortex_using_subcommand unload" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand unload" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand unload" -l json -d 'Print the neuron\'s JSON answer on stdout'
complete -c cortex -n "__fish_cortex_using_subcommand unload" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand unload" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand unload" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand pin" -l on -d 'Act on this node of the fleet instead of the one answering' -r
complete -c cortex -n "__fish_cortex_using_subcommand pin" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand pin" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand pin" -l json -d 'Print the neuron\'s JSON answer on stdout'
complete -c cortex -n "__fish_cortex_using_subcommand pin" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand pin" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand pin" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -l on -d 'Act on this node of the fleet instead of the one answering' -r
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -l json -d 'Print the neuron\'s JSON answer on stdout'
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand unpin" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand pull" -l file -d 'File to fetch from the repository (GGUF); catalogue models need none' -r
complete -c cortex -n "__fish_cortex_using_subcommand pull" -l models-dir -d 'Where to put it [default: $CORTEX_HOME/models or the data directory]' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand pull" -s q -l quiet -d 'No progress or status lines on stderr'
complete -c cortex -n "__fish_cortex_using_subcommand pull" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand pull" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand pull" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand init" -l dir -d 'Directory for ca.crt and ca.key [default: $CORTEX_HOME/tls or the data directory]' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand init" -l force -d 'Replace an existing CA; certificates it signed are no longer trusted'
complete -c cortex -n "__fish_cortex_using_subcommand init" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand init" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand init" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and not __fish_seen_subcommand_from issue help" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and not __fish_seen_subcommand_from issue help" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and not __fish_seen_subcommand_from issue help" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and not __fish_seen_subcommand_from issue help" -f -a "issue" -d 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and not __fish_seen_subcommand_from issue help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -l dir -d 'Directory with the fleet CA; the node\'s files go there too [default: $CORTEX_HOME/tls or the data directory]' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -l dns -d 'Another DNS name the node is reached by (repeatable)' -r
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -l ip -d 'An IP address the node is reached at (repeatable)' -r
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -l days -d 'Days the certificate stays valid' -r
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from issue" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "issue" -d 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)'
complete -c cortex -n "__fish_cortex_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cortex -n "__fish_cortex_using_subcommand bench" -s c -l concurrency -d 'Concurrency levels, comma-separated: each runs --requests requests with at most this many in flight' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -s n -l requests -d 'Requests at each concurrency level' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l prompt-tokens -d 'Rough prompt length in tokens (filler text; the report gives the neuron\'s own count)' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l max-tokens -d 'Most tokens in each answer' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l api -d 'API to drive: openai (/v1/chat/completions) or anthropic (/v1/messages)' -r -f -a "openai\t'OpenAI chat completions: POST /v1/chat/completions'
anthropic\t'Anthropic messages: POST /v1/messages'"
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l probe -d 'Instead of load, ask each model this question once (not streamed, temperature 0) and print the answers side by side' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l endpoint -d 'Neuron URL [default: http://127.0.0.1:31313]' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l api-key -d 'API key, when the neuron requires one' -r
complete -c cortex -n "__fish_cortex_using_subcommand bench" -l json -d 'Print one JSON document on stdout instead of a table'
complete -c cortex -n "__fish_cortex_using_subcommand bench" -s q -l quiet -d 'No progress bar on stderr'
complete -c cortex -n "__fish_cortex_using_subcommand bench" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cortex -n "__fish_cortex_using_subcommand bench" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand devices" -s c -l config -d 'cortex.toml whose [memory] settings the budget follows (default: built-in defaults)' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand devices" -l json -d 'Print one JSON document instead of a table'
complete -c cortex -n "__fish_cortex_using_subcommand devices" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand devices" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand devices" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and not __fish_seen_subcommand_from logits help" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and not __fish_seen_subcommand_from logits help" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and not __fish_seen_subcommand_from logits help" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and not __fish_seen_subcommand_from logits help" -f -a "logits" -d 'Print the last position\'s logits for a prompt (greedy, no chat template)'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and not __fish_seen_subcommand_from logits help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -s m -l model -d 'GGUF file or safetensors directory' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -s p -l prompt -d 'Text fed to the model as it is' -r
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -l device -d 'Device to compute on: cpu, cuda or cuda:N [default: what `cortex serve` would use]' -r
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -l dtype -d 'What a safetensors model computes in: f32, bf16 or f16 [default: bf16 on a GPU, f32 on the CPU]' -r -f -a "f32\t''
bf16\t''
f16\t''"
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -l json -d 'Print one JSON document with every logit instead of the top ten'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from logits" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from help" -f -a "logits" -d 'Print the last position\'s logits for a prompt (greedy, no chat template)'
complete -c cortex -n "__fish_cortex_using_subcommand debug; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cortex -n "__fish_cortex_using_subcommand completions" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand completions" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand completions" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand man" -l dir -d 'Directory to write the pages into' -r -F
complete -c cortex -n "__fish_cortex_using_subcommand man" -s v -l verbose -d 'More log output (-v info, -vv debug); RUST_LOG overrides'
complete -c cortex -n "__fish_cortex_using_subcommand man" -s h -l help -d 'Print help'
complete -c cortex -n "__fish_cortex_using_subcommand man" -s V -l version -d 'Print version'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "serve" -d 'Run a neuron: the HTTP API on :31313 and metrics on :31314'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "chat" -d 'Ask a model something, or chat interactively'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "status" -d 'Show the neuron\'s devices, memory budget and models'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "models" -d 'List the models a neuron serves (aliases, state, size)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "load" -d 'Load a model now (instead of on its first request)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "unload" -d 'Unload a model (refused while it serves requests)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "pin" -d 'Keep a model loaded: never evicted, never unloaded when idle'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "unpin" -d 'Let a pinned model be evicted and idle-unloaded again'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "pull" -d 'Download a model into the models directory'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "init" -d 'Make the fleet CA that signs every node\'s certificate'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "cert" -d 'Sign node certificates with the fleet CA'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "bench" -d 'Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "devices" -d 'Show this host\'s RAM and GPUs and the device models would run on (no neuron needed)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "debug" -d 'Engine checks for developers (logits on a chosen device)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "man" -d 'Write man pages, one per subcommand'
complete -c cortex -n "__fish_cortex_using_subcommand help; and not __fish_seen_subcommand_from serve chat status models load unload pin unpin pull init cert bench devices debug completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and __fish_seen_subcommand_from cert" -f -a "issue" -d 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)'
complete -c cortex -n "__fish_cortex_using_subcommand help; and __fish_seen_subcommand_from debug" -f -a "logits" -d 'Print the last position\'s logits for a prompt (greedy, no chat template)'
