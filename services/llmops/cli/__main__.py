"""``python -m llmops.cli`` is the ``llmops`` command (``llmops up`` starts each service this way)."""
from llmops.cli import main

main()
