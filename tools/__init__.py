"""The command-line tools are scripts (``python tools/<name>.py``); this file makes their shared helpers
(``tools/_*.py``) importable as ``tools._<name>`` once the repository root is on ``sys.path``."""
