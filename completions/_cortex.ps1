
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'cortex' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'cortex'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'cortex' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a neuron: the HTTP API on :31313 and metrics on :31314')
            [CompletionResult]::new('chat', 'chat', [CompletionResultType]::ParameterValue, 'Ask a model something, or chat interactively')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the neuron''s devices, memory budget and models')
            [CompletionResult]::new('models', 'models', [CompletionResultType]::ParameterValue, 'List the models a neuron serves (aliases, state, size)')
            [CompletionResult]::new('load', 'load', [CompletionResultType]::ParameterValue, 'Load a model now (instead of on its first request)')
            [CompletionResult]::new('unload', 'unload', [CompletionResultType]::ParameterValue, 'Unload a model (refused while it serves requests)')
            [CompletionResult]::new('pin', 'pin', [CompletionResultType]::ParameterValue, 'Keep a model loaded: never evicted, never unloaded when idle')
            [CompletionResult]::new('unpin', 'unpin', [CompletionResultType]::ParameterValue, 'Let a pinned model be evicted and idle-unloaded again')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Download a model into the models directory')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Make the fleet CA that signs every node''s certificate')
            [CompletionResult]::new('cert', 'cert', [CompletionResultType]::ParameterValue, 'Sign node certificates with the fleet CA')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels')
            [CompletionResult]::new('devices', 'devices', [CompletionResultType]::ParameterValue, 'Show this host''s RAM and GPUs and the device models would run on (no neuron needed)')
            [CompletionResult]::new('debug', 'debug', [CompletionResultType]::ParameterValue, 'Engine checks for developers (logits on a chosen device)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages, one per subcommand')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'cortex;serve' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'cortex.toml to read (default: none, built-in defaults)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'cortex.toml to read (default: none, built-in defaults)')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'HTTP API address (OpenAI + Anthropic) [default: 127.0.0.1:31313]')
            [CompletionResult]::new('--metrics-listen', '--metrics-listen', [CompletionResultType]::ParameterName, 'Prometheus /metrics address [default: 127.0.0.1:31314]')
            [CompletionResult]::new('--models-dir', '--models-dir', [CompletionResultType]::ParameterName, 'Directory of model files to serve [default: $CORTEX_HOME/models or the data directory]')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Also serve this GGUF file or safetensors directory (repeatable)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Also serve this GGUF file or safetensors directory (repeatable)')
            [CompletionResult]::new('--models-config', '--models-config', [CompletionResultType]::ParameterName, 'models.toml with sources, priorities, pins, keep-alives and aliases')
            [CompletionResult]::new('--memory-budget', '--memory-budget', [CompletionResultType]::ParameterName, 'Memory models may use on this node, e.g. 300MiB or 8GiB [default: 75% of RAM less 512MiB]')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'This node''s name in the fleet (turns the mesh on; needs NAME.crt from `cortex cert issue`)')
            [CompletionResult]::new('--tls-dir', '--tls-dir', [CompletionResultType]::ParameterName, 'Directory with ca.crt, NAME.crt and NAME.key [default: $CORTEX_HOME/tls]')
            [CompletionResult]::new('--mesh-listen', '--mesh-listen', [CompletionResultType]::ParameterName, 'UDP address of the mesh''s QUIC endpoint [default: the --listen address]')
            [CompletionResult]::new('--join', '--join', [CompletionResultType]::ParameterName, 'Join the fleet through this peer''s mesh address (repeatable)')
            [CompletionResult]::new('--eviction', '--eviction', [CompletionResultType]::ParameterName, 'Which models to evict first when a load does not fit')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;chat' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'System message that opens the conversation')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'System message that opens the conversation')
            [CompletionResult]::new('--max-tokens', '--max-tokens', [CompletionResultType]::ParameterName, 'Most tokens in each answer')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Sampling temperature; 0 is greedy (the same answer every time)')
            [CompletionResult]::new('--temperature', '--temperature', [CompletionResultType]::ParameterName, 'Sampling temperature; 0 is greedy (the same answer every time)')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Seed for sampling, for repeatable answers at temperature > 0')
            [CompletionResult]::new('--models-dir', '--models-dir', [CompletionResultType]::ParameterName, 'Models directory for the in-process neuron [default: $CORTEX_HOME/models]')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;status' {
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the neuron''s JSON (one document) instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;models' {
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the neuron''s JSON (one document) instead of a table')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;load' {
            [CompletionResult]::new('--on', '--on', [CompletionResultType]::ParameterName, 'Act on this node of the fleet instead of the one answering')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the neuron''s JSON answer on stdout')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;unload' {
            [CompletionResult]::new('--on', '--on', [CompletionResultType]::ParameterName, 'Act on this node of the fleet instead of the one answering')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the neuron''s JSON answer on stdout')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;pin' {
            [CompletionResult]::new('--on', '--on', [CompletionResultType]::ParameterName, 'Act on this node of the fleet instead of the one answering')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the neuron''s JSON answer on stdout')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;unpin' {
            [CompletionResult]::new('--on', '--on', [CompletionResultType]::ParameterName, 'Act on this node of the fleet instead of the one answering')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the neuron''s JSON answer on stdout')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;pull' {
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'File to fetch from the repository (GGUF); catalogue models need none')
            [CompletionResult]::new('--models-dir', '--models-dir', [CompletionResultType]::ParameterName, 'Where to put it [default: $CORTEX_HOME/models or the data directory]')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress or status lines on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress or status lines on stderr')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;init' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Directory for ca.crt and ca.key [default: $CORTEX_HOME/tls or the data directory]')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Replace an existing CA; certificates it signed are no longer trusted')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;cert' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('issue', 'issue', [CompletionResultType]::ParameterValue, 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'cortex;cert;issue' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Directory with the fleet CA; the node''s files go there too [default: $CORTEX_HOME/tls or the data directory]')
            [CompletionResult]::new('--dns', '--dns', [CompletionResultType]::ParameterName, 'Another DNS name the node is reached by (repeatable)')
            [CompletionResult]::new('--ip', '--ip', [CompletionResultType]::ParameterName, 'An IP address the node is reached at (repeatable)')
            [CompletionResult]::new('--days', '--days', [CompletionResultType]::ParameterName, 'Days the certificate stays valid')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;cert;help' {
            [CompletionResult]::new('issue', 'issue', [CompletionResultType]::ParameterValue, 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'cortex;cert;help;issue' {
            break
        }
        'cortex;cert;help;help' {
            break
        }
        'cortex;bench' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Concurrency levels, comma-separated: each runs --requests requests with at most this many in flight')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Concurrency levels, comma-separated: each runs --requests requests with at most this many in flight')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Requests at each concurrency level')
            [CompletionResult]::new('--requests', '--requests', [CompletionResultType]::ParameterName, 'Requests at each concurrency level')
            [CompletionResult]::new('--prompt-tokens', '--prompt-tokens', [CompletionResultType]::ParameterName, 'Rough prompt length in tokens (filler text; the report gives the neuron''s own count)')
            [CompletionResult]::new('--max-tokens', '--max-tokens', [CompletionResultType]::ParameterName, 'Most tokens in each answer')
            [CompletionResult]::new('--api', '--api', [CompletionResultType]::ParameterName, 'API to drive: openai (/v1/chat/completions) or anthropic (/v1/messages)')
            [CompletionResult]::new('--probe', '--probe', [CompletionResultType]::ParameterName, 'Instead of load, ask each model this question once (not streamed, temperature 0) and print the answers side by side')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'Neuron URL [default: http://127.0.0.1:31313]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key, when the neuron requires one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON document on stdout instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress bar on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress bar on stderr')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;devices' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'cortex.toml whose [memory] settings the budget follows (default: built-in defaults)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'cortex.toml whose [memory] settings the budget follows (default: built-in defaults)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON document instead of a table')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;debug' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('logits', 'logits', [CompletionResultType]::ParameterValue, 'Print the last position''s logits for a prompt (greedy, no chat template)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'cortex;debug;logits' {
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'GGUF file or safetensors directory')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'GGUF file or safetensors directory')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Text fed to the model as it is')
            [CompletionResult]::new('--prompt', '--prompt', [CompletionResultType]::ParameterName, 'Text fed to the model as it is')
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Device to compute on: cpu, cuda or cuda:N [default: what `cortex serve` would use]')
            [CompletionResult]::new('--dtype', '--dtype', [CompletionResultType]::ParameterName, 'What a safetensors model computes in: f32, bf16 or f16 [default: bf16 on a GPU, f32 on the CPU]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON document with every logit instead of the top ten')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;debug;help' {
            [CompletionResult]::new('logits', 'logits', [CompletionResultType]::ParameterValue, 'Print the last position''s logits for a prompt (greedy, no chat template)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'cortex;debug;help;logits' {
            break
        }
        'cortex;debug;help;help' {
            break
        }
        'cortex;completions' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;man' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Directory to write the pages into')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (-v info, -vv debug); RUST_LOG overrides')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'cortex;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a neuron: the HTTP API on :31313 and metrics on :31314')
            [CompletionResult]::new('chat', 'chat', [CompletionResultType]::ParameterValue, 'Ask a model something, or chat interactively')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the neuron''s devices, memory budget and models')
            [CompletionResult]::new('models', 'models', [CompletionResultType]::ParameterValue, 'List the models a neuron serves (aliases, state, size)')
            [CompletionResult]::new('load', 'load', [CompletionResultType]::ParameterValue, 'Load a model now (instead of on its first request)')
            [CompletionResult]::new('unload', 'unload', [CompletionResultType]::ParameterValue, 'Unload a model (refused while it serves requests)')
            [CompletionResult]::new('pin', 'pin', [CompletionResultType]::ParameterValue, 'Keep a model loaded: never evicted, never unloaded when idle')
            [CompletionResult]::new('unpin', 'unpin', [CompletionResultType]::ParameterValue, 'Let a pinned model be evicted and idle-unloaded again')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Download a model into the models directory')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Make the fleet CA that signs every node''s certificate')
            [CompletionResult]::new('cert', 'cert', [CompletionResultType]::ParameterValue, 'Sign node certificates with the fleet CA')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels')
            [CompletionResult]::new('devices', 'devices', [CompletionResultType]::ParameterValue, 'Show this host''s RAM and GPUs and the device models would run on (no neuron needed)')
            [CompletionResult]::new('debug', 'debug', [CompletionResultType]::ParameterValue, 'Engine checks for developers (logits on a chosen device)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages, one per subcommand')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'cortex;help;serve' {
            break
        }
        'cortex;help;chat' {
            break
        }
        'cortex;help;status' {
            break
        }
        'cortex;help;models' {
            break
        }
        'cortex;help;load' {
            break
        }
        'cortex;help;unload' {
            break
        }
        'cortex;help;pin' {
            break
        }
        'cortex;help;unpin' {
            break
        }
        'cortex;help;pull' {
            break
        }
        'cortex;help;init' {
            break
        }
        'cortex;help;cert' {
            [CompletionResult]::new('issue', 'issue', [CompletionResultType]::ParameterValue, 'Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)')
            break
        }
        'cortex;help;cert;issue' {
            break
        }
        'cortex;help;bench' {
            break
        }
        'cortex;help;devices' {
            break
        }
        'cortex;help;debug' {
            [CompletionResult]::new('logits', 'logits', [CompletionResultType]::ParameterValue, 'Print the last position''s logits for a prompt (greedy, no chat template)')
            break
        }
        'cortex;help;debug;logits' {
            break
        }
        'cortex;help;completions' {
            break
        }
        'cortex;help;man' {
            break
        }
        'cortex;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
