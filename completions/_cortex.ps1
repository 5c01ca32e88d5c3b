
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
