"""One module per paper: the commands that reproduce its tables and figures
(``python -m experiments.<module> --help``), each a sweep of cached cells (``harness.sweep``)
that writes CSV, Markdown and PNG into its output folder."""
