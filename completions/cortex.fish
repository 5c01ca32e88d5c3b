complete --keep-order --exclusive --command cortex --arguments "(COMPLETE=fish cortex -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
